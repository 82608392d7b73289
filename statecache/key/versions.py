"""Versions of installed packages, by which installed code counts in a key.

A module's distribution is found from where its files are: the ``.dist-info`` (or
``.egg-info``) directories beside its top-level package, matched by name, ``top_level.txt``
or ``RECORD``, which reads a few small files of that one directory. Only when that fails does
it fall back to ``importlib.metadata`` (whose ``packages_distributions()`` reads the file list
of every installed package: 80 ms on a machine with scikit-learn). Results are cached.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any

from .provenance import STDLIB_NAMES

_LOADED_VERSIONS: dict[str, str] = {}


def package_version(module_name: str) -> str:
    """Version of the top-level package of ``module_name`` (``__version__``, else installed
    metadata) with its installed dependencies' (``dependencies_suffix``); ``""`` for stdlib,
    builtins and anything without one (the user's modules).

    Cached per package once it is imported. For a package not imported (yet), the metadata
    alone: callers that may meet a package both imported and not (an import inside a
    function that a hit skips) use ``installed_version`` so their key cannot depend on it.
    """
    top = module_name.partition(".")[0]
    if not top or top in STDLIB_NAMES or top == "__main__":
        return ""
    module = sys.modules.get(top)
    if module is None:
        return installed_version(top)
    hit = _LOADED_VERSIONS.get(top)
    if hit is None:
        version = getattr(module, "__version__", None)
        hit = (version if isinstance(version, str) and version else distribution_version(top))
        hit += dependencies_suffix(top)
        _LOADED_VERSIONS[top] = hit
    return hit


@functools.cache
def distribution_version(top: str) -> str:
    """Installed metadata version of the distribution providing import name ``top`` ("" if
    none), the same whether or not ``top`` is imported; cached."""
    if not top or top in STDLIB_NAMES:
        return ""
    meta = _metadata_of(top)
    if meta is not None:
        version = _read_version(meta)
        if version:
            return version
    return _metadata_version(top)


def installed_version(top: str) -> str:
    """What an installed package counts by in a key, whether or not it is imported: its
    distribution's version and its dependencies' (``dependencies_suffix``)."""
    version = distribution_version(top)
    return version + dependencies_suffix(top) if version else ""


@functools.cache
def _metadata_of(top: str) -> str | None:
    site_dir = _site_dir_of(top)
    return _metadata_dir(site_dir, top) if site_dir is not None else None


@functools.cache
def dependencies_suffix(top: str) -> str:
    """``+deps.<digest>`` of the versions of every installed distribution that the one
    providing ``top`` requires (``Requires-Dist``, extras included: pandas reads parquet
    through pyarrow, an extra), transitively, so that upgrading pyarrow under pandas or scipy
    under scikit-learn changes the key; ``""`` when none is installed or nothing is known."""
    meta = _metadata_of(top)
    if meta is None:
        return ""
    index = _installed_index()
    versions: dict[str, str] = {}
    queue = list(_requirements(meta, True))
    while queue:
        name = queue.pop()
        if name in versions or name not in index:
            continue
        versions[name] = _read_version(index[name])
        queue.extend(_requirements(index[name], False))
    if not versions:
        return ""
    from .hashing import digest

    listed = "\n".join(f"{n}=={v}" for n, v in sorted(versions.items()))
    return "+deps." + digest(listed.encode()).hex()[:16]


@functools.cache
def _installed_index() -> dict[str, str]:
    """Normalised distribution name -> its metadata directory, over the sys.path entries
    (the first one found wins, as for imports)."""
    index: dict[str, str] = {}
    for entry in sys.path:
        if not isinstance(entry, str) or not os.path.isdir(entry or "."):
            continue
        for meta in _meta_dirs(entry or "."):
            name = _normalise(meta.partition("-")[0].rsplit(".", 1)[0])
            index.setdefault(name, os.path.join(entry or ".", meta))
    return index


_REQUIREMENT = r"^Requires-Dist:\s*([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$"  # compiled at first use (re caches it)


@functools.cache
def _requirements(meta: str, extras: bool) -> tuple[str, ...]:
    """Normalised names of the distributions a metadata directory requires; with ``extras``
    those of its optional extras too (the package itself may use them when installed; further
    down the tree only what is required, so that pytest's version is no part of pandas')."""
    headers = _headers(os.path.join(meta, "METADATA")) or _headers(os.path.join(meta, "PKG-INFO")) or ""
    return tuple(
        _normalise(name) for name, rest in re.findall(_REQUIREMENT, headers, re.MULTILINE) if extras or "extra" not in rest
    )


def _site_dir_of(top: str) -> str | None:
    """The directory that holds the top-level package or module ``top`` (found, not imported)."""
    module = sys.modules.get(top)
    path: Any = getattr(module, "__file__", None) if module is not None else None
    locations = list(getattr(module, "__path__", None) or []) if module is not None else []
    if module is None:
        spec = top_spec(top)
        if spec is None:
            return None
        path = spec.origin if spec.has_location else None
        locations = list(spec.submodule_search_locations or [])
    if isinstance(path, str) and path:
        is_package = os.path.splitext(os.path.basename(path))[0] == "__init__"
        return os.path.dirname(os.path.dirname(path) if is_package else path)
    if locations and isinstance(locations[0], str):  # a namespace package
        return os.path.dirname(locations[0])
    return None


def top_spec(top: str) -> Any:
    """The import system's spec of top-level module ``top`` (found, not imported), or None."""
    import importlib.util

    try:
        return importlib.util.find_spec(top)
    except (ImportError, ValueError, AttributeError):
        return None


@functools.cache
def _meta_dirs(site_dir: str) -> tuple[str, ...]:
    try:
        names = os.listdir(site_dir)
    except OSError:
        return ()
    return tuple(sorted(n for n in names if n.endswith((".dist-info", ".egg-info"))))


_SEPARATORS = re.compile(r"[-_.]+")


@functools.cache
def _normalise(name: str) -> str:
    return _SEPARATORS.sub("_", name).lower()


def _metadata_dir(site_dir: str, top: str) -> str | None:
    """The metadata directory in ``site_dir`` of the distribution that installs ``top``."""
    metas = _meta_dirs(site_dir)
    wanted = _normalise(top)
    for meta in metas:  # the common case: the distribution is named like the package
        if _normalise(meta.partition("-")[0].rsplit(".", 1)[0]) == wanted:
            return os.path.join(site_dir, meta)
    record = None  # compiled only for a distribution without top_level.txt
    # Most likely first: an import name is usually a subsequence of its distribution's name
    # (sklearn in scikit_learn, yaml in PyYAML), so a few small files are read, not all.
    ordered = sorted(metas, key=lambda meta: not _subsequence(wanted.strip("_"), _normalise(meta)))
    for meta in ordered:
        path = os.path.join(site_dir, meta)
        tops = _read(os.path.join(path, "top_level.txt"))
        if tops is not None:
            if top in tops.split():
                return path
            continue
        # No top_level.txt (meson, hatch, flit wheels): the file list.
        files = _read(os.path.join(path, "RECORD")) or _read(os.path.join(path, "installed-files.txt"))
        if files is not None:
            record = record or re.compile(rf"(?:^|\n){re.escape(top)}(?:/|\.py,|\.[^/\n,]*(?:so|pyd),)")
            if record.search(files):
                return path
    return None


def _subsequence(short: str, long: str) -> bool:
    chars = iter(long)
    return all(c in chars for c in short)


def _read(path: str, limit: int = -1) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(limit)
    except OSError:
        return None


@functools.cache
def _headers(path: str) -> str | None:
    """A metadata file's headers: its text up to the first blank line, where the long
    description begins (pandas': 15 KB of text after 3 KB of headers); None if unreadable.
    Read once however many packages require the distribution."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:  # newlines read as \n
            text = ""
            while True:
                chunk = f.read(4096)
                text += chunk
                end = text.find("\n\n", max(0, len(text) - len(chunk) - 1))
                if end >= 0:
                    return text[:end]
                if not chunk:
                    return text
    except OSError:
        return None


def _read_version(meta: str) -> str:
    text = _headers(os.path.join(meta, "METADATA")) or _headers(os.path.join(meta, "PKG-INFO"))
    if text is None and os.path.isfile(meta):  # an .egg-info file is PKG-INFO itself
        text = _headers(meta)
    for line in (text or "")[: 1 << 16].splitlines():
        if not line:
            break  # the headers end at the first blank line
        if line.startswith("Version:"):
            return line.partition(":")[2].strip()
    return ""


@functools.cache
def _distributions() -> dict[str, list[str]]:
    import importlib.metadata  # heavy (email, zipfile): only when a version is looked up

    try:
        return dict(importlib.metadata.packages_distributions())
    except Exception:  # broken metadata of some installed package: no mapping
        return {}


def _metadata_version(top: str) -> str:
    import importlib.metadata  # heavy (email, zipfile): only when a version is looked up

    try:
        return importlib.metadata.version(top)
    except Exception:  # PackageNotFoundError, or a broken METADATA file
        pass
    for dist in _distributions().get(top, []):  # import name != distribution name
        try:
            return importlib.metadata.version(dist)
        except Exception:
            continue
    return ""
