"""Process-wide settings a block makes, read as plain values so that a hit can set them again.

``np.set_printoptions``, ``pd.set_option``, ``sklearn.set_config``, ``torch.set_num_threads``,
the decimal context, ``sys.setrecursionlimit``, warnings filters and the logging configuration
live in one registry each; a block that changes them leaves the process changed for the code
after it. ``capture`` reads every registry of a library already loaded (never importing one)
as ``{registry: {setting: plain value}}``; ``difference`` gives what changed, naming what cannot
be set again from plain values; ``apply`` sets it. A function the block registers with
``atexit`` is recorded by value (cloudpickle) and registered again on a hit.

``key/libsettings.py`` reads the same libraries for the key (only their non-default
settings, as reprs); this module reads them to set them back.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

from .key.libsettings import DECIMAL_FIELDS, read_decimal

_MISSING = object()


class Unplain(NamedTuple):
    """A setting whose value cannot be recorded as plain data (a callable, a file handler)."""

    what: str


class Registry(NamedTuple):
    module: str  # the module that must be loaded for the registry to be read
    read: Callable[[Any], dict[str, Any]]
    apply: Callable[[Any, dict[str, Any]], None]
    absent: Callable[[Any, str], Any]  # a setting's value before the block when it was not read


def _plain(value: Any, what: str) -> Any:
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        items = [_plain(v, what) for v in value]
        return next((v for v in items if isinstance(v, Unplain)), items)
    return Unplain(what)


def _nothing(module: Any, key: str) -> Any:
    return _MISSING


# -- numpy, pandas, scikit-learn, torch, polars ------------------------------------------------


def _read_numpy(np: Any) -> dict[str, Any]:
    out = {f"print.{k}": _plain(v, f"np.set_printoptions({k}=...)") for k, v in np.get_printoptions().items()}
    out.update({f"err.{k}": v for k, v in np.geterr().items()})
    return out


def _apply_numpy(np: Any, changes: dict[str, Any]) -> None:
    printing = {k[6:]: v for k, v in changes.items() if k.startswith("print.")}
    if printing:
        np.set_printoptions(**printing)
    errors = {k[4:]: v for k, v in changes.items() if k.startswith("err.")}
    if errors:
        np.seterr(**errors)


def _pandas_config() -> Any:
    return sys.modules.get("pandas._config.config")


def _read_pandas(pd: Any) -> dict[str, Any]:
    config = _pandas_config()
    registered = getattr(config, "_registered_options", {})
    deprecated = getattr(config, "_deprecated_options", {})
    values = getattr(config, "_global_config", {})
    out: dict[str, Any] = {}
    for key in registered:
        if key in deprecated:
            continue
        node: Any = values
        for part in key.lower().split("."):  # read where register_option keeps it: no warning
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            out[key] = _plain(node, f"pd.set_option({key!r}, ...)")
    return out


def _pandas_default(pd: Any, key: str) -> Any:
    option = getattr(_pandas_config(), "_registered_options", {}).get(key)
    return _MISSING if option is None else _plain(option.defval, key)


def _apply_pandas(pd: Any, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        pd.set_option(key, value)


def _read_sklearn(sklearn: Any) -> dict[str, Any]:
    return {k: _plain(v, f"sklearn.set_config({k}=...)") for k, v in sklearn.get_config().items()}


def _apply_sklearn(sklearn: Any, changes: dict[str, Any]) -> None:
    sklearn.set_config(**changes)


def _read_torch(torch: Any) -> dict[str, Any]:
    return {
        "default_dtype": str(torch.get_default_dtype()).rpartition(".")[2],
        "num_threads": torch.get_num_threads(),
        "deterministic": [torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled()],
        "matmul_precision": torch.get_float32_matmul_precision(),
    }


def _apply_torch(torch: Any, changes: dict[str, Any]) -> None:
    if "default_dtype" in changes:
        torch.set_default_dtype(getattr(torch, changes["default_dtype"]))
    if "num_threads" in changes:
        torch.set_num_threads(changes["num_threads"])
    if "deterministic" in changes:
        on, warn_only = changes["deterministic"]
        torch.use_deterministic_algorithms(on, warn_only=warn_only)
    if "matmul_precision" in changes:
        torch.set_float32_matmul_precision(changes["matmul_precision"])


def _read_polars(pl: Any) -> dict[str, Any]:
    # the POLARS_* entries are environment variables, replayed with os.environ (_effects)
    state = pl.Config.state(if_set=True)
    return {k: _plain(v, f"pl.Config.{k}(...)") for k, v in state.items() if k.startswith("set_")}


def _apply_polars(pl: Any, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        getattr(pl.Config, name)(value)


# -- the standard library -----------------------------------------------------------------------

def _apply_decimal(decimal: Any, changes: dict[str, Any]) -> None:
    ctx = decimal.getcontext()
    for name in DECIMAL_FIELDS:
        if name in changes:
            setattr(ctx, name, changes[name])
    if "traps" in changes:
        for signal in list(ctx.traps):
            ctx.traps[signal] = signal.__name__ in changes["traps"]


def _read_sys(module: Any) -> dict[str, Any]:
    out = {"recursionlimit": sys.getrecursionlimit(), "switchinterval": sys.getswitchinterval()}
    if hasattr(sys, "get_int_max_str_digits"):  # 3.11+
        out["int_max_str_digits"] = sys.get_int_max_str_digits()
    return out


def _apply_sys(module: Any, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        getattr(sys, "set" + name if name != "int_max_str_digits" else "set_int_max_str_digits")(value)


def _category_name(category: type) -> Any:
    name = f"{category.__module__}:{category.__qualname__}"
    return name if _category(name) is category else Unplain(f"a warnings filter for {category.__qualname__}")


def _category(name: str) -> Any:
    module, _, qualname = name.partition(":")
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found


def _read_warnings(warnings: Any) -> dict[str, Any]:
    rules = []
    for action, message, category, module, lineno in warnings.filters:
        name = _category_name(category)
        if isinstance(name, Unplain):
            return {"filters": name}
        rules.append([action, getattr(message, "pattern", message) or "", name,
                      getattr(module, "pattern", module) or "", lineno])
    return {"filters": rules}


def _apply_warnings(warnings: Any, changes: dict[str, Any]) -> None:
    """The filters the block put in front of those it found (``added``: kept are the hit's own,
    say from ``-W``), or, when it did more than that, the whole list it left."""
    rules = [(a, m, _category(c), mod, n) for a, m, c, mod, n in changes.get("added", changes.get("filters", []))]
    if "added" in changes:
        rules.reverse()  # each goes in front
    else:
        warnings.resetwarnings()
    for action, message, category, module, lineno in rules:
        warnings.filterwarnings(action, message, category or Warning, module, lineno, append="added" not in changes)


def _warnings_change(before: Any, after: Any) -> dict[str, Any]:
    if isinstance(before, list) and isinstance(after, list) and len(after) > len(before) \
            and after[len(after) - len(before):] == before:
        return {"added": after[:len(after) - len(before)]}
    return {"filters": after}


_STREAMS = ("stderr", "stdout")


def _handler(logging: Any, handler: Any) -> Any:
    """A plain description of a handler that ``logging.basicConfig`` could have made, or of
    the ``NullHandler`` the logging HOWTO tells libraries to add to their loggers (importing
    scikit-learn adds one to ``charset_normalizer``'s)."""
    formatter = handler.formatter
    if handler.filters or (formatter is not None and type(formatter) is not logging.Formatter):
        return Unplain(f"a logging handler with filters or a custom formatter ({type(handler).__name__})")
    fmt = None if formatter is None else [formatter._fmt, formatter.datefmt, _style(logging, formatter)]
    if type(handler) is logging.FileHandler:
        return ["file", handler.baseFilename, handler.mode, handler.encoding, handler.level, fmt]
    stream = next((s for s in _STREAMS if getattr(handler, "stream", None) is getattr(sys, s)), None)
    if type(handler) is logging.StreamHandler and stream is not None:
        return ["stream", stream, None, None, handler.level, fmt]
    if type(handler) is logging.NullHandler:  # what a library adds to its logger as it loads
        return ["null", None, None, None, handler.level, fmt]
    return Unplain(f"a logging handler {type(handler).__name__} (only streams to stdout/stderr and files replay)")


def _style(logging: Any, formatter: Any) -> str:
    styles = {logging.PercentStyle: "%", logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}
    return styles.get(type(formatter._style), "%")


def _read_logging(logging: Any) -> dict[str, Any]:
    loggers = {"": logging.getLogger()}
    loggers.update((n, lg) for n, lg in list(logging.Logger.manager.loggerDict.items())
                   if isinstance(lg, logging.Logger))
    out: dict[str, Any] = {"disable": logging.root.manager.disable}
    for name, logger in loggers.items():
        if logger.level or not name:
            out[f"level:{name}"] = logger.level
        if logger.handlers:
            described = [_handler(logging, h) for h in logger.handlers]
            out[f"handlers:{name}"] = next((d for d in described if isinstance(d, Unplain)), described)
    return out


def _logging_default(logging: Any, key: str) -> Any:
    defaults = {"disable": 0, "level:": logging.WARNING}
    return defaults.get(key, [] if key.startswith("handlers:") else 0)


def _make_handler(logging: Any, described: list[Any]) -> Any:
    kind, where, mode, encoding, level, fmt = described
    if kind == "null":
        handler: Any = logging.NullHandler()
    elif kind == "file":
        handler = logging.FileHandler(where, mode, encoding=encoding)
    else:
        handler = logging.StreamHandler(getattr(sys, where))
    handler.setLevel(level)
    if fmt is not None:
        handler.setFormatter(logging.Formatter(fmt[0], fmt[1], fmt[2]))
    return handler


def _apply_logging(logging: Any, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        kind, _, name = key.partition(":")
        logger = logging.getLogger(name or None)
        if kind == "disable":
            logging.disable(value)
        elif kind == "level":
            logger.setLevel(value)
        elif kind == "handlers":
            wanted = list(value)
            for handler in list(logger.handlers):
                described = _handler(logging, handler)
                if described in wanted:
                    wanted.remove(described)
                else:
                    logger.removeHandler(handler)
            for described in wanted:
                logger.addHandler(_make_handler(logging, described))


#: registry -> how to read it and set it back; only those whose module is loaded are read
REGISTRIES: dict[str, Registry] = {
    "numpy": Registry("numpy", _read_numpy, _apply_numpy, _nothing),
    "pandas": Registry("pandas", _read_pandas, _apply_pandas, _pandas_default),
    "sklearn": Registry("sklearn", _read_sklearn, _apply_sklearn, _nothing),
    "torch": Registry("torch", _read_torch, _apply_torch, _nothing),
    "polars": Registry("polars", _read_polars, _apply_polars, _nothing),
    "decimal": Registry("decimal", read_decimal, _apply_decimal, _nothing),
    "sys": Registry("sys", _read_sys, _apply_sys, _nothing),
    "logging": Registry("logging", _read_logging, _apply_logging, _logging_default),
    "warnings": Registry("warnings", _read_warnings, _apply_warnings, _nothing),  # last: see apply
}


def capture() -> dict[str, dict[str, Any]]:
    """Every registry of a loaded module, read (one whose reading fails is left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, registry in REGISTRIES.items():
        module = sys.modules.get(registry.module)
        if module is None:
            continue
        try:
            out[name] = registry.read(module)
        except Exception:
            continue
    return out


def difference(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
               imported: frozenset[str] = frozenset()) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(registry -> the settings whose value changed, the changed settings that cannot be
    recorded plainly). A setting of a registry not read before has the value ``absent`` says
    (a library loaded by the block: its default where known). The loggers of libraries first
    ``imported`` in between (named for their modules, as libraries name them) are left out:
    importing torch in a block puts handlers with filters on its loggers, as it does in any
    run that imports it, and that must not keep the block from being saved."""
    changes: dict[str, dict[str, Any]] = {}
    unplain: list[str] = []
    for name, now in after.items():
        registry, old = REGISTRIES[name], before.get(name)
        module = sys.modules.get(registry.module)
        changed: dict[str, Any] = {}
        keys = list(now) + [k for k in (old or {}) if k not in now]
        for key in keys:
            if name == "logging" and imported and _logger_of(key, imported):
                continue
            was = old.get(key, _MISSING) if old is not None else _MISSING
            if was is _MISSING:
                was = registry.absent(module, key)
            value = now.get(key, _MISSING)
            if value is _MISSING:
                value = registry.absent(module, key)
                if value is _MISSING:
                    continue
            if value == was:
                continue
            if isinstance(value, Unplain):
                unplain.append(value.what)
            else:
                changed[key] = value
        if name == "warnings" and "filters" in changed:
            changed = _warnings_change((old or {}).get("filters"), changed["filters"])
        if changed:
            changes[name] = changed
    return changes, unplain


def _logger_of(key: str, modules: frozenset[str]) -> bool:
    """Whether a logging setting (``level:a.b``, ``handlers:a.b``) is of a logger named for
    one of ``modules`` or for a module inside one of them."""
    _, _, logger = key.partition(":")
    while logger:
        if logger in modules:
            return True
        logger = logger.rpartition(".")[0]
    return False


def apply(changes: dict[str, dict[str, Any]]) -> None:
    """Set recorded settings again, in ``REGISTRIES`` order (the warnings filters last, so that
    a filter the block set to 'error' does not turn a library's warning while setting into an
    error here); a library recorded but not loaded is imported (the computing run had it)."""
    import importlib
    import warnings

    failed = []
    for name, registry in REGISTRIES.items():
        if name not in changes:
            continue
        try:
            module = importlib.import_module(registry.module)
            if name == "warnings":
                registry.apply(module, changes[name])
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                registry.apply(module, changes[name])
        except Exception as exc:  # a library missing or of another version here
            failed.append(f"{name} ({type(exc).__name__}: {exc})")
    if failed:
        from ._warnings import warn

        warn(f"statecache: a hit could not set again what the computing run set in {', '.join(failed)}; "
             "the process differs from the computing run's there")


# -- atexit ---------------------------------------------------------------------------------------

# (function, args, kwargs, whether the code that registered it is the user's)
_registered: list[tuple[Any, tuple[Any, ...], dict[str, Any], bool]] = []
_real_register = atexit.register


def _recording_register(func: Any, *args: Any, **kwargs: Any) -> Any:
    _registered.append((func, args, kwargs, _called_by_user(sys._getframe(1))))
    return _real_register(func, *args, **kwargs)


def _called_by_user(frame: Any) -> bool:
    """Whether the code that called ``atexit.register`` is the user's (a script, a module or
    notebook cell of theirs): a library's registration (joblib's cleanup of the temporary
    folders its workers used, ``weakref.finalize``'s hook) belongs to the resources of the
    process that made them, and is no effect a hit may repeat in another process. A frozen
    module's frame is the standard library's: an extension module registering as it loads
    (torch's pybind11 does, from C) has the import system's frame as its caller."""
    from .key.provenance import Kind, classify

    filename = frame.f_code.co_filename
    return not filename.startswith("<frozen ") and classify(filename) in (Kind.USER, Kind.PSEUDO)


class AtExitMark(NamedTuple):
    seen: int  # registrations recorded so far
    registered: int  # functions registered in the interpreter (-1: unknown)


def _count() -> int:
    counter = getattr(atexit, "_ncallbacks", None)
    return counter() if counter is not None else -1


def atexit_mark() -> AtExitMark:
    """Where the registrations stand; from now on ``atexit.register`` records what it gets."""
    atexit.register = _recording_register  # type: ignore[assignment]
    return AtExitMark(len(_registered), _count())


def atexit_since(mark: AtExitMark) -> tuple[list[str], list[str]]:
    """(the functions the user's code registered since ``mark``, each pickled by value as
    base64 text, what could not be recorded: a registration made through a reference taken
    before the recording began, a function that cannot be pickled). A library's registrations
    are left out (``_called_by_user``); ``atexit.unregister`` is not seen."""
    made = _registered[mark.seen:]
    now = _count()
    if mark.registered >= 0 and now - mark.registered != len(made):
        return [], ["atexit.register called through a name bound before the block"]
    calls = [(func, args, kwargs) for func, args, kwargs, by_user in made if by_user]
    if not calls:
        return [], []
    import base64

    import cloudpickle

    out = []
    for call in calls:
        try:
            out.append(base64.b64encode(cloudpickle.dumps(call)).decode())
        except Exception:
            return [], [f"atexit.register({getattr(call[0], '__qualname__', call[0])!r}, ...) "
                        "with a function or arguments that cannot be pickled"]
    return out, []


def atexit_apply(recorded: list[str]) -> None:
    """Register again the functions a computing run registered (in the same order)."""
    import base64
    import pickle

    for text in recorded:
        func, args, kwargs = pickle.loads(base64.b64decode(text))
        _real_register(func, *args, **kwargs)
