"""Fingerprints the user supplies for types statecache cannot fingerprint itself.

``statecache.register_fingerprint(Model, lambda m: m.config)``: a value of that type (or of a
subclass) counts by what the function returns, which is fingerprinted like any input. The
streamlit ``hash_funcs`` idea, registered once instead of passed to every checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

from .._errors import ConfigError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

_REGISTERED: dict[type, Callable[[Any], Any]] = {}


def register_fingerprint(kind: type, fingerprint: Callable[[Any], Any]) -> None:
    """Make values of ``kind`` count by ``fingerprint(value)`` in every key (a later
    registration of the same type replaces the earlier one)."""
    if not isinstance(kind, type):
        raise ConfigError(
            f"register_fingerprint takes a type first, got {kind!r}: e.g. "
            "register_fingerprint(Model, lambda m: m.config)")
    if not callable(fingerprint):
        raise ConfigError(
            f"register_fingerprint({kind.__qualname__}, ...) needs a function of the value, got "
            f"{fingerprint!r}: e.g. lambda value: value.config")
    _REGISTERED[kind] = fingerprint


def registered_for(kind: type) -> Callable[[Any], Any] | None:
    """The function registered for ``kind`` or its nearest base class, or None."""
    if not _REGISTERED:
        return None
    for base in kind.__mro__:
        fn = _REGISTERED.get(base)
        if fn is not None:
            return fn
    return None
