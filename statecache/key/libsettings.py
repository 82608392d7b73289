"""Settings that an installed library keeps in one global registry and reads inside itself:
``pd.set_option("display.max_rows", 5)`` above a block whose ``repr(df)`` depends on it,
``np.set_printoptions``, ``np.seterr``, ``sklearn.set_config(transform_output="pandas")``,
``torch.set_default_dtype``. No scan of the block sees such a read, so a block that uses the
library (an input is the library's module or one of its objects, or a function of a module
that imported it) counts the registry's current value.

Only registries listed in ``REGISTRIES`` count; environment variables a library reads when it
is imported (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``POLARS_MAX_THREADS``) do not: they are
fixed for the process before any block runs (README "What is not tracked").
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable
from typing import Any


def _pandas(pd: Any) -> Any:
    import warnings

    config = sys.modules.get("pandas._config.config")
    registered = getattr(config, "_registered_options", None)
    if not isinstance(registered, dict):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reading a deprecated option warns
        return {key: repr(pd.get_option(key)) for key in sorted(registered)}


def _numpy(np: Any) -> Any:
    return {"print": {k: repr(v) for k, v in sorted(np.get_printoptions().items())}, "err": np.geterr()}


def _sklearn(sklearn: Any) -> Any:
    return {k: repr(v) for k, v in sorted(sklearn.get_config().items())}


def _torch(torch: Any) -> Any:
    return {
        "default_dtype": str(torch.get_default_dtype()),
        "num_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "matmul_precision": torch.get_float32_matmul_precision(),
    }


def _polars(pl: Any) -> Any:
    return {k: repr(v) for k, v in sorted(pl.Config.state(if_set=True).items())}


def _decimal(decimal: Any) -> Any:
    ctx = decimal.getcontext()
    return {"prec": ctx.prec, "rounding": ctx.rounding, "Emin": ctx.Emin, "Emax": ctx.Emax, "traps": repr(ctx.traps)}


#: library (``inputs.SETTINGS_LIBRARIES``) -> (the label its settings count under, how to read
#: them as plain data)
REGISTRIES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pandas": ("pandas options", _pandas),
    "numpy": ("numpy print options and error handling", _numpy),
    "sklearn": ("scikit-learn config", _sklearn),
    "torch": ("torch global settings", _torch),
    "polars": ("polars config", _polars),
    "decimal": ("decimal context", _decimal),
}


def library_settings(values: Iterable[Any], imports: Iterable[str] = ()) -> dict[str, Any]:
    """Label -> the current settings of every registry library (loaded already) that the
    code uses: one of ``values`` (the code's inputs) is the library's module, one of its
    objects, or a function whose module holds the library; or the code imports it (a module
    name in ``imports``). A library whose settings cannot be read is left out."""
    loaded = [name for name in REGISTRIES if name in sys.modules]
    if not loaded:
        return {}
    values = list(values)
    tops = {name.partition(".")[0] for name in imports}
    found: dict[str, Any] = {}
    for name in loaded:
        if name not in tops and not any(_uses(v, name) for v in values):
            continue
        label, read = REGISTRIES[name]
        try:
            found[label] = read(sys.modules[name])
        except Exception:  # a version whose API differs: nothing to count, as before
            continue
    return found


def _from(module_name: object, library: str) -> bool:
    return isinstance(module_name, str) and (module_name == library or module_name.startswith(library + "."))


def _uses(value: Any, library: str) -> bool:
    """Whether an input is the library's module, of one of its types, or a function of a
    module that holds the library's module (``import pandas as pd`` at its top)."""
    if isinstance(value, types.ModuleType):
        return _from(value.__name__, library)
    if isinstance(value, types.FunctionType) and _from(value.__module__, library):
        return True
    if isinstance(value, types.FunctionType):
        return any(
            isinstance(g, types.ModuleType) and _from(g.__name__, library) for g in list(value.__globals__.values())
        )
    if isinstance(value, (type, types.BuiltinFunctionType)) or callable(value) and hasattr(value, "__qualname__"):
        return _from(getattr(value, "__module__", None), library)  # DataFrame, np.zeros, a ufunc
    return _from(getattr(type(value), "__module__", None), library)
