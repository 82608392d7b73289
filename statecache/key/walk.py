"""The state one fingerprint traversal carries, and the atoms it feeds directly.

Shared by the value walker (``values``) and the code graph (``codegraph``): the traversal
modes, the per-traversal memo, the refusal that carries where an unfingerprintable value was
met, and the byte encodings of atoms (exact types only).
"""

from __future__ import annotations

import struct
import types
from collections.abc import Callable, Sequence

from .._errors import FingerprintError
from .hashing import U64, encode_str

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_F64 = struct.Struct("<d").pack
_C128 = struct.Struct("<dd").pack


class Refused(FingerprintError):
    """A value that cannot be fingerprinted, with where it was met (built outward)."""

    def __init__(self, culprit: type, reason: str):
        super().__init__(reason)
        self.culprit = culprit
        self.reason = reason
        self.where: list[str] = []
        self.suggest: str | None = None


TOP, LOCAL, SORT = 0, 1, 2


class Ctx:
    """State of one traversal.

    mode TOP: code objects are fed as their full transitive fingerprint.
    mode LOCAL: computing one code node's own digest; other code nodes become numbered edges.
    mode SORT: sort keys of set elements; code nodes become a shallow identity.
    memo: id -> visit index of mutable containers and pickled objects (cycles, aliasing);
    keep: holds those objects alive so their ids cannot be reused mid-traversal.
    outer: memos of enclosing traversals (a sort key may point back to an ancestor).
    """

    __slots__ = ("edge_index", "edges", "keep", "memo", "mode", "outer", "saw_code")

    def __init__(self, mode: int, outer: tuple[dict[int, int], ...] = ()):
        self.mode = mode
        self.edges: list[object] = []
        self.edge_index: dict[int, int] = {}
        self.memo: dict[int, int] = {}
        self.keep: list[object] = []
        self.outer = outer
        self.saw_code = False


def typename(t: type) -> str:
    """``module.Qualname`` of a type (just the name for builtins), for messages."""
    module = getattr(t, "__module__", "")
    return t.__qualname__ if module in ("builtins", None) else f"{module}.{t.__qualname__}"


def is_plain_data(value: Any, depth: int = 0) -> bool:
    """True for values made only of str, bytes, numbers, None and containers of them (a module's
    ``argv`` or flags); file objects, loggers and the like are not data of this kind."""
    if value is None or isinstance(value, (str, bytes, int, float, complex)):
        return True
    if depth < 3 and isinstance(value, (list, tuple, set, frozenset)):
        return len(value) <= 10_000 and all(is_plain_data(v, depth + 1) for v in value)
    if depth < 3 and isinstance(value, dict):
        return len(value) <= 10_000 and all(
            is_plain_data(k, depth + 1) and is_plain_data(v, depth + 1) for k, v in value.items()
        )
    return False


_NONE = object()


def _attribute(owner: Any, attr: str) -> Any:
    """``owner.attr`` without importing anything: a module's own dict (a lazy ``__getattr__``
    would import a submodule a hit never needs), a property of a module subclass
    (``torch.backends.cudnn.benchmark``), any other object's attribute; ``_NONE`` if none."""
    if isinstance(owner, types.ModuleType):
        found = vars(owner).get(attr, _NONE)
        if found is not _NONE or type(owner) is types.ModuleType:
            return found
    try:
        return getattr(owner, attr)
    except Exception:
        return _NONE


def library_attribute(module: Any, attrs: Sequence[str], accept: Callable[[Any], bool]) -> tuple[int, Any] | None:
    """Follow ``module.a.b...`` (an installed module, which counts by its version) through
    modules and the namespace objects libraries keep settings in (``pd.options.display``) to
    the first value ``accept`` takes: (how many attributes were followed, that value). None
    when the chain ends, or reaches code, first. The one rule by which data read through an
    installed module counts, for a block's own reads and for its helpers'."""
    value = module
    for depth, attr in enumerate(attrs, 1):
        value = _attribute(value, attr)
        if value is _NONE:
            return None
        if accept(value):
            return depth, value
        if callable(value) or is_plain_data(value):
            return None
    return None


class EmptyCell:
    """Stands for a closure cell with no value yet (an atom of its own in digests)."""


EMPTY_CELL = EmptyCell()


def cells(fn: types.FunctionType) -> tuple[Any, ...] | None:
    """The values a function closes over (EMPTY_CELL for a variable not assigned yet)."""
    if not fn.__closure__:
        return None
    out = []
    for cell in fn.__closure__:
        try:
            out.append(cell.cell_contents)
        except ValueError:  # an empty cell (a variable not assigned yet)
            out.append(EMPTY_CELL)
    return tuple(out)


def _feed_int(upd: Callable[[bytes], object], v: int) -> None:
    data = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    upd(b"i" + U64(len(data)) + data)


def _feed_str(upd: Callable[[bytes], object], v: str) -> None:
    upd(b"s" + encode_str(v))


def _feed_bytes(upd: Callable[[bytes], object], v: bytes) -> None:
    upd(b"b" + U64(len(v)))
    upd(v)


def _feed_bytearray(upd: Callable[[Any], object], v: bytearray) -> None:
    upd(b"y" + U64(len(v)))
    upd(v)


# Exact types only: subclasses (IntEnum, bool-like, str subclasses, numpy scalars that
# subclass float) go through the general path, which includes their class.
ATOMS: dict[type, Callable[[Callable[[Any], object], Any], object]] = {
    type(None): lambda upd, v: upd(b"0"),
    bool: lambda upd, v: upd(b"t" if v else b"f"),
    int: _feed_int,
    # Bit patterns: -0.0 and 0.0 differ, a NaN keeps its payload; both deterministic.
    float: lambda upd, v: upd(b"d" + _F64(v)),
    complex: lambda upd, v: upd(b"j" + _C128(v.real, v.imag)),
    str: _feed_str,
    bytes: _feed_bytes,
    bytearray: _feed_bytearray,
    type(Ellipsis): lambda upd, v: upd(b"..."),
    type(NotImplemented): lambda upd, v: upd(b"NotImplemented"),
    EmptyCell: lambda upd, v: upd(b"<empty cell>"),
}
