"""Objects that keep their state in C, given a hit's saved state in place through their own
state API: an ``io.StringIO`` or ``io.BytesIO`` the block wrote (its text and position), an
iterator over a list, tuple, range, string or bytes that the block advanced (its position), a
numpy ``Generator`` or ``RandomState``, a ``random.Random`` or a ``torch.Generator`` the
block drew from (its generator's state), an ``array.array`` appended to (its items). The
object keeps its identity, so another name for it sees what the computing run left
(``_identity.merge`` calls this).

An iterator takes the saved position only over a sequence equal to the saved one's (by its
pickle: the key saw the iterator's pickle before the block); an exhausted one is exhausted
(whatever it ran over, it yields nothing more; but for a reversed one, which a pickle trip
turns into a forward iterator over nothing: rebound). Objects that cannot be set so (an
``itertools.count``, a ``map`` or a generator) have no rule here: ``settable`` says False.
"""

from __future__ import annotations

import array
import io
import pickle
import sys
from typing import Any

_STREAMS = (io.StringIO, io.BytesIO)
#: iterators whose pickle is (iter, (sequence,), position) and whose __setstate__ sets it
_ITERATORS = frozenset(
    type(it) for it in (
        iter([]), reversed([]), iter(()), iter(range(0)), iter(range(1 << 70)), iter(""), iter("\xe9"),
        iter(b""), iter(bytearray()),
    )
)
_REVERSED: type = type(reversed([]))


def has_rule(kind: type) -> bool:
    """Whether objects of exactly ``kind`` can take a saved state here."""
    return (
        kind in _STREAMS or kind in _ITERATORS or kind is array.array or _random_generator(kind)
        or _numpy_generator(kind) or _torch_generator(kind)
    )


def _random_generator(kind: type) -> bool:
    """``random.Random`` itself (its state is in its C base; not imported here to ask)."""
    random = sys.modules.get("random")
    return random is not None and kind is random.Random


def _torch_generator(kind: type) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and kind is getattr(torch, "Generator", None)


def _numpy_generator(kind: type) -> bool:
    random = getattr(sys.modules.get("numpy"), "random", None)
    return random is not None and (kind is random.Generator or kind is random.RandomState)


def settable(current: Any, saved: Any) -> bool:
    """Whether ``set_state`` can give ``current`` (of ``saved``'s type) ``saved``'s state."""
    kind = type(current)
    if kind is io.BytesIO:
        try:  # a BytesIO with a buffer exported (getbuffer) refuses a new content
            current.__setstate__(current.__getstate__())
        except (BufferError, ValueError):
            return False
        return True
    if kind is io.StringIO:
        return not current.closed and not saved.closed
    if _random_generator(kind):
        return True
    if _torch_generator(kind):  # a generator's state is of its device's kind
        return bool(current.device == saved.device)
    if kind is array.array:  # a slice assignment keeps the type code; a buffer exported refuses it
        return current.typecode == saved.typecode and _resizable(current)
    if _numpy_generator(kind):  # the same kind of bit generator (PCG64, MT19937, ...)
        return type(_bit_generator(current)) is type(_bit_generator(saved))
    if kind not in _ITERATORS:
        return False
    now, then = current.__reduce__(), saved.__reduce__()
    return _exhausted(then) or _position(now, then) is not None


def _exhausted(reduced: tuple[Any, ...]) -> bool:
    """An iterator (by its pickle) that yields nothing more: exhausted, or over an empty
    sequence (what an exhausted one is after a pickle trip)."""
    try:
        return len(reduced) < 3 or not len(reduced[1][0])
    except OverflowError:  # a range past sys.maxsize items
        return False


def _position(now: tuple[Any, ...], then: tuple[Any, ...]) -> int | None:
    """The saved iterator's position as the current one counts it (by their pickles), None
    when they do not run over equal sequences. From 3.12 a range iterator pickles as the
    range it has left, with no position."""
    if len(now) < 3 or len(then) < 3:
        return None
    if then[2] is not None:
        return int(then[2]) if _same_pickle(now[1], then[1]) else None
    ahead, left = now[1][0], then[1][0]
    if type(ahead) is not range or type(left) is not range:
        return None
    try:
        skipped = len(ahead) - len(left)
    except OverflowError:
        return None
    return skipped if skipped >= 0 and ahead[skipped:] == left else None


def set_state(current: Any, saved: Any) -> None:
    """Give ``current`` the saved content and position (``settable`` said it can)."""
    kind = type(current)
    if kind in _STREAMS:
        current.__setstate__(saved.__getstate__())
        return
    if kind is array.array:
        current[:] = saved
        return
    if _torch_generator(kind):
        current.set_state(saved.get_state())
        return
    if _random_generator(kind):
        current.setstate(saved.getstate())
        return
    if _numpy_generator(kind):
        _bit_generator(current).state = _bit_generator(saved).state
        return
    reduced = saved.__reduce__()
    if not _exhausted(reduced):
        current.__setstate__(_position(current.__reduce__(), reduced))
    else:  # exhausted: a position past the end (clamped), before the start for a reversed one
        current.__setstate__(-1 if kind is _REVERSED else sys.maxsize)


def _resizable(values: array.array) -> bool:
    """Whether no buffer of ``values`` is exported (a memoryview of it refuses a resize)."""
    try:
        values.frombytes(bytes(values.itemsize))
    except BufferError:
        return False
    values.pop()
    return True


def _bit_generator(generator: Any) -> Any:
    return getattr(generator, "bit_generator", None) or generator._bit_generator  # RandomState's


def _same_pickle(a: Any, b: Any) -> bool:
    try:
        return pickle.dumps(a, 5) == pickle.dumps(b, 5)
    except Exception:  # a sequence of objects that cannot be pickled: not known to be equal
        return False
