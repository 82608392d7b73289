"""What every object store behind the remote tier shares: its error, what it says about an
object, and the transfer sizes.

A store (``s3.S3Store``, ``filestores.DirectoryStore``, ``filestores.FsspecStore``) offers the
few operations the tier needs, with the same meaning everywhere: ``head``/``get`` (an ``Info``),
``download`` pinned to one ETag where the store can (it asks ``accept()`` once the first ``head``
bytes are in place, and stops there when it says no), ``upload_create`` and ``put_create``
(create-only: ``If-None-Match: *``, ``link(2)`` on a directory), ``put_replace``
(compare-and-swap on the ETag), ``list`` and ``delete``. Paths are relative to the tier's root.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

from .._errors import StateCacheError

PIECE = 16 << 20  # bytes per ranged GET / multipart part
CONCURRENCY = 8  # transfers in flight: PIECE * CONCURRENCY bytes of memory at most


class RemoteError(StateCacheError):
    """The remote could not be used (down, slow, refused credentials, garbage); the tier warns
    and the caller goes on locally. ``down`` is True when retrying soon is pointless;
    ``advice`` says what to do when the tier's general advice would mislead (a missing package)."""

    def __init__(self, message: str, *, down: bool = False, advice: str | None = None) -> None:
        super().__init__(message)
        self.down = down
        self.advice = advice


class LocalDiskError(Exception):
    """Writing a download into the local cache failed (a full disk): not the remote's fault."""


class Info(NamedTuple):
    """An object as the server sees it. ``server_now`` is the server's clock when it answered
    (its ``Date`` header), so that ages compare two readings of one clock."""

    path: str
    size: int
    etag: str
    last_modified: float
    server_now: float


Progress = Callable[[int], None]
Accept = Callable[[], bool]  # the first bytes are in place: go on with the download?


def download_in_pieces(
    read: Callable[[int, int], bytes], fd: int, size: int, progress: Progress, head: int,
    accept: Accept, start: int = 0,
) -> bool:
    """A download from a store where a request costs nothing (a file): from ``start`` (0: the
    first ``head`` bytes, then ``accept()``) to ``size`` a PIECE at a time, each into ``fd``
    at its own offset. ``read(start, end)`` raises RemoteError when it gets fewer bytes."""
    offset = start
    while offset < size:
        end = min(size, head) if offset == 0 else min(size, offset + PIECE)
        data = read(offset, end)
        write_local(fd, data, offset)
        progress(len(data))
        if offset == 0 and not accept():
            return False
        offset = end
    return True


def pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (pwrite may write less than asked)."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def write_local(fd: int, data: Any, offset: int) -> None:
    """``pwrite_all`` into the local cache's temp file; its failure is a LocalDiskError."""
    try:
        pwrite_all(fd, data, offset)
    except OSError as exc:
        raise LocalDiskError(f"cannot write the local cache: {exc.strerror or exc}") from exc
