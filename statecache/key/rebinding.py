"""The library functions statecache replaced by wrappers, and the user's names that still hold
the originals.

A reader, ``os.stat``, ``os.scandir`` or ``sqlite3.connect`` is wrapped in its module; a name
bound to the original before that (``from sqlite3 import connect`` above ``import
statecache``, as isort orders imports) would read past every wrapper. ``register`` keeps each
pair; ``rebind`` points the user's module globals, and the locals of the user's functions
running now, at the wrapper, at each computing block (``readers.install``). Names held
elsewhere (a dict of loaders filled before ``import statecache``) keep the original.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

#: id(original) -> (the original, its wrapper)
WRAPPERS: dict[int, tuple[Callable[..., Any], Callable[..., Any]]] = {}


def register(original: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    WRAPPERS[id(original)] = (original, wrapper)


def wrapper_of(value: Any) -> Callable[..., Any] | None:
    """The wrapper that stands for ``value``, when ``value`` is an original that has one."""
    pair = WRAPPERS.get(id(value))
    return pair[1] if pair is not None and pair[0] is value else None


def rebind(frame: Any) -> None:
    """Point the user's module globals, and the locals of the user's functions on the stack
    from ``frame`` up, that hold an original at its wrapper."""
    if WRAPPERS:
        _rebind_user_names()
        _rebind_running_locals(frame)


def _rebind_user_names() -> None:
    from .provenance import is_user_module

    for module in list(sys.modules.values()):
        if not is_user_module(module):  # __main__ too
            continue
        namespace = vars(module)
        for name, value in list(namespace.items()):
            wrapper = wrapper_of(value)
            if wrapper is not None:
                namespace[name] = wrapper


def _rebind_running_locals(frame: Any) -> None:
    """``from polars import read_csv`` in ``main()`` before the first block computes."""
    from .._frames import is_function_frame, write_names
    from .provenance import Kind, classify

    while frame is not None:
        if is_function_frame(frame) and classify(frame.f_code.co_filename) is Kind.USER:
            found = {}
            for name, value in frame.f_locals.items():
                wrapper = wrapper_of(value)
                if wrapper is not None:
                    found[name] = wrapper
            if found:
                write_names(frame, found)
        frame = frame.f_back
