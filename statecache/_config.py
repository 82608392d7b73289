"""Settings from arguments and ``STATECACHE_*`` environment variables, and the small parsers
they share with the command line (names, sizes, ages). Arguments win over the environment.

A mistake is caught where it is made: a yes/no argument takes True or False only (a string such
as ``mmap="no"`` would be true in Python), a size is above 0, and a ``STATECACHE_*`` value that
is not understood is an error naming the variable and the fix (but for ``STATECACHE_COMPRESS``,
which changes only how entries are stored: a warning). ``STATECACHE_*`` is read here and
nowhere else."""

from __future__ import annotations

import atexit
import os
import re
from collections.abc import Iterable, Sequence

from ._errors import ConfigError, InvalidNameError

# every checkpoint checks its name, most often in a process that compiles no other pattern:
# a set of characters, not a regular expression to compile on the hit path
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
# sizes and ages are parsed rarely: their patterns compile on first use (uncompiled strings here)
_SIZE_PATTERN = r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*"
_AGE_PATTERN = r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*"
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def validate_name(name: object, what: str = "checkpoint name") -> str:
    """Return ``name`` if it is a valid entry name, else raise ``InvalidNameError``.

    Valid: 1 to 100 letters, digits, ``.``, ``_`` or ``-``, not starting with ``.``; so a name
    can never be a path that escapes the cache directory.
    """
    if not isinstance(name, str) or not 0 < len(name) <= 100 or name[0] == "." or not _NAME_CHARS.issuperset(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1 to 100 letters, digits, '.', '_' or '-', "
            "not starting with '.' (for example 'features' or 'load-data.v2')"
        )
    return name


def parse_size(text: str, what: str = "size") -> int:
    """``'500M'`` -> bytes. Units K, M, G, T are powers of 1024; a plain number is bytes."""
    m = re.fullmatch(_SIZE_PATTERN, text or "", re.IGNORECASE)
    if not m:
        raise ConfigError(
            f"invalid {what} {text!r}: give bytes or a number with K, M, G or T (e.g. 500M, 1.5G)"
        )
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_age(text: str, what: str = "age") -> float:
    """``'7d'`` -> seconds. Units s, m, h, d, w."""
    m = re.fullmatch(_AGE_PATTERN, text or "", re.IGNORECASE)
    if not m:
        raise ConfigError(f"invalid {what} {text!r}: give a number with s, m, h, d or w (e.g. 30s, 15m, 7d)")
    return float(m.group(1)) * _AGE_UNITS[m.group(2).lower()]


def format_size(n: float) -> str:
    """Bytes as a short human string: ``1.2 GB``, ``340 KB``, ``12 B`` (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``0.31 s``, ``4.2 s``, ``4m12s``, ``2h05m``."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def env_flag(var: str) -> bool:
    """A boolean environment variable; a value that is not a clear yes or no is an error."""
    raw = os.environ.get(var, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"environment variable {var}={raw!r} is not understood: set it to 1 or 0 (or unset it)")


def env_quiet() -> bool:
    """``STATECACHE_QUIET`` for code that must not fail over it (a progress bar, a note after a
    save): a value that is not understood counts as not quiet, because the engine's settings,
    read before, already reported it as an error."""
    try:
        return env_flag("STATECACHE_QUIET")
    except ConfigError:
        return False


def flag_argument(value: object, what: str) -> bool | None:
    """A yes/no argument (``verbose=``, ``mmap=``): None when left out, else True or False.

    Real booleans only (0 and 1 too): a string is refused, since ``mmap="no"`` is true in
    Python; strings are the environment's form (``STATECACHE_MMAP=0``)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    fix = f"{what}=True or {what}=False (or leave it out)"
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        meant = value.strip().lower() in _TRUE
        fix = f"{what}={meant} (a bool, not the string {value!r}, which counts as true)"
    raise ConfigError(f"{what} must be True or False, got {value!r}: write {fix}")


def size_argument(value: object, what: str = "max_size") -> int | None:
    """A size cap argument: None when left out, else bytes above 0, from a number of bytes or
    a string such as ``'500M'`` (powers of 1024). Zero or negative caps are refused: they
    would evict every entry after every save."""
    if value is None:
        return None
    if isinstance(value, str):
        size = parse_size(value, what)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value):
        size = int(value)
    else:
        raise ConfigError(
            f"invalid {what} {value!r}: give a number of bytes or a string such as '500M' or '20G'"
        )
    if size <= 0:
        raise ConfigError(
            f"invalid {what} {value!r}: a size cap must be above 0 (e.g. {what}='20G'); "
            "leave it out for no cap"
        )
    return size


