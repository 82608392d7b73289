"""numpy views of arrays saved in the same state, saved as views: ``head, tail = data[:4],
data[2:]`` or ``signal[::100]`` made in a block come back over the restored ``data`` or
``signal``, so a write through a view reaches its base after a hit as after the computing run,
and the bytes are stored once (in band or out of band: the base's own pickle holds them).

A view is saved so only when the array that owns its memory (its root: the end of its
``.base`` chain, a plain contiguous ndarray) is pickled in the same stream; any other view is
saved as numpy saves it, a copy of its elements (a small view never drags its whole base into
the entry). A view met before its root in the stream order cannot know that yet: the state is
pickled a second time, then knowing it (``late``). How a view lies in its root is
``_views.view_origin``'s, rebuilt by ``_views.numpy_view``.

The writer uses this only when numpy is loaded; the reader's unpickler imports it only for an
entry that holds such a view.
"""

from __future__ import annotations

import sys
from typing import Any


class ArrayViews:
    """The reducer of plain ndarrays for one pickling: a view of a root pickled in the same
    stream becomes ``rebuild_view(root, how it lies)``; anything else is numpy's own pickle."""

    def __init__(self, np: Any, share: frozenset[int] = frozenset()) -> None:
        self.np = np
        self.share = share  # ids of roots whose views are saved as views wherever they are met
        self.seen: set[int] = set()  # ids of roots pickled in this stream so far
        self.pending: set[int] = set()  # ids of roots of views pickled as copies so far
        self.late: set[int] = set()  # roots pickled after a view of them was copied

    def again(self) -> ArrayViews:
        """The reducer of a second pickling, sharing the roots this one met late."""
        return ArrayViews(self.np, frozenset(self.late | self.share))

    def reduce(self, array: Any) -> Any:
        """The reduce tuple of an exact ndarray that is a view of a root in this stream, else
        None (the array pickles as numpy pickles it)."""
        if array.base is None:
            self._root_met(id(array))
            return None
        return self._view(array)

    def table_entry(self, array: Any) -> Any:
        """For a pickler's ``dispatch_table``: always a reduce tuple (numpy's own by default);
        ``reduce`` inlined for the common array that owns its memory."""
        if array.base is None:
            key = id(array)
            self.seen.add(key)
            if key in self.pending:
                self.late.add(key)
            return array.__reduce_ex__(5)
        reduced = self._view(array)
        return array.__reduce_ex__(5) if reduced is None else reduced

    def _root_met(self, key: int) -> None:
        self.seen.add(key)
        if key in self.pending:
            self.late.add(key)

    def _view(self, array: Any) -> Any:
        root = _root(array, self.np)
        if root is None:
            return None
        key = id(root)
        if key not in self.seen and key not in self.share:
            self.pending.add(key)
            return None
        from .._views import view_origin

        origin = view_origin(array, root)
        return None if origin is None else (rebuild_view, (root, origin[0]))


def _root(array: Any, np: Any) -> Any:
    """The plain ndarray that owns ``array``'s memory, or None (memory of another object: a
    memory map, bytes, a buffer of another library). ``as_strided`` (``sliding_window_view``)
    puts a ``DummyArray`` holding the array it views in the chain: followed to that array."""
    base = array.base
    while True:
        if isinstance(base, np.ndarray):
            array, base = base, base.base
        elif _stride_tricks(base) and isinstance(getattr(base, "base", None), np.ndarray):
            array, base = base.base, base.base.base
        else:
            break
    return array if base is None and type(array) is np.ndarray else None


def _stride_tricks(value: Any) -> bool:
    kind = type(value)
    return kind.__name__ == "DummyArray" and kind.__module__.startswith("numpy.lib")


def array_views() -> ArrayViews | None:
    """An ArrayViews when numpy is loaded (so the state may hold arrays), else None."""
    np = sys.modules.get("numpy")
    if np is None or not hasattr(np, "ndarray"):
        return None
    return ArrayViews(np)


def rebuild_view(root: Any, view: tuple[Any, ...]) -> Any:
    """The view over the restored ``root`` (sharing its memory); ValueError for a view that
    would reach outside it (a damaged entry: a miss, never a read past the buffer)."""
    from .._views import numpy_view

    offset, shape, strides, dtype, readonly = view
    made = numpy_view(root, (int(offset), tuple(shape), tuple(strides), dtype, bool(readonly)))
    if made is None:
        raise ValueError(f"a view of shape {tuple(shape)} reaches outside its array of {root.nbytes} bytes")
    return made
