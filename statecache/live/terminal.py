"""The terminal between the loop and its runs, as a shell shares it with a foreground job.

During a run the terminal belongs to the workers' process group: the script reads it
(``input()``, ``breakpoint()``) and Ctrl-C goes to the script. Between runs it is the loop's
again (Enter, ``q``, Ctrl-C to quit), with its settings as they were.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

TAG = "statecache live"


def say(text: str) -> None:
    """One line of the loop's own on stderr."""
    sys.stderr.write(f"{TAG}: {text}\n")
    sys.stderr.flush()


def flush_std() -> None:
    """Flush stdout and stderr (before a fork, so that nothing is written twice)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def foreground_settings() -> list[Any] | None:
    """The terminal's settings if stdin is a terminal and we are its foreground."""
    try:
        import termios

        if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
            return None
        return termios.tcgetattr(0)
    except (OSError, ImportError, ValueError):
        return None


class Terminal:
    """Hands the controlling terminal to a process group and takes it back.

    ``on_give`` / ``on_take`` let the controller stop and resume reading stdin."""

    def __init__(self, on_give: Callable[[], None], on_take: Callable[[], None]):
        self.settings = foreground_settings()
        self.given = False
        self.on_give = on_give
        self.on_take = on_take

    @property
    def owned(self) -> bool:
        """Whether we hold a terminal at all (else runs read /dev/null)."""
        return self.settings is not None

    def give(self, pgid: int) -> None:
        if self.settings is None or self.given:
            return
        try:
            os.tcsetpgrp(0, pgid)
        except OSError:
            return
        self.given = True
        self.on_give()

    def take(self) -> None:
        """Back to the loop: our process group in the foreground, the terminal's settings as
        they were (a debugger or a killed run may have changed them), typed-ahead input
        dropped."""
        if not self.given:
            return
        self.given = False
        import termios

        try:  # SIGTTOU is ignored: allowed from the background
            os.tcsetpgrp(0, os.getpgrp())
            assert self.settings is not None
            termios.tcsetattr(0, termios.TCSADRAIN, self.settings)
            termios.tcflush(0, termios.TCIFLUSH)
        except (OSError, termios.error):
            pass
        self.on_take()
