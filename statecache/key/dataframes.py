"""pandas objects as keys see them: what defines their value, never their internal caches.

A DataFrame, Series, Index or extension array fills caches as it is used (printing it, ``.loc``,
``.values``, ``.index.is_unique``, ``groupby``): a DatetimeIndex's inferred frequency and
resolution, an Index's hash table, a consolidated block layout. Their pickles hold those, so a
frame fingerprinted through its pickle changes when it is only read: a key that misses after a
``print`` above the block, and a block that reads a frame saved as having "mutated" it.

``parts(obj)`` gives the canonical parts of such an object instead: its type, the index and
column labels, and per column the dtype and the data (numpy buffers, C-contiguous so that the
block layout does not count), plus ``attrs``, the duplicate-label flag and a subclass's
``_metadata``. The value walker (``values``) fingerprints those parts. pandas is never
imported here: a pandas object exists only once pandas is loaded.
"""

from __future__ import annotations

import sys

from .valuetypes import dtype_descr

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_kinds: dict[type, str | None] = {}


def kind(t: type) -> str | None:
    """``"frame"``, ``"series"``, ``"index"``, ``"array"`` or ``"dtype"`` for pandas types
    (subclasses too), else None."""
    try:
        return _kinds[t]
    except KeyError:
        pass
    pd = sys.modules.get("pandas")
    found: str | None = None
    if pd is not None:  # without pandas loaded no type can be one of its own
        extensions = getattr(getattr(pd, "api", None), "extensions", None)
        for name, base in (("frame", pd.DataFrame), ("series", pd.Series), ("index", pd.Index),
                           ("array", getattr(extensions, "ExtensionArray", None)),
                           ("dtype", getattr(extensions, "ExtensionDtype", None))):
            try:
                if isinstance(base, type) and issubclass(t, base):
                    found = name
                    break
            except TypeError:  # a metaclass that refuses issubclass
                continue
    _kinds[t] = found
    return found


def parts(obj: Any) -> tuple[Any, ...]:
    """The canonical parts of a pandas object (``kind(type(obj))`` is not None)."""
    which = kind(type(obj))
    if which == "frame":
        return _frame(obj)
    if which == "series":
        return (type(obj), obj.name, index_parts(obj.index), array_parts(obj._values), *_extras(obj))
    if which == "index":
        return index_parts(obj)
    if which == "dtype":
        return dtype_parts(obj)
    return array_parts(obj)


def _frame(df: Any) -> tuple[Any, ...]:
    mgr = df._mgr
    column = getattr(mgr, "iget_values", None)
    if column is None:  # another manager: through the public accessor, one column at a time
        columns = [array_parts(df.iloc[:, i]._values) for i in range(df.shape[1])]
    else:
        columns = [array_parts(column(i)) for i in range(df.shape[1])]
    return (type(df), index_parts(df.columns), index_parts(df.index), columns, *_extras(df))


def _extras(obj: Any) -> tuple[Any, ...]:
    """What else a pickle of the object keeps: ``attrs``, the duplicate-label flag, and the
    attributes a subclass names in ``_metadata``."""
    meta = tuple((name, getattr(obj, name, None)) for name in getattr(type(obj), "_metadata", ()) if name != "_name")
    flags = getattr(obj, "flags", None)
    return (dict(getattr(obj, "attrs", {}) or {}), getattr(flags, "allows_duplicate_labels", None), meta)


def index_parts(idx: Any) -> tuple[Any, ...]:
    """An Index by its type, names and values (a RangeIndex by its range; a MultiIndex by its
    levels and codes), never by its cached hash table or inferred properties."""
    pd = sys.modules["pandas"]
    if isinstance(idx, pd.MultiIndex):
        return (
            type(idx), tuple(idx.names), idx.sortorder,
            [index_parts(level) for level in idx.levels], [_contiguous(c) for c in idx.codes],
        )
    if isinstance(idx, pd.RangeIndex):
        return (type(idx), idx.name, idx.start, idx.stop, idx.step)
    # a DatetimeIndex's frequency lives on the index itself in pandas 3 (on its array before)
    return (type(idx), idx.name, array_parts(idx._data), freq_parts(getattr(idx, "freq", None)))


