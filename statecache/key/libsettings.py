"""Settings that an installed library keeps in one global registry and reads inside itself:
``pd.set_option("display.max_rows", 5)`` above a block whose ``repr(df)`` depends on it,
``np.set_printoptions``, ``np.seterr``, ``sklearn.set_config(transform_output="pandas")``,
``torch.set_default_dtype``. No scan of the block sees such a read, so code that uses the
library counts the settings of its registry that differ from the library's defaults (and of the
registries of the libraries it is built on, ``BUILT_ON``).

Which code uses a library is decided where the library is met: an input that is its module,
one of its objects or a function of a module that imported it (``libraries_used``); an object
of its types anywhere inside the inputs, or its code reached through the user's code
(``settings_met``, given the modules the value walk met); an import of it, in the block or in
a helper the block reaches, directly or through the user's modules (``key.imports``). Only the settings that differ from the defaults count, so
that whether a library is loaded yet (a hit skips the block that imported it) cannot change a
key: a library not loaded has its defaults.

Only registries listed in ``REGISTRIES`` count; environment variables a library reads when it
is imported (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``POLARS_MAX_THREADS``) do not: they are
fixed for the process before any block runs (README "What is not tracked").
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Container, Iterable
from typing import Any

# The defaults a library does not publish (as the versions in the [dev] extra have them): a
# setting missing here, or of another value, counts.
_NUMPY_PRINT = {
    "edgeitems": 3, "threshold": 1000, "floatmode": "maxprec", "precision": 8, "suppress": False,
    "linewidth": 75, "nanstr": "nan", "infstr": "inf", "sign": "-", "formatter": None, "legacy": False,
    "override_repr": None,
}
_NUMPY_ERR = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}
_SKLEARN = {
    "assume_finite": False, "working_memory": 1024, "print_changed_only": True, "display": "diagram",
    "pairwise_dist_chunk_size": 256, "enable_cython_pairwise_dist": True, "array_api_dispatch": False,
    "transform_output": "default", "enable_metadata_routing": False, "skip_parameter_validation": False,
    "sparse_interface": "spmatrix",
}
_POLARS = {  # what ``Config.state(if_set=True)`` holds right after ``import polars``
    "set_fmt_float": "mixed", "set_float_precision": None, "set_thousands_separator": "",
    "set_decimal_separator": ".", "set_trim_decimal_zeros": False,
}
_TORCH = {"default_dtype": "torch.float32", "deterministic": False, "matmul_precision": "highest",
          "grad_enabled": True, "inference_mode": False, "anomaly_detection": False,
          "print_precision": 4, "print_threshold": 1000, "print_edgeitems": 3, "print_linewidth": 80,
          "print_sci_mode": None}
_DECIMAL = {  # not decimal.DefaultContext, which code may change
    "prec": 28, "rounding": "ROUND_HALF_EVEN", "Emin": -999999, "Emax": 999999, "capitals": 1, "clamp": 0,
    "traps": ["DivisionByZero", "InvalidOperation", "Overflow"],
}
_UNSET = object()


def _changed(current: dict[str, Any], defaults: dict[str, Any]) -> dict[str, str]:
    """The entries of ``current`` that are not their default, by repr, in key order."""
    return {k: repr(v) for k, v in sorted(current.items()) if k not in defaults or repr(v) != repr(defaults[k])}


def _pandas(pd: Any) -> Any:
    config = sys.modules.get("pandas._config.config")
    registered = getattr(config, "_registered_options", None)
    values = getattr(config, "_global_config", None)
    if not isinstance(registered, dict) or not isinstance(values, dict):
        return None
    changed: dict[str, str] = {}
    for key in sorted(registered):
        node: Any = values
        for part in key.lower().split("."):  # where register_option keeps the value
            node = node.get(part, _UNSET) if isinstance(node, dict) else _UNSET
        default = registered[key].defval
        if node is not default and (node is _UNSET or repr(node) != repr(default)):
            changed[key] = repr(node)
    return changed


def _numpy(np: Any) -> Any:
    return {"print": _changed(np.get_printoptions(), _NUMPY_PRINT), "err": _changed(np.geterr(), _NUMPY_ERR)}


def _sklearn(sklearn: Any) -> Any:
    return _changed(sklearn.get_config(), _SKLEARN)


def _torch(torch: Any) -> Any:
    return {
        **_changed({
            "default_dtype": str(torch.get_default_dtype()),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "matmul_precision": torch.get_float32_matmul_precision(),
            # the modes a `with torch.no_grad():` / `inference_mode()` around the block sets
            "grad_enabled": torch.is_grad_enabled(),
            "inference_mode": torch.is_inference_mode_enabled(),
            "anomaly_detection": torch.is_anomaly_enabled(),
            **_torch_print_options(torch),
        }, _TORCH),
        "num_threads": torch.get_num_threads(),  # its default depends on the machine: always
    }


def _torch_print_options(torch: Any) -> dict[str, Any]:
    """``torch.set_printoptions``, as ``repr(tensor)`` reads them (none where torch moved them)."""
    options = getattr(getattr(torch, "_tensor_str", None), "PRINT_OPTS", None)
    if options is None:
        return {}
    return {f"print_{name}": getattr(options, name, None)
            for name in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")}


def _polars(pl: Any) -> Any:
    return _changed(pl.Config.state(if_set=True), _POLARS)


DECIMAL_FIELDS = ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")


def read_decimal(decimal: Any) -> dict[str, Any]:
    """The decimal context as plain values: what the key counts and what a hit sets back
    (``_registries``)."""
    ctx = decimal.getcontext()
    out = {f: getattr(ctx, f) for f in DECIMAL_FIELDS}
    out["traps"] = sorted(k.__name__ for k, on in ctx.traps.items() if on)
    return out


def _decimal(decimal: Any) -> Any:
    return _changed(read_decimal(decimal), _DECIMAL)


#: library (``inputs.SETTINGS_LIBRARIES``) -> (the label its settings count under, how to read
#: those that differ from the defaults as plain data)
REGISTRIES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pandas": ("pandas options", _pandas),
    "numpy": ("numpy print options and error handling", _numpy),
    "sklearn": ("scikit-learn config", _sklearn),
    "torch": ("torch global settings", _torch),
    "polars": ("polars config", _polars),
    "decimal": ("decimal context", _decimal),
}

#: library -> the registry libraries its results pass through (``df.to_numpy()`` prints by
#: numpy's options; ``set_config(transform_output="pandas")`` returns frames)
BUILT_ON: dict[str, tuple[str, ...]] = {
    "pandas": ("numpy",), "sklearn": ("numpy", "pandas"), "polars": ("numpy",), "torch": ("numpy",),
}


def settings_of(libraries: Iterable[str]) -> dict[str, Any]:
    """Label -> the settings that differ from the defaults, of every registry library among
    ``libraries`` (top-level module names) and those they are built on, that is loaded (one not
    loaded has its defaults) and has such a setting. A library whose settings cannot be read is
    left out (a version whose API differs: nothing to count, as before)."""
    wanted = [name for name in libraries if name in REGISTRIES]
    for name in list(wanted):
        wanted += [lib for lib in BUILT_ON.get(name, ()) if lib not in wanted]
    found: dict[str, Any] = {}
    for name in sorted(set(wanted)):
        module = sys.modules.get(name)
        if module is None:
            continue
        label, read = REGISTRIES[name]
        try:
            settings = read(module)
        except Exception:
            continue
        if _any_value(settings):
            found[label] = settings
    return found


def _any_value(settings: Any) -> bool:
    """Whether a registry's reading holds a setting (``{"print": {}, "err": {}}`` holds none)."""
    if isinstance(settings, dict):
        return any(_any_value(v) if isinstance(v, dict) else True for v in settings.values())
    return settings is not None


