"""Settings from arguments and ``STATECACHE_*`` environment variables, and the small parsers
they share with the command line (names, sizes, ages). Arguments win over the environment."""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ._errors import ConfigError, InvalidNameError

_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}")
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
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
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


class Refresh(NamedTuple):
    """``STATECACHE_REFRESH``: recompute everything, or only the named checkpoints."""

    everything: bool = False
    names: frozenset[str] = frozenset()

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


def env_max_size() -> int | None:
    raw = os.environ.get("STATECACHE_MAX_SIZE", "").strip()
    if not raw:
        return None
    try:
        return parse_size(raw)
    except ConfigError:
        raise ConfigError(
            f"environment variable STATECACHE_MAX_SIZE={raw!r} is not understood: "
            "give a size such as 500M or 20G"
        ) from None


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


def env_remote() -> str | None:
    """``STATECACHE_REMOTE``: the URL of the shared tier (``s3://bucket/prefix``,
    ``file:///mnt/team/cache``, any fsspec URL), or None when unset."""
    raw = os.environ.get("STATECACHE_REMOTE", "").strip()
    if not raw:
        return None
    if "\0" in raw or ("://" not in raw and not os.path.isabs(os.path.expanduser(raw))):
        raise ConfigError(
            f"environment variable STATECACHE_REMOTE={raw!r} is not understood: give a URL such "
            "as s3://bucket/prefix or file:///mnt/team/statecache"
        )
    return raw if "://" in raw else "file://" + os.path.expanduser(raw)


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