def age_argument(value: object, what: str = "max_age") -> float | None:
    """An age argument: None when left out, else seconds above 0, from a number of seconds or a
    string such as ``'7d'`` or ``'12h'``."""
    if value is None:
        return None
    if isinstance(value, str):
        age = parse_age(value, what)
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value):
        age = float(value)
    else:
        raise ConfigError(f"{what} must be an age such as '7d' or '12h' (or seconds), got {value!r}")
    if age <= 0:
        raise ConfigError(f"{what} must be positive, got {value!r}")
    return age


def dir_argument(value: object) -> str | None:
    """``cache_dir=`` as a str path, else ``STATECACHE_DIR``, else None (the default beside
    the code)."""
    if value is None:
        return env_dir()
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise ConfigError(
            f"cache_dir must be a directory path (a str or pathlib.Path), got {value!r} "
            f"({type(value).__name__}); pass e.g. cache_dir='.statecache' or leave it out"
        )
    return os.fsdecode(os.fspath(value))


def verbose_setting(verbose: object) -> bool:
    """``verbose=`` when given, else not ``STATECACHE_QUIET``."""
    given = flag_argument(verbose, "verbose")
    return (not env_flag("STATECACHE_QUIET")) if given is None else given


def mmap_setting(mmap: object) -> bool:
    """``mmap=`` when given, else ``STATECACHE_MMAP``."""
    given = flag_argument(mmap, "mmap")
    return env_flag("STATECACHE_MMAP") if given is None else given


def max_size_setting(max_size: object) -> int | None:
    """``max_size=`` when given, else ``STATECACHE_MAX_SIZE``, else None (no cap)."""
    return env_max_size() if max_size is None else size_argument(max_size, "max_size")


def _finite(value: float) -> bool:
    import math  # only for a number given: not on every checkpoint's path

    return math.isfinite(value)


class Refresh:
    """``STATECACHE_REFRESH``: recompute everything, or only the named checkpoints. (A plain
    class: a NamedTuple costs the first hit of a process about 1 M instructions to build.)"""

    __slots__ = ("everything", "names")

    def __init__(self, everything: bool = False, names: frozenset[str] = frozenset()) -> None:
        self.everything, self.names = everything, names

    def applies_to(self, name: str) -> bool:
        return self.everything or name in self.names


def env_refresh() -> Refresh:
    raw = os.environ.get("STATECACHE_REFRESH", "")
    value = raw.strip()
    if value.lower() in _TRUE:
        return Refresh(everything=True)
    if value.lower() in _FALSE:
        return Refresh()
    names = [n.strip() for n in value.split(",") if n.strip()]
    for n in names:
        try:
            validate_name(n)
        except InvalidNameError:
            raise ConfigError(
                f"environment variable STATECACHE_REFRESH={raw!r} is not understood: "
                "set it to 1 (recompute all) or a comma list of checkpoint names"
            ) from None
    return Refresh(names=frozenset(names))


_seen_names: set[str] = set()
_exit_check_pid: int | None = None


def refresh_applies(name: str) -> bool:
    """Whether ``STATECACHE_REFRESH`` asks to recompute checkpoint ``name``; call it once for
    every checkpoint use. It records the name, so that at exit a refreshed name that no
    checkpoint of the process used (a typo: ``featurs``) is warned about, with the names used."""
    global _exit_check_pid
    refresh = env_refresh()
    _seen_names.add(name)
    if refresh.names and _exit_check_pid != os.getpid():
        _exit_check_pid = os.getpid()  # once per process; a forked child registers its own
        atexit.register(_warn_refresh_names_not_seen, _exit_check_pid)
    return refresh.applies_to(name)


def refresh_names_not_seen(seen: Iterable[str]) -> list[str]:
    """The names in ``STATECACHE_REFRESH`` that are not in ``seen``, sorted."""
    return sorted(env_refresh().names - set(seen))


def _warn_refresh_names_not_seen(pid: int) -> None:
    if os.getpid() != pid:  # a forked child (branch, live) that exits through Python
        return
    try:
        missing = refresh_names_not_seen(_seen_names)
    except ConfigError:  # changed since: it was reported when read
        return
    if missing:
        from ._warnings import warn

        used = ", ".join(repr(n) for n in sorted(_seen_names))
        warn(
            f"STATECACHE_REFRESH names {', '.join(repr(n) for n in missing)}, but no checkpoint "
            f"of that name ran; the checkpoints that ran: {used}. Check the spelling."
        )


