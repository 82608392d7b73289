"""Bringing a remote entry into the local tier: the first bytes (header and metadata) are judged
before the rest moves, the rest lands in a temp file beside the entry (preallocated once the
entry is accepted), and only an entry whose every checksum and HMAC holds is renamed into place:
bytes straight from the remote are never unpickled."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import EntryError
from .._warnings import warn
from .layout import temp_path
from .objects import Info, LocalDiskError

if TYPE_CHECKING:
    from .remote import Check, RemoteTier


def download_entry(
    tier: RemoteTier, store: Any, info: Info, name: str, key: str, local_path: str, check: Check | None
) -> bool:
    """The remote entry ``info`` into ``local_path``, verified, or False (refused by its
    metadata, damaged: warned). A temp file beside ``local_path`` takes the bytes; only an
    entry whose every checksum and HMAC holds is renamed into place."""
    from ..entry.progress import progress_bar
    from ..entry.reader import HEAD_READ, verify_entry

    os.makedirs(os.path.dirname(local_path), mode=0o700, exist_ok=True)
    tmp = temp_path(local_path)
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    bar = progress_bar(f"fetching from {tier.url}", name, info.size, None)
    done = False
    try:
        os.ftruncate(fd, info.size)  # sparse: read_meta sees the header in a file of full size
        judge = HeadCheck(tier, tmp, fd, info.size, name, key, check)
        complete = store.download(info.path, fd, info.size, info.etag, bar.add, min(info.size, HEAD_READ), judge)
        judge.speak()
        if not complete:
            return False
        # the writeback (disk) and the verification (hashing from the page cache) overlap;
        # the rename waits for both
        synced = _fsync_in_background(fd)
        try:
            try:
                meta = verify_entry(tmp, secret=tier.secret)
            finally:
                synced()
        except EntryError as exc:
            warn(
                f"statecache: ignoring the remote entry {tier.url}/{info.path} ({exc}); "
                f"computing '{name}' here. Remove it with "
                f"`statecache gc --remote --older-than 0s --key {key[:12]}`."
            )
            return False
        # the metadata judged at the head is this verified one (the same bytes): not again
        if not judge.judged and not tier.acceptable(meta, name, key, check):
            return False
        os.replace(tmp, local_path)
        done = True
        return True
    finally:
        bar.close()
        os.close(fd)
        if not done:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_in_background(fd: int) -> Callable[[], None]:
    """Start ``os.fsync(fd)`` in a thread; the returned function waits for it (and raises its
    error, a LocalDiskError: the data may not be on the disk)."""
    failed: list[OSError] = []

    def run() -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            failed.append(exc)

    thread = threading.Thread(target=run, name="statecache-fsync", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failed:
            raise LocalDiskError(f"cannot write the local cache: {failed[0].strerror or failed[0]}")

    return wait


class HeadCheck:
    """A download's ``accept()``: judges the entry by its header and metadata, the first bytes
    to arrive, before the rest moves. The store may call it from its IO thread, so what it
    has to say (a warning, an exception of ``check``) waits for ``speak()`` on the caller's."""

    def __init__(self, tier: RemoteTier, tmp: str, fd: int, size: int, name: str, key: str, check: Check | None) -> None:
        self.tier, self.tmp, self.fd, self.size = tier, tmp, fd, size
        self.name, self.key, self.check = name, key, check
        self.said: str | None = None
        self.error: BaseException | None = None
        self.judged = False  # the metadata was read from the first bytes and accepted

    def __call__(self) -> bool:
        from ..entry.reader import read_meta

        try:
            meta = read_meta(self.tmp)
        except EntryError:
            meta = None  # metadata past the first bytes, or garbage: verify_entry decides
        if meta is not None:
            try:
                refusal = self.tier.refusal(meta, self.name, self.key, self.check)
            except Exception as exc:  # the caller's check: raised again on the caller's thread
                self.error = exc
                return False
            if refusal is not None:
                self.said = refusal or None
                return False
            self.judged = True
        if hasattr(os, "posix_fallocate"):  # the disk space now, not a full disk half-way
            try:
                os.posix_fallocate(self.fd, 0, self.size)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise LocalDiskError(f"cannot write the local cache: {exc.strerror}") from None
        return True

    def speak(self) -> None:
        if self.error is not None:
            raise self.error
        if self.said:
            warn(self.said)
