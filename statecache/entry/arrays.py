"""numpy arrays as a load rebuilds them: one small enough to ride in the pickle stream comes
back owning its data, like the array the computing run made.

numpy pickles a contiguous array as ``_frombuffer(buffer, dtype, shape, order)``: the result is
a view of the buffer, so it does not own its data and ``a.resize(...)`` in place raises after a
hit where it worked after the computing run. For a buffer of the stream itself (bytes or a
bytearray the unpickler made: under ``pickling.INBAND_MAX``) the view is copied into an array
of its own, about 1 us each. Out-of-band buffers (memoryviews) are the reader's final memory or its copy-on-write map
of the entry, where a copy would cost what out-of-band reading saves: those arrays stay views
(README, "Restored objects").

Imported by the reader's unpickler only when the stream names numpy's ``_frombuffer``.
"""

from __future__ import annotations

from typing import Any

#: where numpy's rebuild function lives (numpy 2, numpy 1)
FROMBUFFER = frozenset({("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer")})


def frombuffer(buf: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> Any:
    """numpy's ``_frombuffer``, with a small buffer's array copied into memory it owns (with
    its layout, and read-only when the saved array was)."""
    import numpy as np

    array: Any = np.frombuffer(buf, dtype=dtype)
    if order == "K" and axis_order is not None:
        array = array.reshape(shape, order="C").transpose(axis_order)
    else:
        array = array.reshape(shape, order=order)
    if not isinstance(buf, (bytes, bytearray)):  # out of band: the reader's memory
        return array
    owned = array.copy(order="K")
    if not array.flags.writeable:
        owned.flags.writeable = False
    return owned
