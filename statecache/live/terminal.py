"""The terminal between the loop and its runs, as a shell shares it with a foreground job,
and the loop's own output and commands.

During a run the terminal belongs to the workers' process group: the script reads it
(``input()``, ``breakpoint()``) and Ctrl-C goes to the script. Between runs it is the loop's
again (Enter, ``q``, Ctrl-C to quit), with its settings as they were.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import selectors

TAG = "statecache live"
_READ = 1  # selectors.EVENT_READ


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
    """Hands the controlling terminal to a process group and takes it back, and reads the
    loop's own commands from stdin while it has it (registered in ``sel`` as "stdin")."""

    def __init__(self, sel: selectors.BaseSelector):
        self.sel = sel
        self.settings = foreground_settings()
        self.given = False
        self.stdin_fd = -1
        self.buf = b""

    @property
    def owned(self) -> bool:
        """Whether we hold a terminal at all (else runs read /dev/null)."""
        return self.settings is not None

    def open_input(self) -> None:
        """Read commands from stdin, unless we run in the background of a terminal."""
        background = not self.owned and isatty(0)  # `statecache live x.py &`
        if sys.stdin is None or sys.stdin.closed or background:
            return
        try:
            fd = sys.stdin.fileno()
            os.set_blocking(fd, True)
            self.sel.register(fd, _READ, "stdin")  # a regular file cannot be: EPERM
        except (ValueError, OSError):
            return
        self.stdin_fd = fd

    def commands(self) -> list[str] | None:
        """The lines typed since the last call, stripped; None at the end of the input (then
        stdin is not read any more)."""
        try:
            data = os.read(self.stdin_fd, 1024)
        except OSError:
            data = b""
        if not data:
            self._listen(False)
            self.stdin_fd = -1
            return None
        self.buf += data
        lines = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            lines.append(line.strip().decode(errors="replace"))
        return lines

    def _listen(self, on: bool) -> None:
        if self.stdin_fd < 0:
            return
        try:
            if on:
                self.sel.register(self.stdin_fd, _READ, "stdin")
            else:
                self.sel.unregister(self.stdin_fd)
        except (KeyError, ValueError):
            pass

    def give(self, pgid: int) -> None:
        if self.settings is None or self.given:
            return
        try:
            os.tcsetpgrp(0, pgid)
        except OSError:
            return
        self.given = True
        self._listen(False)

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
        self._listen(True)
