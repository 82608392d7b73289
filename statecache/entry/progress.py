"""The progress bar of a long save or load: one line on stderr, drawn only on a terminal and
only once the work has run past a second, erased when done so that the status line follows."""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


class NoProgress:
    """The progress bar when none is shown: every call is a no-op."""

    def add(self, n: int) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def restart(self) -> None:
        pass

    def close(self) -> None:
        pass


class Progress(NoProgress):
    """A one-line bar on stderr (a terminal) for a save or load that runs past ``DELAY``
    seconds: nothing is drawn before that, and the line is erased when the work is done so
    that the status line takes its place. ``add`` may be called from any thread."""

    DELAY = 1.0
    INTERVAL = 0.1

    def __init__(self, verb: str, name: str, total: int | None, stream: Any) -> None:
        self.verb = verb
        self.name = name
        self.total = total
        self.stream = stream
        self.done = 0
        self.text = ""
        self.started = time.monotonic()
        self.next_draw = self.started + self.DELAY
        self.shown = False
        import threading  # here: a hit without a bar (no terminal, or a small state) loads none

        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.monotonic()
            if now >= self.next_draw:
                self.next_draw = now + self.INTERVAL
                self._draw(now)

    def set_total(self, total: int) -> None:
        with self.lock:
            self.total = total

    def restart(self) -> None:
        with self.lock:
            self.done = 0

    def stage(self, text: str) -> None:
        with self.lock:
            self.text = text
            now = time.monotonic()
            if now >= self.started + self.DELAY:
                self._draw(now)

    def _draw(self, now: float) -> None:
        from .._config import format_size

        elapsed = now - self.started
        if self.total:
            frac = min(1.0, self.done / self.total)
            width = 24
            fill = int(frac * width)
            bar = f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:3.0f}% "
            amount = f"{format_size(self.done)} / {format_size(self.total)}"
        else:
            bar, amount = "", format_size(self.done)
        line = f"statecache: {self.verb} {self.name!r} {bar}{amount} {elapsed:.1f} s {self.text}"
        try:
            self.stream.write("\r" + line.rstrip() + "\x1b[K")
            self.stream.flush()
            self.shown = True
        except (OSError, ValueError):
            self.next_draw = float("inf")  # stderr closed or broken: stop drawing

    def close(self) -> None:
        with self.lock:
            self.next_draw = float("inf")
            if self.shown:
                try:
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
                except (OSError, ValueError):
                    pass


def progress_bar(verb: str, name: Any, total: int | None, enabled: bool | None) -> NoProgress:
    """A progress bar, or a no-op one. ``enabled=None``: shown when stderr is a terminal and
    ``STATECACHE_QUIET`` is not set (so never in captured output: tests, pipes, logs)."""
    if enabled is False:
        return NoProgress()
    stream = sys.stderr
    if enabled is None:
        from .._config import env_quiet

        if env_quiet():
            return NoProgress()
        try:
            if stream is None or not stream.isatty():
                return NoProgress()
        except (AttributeError, ValueError, OSError):
            return NoProgress()
    return Progress(verb, str(name) if name is not None else "entry", total, stream)

