"""The pickle stream of an entry as the file an Unpickler reads, decoded chunk by chunk on
background threads ahead of the reader."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

from .._errors import EntryError
from .codec import decompressor, threads
from .format import RAW
from .progress import NoProgress
from .rawstream import ChunkedFile


class StreamFile(ChunkedFile):
    """The pickle stream as a read-only file. Compressed chunks are decompressed by background
    threads in order, ahead of the Unpickler, so unpickling starts after the first chunk instead
    of after the whole stream; a consumed chunk is dropped at once."""

    def __init__(
        self,
        pieces: list[tuple[int, memoryview]],
        raw_len: int,
        chunk_size: int,
        error: Callable[[str], EntryError],
        progress: NoProgress,
    ):
        self.pieces = pieces  # (codec, stored bytes) per chunk, checksums already verified
        self.raw_len = raw_len
        self.chunk_size = chunk_size
        self.error = error
        self.progress = progress
        count = len(pieces)
        self.results: list[Any] = [None] * count
        self.ready = [threading.Event() for _ in range(count)]
        self.index = -1
        self.threaded = count > 1
        if self.threaded:
            self.jobs = itertools.count()
            for _ in range(min(threads(), count)):
                threading.Thread(target=self._work, name="statecache-unzstd", daemon=True).start()

    def _work(self) -> None:
        while (i := next(self.jobs)) < len(self.pieces):
            self._decode(i)

    def _decode(self, i: int) -> None:
        codec, piece = self.pieces[i]
        expected = min(self.chunk_size, self.raw_len - i * self.chunk_size)
        try:
            if codec == RAW:
                data: Any = bytes(piece)
            else:
                data = decompressor().decompress(piece, max_output_size=expected)
            if len(data) != expected:
                data = self.error("damaged pickle stream (wrong decompressed size)")
        except Exception as exc:  # zstd.ZstdError and friends
            data = self.error(f"damaged pickle stream ({exc})")
        self.results[i] = data
        self.ready[i].set()

    def _advance(self) -> bool:
        i = self.index + 1
        if i >= len(self.pieces):
            return False
        if not self.threaded:
            self._decode(i)
        self.ready[i].wait()
        data, self.results[i] = self.results[i], None
        if isinstance(data, BaseException):
            raise data
        self.index, self.cur, self.buf, self.end, self.off = i, data, data, len(data), 0
        self.progress.add(len(data))
        return True
