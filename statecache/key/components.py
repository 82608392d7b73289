"""The key of a cached computation: its components and their digest.

A key is the xxh3-128 digest of a small JSON document of components: ``code`` (the block's
normalised AST, or the user's ``version=`` string), ``source`` (the file holding it),
``inputs`` (label -> fingerprint), ``files`` (explicit ``files=`` globs, by content) and
``env`` (Python major.minor, entry format version, ``KEY_SCHEMA_VERSION``). Every front end
builds its components here, so a key means the same thing whichever front end made it. The
components are stored in the entry's metadata, so that a miss can say what changed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping

from .._errors import ConfigError, FingerprintError
from .project import inside, is_cell_file, notebook_path, project_root

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

#: Bump when the meaning or the encoding of a component changes: every older key then misses,
#: instead of a new rule silently reusing state that an old rule keyed.
KEY_SCHEMA_VERSION = 4

#: Length (hex digits) of a key as used in entry names.
KEY_LENGTH = 32


def env_component() -> str:
    """Python major.minor, the entry format version and the key schema version; and how the
    interpreter was started where that changes what code computes: ``-O``/``-OO`` (asserts
    and docstrings stripped) and a fixed ``PYTHONHASHSEED`` (the order of a set of strings).
    A default interpreter adds nothing, so its keys stay as they were."""
    from ..entry.format import FORMAT_VERSION

    major, minor = sys.version_info[:2]
    out = f"python{major}.{minor}/format{FORMAT_VERSION}/key{KEY_SCHEMA_VERSION}"
    if sys.flags.optimize:
        out += f"/O{sys.flags.optimize}"
    seed = os.environ.get("PYTHONHASHSEED", "random")
    if seed != "random" and seed != "":
        out += f"/hashseed{seed}"
    return out


def code_component(body_digest: bytes | Callable[[], bytes], version: str | None = None) -> str:
    """The block's own code: its normalised-AST digest, or ``version:<string>`` when the user
    gave ``version=`` (then edits of the block itself do not count; its helpers still do)."""
    if version is not None:
        return f"version:{version}"
    return (body_digest() if callable(body_digest) else body_digest).hex()


def files_component(patterns: Iterable[str], base_dir: str) -> dict[str, str]:
    """Explicit ``files=``: every file each glob matches, and every file under a directory it
    names, by content (relative globs are relative to ``base_dir``; a pattern that matches no
    file counts as such)."""
    from .files import expand_files_pattern
    from .hashing import file_digest

    out: dict[str, str] = {}
    for pattern in patterns:
        matches = expand_files_pattern(pattern, base_dir)
        if not matches:
            out[f"{pattern}: no match"] = ""
        for path in matches:
            if os.path.isfile(path):
                try:
                    out[os.path.relpath(path, base_dir)] = file_digest(path)
                except OSError as exc:
                    raise ConfigError(
                        f"files={pattern!r} matches {path}, which cannot be read "
                        f"({exc.strerror or exc}): fix its permissions or leave it out of files="
                    ) from None
    return out


def source_component(filename: str, cache_dir: str) -> str:
    """The checkpoint's file as the key sees it: relative to the project root (see
    ``project``), so that two clones of a project at different paths share keys; a file
    outside the root counts by its absolute path. Notebook cells count as their notebook's
    (``<ipython>`` when it is unknown): cell file names change per kernel. ``cache_dir`` is
    not used (kept for the front ends' calls): the root, not the cache, places a project."""
    if is_cell_file(filename):
        filename = notebook_path() or "<ipython>"
    if not os.path.exists(filename):
        return filename
    path = os.path.abspath(filename)
    rel = inside(path, project_root())
    return path if rel is None else rel


def fingerprint_values(
    values: Mapping[str, Any],
    ignore: Iterable[str] = (),
    label: Callable[[str], str] = str,
    context: str = "",
) -> dict[str, str]:
    """label -> hex fingerprint of each value; a FingerprintError names the input and, when
    ``context`` is given, the checkpoint it belongs to."""
    from .values import Fingerprinter

    ignored = tuple(ignore)
    fp = Fingerprinter(ignore=ignored)
    out = {}
    for name, value in values.items():
        try:
            out[name] = fp.value(value, label(name)).hex()
        except FingerprintError as exc:
            raise FingerprintError(f"{context}: {exc}" if context else str(exc)) from None
    from .inputs import SETTINGS_LIBRARIES

    if any(name in sys.modules for name in SETTINGS_LIBRARIES):  # pd.set_option, for a dict of frames
        from .libsettings import settings_met

        out.update(settings_met(fp, {*out, *ignored}))
    return out


def components(
    code: str, source: str, inputs: Mapping[str, str], files: Mapping[str, str]
) -> dict[str, Any]:
    """The components document of one key (the environment component added here)."""
    return {
        "code": code,
        "source": source,
        "inputs": dict(inputs),
        "files": dict(files),
        "env": env_component(),
    }


def key_of(parts: Mapping[str, Any]) -> str:
    """The key of a components document: its xxh3-128 digest, ``KEY_LENGTH`` hex digits."""
    from .hashing import digest

    return digest(json.dumps(parts, sort_keys=True).encode()).hex()[:KEY_LENGTH]


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two components documents, in a few words each, most telling
    first (an empty list when they are equal)."""
    if old.get("env") != new.get("env"):
        return ["Python, statecache format or key schema version changed"]
    if old.get("code") != new.get("code"):
        return ["code changed"]
    inputs = _differences(old.get("inputs", {}), new.get("inputs", {}), lambda label: f"input '{label}'")
    return inputs + _differences(old.get("files", {}), new.get("files", {}), lambda path: f"file {path}")


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], noun: Callable[[str], str]) -> list[str]:
    """``new <noun>``, ``<noun> changed``, ``<noun> gone`` for the entries of two mappings."""
    reasons = []
    for k, v in new.items():
        if k not in old:
            reasons.append(f"new {noun(k)}")
        elif old[k] != v:
            reasons.append(f"{noun(k)} changed")
    return reasons + [f"{noun(k)} gone" for k in old if k not in new]


def summary(reasons: list[str], limit: int = 3) -> str:
    """A few reasons joined for a status line (``settings changed`` when there are none)."""
    if not reasons:
        return "settings changed"
    more = len(reasons) - limit
    return ", ".join(reasons[:limit]) + (f" (+{more} more)" if more > 0 else "")
