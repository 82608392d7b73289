"""How the bytes of a section are stored: cut into chunks, each raw or one zstd frame, encoded
and decoded on a few threads.

The compress decision is made here alone (``assess``, ``encode``), by ``policy.choose`` from a
sample's measured ratio and decode speed: the writer asks for it, the reader only follows what
the table says. Nothing here knows about pickling or files.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .format import CHUNK, RAW, ZSTD, xxh
from .progress import NoProgress

ZSTD_LEVEL = 3
MIN_COMPRESS = 32 << 10  # smaller sections are stored raw (and need no zstandard import)
SAMPLE = 8 << 10
SAMPLES = 8
SAMPLE_SHARE = 16 * SAMPLE  # a buffer gets one sample per this many bytes
PARALLEL_MIN = 8 << 20  # below this many bytes, threads cost more than they save

# (codec, stored bytes, xxh3 of the stored bytes)
Encoded = tuple[int, Any, int]

_local = threading.local()


def threads() -> int:
    """How many threads encode or decode: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def compressor() -> Any:
    """This thread's zstd compressor (zstandard is imported on first use only)."""
    c = getattr(_local, "cctx", None)
    if c is None:
        import zstandard

        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def decompressor() -> Any:
    """This thread's zstd decompressor."""
    d = getattr(_local, "dctx", None)
    if d is None:
        import zstandard

        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def samples_of(mv: memoryview, most: int = SAMPLES) -> list[memoryview]:
    """Pieces of SAMPLE bytes spread over ``mv``: one per SAMPLE_SHARE bytes, 1 to ``most`` of
    them, so that judging a buffer costs a sixteenth of compressing it. Compressing every
    sub-MiB buffer whole to judge it was half the save of a RandomForest (200 buffers, all
    stored raw in the end); a buffer judged worth it is compressed whole afterwards."""
    n = len(mv)
    count = max(1, min(most, n // SAMPLE_SHARE))
    if n <= SAMPLE * count:
        return [mv]
    if count == 1:
        middle = (n - SAMPLE) // 2
        return [mv[middle : middle + SAMPLE]]
    step = (n - SAMPLE) // (count - 1)
    return [mv[i * step : i * step + SAMPLE] for i in range(count)]


def measure(pieces: list[memoryview], packed: list[bytes]) -> float:
    """Raw bytes per second at which zstd decodes ``packed`` (the frames of ``pieces``) here."""
    dctx = decompressor()
    t0 = time.perf_counter()
    for piece, frame in zip(pieces, packed, strict=True):
        dctx.decompress(frame, max_output_size=len(piece))
    return sum(len(p) for p in pieces) / max(time.perf_counter() - t0, 1e-9)


def assess(mv: memoryview, mode: str) -> tuple[bool, bytes | None]:
    """Whether to store ``mv`` compressed (the policy's choice from samples of it), and its
    zstd frame when the sample was all of it (so a small chunk is compressed only once). A
    buffer under ``policy.SMALL`` gets one sample, its ratio alone decides, and its whole
    frame must confirm it (``encode``)."""
    n = len(mv)
    if n < MIN_COMPRESS:
        return False, None
    from .policy import SMALL, choose, needs_speeds, read_speed  # the write path only

    cctx = compressor()
    pieces = samples_of(mv, SAMPLES if n >= SMALL else 1)
    packed = [cctx.compress(p) for p in pieces]
    ratio = sum(map(len, packed)) / sum(len(p) for p in pieces)
    whole = packed[0] if len(pieces) == 1 and pieces[0].nbytes == n else None
    if not needs_speeds(ratio, mode, n):
        return choose(ratio, 0.0, 0.0, mode), whole
    return choose(ratio, measure(pieces, packed), read_speed(), mode), whole


def worth_compressing(mv: memoryview, mode: str = "auto") -> bool:
    """Whether ``mv`` is stored compressed under ``mode`` (see ``policy``), from samples."""
    return assess(mv, mode)[0]


def encode(chunk: Any, compress: bool | None, mode: str = "auto") -> Encoded:
    """Encode one chunk: (codec, stored bytes, xxh3 of stored bytes). ``compress=None``: decide
    here, from samples of the chunk (the whole of a small one) under ``mode``."""
    packed = None
    judged_here = compress is None
    if judged_here:
        compress, packed = assess(memoryview(chunk).cast("B"), mode)
    if compress:
        if packed is None:
            packed = compressor().compress(chunk)
        n = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
        if len(packed) < n and (not judged_here or _confirmed(len(packed), n, mode)):
            return ZSTD, packed, xxh(packed)
    return RAW, chunk, xxh(chunk)


def _confirmed(stored: int, n: int, mode: str) -> bool:
    """Whether the whole frame of a chunk judged from one sample (under ``policy.SMALL``)
    meets the ratio rule too: a sample can mislead, the frame at hand cannot."""
    from .policy import SMALL, choose

    return n >= SMALL or choose(stored / n, 0.0, 0.0, mode)


def chunks_of(mv: memoryview) -> list[memoryview]:
    return [mv[i : i + CHUNK] for i in range(0, len(mv), CHUNK)] if len(mv) else []


def buffer_tasks(
    buffers: list[memoryview], mode: str = "auto"
) -> Iterator[tuple[memoryview, bool | None, str]]:
    """(chunk, compress, mode) for every chunk of every buffer; one decision per big buffer, so
    that a buffer is raw as a whole and can be memory-mapped."""
    for buf in buffers:
        if buf.nbytes <= CHUNK:
            if buf.nbytes:
                yield buf, None, mode
            continue
        compress = worth_compressing(buf, mode)
        for piece in chunks_of(buf):
            yield piece, compress, mode


def unzstd_into(stored: Any, target: memoryview) -> None:
    """Decompress one zstd frame into ``target``, which it must fill exactly; ValueError if not."""
    try:
        stream = decompressor().stream_reader(stored)
        done = 0
        while done < target.nbytes:
            n = stream.readinto(target[done:])
            if not n:
                break
            done += n
        extra = stream.read(1)
    except Exception as exc:  # zstd.ZstdError and friends
        raise ValueError(f"damaged compressed chunk ({exc})") from exc
    if done != target.nbytes or extra:
        raise ValueError("damaged compressed chunk (wrong decompressed size)")


class Pool:
    """A thread pool created on first use; small entries never start a thread."""

    def __init__(self) -> None:
        self._executor: Any = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(threads(), thread_name_prefix="statecache")
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class Done:
    """A finished result with the ``Future.result()`` interface, for work done inline."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


POOL_MIN = 1 << 20  # smaller chunks are encoded inline: a thread's hand-off costs more


def encoded_ahead(pool: Pool, tasks: Iterator[tuple], window: int) -> Iterator[Any]:
    """Futures of encoded chunks, in order, with up to ``window`` in flight ahead of the writer.
    A chunk under POOL_MIN is encoded inline: on the pool, a RandomForest's 200 sub-MiB
    buffers took 1.5x the CPU of the same save inline (submits, futures, the GIL passed on)."""
    queue: collections.deque[Any] = collections.deque()
    for task in tasks:
        chunk = task[0]
        if chunk.nbytes < POOL_MIN:
            queue.append(Done(encode(*task)))
        else:
            queue.append(pool.submit(encode, *task))
        if len(queue) >= window:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def encode_buffers(pool: Pool, buffers: list[memoryview], mode: str = "auto") -> Iterator[Any]:
    """Futures of every buffer chunk's encoding under ``mode``, in order: on the pool when there
    is enough to share, inline otherwise."""
    tasks = buffer_tasks(buffers, mode)
    if sum(b.nbytes for b in buffers) >= PARALLEL_MIN:
        return encoded_ahead(pool, tasks, 2 * threads())
    return (Done(encode(*task)) for task in tasks)


class StreamSink:
    """The pickler's output file: cuts the stream into chunks and compresses full chunks on the
    pool while pickling goes on (the C pickler writes each ~64 KB frame as it completes)."""

    def __init__(self, pool: Pool, progress: NoProgress, mode: str = "auto") -> None:
        self.pool = pool
        self.progress = progress
        self.mode = mode
        self.pending = bytearray()
        self.chunks: list[Any] = []  # futures of encode results, in order
        self.pos = 0

    def write(self, data: Any) -> int:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        self.pending += data
        self.pos += n
        self.progress.add(n)
        while len(self.pending) >= CHUNK:
            with memoryview(self.pending) as view:
                chunk = bytes(view[:CHUNK])
            del self.pending[:CHUNK]
            self.chunks.append(self.pool.submit(encode, chunk, None, self.mode))
        return n

    def finish(self) -> None:
        if self.pending:
            chunk = bytes(self.pending)
            self.pending = bytearray()
            if self.chunks:
                self.chunks.append(self.pool.submit(encode, chunk, None, self.mode))
            else:
                self.chunks.append(Done(encode(chunk, None, self.mode)))


def run_jobs(jobs: list, fn: Callable[[Any], None], *, parallel: bool) -> None:
    """Run ``fn`` on every job, on a few threads when ``parallel``; re-raise the first error."""
    n = min(threads(), len(jobs)) if parallel else 1
    if n <= 1:
        for job in jobs:
            fn(job)
        return
    it = iter(jobs)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        while not errors:
            with lock:
                job = next(it, None)
            if job is None:
                return
            try:
                fn(job)
            except BaseException as exc:
                errors.append(exc)
                return

    threads_ = [threading.Thread(target=work, name="statecache-read", daemon=True) for _ in range(n)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    if errors:
        raise errors[0]
