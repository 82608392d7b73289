"""The one way statecache warns: a ``StateCacheWarning`` attributed to the user's line that
called into statecache, each message once per process."""

from __future__ import annotations

import os
import sys
import warnings

from ._errors import StateCacheWarning

_warned: set[str] = set()


def warn(message: str) -> None:
    """A ``StateCacheWarning`` attributed to the user's line that called into statecache;
    the same message is shown once per process."""
    if message in _warned:
        return
    _warned.add(message)
    warnings.warn(message, StateCacheWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    """How many frames up ``warnings.warn`` must look to leave the statecache package."""
    package_dir = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame = sys._getframe(2)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package_dir):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
