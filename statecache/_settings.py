"""What one use of a checkpoint is configured with: its arguments merged with the
``STATECACHE_*`` environment (through ``_config``'s readers), and where its cache lives."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

from ._config import (
    age_argument,
    dir_argument,
    env_compress,
    env_flag,
    env_remote,
    env_secret,
    max_size_setting,
    mmap_setting,
    refresh_applies,
    remote_url,
    verbose_setting,
)
from ._errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any, Literal

Remote = str | os.PathLike[str] | bool | None  # remote=: a URL, False (no remote) or None (the env's)


class Settings:
    """Arguments merged with the ``STATECACHE_*`` environment, read once per use.

    ``remote`` is the URL of the shared tier (None: none); ``shared`` is False when the call
    said ``remote=False``: then no second tier at all, not even one added with ``add_tier``.
    ``compress`` is read when a save asks for it, so that a hit never reads it."""

    def __init__(
        self,
        name: str,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool | None = None,
        mmap: bool | None = None,
        max_size: int | str | None = None,
        max_age: float | str | None = None,
        remote: Remote = None,
        compress: str | None = None,
    ):
        self.disabled = env_flag("STATECACHE_DISABLE")
        self.refresh = refresh_applies(name)
        self.verbose = verbose_setting(verbose)
        self.mmap = mmap_setting(mmap)
        self.secret = env_secret()
        self.max_size = max_size_setting(max_size)
        self.max_age = age_argument(max_age)
        self.cache_dir = dir_argument(cache_dir)
        self.shared = remote is not False
        self.remote = env_remote() if remote is None else remote_option(remote) or None
        self._compress = compress_option(compress)

    @functools.cached_property
    def compress(self) -> str:
        """``compress=`` when given, else ``STATECACHE_COMPRESS``, else "auto" (``entry.policy``)."""
        if self._compress is not None:
            return self._compress
        from .entry.policy import MODES

        return env_compress(MODES)


class Options:
    """What ``checkpoint(...)``, ``@cached_setup(...)`` and ``%%checkpoint`` are given besides the
    name, checked once where it is given; ``settings(name)`` merges it with the environment at
    each use. The public signatures keep every option explicit (for users and type checkers)
    and hand them here as they are."""

    def __init__(
        self,
        what: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        ignore: str | Iterable[str] = (),
        files: str | Iterable[str] = (),
        verbose: bool | None = None,
        mmap: bool | None = None,
        max_size: int | str | None = None,
        version: str | None = None,
        max_age: float | str | None = None,
        remote: Remote = None,
        compress: str | None = None,
    ):
        self.ignore = as_names(ignore, "ignore")
        self.files = as_names(files, "files")
        if version is not None and not isinstance(version, str):
            raise ConfigError(f"{what}: version= takes a string, e.g. version='2'")
        self.version = version
        try:
            remote, compress = remote_option(remote), compress_option(compress)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc}") from None
        self._given = (cache_dir, verbose, mmap, max_size, max_age, remote, compress)

    def settings(self, name: str) -> Settings:
        return Settings(name, *self._given)


def as_names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    """An ``ignore=``/``files=`` argument as a tuple of strings (one string is one name)."""
    if isinstance(value, str):
        items: tuple[Any, ...] = (value,)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise ConfigError(
                f"{what} must be a name or a list of names (e.g. {what}=['logger']), got {value!r}"
            ) from None
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what} must be a name or a list of names, got {item!r}")
    return items


def remote_option(remote: object) -> str | Literal[False] | None:
    """``remote=`` checked: None (``STATECACHE_REMOTE`` decides, at each use), False (no remote
    for this call), else the URL (a plain absolute path or ``pathlib.Path`` is a shared mount:
    ``file://``)."""
    if remote is None or remote is False:
        return remote
    if isinstance(remote, os.PathLike):
        remote = os.fspath(remote)
    if not isinstance(remote, str) or not remote.strip():
        raise ConfigError(
            f"remote= takes a URL such as 's3://bucket/prefix', or False to use no remote (leave "
            f"it out for STATECACHE_REMOTE), got {remote!r}")
    url = remote_url(remote)
    if url is None:
        raise ConfigError(
            f"remote={remote.strip()!r} is not understood: give a URL such as s3://bucket/prefix or "
            "file:///mnt/team/statecache")
    return url


def compress_option(compress: object) -> str | None:
    """``compress=`` checked by the codec policy (one of its modes): None when left out."""
    if compress is None:
        return None
    from .entry.policy import check_mode

    try:
        return check_mode(compress)
    except ValueError as exc:
        raise ConfigError(f"{exc} (or leave it out: STATECACHE_COMPRESS, else auto)") from None


def where(filename: str, line: int) -> str:
    """``file:line`` of a checkpoint, the file absolute when it exists."""
    return f"{os.path.abspath(filename) if os.path.exists(filename) else filename}:{line}"
