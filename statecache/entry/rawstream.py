"""A big pickle stream of raw chunks as the file an Unpickler reads: one chunk at a time from
the entry's descriptor into one reused buffer, each chunk checked against its checksum before
any of its bytes is handed out.

Reading the whole stream first cost a fresh buffer of its size: for 1M small objects (a 47 MB
stream) 12k page faults, 310-680 ms against 100-130 ms through one reused 4 MiB buffer (fresh
processes, load 16), and ``pickle.load``, which reads the file 64 KB at a time, pays neither.
A signed entry does not come here: its signature covers the whole stream, checked before
anything is unpickled (``reader.check_signature``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._errors import EntryError
from .format import xxh
from .progress import NoProgress


class ChunkedFile:
    """A read-only file over a stream handed out one chunk at a time: ``_advance`` makes the
    next chunk current (``cur`` to slice, ``buf`` to search, ``end`` bytes long) or says there
    is none. The Unpickler's reads are served from it here; ``StreamFile`` (decompressed on
    threads) and ``RawStream`` (read from the file) differ only in where a chunk comes from."""

    cur: Any = b""
    buf: Any = b""
    end = 0  # bytes of the current chunk
    off = 0  # bytes of it handed out
    pos = 0  # bytes of the stream handed out

    def _advance(self) -> bool:
        raise NotImplementedError

    def _take(self, n: int) -> Any:
        take = min(n, self.end - self.off)
        piece = self.cur[self.off : self.off + take]
        self.off += take
        self.pos += take
        return piece

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        parts = []
        while n > 0:
            if self.off >= self.end and not self._advance():
                break
            piece = bytes(self._take(n))  # the slice itself when ``cur`` is bytes
            parts.append(piece)
            n -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self.off >= self.end and not self._advance():
                break
            piece = self._take(len(target) - done)
            target[done : done + len(piece)] = piece
            done += len(piece)
        return done

    def readline(self) -> bytes:
        parts = []
        while True:
            if self.off >= self.end and not self._advance():
                break
            newline = self.buf.find(b"\n", self.off, self.end)
            parts.append(bytes(self._take((self.end if newline < 0 else newline + 1) - self.off)))
            if newline >= 0:
                break
        return b"".join(parts)

    def tell(self) -> int:
        return self.pos


class RawStream(ChunkedFile):
    """The stream's ``chunks`` (codec, stored length, xxh3) from ``offset`` as a read-only
    file; ``read_into(view, offset)`` fills ``view`` from the file or raises."""

    def __init__(
        self,
        read_into: Callable[[memoryview, int], None],
        chunks: list[tuple[int, int, int]],
        offset: int,
        error: Callable[[str], EntryError],
        progress: NoProgress,
    ) -> None:
        self.read_into = read_into
        self.chunks = chunks
        self.error = error
        self.progress = progress
        self.buf = bytearray(max((n for _, n, _ in chunks), default=0))  # reused
        self.cur = memoryview(self.buf)
        self.next = 0  # the next chunk to read
        self.file_pos = offset

    def readinto(self, buffer: Any) -> int:
        """As ``ChunkedFile.readinto``, but a whole chunk that the target spans is read straight
        into it and checked there: a big bytes object in the stream (a pyarrow column's 40 MB
        of offsets in a DataFrame) then costs one copy, not two. On a checksum mismatch this
        raises, and the Unpickler drops the object it was filling."""
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self.off >= self.end:
                n = self._direct(target[done:])
                if n:
                    done += n
                    continue
                if not self._advance():
                    break
            piece = self._take(len(target) - done)
            target[done : done + len(piece)] = piece
            done += len(piece)
        return done

    def _direct(self, target: memoryview) -> int:
        """Read the next chunk into the start of ``target`` if it fits there whole (its size,
        once checked), else 0; the reused buffer then holds nothing current."""
        if self.next >= len(self.chunks) or self.chunks[self.next][1] > len(target):
            return 0
        _, n, checksum = self.chunks[self.next]
        piece = target[:n]
        self.read_into(piece, self.file_pos)
        if xxh(piece) != checksum:
            raise self.error("damaged pickle stream (checksum mismatch)")
        self.next += 1
        self.file_pos += n
        self.end = self.off = 0
        self.pos += n
        self.progress.add(n)
        return n

    def _advance(self) -> bool:
        if self.next >= len(self.chunks):
            return False
        _, n, checksum = self.chunks[self.next]
        self.read_into(self.cur[:n], self.file_pos)
        if xxh(self.cur[:n]) != checksum:
            raise self.error("damaged pickle stream (checksum mismatch)")
        self.next += 1
        self.file_pos += n
        self.end, self.off = n, 0
        self.progress.add(n)
        return True
