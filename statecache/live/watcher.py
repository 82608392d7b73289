"""Watching the script's and modules' folders for saves, in a thread that wakes the
controller's ``select`` through a pipe.

``watchfiles`` (the ``[live]`` extra) when it is installed, else polling the folders' entries
(size, mtime, inode) a few times a second. Either way the first report is ``CATCH_UP``, sent
once watching has surely begun, so that saves made while it was being set up are not lost;
the controller compares file contents itself, so a spurious report costs nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

from .terminal import say

CATCH_UP = "\0catch-up"
POLL_SECONDS = 0.1


class Watcher:
    """Reports changed paths in ``dirs`` (not recursive). ``fd`` is readable when there are.

    Polling looks only at the paths ``files()`` returns, when given (a folder of data beside the
    script is not listed ten times a second)."""

    def __init__(
        self,
        dirs: list[str],
        files: Callable[[], list[str]] | None = None,
        polling: bool | None = None,
    ):
        if polling is None:
            try:
                import watchfiles  # noqa: F401
            except ImportError:
                polling = True
            else:
                polling = False
        self.polling = polling
        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.fd = self.r
        self.changes: set[str] = set()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        paths = files or (lambda: _entries(dirs))
        batches = _poll(paths, self.stop_event) if polling else _watchfiles(dirs, self.stop_event)
        self.thread = threading.Thread(target=self._run, args=(batches,), daemon=True)
        self.thread.start()

    def _run(self, batches: Iterator[set[str]]) -> None:
        ready = False
        try:
            for changes in batches:
                with self.lock:
                    if not ready:
                        ready = True
                        self.changes.add(CATCH_UP)
                    elif not changes:
                        continue
                    self.changes.update(changes)
                try:
                    os.write(self.w, b"!")
                except OSError:
                    return
        except Exception as exc:  # pragma: no cover - a vanished directory
            say(f"file watching stopped: {exc}")

    def take(self) -> set[str]:
        """The paths reported since the last call."""
        try:
            while os.read(self.r, 512):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            out, self.changes = self.changes, set()
        return out

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=2)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


def _watchfiles(dirs: list[str], stop: threading.Event) -> Iterator[set[str]]:
    """Batches of changed paths; an empty batch on every idle tick."""
    import watchfiles

    for changes in watchfiles.watch(
        *dirs,
        watch_filter=None,
        debounce=400,
        step=20,
        stop_event=stop,
        recursive=False,
        raise_interrupt=False,
        rust_timeout=200,
        yield_on_timeout=True,
    ):
        yield {p for _, p in changes}


def _entries(dirs: list[str]) -> list[str]:
    out = []
    for d in dirs:
        try:
            out += [e.path for e in os.scandir(d)]
        except OSError:
            continue
    return out


def _stats(paths: list[str]) -> dict[str, tuple[int, int, int]]:
    out = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out[p] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def _poll(paths: Callable[[], list[str]], stop: threading.Event) -> Iterator[set[str]]:
    """Batches of paths that appeared, vanished or changed since the last look."""
    before = _stats(paths())
    yield set()
    while not stop.wait(POLL_SECONDS):
        now = _stats(paths())
        changed = {p for p in before.keys() | now.keys() if before.get(p) != now.get(p)}
        before = now
        yield changed
