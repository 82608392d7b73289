"""What one use of a checkpoint is configured with: its arguments merged with the
``STATECACHE_*`` environment (through ``_config``'s readers), and where its cache lives."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from ._config import (
    age_argument,
    dir_argument,
    env_flag,
    env_remote,
    env_secret,
    max_size_setting,
    mmap_setting,
    refresh_applies,
    verbose_setting,
)
from ._errors import ConfigError
from .key import components as _components


class Settings:
    """Arguments merged with the ``STATECACHE_*`` environment, read once per use."""

    def __init__(
        self,
        name: str,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool | None = None,
        mmap: bool | None = None,
        max_size: int | str | None = None,
        max_age: float | str | None = None,
        remote: str | None = None,
    ):
        self.disabled = env_flag("STATECACHE_DISABLE")
        self.refresh = refresh_applies(name)
        self.verbose = verbose_setting(verbose)
        self.mmap = mmap_setting(mmap)
        self.secret = env_secret()
        self.max_size = max_size_setting(max_size)
        self.max_age = age_argument(max_age)
        self.cache_dir = dir_argument(cache_dir)
        self.remote = remote_argument(remote)


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
        remote: str | None = None,
    ):
        self.ignore = as_names(ignore, "ignore")
        self.files = as_names(files, "files")
        if version is not None and not isinstance(version, str):
            raise ConfigError(f"{what}: version= takes a string, e.g. version='2'")
        self.version = version
        self._given = (cache_dir, verbose, mmap, max_size, max_age, remote)

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


def remote_argument(remote: str | None) -> str | None:
    """``remote=`` (a URL or an absolute path, as ``STATECACHE_REMOTE`` takes it), else
    ``STATECACHE_REMOTE``; None: no remote tier."""
    if remote is None:
        return env_remote()
    if not isinstance(remote, str) or not remote.strip():
        raise ConfigError(f"remote= takes a URL such as 's3://bucket/prefix', got {remote!r}")
    remote = remote.strip()
    if "://" in remote:
        return remote
    path = os.path.expanduser(remote)
    if not os.path.isabs(path):
        raise ConfigError(
            f"remote={remote!r} is not understood: give a URL such as s3://bucket/prefix or "
            "file:///mnt/team/statecache")
    return "file://" + path


def default_cache_dir(filename: str) -> str:
    """``.statecache`` beside the file holding the checkpoint; for notebook cells beside the
    notebook; else in the working directory."""
    from .store.layout import CACHE_DIR_NAME

    if _components.is_cell_file(filename):
        notebook = _components.notebook_path()
        base = os.path.dirname(notebook) if notebook else os.getcwd()
        return os.path.join(base, CACHE_DIR_NAME)
    if os.path.isfile(filename):
        return os.path.join(os.path.dirname(os.path.abspath(filename)), CACHE_DIR_NAME)
    return os.path.join(os.getcwd(), CACHE_DIR_NAME)


def where(filename: str, line: int) -> str:
    """``file:line`` of a checkpoint, the file absolute when it exists."""
    return f"{os.path.abspath(filename) if os.path.exists(filename) else filename}:{line}"