def env_max_size() -> int | None:
    raw = os.environ.get("STATECACHE_MAX_SIZE", "").strip()
    if not raw:
        return None
    try:
        size = parse_size(raw)
    except ConfigError:
        size = 0
    if size <= 0:
        raise ConfigError(
            f"environment variable STATECACHE_MAX_SIZE={raw!r} is not understood: "
            "give a size above 0 such as 500M or 20G (or unset it for no cap)"
        )
    return size


def env_secret() -> bytes | None:
    raw = os.environ.get("STATECACHE_SECRET")
    if raw is None or raw == "":
        return None
    return raw.encode("utf-8")


def env_dir() -> str | None:
    raw = os.environ.get("STATECACHE_DIR")
    if raw is None or raw.strip() == "":
        return None
    if "\0" in raw:
        raise ConfigError("environment variable STATECACHE_DIR contains a NUL byte: set it to a directory path")
    return os.path.expanduser(raw)


_root_warned: set[str] = set()


def env_root() -> str | None:
    """``STATECACHE_ROOT``: the project root that keys and file records are relative to, as an
    absolute folder, or None when unset. A value that names no folder is a warning naming the
    variable, then None (the root found from the script is used): the root decides only how
    much two clones share, never whether a hit is right."""
    raw = os.environ.get("STATECACHE_ROOT", "")
    if not raw.strip():
        return None
    path = os.path.abspath(os.path.expanduser(raw)) if "\0" not in raw else None
    if path is not None and os.path.isdir(path):
        return path
    if raw in _root_warned:
        return None
    _root_warned.add(raw)
    from ._warnings import warn

    warn(
        f"statecache: STATECACHE_ROOT={raw!r} is not a directory; keys are made relative to "
        "the project root found from the script instead. Set STATECACHE_ROOT to the folder "
        "of your project (or unset it)."
    )
    return None


def env_remote() -> str | None:
    """``STATECACHE_REMOTE``: the URL of the shared tier (``s3://bucket/prefix``,
    ``file:///mnt/team/cache``, any fsspec URL), or None when unset."""
    raw = os.environ.get("STATECACHE_REMOTE", "").strip()
    if not raw:
        return None
    url = remote_url(raw)
    if url is None:
        raise ConfigError(
            f"environment variable STATECACHE_REMOTE={raw!r} is not understood: give a URL such "
            "as s3://bucket/prefix or file:///mnt/team/statecache"
        )
    return url


def remote_url(text: str) -> str | None:
    """A remote as ``STATECACHE_REMOTE`` and ``remote=`` take it: a URL as is, an absolute path
    (``~`` expanded) as a ``file://`` URL; None when it is neither."""
    text = text.strip()
    if not text or "\0" in text:
        return None
    if "://" in text:
        return text
    path = os.path.expanduser(text)
    return "file://" + path if os.path.isabs(path) else None


_compress_warned: set[str] = set()  # STATECACHE_COMPRESS values already warned about


def env_compress(modes: Sequence[str]) -> str:
    """``STATECACHE_COMPRESS``: which buffers an entry stores compressed, one of ``modes`` (the
    codec policy's, passed in by the caller), "auto" when unset. A value not understood is a
    warning naming the variable and the modes (once per value and process), then "auto": the
    mode changes how an entry is stored, never what it holds, so it is no reason to stop."""
    raw = os.environ.get("STATECACHE_COMPRESS", "")
    value = raw.strip().lower()
    if value in modes:
        return value
    if value and raw not in _compress_warned:
        _compress_warned.add(raw)
        from ._warnings import warn

        warn(
            f"statecache: environment variable STATECACHE_COMPRESS={raw!r} is not understood: set "
            f"it to one of {', '.join(modes)} (or unset it); using auto"
        )
    return "auto"


def _env_age(var: str, default: float, example: str) -> float:
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    try:
        return parse_age(raw)
    except ConfigError:
        raise ConfigError(
            f"environment variable {var}={raw!r} is not understood: give a duration such as {example}"
        ) from None


def env_remote_wait() -> float:
    """``STATECACHE_REMOTE_WAIT``: how long to wait for another machine computing the same
    entry before computing it here as well (default 10m)."""
    return _env_age("STATECACHE_REMOTE_WAIT", 600.0, "90s or 10m")


def env_remote_lease() -> float:
    """``STATECACHE_REMOTE_LEASE``: a remote lease's time-to-live; a holder that has not renewed
    it for this long is taken to be gone (default 60s)."""
    return max(1.0, _env_age("STATECACHE_REMOTE_LEASE", 60.0, "60s"))
