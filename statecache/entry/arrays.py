"""numpy arrays as a load rebuilds them: one small enough to ride in the pickle stream comes
back owning its data, like the array the computing run made.

numpy pickles a contiguous array as ``_frombuffer(buffer, dtype, shape, order)``: the result is
a view of the buffer, so it does not own its data and ``a.resize(...)`` in place raises after a
hit where it worked after the computing run. For a buffer of the stream itself (bytes or a
bytearray the unpickler made: under ``pickling.INBAND_MAX``) the array gets memory of its own
and one copy of the bytes, which costs less than numpy's view of the buffer did. Out-of-band
buffers (memoryviews) are the reader's final memory or its copy-on-write map of the entry,
where a copy would cost what out-of-band reading saves: those arrays stay views (README,
"What a hit restores").

Imported by the reader's unpickler only when the stream names numpy's ``_frombuffer``.
"""

from __future__ import annotations

import math
from typing import Any

#: where numpy's rebuild function lives (numpy 2, numpy 1)
FROMBUFFER = frozenset({("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")})


def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> Any:
    """numpy's ``_frombuffer``, with a small buffer's array copied into memory it owns (with
    its layout, and read-only when the saved array was)."""
    import numpy as np

    kind = type(buf)
    if kind is not bytes and kind is not bytearray:  # out of band: the reader's memory
        return _view(np, buf, dtype, shape, order, axis_order)
    if (order == "C" or order == "F") and math.prod(shape) * dtype.itemsize == len(buf):
        owned: Any = np.empty(shape, dtype, order)  # (never sized by a damaged shape alone)
        try:  # one copy into new memory: faster than numpy's own view of the buffer
            memoryview(owned if order == "C" else owned.T).cast("B")[:] = buf
        except (TypeError, ValueError, NotImplementedError):  # no buffer format (datetime64)
            owned = None
    else:
        owned = None
    if owned is None:
        owned = _view(np, buf, dtype, shape, order, axis_order).copy(order="K")
    if kind is bytes:  # a read-only array is pickled as bytes
        owned.flags.writeable = False
    return owned


def _view(np: Any, buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any) -> Any:
    array = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)
