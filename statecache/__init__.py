"""statecache: restore the slow setup of a research script in a fraction of a second.

    import statecache as sc

    with sc.checkpoint("features"):      # skipped on a hit; what it assigns is restored
        X = featurize(raw)

    @sc.cached_setup                     # return value and assigned globals are cached
    def load(path): ...

    with sc.branch() as run:             # body runs in a forked child
        run.keep(score=evaluate(X))

The public names load lazily so that ``import statecache`` stays cheap.
"""

from __future__ import annotations

from ._errors import BranchError, StateCacheError, StateCacheWarning
from ._version import __version__
from .key import files as _files
from .key import importwatch as _importwatch
from .key import maintext as _maintext
from .key import readernames as _readernames

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

# Watch imports from now on: the text each of the user's modules loads from, and the libraries
# whose functions statecache wraps once they load (key/importwatch.py); and the files the
# user's functions read, for a memo filled above a block (key/readlog.py). Reader modules
# (polars, pyarrow, ...) get their functions wrapped in place as they load, so a reader the
# script holds in a dict, a partial or a default argument is the wrapper (key/readernames.py).
# The script's own text is kept first, so that one saved while it runs is still located and
# keyed by the text that runs (key/maintext.py).
_maintext.keep()
_importwatch.install()
_readernames.watch()
_files.watch_reads()

__all__ = [
    "BranchError",
    "StateCacheError",
    "StateCacheWarning",
    "__version__",
    "branch",
    "branch_map",
    "cached_setup",
    "checkpoint",
    "load_ipython_extension",
    "register_fingerprint",
]

_LAZY = {
    "checkpoint": "._checkpoint",
    "cached_setup": "._setup",
    "branch": "._fork",
    "branch_map": "._fork",
    "load_ipython_extension": "._ipython",
    "unload_ipython_extension": "._ipython",
    "register_fingerprint": ".key.registry",
}

if TYPE_CHECKING:
    from ._checkpoint import checkpoint
    from ._fork import branch, branch_map
    from ._ipython import load_ipython_extension
    from ._setup import cached_setup
    from .key.registry import register_fingerprint


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'statecache' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
