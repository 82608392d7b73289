"""Iterators a block consumed that a hit cannot put back into the object the script holds,
anywhere in its inputs: an ``itertools.count`` it drew ids from, a ``cycle``, ``islice`` or
``chain`` in progress, a ``map`` or ``zip`` it advanced. Their state lives in C and pickles
only as a new object (no ``__setstate__`` sets it into a live one, or its inner iterators are
copies), so a hit could only rebind the name, and every other name for the iterator would
keep it unconsumed. Such a block is not saved (``refusals``, which ``Binder.collected`` hands to the
writer as a ``Refused`` value): when in doubt, miss.

The iterators are noted by the pickle of their state before the block runs (``note``) and
compared after (``advanced``); one that cannot be pickled cannot be an input (its fingerprint
fails) and is not noted. Iterators with a fill rule (``_fill.fillable``: a list or range
iterator, streams) are filled in place instead.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import xxhash

from ._fill import fillable

if TYPE_CHECKING:
    from ._identity import Before


def refusals(objects: Before | None) -> list[str]:
    """Why a hit could not leave the objects the script holds as the code left them, if so:
    an iterator the inputs held (``objects``, the walk before the code ran) that it consumed.
    An input of another kind that no fill rule knows and whose fingerprint changed is rebound
    as before (a pyarrow dataset's fingerprint changes when it is read: refusing it would be
    a miss on every run)."""
    return [refusal(where, value) for where, value in objects.advanced()] if objects is not None else []


def consumable(kind: type) -> bool:
    """Whether objects of ``kind`` are iterators (their state changes as they are consumed)."""
    return hasattr(kind, "__next__")


def note(iterators: Iterable[Any]) -> list[tuple[Any, bytes]]:
    """(iterator, digest of its pickle) of each iterator without a fill rule."""
    noted = []
    for value in iterators:
        if not fillable(value):
            found = _digest(value)
            if found is not None:
                noted.append((value, found))
    return noted


def advanced(noted: list[tuple[Any, bytes]]) -> list[Any]:
    """The noted iterators whose state changed since (or that cannot be pickled now)."""
    return [value for value, before in noted if _digest(value) != before]


def _digest(value: Any) -> bytes | None:
    try:
        return bytes(xxhash.xxh3_128_digest(pickle.dumps(value, 5)))
    except Exception:  # no pickle (3.14 drops itertools' own): not known, so not noted
        return None


def refusal(label: str, value: Any) -> str:
    """Why a state whose code consumed ``value`` (reached as ``label``) is not saved."""
    kind = type(value)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return (
        f"the block advanced {label} ({name}), whose state a hit cannot put back into the object "
        "the script holds (it pickles only as a new object), so other names for it would still "
        "see it as it was before the block. Nothing was written; the program goes on with the "
        "state it computed. Fix: create it inside the block, or draw from it after the block."
    )
