"""Background uploads of local entries to the remote tier, and the bounded wait for them at
exit: the program never waits for a publish, and exit waits at most the tier's ``exit_wait``,
saying so on stderr when an upload is cut short (the local cache keeps the entry).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from .._errors import EntryError
from .._warnings import warn
from .objects import RemoteError

if TYPE_CHECKING:
    from ..entry.progress import NoProgress


class Upload:
    """One background upload of a local entry: verified locally first (only signed, intact
    entries leave the machine), then create-only; someone else publishing first is fine."""

    def __init__(
        self, tier: Any, store: Any, name: str, key: str, local_path: str, fd: int, lease: Any
    ) -> None:
        self.tier = tier
        self.store = store
        self.name = name
        self.key = key
        # the open descriptor keeps the entry readable if the local tier evicts it meanwhile
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.sent = 0  # bytes on the wire so far (a progress bar shown later starts from here)
        self._bar: NoProgress | None = None
        self._bar_lock = threading.Lock()
        self.source = f"/dev/fd/{fd}" if os.path.isdir("/dev/fd") else local_path
        self.lease = lease
        self.pid = os.getpid()
        self.created = False
        self.abandoned = False  # cut short at exit: the process is going away, stay quiet
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"statecache-upload-{name}", daemon=True)

    def _run(self) -> None:
        from ..entry.reader import verify_entry

        try:
            verify_entry(self.source, secret=self.tier.secret)
            path = self.tier.entry_object(self.name, self.key)
            if self.store.head(path) is None:
                self.created = self.store.upload_create(path, self.fd, self.size, self._progress)
        except RemoteError as exc:
            self.error = exc
            if not self.abandoned:
                self.tier.failed(exc, "publishing", self.name)
        except EntryError as exc:
            self.error = exc
            warn(f"statecache: not publishing '{self.name}' to {self.tier.url}: {exc}")
        except BaseException as exc:  # never let a background thread die with a traceback
            self.error = exc
            if not self.abandoned:  # else the interpreter is tearing the client down under us
                warn(f"statecache: publishing '{self.name}' to {self.tier.url} failed ({type(exc).__name__}: {exc})")
        finally:
            os.close(self.fd)
            if self.lease is not None:
                self.lease.release()

    def _progress(self, n: int) -> None:
        with self._bar_lock:
            self.sent += n
            if self._bar is not None:
                self._bar.add(n)

    def watch(self, bar: NoProgress) -> None:
        """Feed ``bar`` from now on (with what was sent so far): while someone waits for this
        upload (``statecache push``, the exit wait), never while the program runs on."""
        with self._bar_lock:
            bar.add(self.sent)
            self._bar = bar


_uploads: list[Upload] = []
_uploads_lock = threading.Lock()
_watching: list[int] = []  # the pids whose exit is watched by _wait_at_exit


def track(upload: Upload) -> None:
    """Remember an upload, so that the process's exit waits for it (boundedly)."""
    with _uploads_lock:
        if os.getpid() not in _watching:
            # A non-daemon thread is joined when the main thread ends, before atexit handlers
            # run: the wait happens while the S3 client still works (s3fs closes its session
            # in an atexit-time finaliser).
            threading.Thread(target=_wait_at_exit, name="statecache-exit-wait", daemon=False).start()
            _watching.append(os.getpid())
        _uploads[:] = [u for u in _uploads if u.thread.is_alive() or not u.thread.ident]
        _uploads.append(upload)


def _wait_at_exit() -> None:
    threading.main_thread().join()
    wait_for_uploads()


def wait_for_uploads(limit: float | None = None) -> list[Upload]:
    """At exit: wait at most ``limit`` seconds (default: the longest ``exit_wait`` of the tiers
    uploading) for uploads in progress; say on stderr when some are cut short. Returns those."""
    pending = [u for u in _uploads if u.pid == os.getpid() and u.thread.is_alive()]
    if not pending:
        return []
    from ..entry.progress import progress_bar

    limit = max(u.tier.exit_wait for u in pending) if limit is None else limit
    deadline = time.monotonic() + limit
    bar = progress_bar(f"uploading to {pending[0].tier.url}", ", ".join(u.name for u in pending),
                       sum(u.size for u in pending), None)
    for u in pending:
        u.watch(bar)  # drawn on a terminal once the wait has run past a second
    pending[0].thread.join(timeout=min(0.5, limit))
    if any(u.thread.is_alive() for u in pending):
        names = ", ".join(f"'{u.name}'" for u in pending if u.thread.is_alive())
        status_line(f"waiting up to {limit:.0f} s for the upload of {names} to {pending[0].tier.url}")
    for u in pending:
        u.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    bar.close()
    cut = [u for u in pending if u.thread.is_alive()]
    for u in cut:
        u.abandoned = True
        _uploads.remove(u)
    if cut:
        names = ", ".join(f"'{u.name}'" for u in cut)
        print(
            f"statecache: the upload of {names} to {cut[0].tier.url} did not finish in "
            f"{limit:.0f} s and was abandoned (the local cache has it; `statecache push` publishes "
            "it later)",
            file=sys.stderr,
            flush=True,
        )
    return cut


def status_line(text: str) -> None:
    """One status line on stderr unless STATECACHE_QUIET is set."""
    from .._config import env_quiet

    if not env_quiet():
        print(f"statecache: {text}", file=sys.stderr, flush=True)
