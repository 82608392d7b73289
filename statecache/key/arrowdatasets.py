"""pyarrow datasets as inputs: what they are and the stat stamps of the local files they read.

A dataset made above a block is read in it by C++ methods (``to_table``, ``head``,
``scanner``), which no wrapper can reach; so it counts by value instead (``key.registry``).
"""

from __future__ import annotations

import os
from typing import Any


def fingerprint_datasets(module: Any) -> None:
    """A pyarrow dataset (``ds.dataset(...)``, the one inside a ``pq.ParquetDataset``) or one
    of its file fragments, made above a block and read in it by C++ (``to_table``, ``head``,
    ``scanner``: compiled methods, which cannot be wrapped), counts as an input by what it is
    (its pickled fragments, schema and format) and by the stat stamp of each local file it
    reads: a rewritten file changes the key. A stamp, not the content, for a lookup cannot
    read a whole dataset, so a copy of the project (other inodes) computes once."""
    from .registry import register_fingerprint, registered_for

    for kind, fingerprint in ((getattr(module, "FileSystemDataset", None), _dataset_fingerprint),
                              (getattr(module, "FileFragment", None), _fragment_fingerprint)):
        if isinstance(kind, type) and registered_for(kind) is None:  # the user's own comes first
            register_fingerprint(kind, fingerprint)


def _dataset_fingerprint(dataset: Any) -> Any:
    try:
        return dataset.__reduce__()[1]  # its fragments (each with its stamp), schema, format, ...
    except ValueError:  # filtered or projected (ds.dataset(...).filter(...)): no fragments
        stamps = [_file_stamp(dataset.filesystem, path) for path in dataset.files]
        return (dataset.files, stamps, dataset.schema, dataset.format, dataset.partition_expression,
                dataset._scan_options)  # the filter and the columns a scan keeps


def _fragment_fingerprint(fragment: Any) -> Any:
    return fragment.__reduce__()[1], _file_stamp(fragment.filesystem, fragment.path)


def _file_stamp(filesystem: Any, path: str) -> Any:
    """The stat stamp of a dataset's file on the local filesystem (None on another one)."""
    from pyarrow.fs import LocalFileSystem

    if not isinstance(filesystem, LocalFileSystem):
        return None
    from .stamps import stat_stamp

    try:
        return stat_stamp(os.stat(path))
    except OSError:
        return "missing"
