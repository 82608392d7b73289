"""The project root: what keys and file records are relative to, so that two clones of one
project at different paths (on two machines, or beside each other) compute the same keys.

The root is ``STATECACHE_ROOT`` when it names a directory; else the nearest folder at or above
the script being run that holds ``pyproject.toml`` or ``.git``; else the nearest one holding a
``.statecache`` cache directory; else the script's own folder. "The script" is the ``__main__``
file (the notebook under Jupyter, the working directory for ``python -c`` and IPython). One
root per process: the source component, path values and data-file records all use it, so a
value keyed relative to the root and the file read through it are checked at the same place.
"""

from __future__ import annotations

import os
import sys

from .process import in_ipython, ipython_shell

#: Files or folders whose presence marks a project's top folder.
MARKERS = ("pyproject.toml", ".git")

_roots: dict[tuple[str | None, str], str] = {}


def is_cell_file(filename: str) -> bool:
    """True for the pseudo-file of an IPython or Jupyter cell: ``<ipython-input-3-...>`` in the
    terminal, ``<tmp>/ipykernel_<pid>/<hash>.py`` under ipykernel (a name that changes with
    every kernel, so it must never reach a key)."""
    if filename.startswith("<ipython-input-"):
        return True
    head, base = os.path.split(filename)
    parent = os.path.basename(head)
    return (
        parent.startswith("ipykernel_") and parent[10:].isdigit()
        and base.endswith(".py") and base[:-3].isdigit()
    )


def notebook_path() -> str | None:
    """The notebook the running kernel serves: VS Code's ``__vsc_ipynb_file__``, else Jupyter's
    ``JPY_SESSION_NAME`` (absolute in recent servers; a relative one is looked up from the
    kernel's working directory, which Jupyter sets to the notebook's). None when unknown."""
    shell = ipython_shell()
    if shell is not None:
        vsc = getattr(shell, "user_ns", {}).get("__vsc_ipynb_file__")
        if isinstance(vsc, str) and vsc:
            return os.path.abspath(os.path.expanduser(vsc))
    session = os.environ.get("JPY_SESSION_NAME")
    if not session:
        return None
    path = os.path.expanduser(session)
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.abspath(os.path.basename(path))


def script_dir() -> str:
    """The folder of what is being run: the notebook's, the ``__main__`` file's, or the
    working directory (``python -c``, an IPython terminal) as it was when first asked, so that
    a block that changes directory does not move the root between its key and its records."""
    global _first_cwd
    if in_ipython():
        notebook = notebook_path()
        if notebook:
            return os.path.dirname(notebook)
    else:
        main = getattr(sys.modules.get("__main__"), "__file__", None)
        if isinstance(main, str) and os.path.isfile(main):
            return os.path.dirname(os.path.abspath(main))
    if _first_cwd is None:
        _first_cwd = os.getcwd()
    return _first_cwd


_first_cwd: str | None = None


def find_root(start: str) -> str:
    """The nearest folder at or above ``start`` holding a marker, else the nearest one holding
    a ``.statecache`` directory, else ``start``. A default cache directory sits beside every
    script, so it marks the project only where no ``pyproject.toml`` or ``.git`` does."""
    from ..store.layout import CACHE_DIR_NAME

    folder, holding_cache = os.path.abspath(start), None
    while True:
        if any(os.path.exists(os.path.join(folder, marker)) for marker in MARKERS):
            return folder
        if holding_cache is None and os.path.isdir(os.path.join(folder, CACHE_DIR_NAME)):
            holding_cache = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return holding_cache or os.path.abspath(start)
        folder = parent


def project_root() -> str:
    """The project root of this process (absolute, no trailing separator but for ``/``)."""
    from .._config import env_root

    given = env_root()
    start = script_dir()
    key = (given, start)
    root = _roots.get(key)
    if root is None:
        root = _roots[key] = given or find_root(start)
    return root


def forms(root: str) -> tuple[str, ...]:
    """``root`` as given and with its symbolic links resolved (``Path(__file__).resolve()``
    names the project by the second), without a trailing separator (``""`` for ``/``)."""
    found = _forms.get(root)
    if found is None:
        found = _forms[root] = tuple(dict.fromkeys(f.rstrip(os.sep) for f in (root, os.path.realpath(root))))
    return found


_forms: dict[str, tuple[str, ...]] = {}


def inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (as given or resolved) when it is ``root`` or below it,
    else None."""
    for form in forms(root):
        try:
            rel = os.path.relpath(path, form or os.sep)
        except ValueError:  # another drive
            continue
        if not (rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel)):
            return rel
    return None


def root_suffix(text: str, root: str) -> str | None:
    """What follows ``root`` in ``text`` when ``text`` is ``root`` or an absolute path below it
    (``"/p"`` -> ``""``, ``"/p/x.csv"`` -> ``"/x.csv"``), else None. The text is not
    normalised, so two different strings never give the same suffix; a text with a ``..``
    part is not below the root (``/p/../q`` is outside it)."""
    pairs = _pairs.get(root)
    if pairs is None:
        pairs = _pairs[root] = tuple((base, base + os.sep) for base in forms(root))
    for base, prefix in pairs:
        if text.startswith(prefix) or (base and text == base):
            suffix = text[len(base):]
            if ".." in suffix and _climbs(suffix):  # rare: only then split into parts
                return None
            return suffix
    return None


_pairs: dict[str, tuple[tuple[str, str], ...]] = {}


def _climbs(suffix: str) -> bool:
    """Whether a path suffix has a ``..`` part."""
    parts = suffix.replace(os.altsep, os.sep).split(os.sep) if os.altsep else suffix.split(os.sep)
    return os.pardir in parts


def default_cache_dir(filename: str) -> str:
    """``.statecache`` beside the file holding the checkpoint; for notebook cells beside the
    notebook; else in the working directory."""
    from ..store.layout import CACHE_DIR_NAME

    if is_cell_file(filename):
        notebook = notebook_path()
        base = os.path.dirname(notebook) if notebook else os.getcwd()
        return os.path.join(base, CACHE_DIR_NAME)
    if os.path.isfile(filename):
        return os.path.join(os.path.dirname(os.path.abspath(filename)), CACHE_DIR_NAME)
    return os.path.join(os.getcwd(), CACHE_DIR_NAME)