def array_parts(arr: Any) -> tuple[Any, ...]:
    """An array of a column or an index by its type, dtype and data. Arrays backed by numpy
    (datetimes, timedeltas, periods, categorical codes, numpy-backed extension arrays) and
    masked arrays by their buffers; Arrow-backed ones by their Arrow data; intervals by their
    bounds; any other extension array by what its pickle saves (which may hold caches: a
    needless miss at worst, never a wrong hit)."""
    np = sys.modules["numpy"]
    if isinstance(arr, np.ndarray):
        return ("ndarray", _contiguous(arr))
    head = (type(arr), dtype_parts(arr.dtype))
    backing = getattr(arr, "_ndarray", None)
    if isinstance(backing, np.ndarray):
        return (*head, _contiguous(backing), freq_parts(getattr(arr, "freq", None)))
    data, mask = getattr(arr, "_data", None), getattr(arr, "_mask", None)
    if isinstance(data, np.ndarray) and isinstance(mask, np.ndarray):
        return (*head, "masked", _contiguous(data), _contiguous(mask))
    arrow = getattr(arr, "_pa_array", None)
    if arrow is not None:
        return (*head, "arrow", arrow_digest(arrow))
    left, right = getattr(arr, "_left", None), getattr(arr, "_right", None)
    if left is not None and right is not None:  # intervals: both bounds
        return (*head, "interval", parts(left) if kind(type(left)) else array_parts(left),
                parts(right) if kind(type(right)) else array_parts(right))
    return (*head, "reduced", _reduced(arr))


def _reduced(obj: Any) -> Any:
    """What pickle saves of ``obj`` (its class, arguments and state), walked as parts: the
    object itself would be handed back here, forever."""
    try:
        return obj.__reduce_ex__(5)
    except Exception as exc:
        raise TypeError(f"{type(obj).__qualname__} cannot be reduced ({exc})") from None


class _Sink:
    """A writable file that feeds a digest (for pyarrow's ``PythonFile``)."""

    closed = False

    def __init__(self, update: Any):
        self.update = update

    def write(self, data: Any) -> int:
        self.update(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        pass


def arrow_digest(data: Any) -> bytes:
    """xxh3-128 of an Arrow array's IPC stream, its chunks combined: the Arrow format says
    what the values are (offsets rebased, no validity bitmap where nothing is null), so a
    restored array, sliced differently or without an all-valid bitmap, digests alike."""
    import pyarrow as pa  # loaded already: the array exists
    import xxhash

    if isinstance(data, pa.ChunkedArray):
        data = data.chunk(0) if data.num_chunks == 1 else data.combine_chunks()
    batch = pa.record_batch([data], names=["values"])
    h = xxhash.xxh3_128()
    with pa.ipc.new_stream(pa.PythonFile(_Sink(h.update), mode="w"), batch.schema) as writer:
        writer.write_batch(batch)
    return h.digest()


def dtype_parts(dtype: Any) -> tuple[Any, ...]:
    """A dtype: numpy's by its description; a categorical one by its categories and order;
    any other by its name and the attributes its ``_metadata`` names (those pandas compares
    dtypes by), not its pickle: dtype instances are shared and fill caches as they are used."""
    np = sys.modules["numpy"]
    if isinstance(dtype, np.dtype):
        return ("numpy", dtype_descr(dtype))
    categories = getattr(dtype, "categories", None)
    if categories is not None and hasattr(dtype, "ordered"):
        return ("category", type(dtype), index_parts(categories), bool(dtype.ordered))
    names = getattr(dtype, "_metadata", None)
    if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
        return ("extension", type(dtype), str(dtype), "reduced", _reduced(dtype))
    return ("extension", type(dtype), str(dtype), tuple((n, _attribute(getattr(dtype, n, None))) for n in names))


def _attribute(value: Any) -> Any:
    """A dtype attribute in canonical parts where it is a dtype or an offset itself."""
    np = sys.modules["numpy"]
    if isinstance(value, np.dtype) or kind(type(value)) == "dtype":
        return dtype_parts(value)
    if hasattr(value, "freqstr") and hasattr(value, "kwds"):
        return freq_parts(value)
    return value


def freq_parts(freq: Any) -> tuple[Any, ...] | None:
    """A date offset by what defines it (its name, multiple, normalisation and keywords; a
    custom business calendar by its weekmask and holidays), not by its cache."""
    if freq is None:
        return None
    kwds = getattr(freq, "kwds", None) or {}
    plain = tuple(sorted((str(k), v) for k, v in kwds.items() if k != "calendar"))
    return (type(freq), getattr(freq, "freqstr", str(freq)), getattr(freq, "n", None),
            getattr(freq, "normalize", None), plain)


def _contiguous(a: Any) -> Any:
    """``a`` itself when C-contiguous, else a C-contiguous copy: a column sliced from a 2-D
    block and the same column alone hold the same value."""
    np = sys.modules["numpy"]
    a = np.asarray(a)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)