def library_settings(values: Iterable[Any], imports: Iterable[str] = ()) -> dict[str, Any]:
    """``settings_of`` the libraries the code uses by its inputs (``libraries_used``) or
    imports (module names in ``imports``)."""
    if not any(name in sys.modules for name in REGISTRIES):
        return {}
    return settings_of({*libraries_used(values), *(name.partition(".")[0] for name in imports)})


def libraries_used(values: Iterable[Any]) -> set[str]:
    """The loaded registry libraries that one of ``values`` (the code's inputs) is the module
    of, an object of, or a function of a module that holds the module of."""
    loaded = [name for name in REGISTRIES if name in sys.modules]
    values = list(values) if loaded else []
    return {name for name in loaded if any(_uses(v, name) for v in values)}


def libraries_of_modules(names: Iterable[str]) -> set[str]:
    """The registry libraries among the top-level packages of the modules ``names`` (those
    the value walk met: of the types inside the inputs, a dict of frames or an object holding
    a ``Decimal``; of the library code the user's code reaches, a helper of a helper's ``pd``)."""
    tops = {str(name).partition(".")[0] for name in names}
    return {name for name in REGISTRIES if name in tops}


def settings_met(fp: Any, counted: Container[str]) -> dict[str, str]:
    """Label -> fingerprint (by ``fp``, the ``values.Fingerprinter`` that just walked the
    inputs) of the settings of the libraries whose objects or code that walk met
    (``fp.modules_met()``), for the labels not in ``counted`` (already inputs, or ignored)."""
    found = settings_of(libraries_of_modules(fp.modules_met()))
    return {label: fp.value(value, label).hex() for label, value in found.items() if label not in counted}


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
