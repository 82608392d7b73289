"""One cache entry = one file: write it atomically, read it back at the speed of the disk.

Layout (all integers little-endian; every section starts at a multiple of 64 bytes)::

    header   64 B   magic b"\\x89SCACHE\\n", u32 format version, u32 flags (bit 0: signed),
                    u64 meta length, u64 xxh3 of meta, u64 data start, 16 B zero,
                    u64 xxh3 of the 56 bytes before it
    meta            UTF-8 JSON: the caller's metadata plus format, pickler, variables,
                    state_size, python, statecache_version, signed
    sections        section 0: the pickle stream (protocol 5, one dump per variable, one
                    shared memo so that references between variables survive); then one
                    section per out-of-band buffer of 16 KiB or more, in the order the pickler
                    produced them (smaller buffers stay in the stream)
    table           u32 section count, u32 chunk size, u64 zero; per section u64 offset,
                    u64 raw length, u64 stored length, u32 chunk count, u8 kind, 3 B zero;
                    then per chunk u8 codec (0 raw, 1 zstd frame), 3 B zero, u32 stored
                    length, u64 xxh3 of the stored bytes
    trailer  64 B   u64 table offset, u64 table length, u64 xxh3 of the table,
                    32 B HMAC-SHA256 (zero when unsigned), magic b"SCTABLE\\n"

A section is cut into chunks of ``chunk size`` raw bytes (the last one shorter); each chunk
is stored raw or as one zstd frame, so big sections compress and decompress in parallel
threads and every stored byte is covered by a checksum. Buffers that a cheap sample shows zstd
would not shrink by 10 % are stored raw, and raw sections are contiguous in the file, so a
reader can ``readinto`` them straight into their final memory or memory-map them.

The HMAC (with a secret) covers the header, the meta, the stored pickle stream, the table and
the first 24 bytes of the trailer: the code-bearing bytes are authenticated directly, the
buffers through their xxh3 checksums in the table (xxh3 detects damage, not a deliberate
forgery of numeric data).

The table sits at the end because compressed sizes are known only once a section is written;
``read_meta`` needs only the header and the meta, one read at the start of the file.
"""

from __future__ import annotations

import collections
import io
import itertools
import json
import os
import pickle
import re
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import xxhash

from .._errors import EntryError, UnpicklableError
from .meta import EntryMeta, parse_meta

FORMAT_VERSION = 1
ENTRY_SUFFIX = ".sc"

MAGIC = b"\x89SCACHE\n"
TRAILER_MAGIC = b"SCTABLE\n"
ALIGN = 64
CHUNK = 4 << 20  # raw bytes per chunk: the unit of compression, checksumming and threading
ZSTD_LEVEL = 3
MIN_COMPRESS = 32 << 10  # smaller sections are stored raw (and need no zstandard import)
RAW_RATIO = 0.9  # compress only when zstd shrinks a sample below this fraction
SAMPLE = 8 << 10
SAMPLES = 8
PARALLEL_MIN = 8 << 20  # below this many bytes, threads cost more than they save
READ_PIECE = 256 << 10  # raw chunks are read and hashed this much at a time (cache-resident)
INBAND_MAX = 16 << 10  # smaller buffers ride in the pickle stream: a section each costs more
FLAG_SIGNED = 1
RAW, ZSTD = 0, 1
KIND_STREAM, KIND_BUFFER = 0, 1
PICKLERS = ("pickle", "cloudpickle", "dill")

_HEADER = struct.Struct("<8sIIQQQ16xQ")
_TRAILER = struct.Struct("<QQQ32s8s")
_TABLE_HEAD = struct.Struct("<IIQ")
_SECTION = struct.Struct("<QQQIB3x")
_CHUNK = struct.Struct("<B3xIQ")
_HEAD_READ = 64 << 10  # first read of an entry: header + meta, often the whole file

temp_name_pattern = re.compile(r"\.(?P<target>.+)\.(?P<pid>[0-9]+)\.(?P<token>[0-9a-f]{8})\.tmp")

_local = threading.local()


class WrittenEntry(NamedTuple):
    """What ``write_entry`` wrote: where, how big, which variables, which pickler, how long."""

    path: str
    size: int
    variables: dict[str, dict]
    pickler: str
    seconds: float


def is_temp_file(filename: str) -> int | None:
    """The writer's pid if ``filename`` is one of our temp files, else None (for ``gc``)."""
    m = temp_name_pattern.fullmatch(os.path.basename(filename))
    return int(m.group("pid")) if m else None


def _temp_path(path: str) -> str:
    directory, base = os.path.split(path)
    return os.path.join(directory, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _xxh(data: Any) -> int:
    return xxhash.xxh3_64_intdigest(data)


def _threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def _compressor() -> Any:
    c = getattr(_local, "cctx", None)
    if c is None:
        import zstandard

        c = _local.cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _decompressor() -> Any:
    d = getattr(_local, "dctx", None)
    if d is None:
        import zstandard

        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def _type_name(value: Any) -> str:
    t = type(value)
    module = getattr(t, "__module__", None)
    qualname = getattr(t, "__qualname__", t.__name__)
    return qualname if module in (None, "builtins") else f"{module}.{qualname}"


# ---------------------------------------------------------------- progress


class _NoProgress:
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


class _Progress(_NoProgress):
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


def _progress(verb: str, name: Any, total: int | None, enabled: bool | None) -> _NoProgress:
    """A progress bar, or a no-op one. ``enabled=None``: shown when stderr is a terminal and
    ``STATECACHE_QUIET`` is not set (so never in captured output: tests, pipes, logs)."""
    if enabled is False:
        return _NoProgress()
    stream = sys.stderr
    if enabled is None:
        if os.environ.get("STATECACHE_QUIET", "").strip().lower() in {"1", "true", "yes", "on"}:
            return _NoProgress()
        try:
            if stream is None or not stream.isatty():
                return _NoProgress()
        except (AttributeError, ValueError, OSError):
            return _NoProgress()
    return _Progress(verb, str(name) if name is not None else "entry", total, stream)


# ---------------------------------------------------------------- writing


def _worth_compressing(mv: memoryview) -> bool:
    """Whether zstd shrinks ``mv`` usefully, judged from a few small samples spread over it."""
    n = len(mv)
    if n < MIN_COMPRESS:
        return False
    cctx = _compressor()
    if n <= SAMPLE * SAMPLES * 2:
        pieces = [mv]
    else:
        step = (n - SAMPLE) // (SAMPLES - 1)
        pieces = [mv[i * step : i * step + SAMPLE] for i in range(SAMPLES)]
    raw = sum(len(p) for p in pieces)
    packed = sum(len(cctx.compress(p)) for p in pieces)
    return packed < RAW_RATIO * raw


def _encode(chunk: Any, compress: bool | None) -> tuple[int, Any, int]:
    """Encode one chunk: (codec, stored bytes, xxh3 of stored bytes). ``compress=None``: decide
    here (small chunks are compressed and kept if that saves enough, big ones sampled first)."""
    n = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
    threshold = n
    if compress is None:
        if n <= SAMPLE * SAMPLES * 2:
            compress = n >= MIN_COMPRESS
            threshold = int(n * RAW_RATIO)
        else:
            compress = _worth_compressing(memoryview(chunk))
    if compress:
        packed = _compressor().compress(chunk)
        if len(packed) < threshold:
            return ZSTD, packed, _xxh(packed)
    return RAW, chunk, _xxh(chunk)


class _Pool:
    """A thread pool created on first use; small entries never start a thread."""

    def __init__(self) -> None:
        self._executor: Any = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(_threads(), thread_name_prefix="statecache")
        return self._executor.submit(fn, *args)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class _Done:
    """A finished result with the ``Future.result()`` interface, for work done inline."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class _StreamSink:
    """The pickler's output file: cuts the stream into chunks and compresses full chunks on the
    pool while pickling goes on (the C pickler writes each ~64 KB frame as it completes)."""

    def __init__(self, pool: _Pool, progress: _NoProgress) -> None:
        self.pool = pool
        self.progress = progress
        self.pending = bytearray()
        self.chunks: list[Any] = []  # futures of _encode results, in order
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
            self.chunks.append(self.pool.submit(_encode, chunk, None))
        return n

    def finish(self) -> None:
        if self.pending:
            chunk = bytes(self.pending)
            self.pending = bytearray()
            if self.chunks:
                self.chunks.append(self.pool.submit(_encode, chunk, None))
            else:
                self.chunks.append(_Done(_encode(chunk, None)))


class _NullSink:
    def write(self, data: Any) -> int:
        return len(data) if not isinstance(data, memoryview) else data.nbytes


def _pickler_module(name: str) -> Any:
    if name == "pickle":
        return pickle
    if name == "cloudpickle":
        import cloudpickle

        return cloudpickle
    import dill

    return dill


def _main_object_saved_by_value(obj: Any, saved_names: frozenset[str]) -> bool | None:
    """For a function or class of ``__main__``: True when it must be pickled by value, because
    it is one of the variables being saved (defined by the block, so it will not exist in
    ``__main__`` when a later run loads the entry), False when it can go by reference (defined
    outside the block: restored instances then keep ``isinstance`` with the live class).
    None for every other object."""
    if not isinstance(obj, type) and type(obj).__name__ != "function":
        return None
    if getattr(obj, "__module__", None) != "__main__":
        return None
    qualname = getattr(obj, "__qualname__", "")
    if "<locals>" in qualname:
        return True
    main = sys.modules.get("__main__")
    found: Any = main
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found is not obj or qualname.split(".")[0] in saved_names


def _pickler_class(pickler: str, saved_names: frozenset[str]) -> Any:
    """The pickler for one attempt. ``__main__`` functions and classes defined by the block go
    by value (plain pickle refuses them so that cloudpickle takes over); those defined before
    the block go by reference, also under cloudpickle."""
    module = _pickler_module(pickler)
    if pickler == "dill":
        return module.Pickler
    base = module.Pickler

    class Pickler(base):  # type: ignore[misc, valid-type]
        def reducer_override(self, obj: Any) -> Any:
            by_value = _main_object_saved_by_value(obj, saved_names)
            if by_value is False:
                return NotImplemented
            if by_value and pickler == "pickle":
                raise pickle.PicklingError(f"{obj!r} is defined by the block in __main__")
            parent = getattr(super(), "reducer_override", None)
            return parent(obj) if parent is not None else NotImplemented

    return Pickler


class _Serialised:
    def __init__(
        self, pickler: str, sink: _StreamSink, buffers: list[memoryview], variables: dict[str, dict]
    ):
        self.pickler = pickler
        self.sink = sink
        self.buffers = buffers
        self.variables = variables


def _serialise(state: dict[str, Any], pool: _Pool, progress: _NoProgress) -> _Serialised:
    """Pickle the whole state with pickle, else cloudpickle, else dill; else raise
    UnpicklableError naming the variables that no pickler accepts."""
    failures: dict[str, BaseException] = {}
    for pickler in PICKLERS:
        progress.restart()
        sink = _StreamSink(pool, progress)
        buffers: list[memoryview] = []
        keep: list[Any] = []

        def out_of_band(
            pb: pickle.PickleBuffer, buffers: list[memoryview] = buffers, keep: list[Any] = keep
        ) -> bool:
            try:
                raw = pb.raw()
            except BufferError:  # not contiguous: let the pickler copy it in-band
                return True
            if raw.nbytes < INBAND_MAX:
                return True
            keep.append(pb)
            buffers.append(raw)
            return False

        variables: dict[str, dict] = {}
        try:
            p = _pickler_class(pickler, frozenset(state))(sink, protocol=5, buffer_callback=out_of_band)
            for name, value in state.items():
                start, first = sink.pos, len(buffers)
                p.dump(value)
                size = sink.pos - start + sum(b.nbytes for b in buffers[first:])
                variables[name] = {"type": _type_name(value), "size": size}
            sink.finish()
        except Exception as exc:
            failures[pickler] = exc
            continue
        return _Serialised(pickler, sink, buffers, variables)
    raise _unpicklable_error(state, failures)


def _unpicklable_error(
    state: dict[str, Any], failures: dict[str, BaseException]
) -> UnpicklableError:
    culprits: dict[str, dict[str, str]] = {}
    involved: list[str] = []
    for name, value in state.items():
        complaints: dict[str, str] = {}
        for pickler in PICKLERS:
            try:
                module = _pickler_module(pickler)
                module.Pickler(_NullSink(), protocol=5, buffer_callback=lambda pb: False).dump(
                    value
                )
            except Exception as exc:
                complaints[pickler] = f"{type(exc).__name__}: {exc}"[:300]
            else:
                break
        if len(complaints) == len(PICKLERS):
            culprits[name] = complaints
        elif complaints:
            involved.append(name)
    if culprits:
        lines = []
        for name, complaints in culprits.items():
            distinct = list(dict.fromkeys(complaints.values()))
            lines.append(f"  {name!r} ({_type_name(state[name])}): " + "; ".join(distinct))
        names = list(culprits)
        return UnpicklableError(
            "cannot save the state: no pickler (pickle, cloudpickle, dill) accepts "
            + ("this variable" if len(names) == 1 else "these variables")
            + ":\n"
            + "\n".join(lines)
            + f"\nFix: `del {', '.join(names)}` before the end of the block (create it after the "
            "block instead), or make it picklable (define __getstate__/__reduce__). Nothing was "
            "written; the program goes on with the state it computed.",
            names=names,
        )
    complaint = "; ".join(f"{k}: {type(v).__name__}: {v}"[:300] for k, v in failures.items())
    names = involved or list(state)
    return UnpicklableError(
        "cannot save the state: each variable can be pickled on its own, but no single pickler "
        f"accepts them all together ({complaint}). Variables involved: {names!r}. Fix: leave "
        "some out with ignore=[...] or `del` them before the end of the block. Nothing was written.",
        names=names,
    )


class _Out:
    """Sequential writes to a fd, small pieces gathered into one buffer, big ones written as is."""

    def __init__(self, fd: int, mac: Any) -> None:
        self.fd = fd
        self.pos = 0
        self.small = bytearray()
        self.mac = mac

    def write(self, data: Any, *, mac: bool = False) -> None:
        if mac and self.mac is not None:
            self.mac.update(data)
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        if n < (256 << 10):
            self.small += data
            if len(self.small) >= (1 << 20):
                self.flush()
        else:
            self.flush()
            _write_all(self.fd, data)
        self.pos += n

    def pad(self) -> None:
        gap = _align(self.pos) - self.pos
        if gap:
            self.write(bytes(gap))

    def flush(self) -> None:
        if self.small:
            _write_all(self.fd, self.small)
            self.small = bytearray()


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _chunks_of(mv: memoryview) -> list[memoryview]:
    return [mv[i : i + CHUNK] for i in range(0, len(mv), CHUNK)] if len(mv) else []


def write_entry(
    path: Any,
    state: dict[str, Any],
    meta: dict[str, Any],
    *,
    secret: bytes | None = None,
    progress: bool | None = None,
) -> WrittenEntry:
    """Serialise ``state`` and write it with ``meta`` to ``path``, atomically (temp file, fsync,
    rename, fsync of the directory). Raises UnpicklableError (nothing written) when no pickler
    accepts the state, and re-raises any OSError after removing the temp file.

    ``progress``: draw a progress bar on stderr once the save runs past a second (None: only
    when stderr is a terminal and STATECACHE_QUIET is not set). A ``meta`` that breaks the
    schema raises EntryError before anything is written: never an entry no reader accepts."""
    parse_meta(meta, written=False)
    t0 = time.perf_counter()
    path = os.fspath(path)
    pool = _Pool()
    bar = _progress("saving", meta.get("name"), None, progress)
    try:
        ser = _serialise(state, pool, bar)
        from .._version import __version__

        full_meta = dict(meta)
        state_size = ser.sink.pos + sum(b.nbytes for b in ser.buffers)
        bar.set_total(state_size)
        full_meta.update(
            format=FORMAT_VERSION,
            pickler=ser.pickler,
            variables=ser.variables,
            state_size=state_size,
            python=f"{sys.version_info[0]}.{sys.version_info[1]}",
            statecache_version=__version__,
            signed=secret is not None,
        )
        meta_bytes = json.dumps(full_meta, separators=(",", ":")).encode()
        data_start = _align(_HEADER.size + len(meta_bytes))
        head = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            FLAG_SIGNED if secret is not None else 0,
            len(meta_bytes),
            _xxh(meta_bytes),
            data_start,
            0,
        )
        head = head[:-8] + struct.pack("<Q", _xxh(head[:-8]))
        mac = None
        if secret is not None:
            import hmac

            mac = hmac.new(secret, digestmod="sha256")

        tmp = _temp_path(path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            out = _Out(fd, mac)
            out.write(head, mac=True)
            out.write(meta_bytes, mac=True)
            out.pad()
            table = [_write_section(out, KIND_STREAM, ser.sink.pos, ser.sink.chunks, mac=True)]
            tasks = _buffer_tasks(ser.buffers)
            if sum(b.nbytes for b in ser.buffers) >= PARALLEL_MIN:
                results: Iterator[Any] = _ahead(pool, tasks, 2 * _threads())
            else:
                results = (_Done(_encode(*task)) for task in tasks)
            for buf in ser.buffers:
                n_chunks = -(-buf.nbytes // CHUNK)
                table.append(
                    _write_section(
                        out, KIND_BUFFER, buf.nbytes, itertools.islice(results, n_chunks), bar
                    )
                )
            out.pad()
            table_bytes = _pack_table(table)
            table_offset = out.pos
            out.write(table_bytes)
            trailer_head = struct.pack("<QQQ", table_offset, len(table_bytes), _xxh(table_bytes))
            digest = bytes(32)
            if mac is not None:
                mac.update(table_bytes)
                mac.update(trailer_head)
                digest = mac.digest()
            out.write(trailer_head + digest + TRAILER_MAGIC)
            out.flush()
            bar.stage("(syncing to disk)")
            os.fsync(fd)
            size = out.pos
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(os.path.dirname(path) or ".")
    finally:
        bar.close()
        pool.close()
    return WrittenEntry(path, size, ser.variables, ser.pickler, time.perf_counter() - t0)


def _buffer_tasks(buffers: list[memoryview]) -> Iterator[tuple[memoryview, bool | None]]:
    """(chunk, compress) for every chunk of every buffer; one decision per big buffer, so that a
    buffer is raw as a whole and can be memory-mapped."""
    for buf in buffers:
        if buf.nbytes <= CHUNK:
            if buf.nbytes:
                yield buf, None
            continue
        compress = _worth_compressing(buf)
        for piece in _chunks_of(buf):
            yield piece, compress


def _ahead(pool: _Pool, tasks: Iterator[tuple], window: int) -> Iterator[Any]:
    """Futures of encoded chunks, in order, with up to ``window`` in flight ahead of the writer."""
    queue: collections.deque[Any] = collections.deque()
    for task in tasks:
        queue.append(pool.submit(_encode, *task))
        if len(queue) >= window:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _write_section(
    out: _Out,
    kind: int,
    raw_len: int,
    futures: Any,
    bar: _NoProgress | None = None,
    *,
    mac: bool = False,
) -> tuple:
    out.pad()
    offset = out.pos
    chunks = []
    for i, fut in enumerate(futures):
        codec, stored, checksum = fut.result()
        out.write(stored, mac=mac)
        if bar is not None:
            bar.add(min(CHUNK, raw_len - i * CHUNK))
        chunks.append(
            (codec, len(stored) if not isinstance(stored, memoryview) else stored.nbytes, checksum)
        )
    stored_len = out.pos - offset
    return offset, raw_len, stored_len, kind, chunks


def _pack_table(table: list[tuple]) -> bytes:
    parts = [_TABLE_HEAD.pack(len(table), CHUNK, 0)]
    for offset, raw_len, stored_len, kind, chunks in table:
        parts.append(_SECTION.pack(offset, raw_len, stored_len, len(chunks), kind))
        parts.extend(_CHUNK.pack(*c) for c in chunks)
    return b"".join(parts)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: str) -> None:
    # Best effort: the entry is already in place; some file systems refuse to fsync a directory.
    try:
        dfd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


# ---------------------------------------------------------------- reading


class _Section:
    __slots__ = ("offset", "raw_len", "stored_len", "kind", "chunks")

    def __init__(
        self,
        offset: int,
        raw_len: int,
        stored_len: int,
        kind: int,
        chunks: list[tuple[int, int, int]],
    ):
        self.offset = offset
        self.raw_len = raw_len
        self.stored_len = stored_len
        self.kind = kind
        self.chunks = chunks  # (codec, stored length, xxh3)

    @property
    def all_raw(self) -> bool:
        return all(c[0] == RAW for c in self.chunks)


class _Reader:
    """One open entry file: every read goes through this one fd, so a concurrent replace or
    unlink of the path leaves us with the complete old file or an error, never a mix."""

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        self.progress: _NoProgress = _NoProgress()
        try:
            # O_NONBLOCK: a FIFO planted under an entry's name must not hang the open
            flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
            self.fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise EntryError(
                f"cache entry {self.path}: cannot open it: {exc.strerror or exc}"
            ) from exc
        try:
            self._open()
        except BaseException:
            os.close(self.fd)
            raise

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def error(self, what: str) -> EntryError:
        return EntryError(f"cache entry {self.path}: {what}")

    def pread(self, n: int, offset: int) -> bytes:
        data = os.pread(self.fd, n, offset)
        while len(data) < n:
            more = os.pread(self.fd, n - len(data), offset + len(data))
            if not more:
                raise self.error(
                    f"truncated: expected {n} bytes at offset {offset}, the file ends early"
                )
            data += more
        return data

    def _open(self) -> None:
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise self.error("not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise self.error(
                f"owned by uid {st.st_uid}, not by you (uid {os.getuid()}); refusing to load it"
            )
        self.size = st.st_size
        self.head = os.pread(self.fd, min(self.size, _HEAD_READ), 0)
        if len(self.head) < 12 or self.head[:8] != MAGIC:
            raise self.error(
                "not a statecache entry (empty file)"
                if not self.head
                else "not a statecache entry (wrong magic bytes)"
            )
        (version,) = struct.unpack_from("<I", self.head, 8)
        if version != FORMAT_VERSION:
            raise self.error(
                f"written in entry format version {version}, this statecache reads version "
                f"{FORMAT_VERSION} (it will be recomputed)"
            )
        if len(self.head) < _HEADER.size:
            raise self.error("truncated header")
        _, _, self.flags, meta_len, meta_hash, self.data_start, header_hash = _HEADER.unpack_from(
            self.head
        )
        if _xxh(self.head[: _HEADER.size - 8]) != header_hash:
            raise self.error("damaged header (checksum mismatch)")
        meta_end = _HEADER.size + meta_len
        if self.data_start != _align(meta_end) or self.data_start + _TRAILER.size > self.size:
            raise self.error("truncated or damaged (metadata runs past the end of the file)")
        if meta_end <= len(self.head):
            self.meta_bytes = self.head[_HEADER.size : meta_end]
        else:
            self.meta_bytes = self.pread(meta_len, _HEADER.size)
        if _xxh(self.meta_bytes) != meta_hash:
            raise self.error("damaged metadata (checksum mismatch)")
        try:
            meta = json.loads(self.meta_bytes.decode("utf-8"))
        except ValueError as exc:
            raise self.error(f"damaged metadata (not JSON: {exc})") from exc
        try:
            self.meta: EntryMeta = parse_meta(meta)
        except EntryError as exc:
            raise self.error(f"damaged metadata ({exc})") from exc

    def header_bytes(self) -> bytes:
        return self.head[: _HEADER.size]

    def read_table(self) -> None:
        """Read and check the trailer and the section table."""
        size = self.size
        small = size <= len(self.head)
        if small:
            trailer = self.head[size - _TRAILER.size : size]
        else:
            trailer = self.pread(_TRAILER.size, size - _TRAILER.size)
        table_offset, table_len, table_hash, self.digest, magic = _TRAILER.unpack(trailer)
        self.trailer_head = trailer[:24]
        if magic != TRAILER_MAGIC:
            raise self.error("truncated or damaged (no valid trailer at the end of the file)")
        if (
            table_offset % ALIGN
            or table_offset < self.data_start
            or table_offset + table_len != size - _TRAILER.size
        ):
            raise self.error("truncated or damaged (trailer points outside the file)")
        if small:
            table = self.head[table_offset : table_offset + table_len]
        else:
            table = self.pread(table_len, table_offset)
        if _xxh(table) != table_hash:
            raise self.error("damaged section table (checksum mismatch)")
        self.table_bytes = table
        try:
            self.sections, self.chunk_size = _parse_table(table, self.data_start, table_offset)
        except (struct.error, ValueError) as exc:
            raise self.error(f"damaged section table ({exc})") from exc
        if not self.sections or self.sections[0].kind != KIND_STREAM:
            raise self.error("damaged section table (no pickle stream)")

    def check_signature(self, secret: bytes | None, stream_stored: Any) -> None:
        if secret is None:
            return
        if not self.flags & FLAG_SIGNED:
            raise self.error("not signed, but STATECACHE_SECRET is set; refusing to load it")
        import hmac

        mac = hmac.new(secret, digestmod="sha256")
        mac.update(self.header_bytes())
        mac.update(self.meta_bytes)
        mac.update(stream_stored)
        mac.update(self.table_bytes)
        mac.update(self.trailer_head)
        if not hmac.compare_digest(mac.digest(), self.digest):
            raise self.error(
                "wrong signature (signed with another secret, or altered); refusing to load it"
            )

    def read_stored(self, sec: _Section) -> bytes:
        return self.pread(sec.stored_len, sec.offset) if sec.stored_len else b""

    def stream_file(self, stored: bytes) -> Any:
        """The pickle stream as a file for the Unpickler, every chunk checksummed first."""
        sec = self.sections[0]
        view = memoryview(stored)
        pieces = []
        pos = 0
        for codec, n, checksum in sec.chunks:
            piece = view[pos : pos + n]
            pos += n
            if _xxh(piece) != checksum:
                raise self.error("damaged pickle stream (checksum mismatch)")
            pieces.append((codec, piece))
        if all(codec == RAW for codec, _ in pieces):
            self.progress.add(sec.raw_len)
            return io.BytesIO(stored)
        return _StreamFile(self, pieces, sec.raw_len)

    def buffer_jobs(self, sec: _Section, target: memoryview) -> list[tuple]:
        jobs = []
        pos = sec.offset
        for i, (codec, n, checksum) in enumerate(sec.chunks):
            start = i * self.chunk_size
            end = min(start + self.chunk_size, sec.raw_len)
            jobs.append((codec, pos, n, checksum, target[start:end]))
            pos += n
        return jobs

    def read_chunk(self, job: tuple) -> None:
        """Read one buffer chunk into its final memory and check it; raw chunks go straight in."""
        codec, offset, n, checksum, target = job
        if codec == RAW:
            # Read and hash in pieces small enough to stay in the CPU cache between the copy
            # and the hash: one pass over memory instead of two (~15 % faster on 1 GB).
            if target.nbytes <= READ_PIECE:
                _pread_into(self, target, offset)
                digest = _xxh(target)
            else:
                h = xxhash.xxh3_64()
                for start in range(0, target.nbytes, READ_PIECE):
                    piece = target[start : start + READ_PIECE]
                    _pread_into(self, piece, offset + start)
                    h.update(piece)
                digest = h.intdigest()
            if digest != checksum:
                raise self.error("damaged buffer section (checksum mismatch)")
        else:
            stored = self.pread(n, offset)
            if _xxh(stored) != checksum:
                raise self.error("damaged buffer section (checksum mismatch)")
            _unzstd_into(self, stored, target)
        self.progress.add(target.nbytes)

    def verify_chunk(self, job: tuple) -> None:
        offset, n, checksum = job
        if _xxh(self.pread(n, offset)) != checksum:
            raise self.error(f"damaged section at offset {offset} (checksum mismatch)")


class _StreamFile:
    """The pickle stream as a read-only file. Compressed chunks are decompressed by background
    threads in order, ahead of the Unpickler, so unpickling starts after the first chunk instead
    of after the whole stream; a consumed chunk is dropped at once."""

    def __init__(self, reader: _Reader, pieces: list[tuple[int, memoryview]], raw_len: int):
        self.reader = reader
        self.pieces = pieces
        self.raw_len = raw_len
        self.chunk_size = reader.chunk_size
        count = len(pieces)
        self.results: list[Any] = [None] * count
        self.ready = [threading.Event() for _ in range(count)]
        self.index = -1
        self.cur = b""
        self.off = 0
        self.pos = 0
        self.threaded = count > 1
        if self.threaded:
            self.jobs = itertools.count()
            for _ in range(min(_threads(), count)):
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
                data = _decompressor().decompress(piece, max_output_size=expected)
            if len(data) != expected:
                data = self.reader.error("damaged pickle stream (wrong decompressed size)")
        except Exception as exc:  # zstd.ZstdError and friends
            data = self.reader.error(f"damaged pickle stream ({exc})")
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
        self.index, self.cur, self.off = i, data, 0
        self.reader.progress.add(len(data))
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            n = self.raw_len - self.pos
        parts = []
        while n > 0:
            if self.off >= len(self.cur) and not self._advance():
                break
            take = min(n, len(self.cur) - self.off)
            parts.append(self.cur[self.off : self.off + take])
            self.off += take
            self.pos += take
            n -= take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        done = 0
        while done < len(target):
            if self.off >= len(self.cur) and not self._advance():
                break
            take = min(len(target) - done, len(self.cur) - self.off)
            target[done : done + take] = self.cur[self.off : self.off + take]
            self.off += take
            self.pos += take
            done += take
        return done

    def readline(self) -> bytes:
        parts = []
        while True:
            if self.off >= len(self.cur) and not self._advance():
                break
            end = self.cur.find(b"\n", self.off)
            stop = len(self.cur) if end < 0 else end + 1
            parts.append(self.cur[self.off : stop])
            self.pos += stop - self.off
            self.off = stop
            if end >= 0:
                break
        return b"".join(parts)

    def tell(self) -> int:
        return self.pos


def _parse_table(table: bytes, data_start: int, table_offset: int) -> tuple[list[_Section], int]:
    count, chunk_size, _ = _TABLE_HEAD.unpack_from(table, 0)
    if not 4096 <= chunk_size <= (1 << 30):
        raise ValueError(f"chunk size {chunk_size}")
    pos = _TABLE_HEAD.size
    end_of_previous = data_start
    sections = []
    for _ in range(count):
        offset, raw_len, stored_len, n_chunks, kind = _SECTION.unpack_from(table, pos)
        pos += _SECTION.size
        if kind not in (KIND_STREAM, KIND_BUFFER) or offset % ALIGN or offset < end_of_previous:
            raise ValueError("bad section entry")
        if offset + stored_len > table_offset:
            raise ValueError("section runs past the table")
        if n_chunks != -(-raw_len // chunk_size):
            raise ValueError("chunk count does not match the section length")
        chunks = []
        total = 0
        for i in range(n_chunks):
            codec, n, checksum = _CHUNK.unpack_from(table, pos)
            pos += _CHUNK.size
            raw = min(chunk_size, raw_len - i * chunk_size)
            if codec not in (RAW, ZSTD) or (codec == RAW and n != raw):
                raise ValueError("bad chunk entry")
            chunks.append((codec, n, checksum))
            total += n
        if total != stored_len:
            raise ValueError("chunk lengths do not add up")
        sections.append(_Section(offset, raw_len, stored_len, kind, chunks))
        end_of_previous = offset + stored_len
    if pos != len(table):
        raise ValueError("trailing bytes")
    return sections, chunk_size


def _pread_into(reader: _Reader, target: memoryview, offset: int) -> None:
    preadv = getattr(os, "preadv", None)
    done, total = 0, target.nbytes
    while done < total:
        if preadv is not None:
            n = preadv(reader.fd, [target[done:]], offset + done)
        else:
            data = os.pread(reader.fd, total - done, offset + done)
            n = len(data)
            target[done : done + n] = data
        if n <= 0:
            raise reader.error("truncated (a buffer section ends early)")
        done += n


def _willneed(fd: int, offset: int, length: int) -> None:
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is not None and length > 0:
        try:
            fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass


def _unzstd_into(reader: _Reader, stored: Any, target: memoryview) -> None:
    try:
        stream = _decompressor().stream_reader(stored)
        done = 0
        while done < target.nbytes:
            n = stream.readinto(target[done:])
            if not n:
                break
            done += n
        extra = stream.read(1)
    except Exception as exc:  # zstd.ZstdError and friends
        raise reader.error(f"damaged compressed chunk ({exc})") from exc
    if done != target.nbytes or extra:
        raise reader.error("damaged compressed chunk (wrong decompressed size)")


def _run(jobs: list, fn: Callable[[Any], None], *, parallel: bool) -> None:
    """Run ``fn`` on every job, on a few threads when ``parallel``; re-raise the first error."""
    n = min(_threads(), len(jobs)) if parallel else 1
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

    threads = [threading.Thread(target=work, name="statecache-read", daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _alloc(n: int) -> Any:
    """Uninitialised writable memory for one buffer. numpy's allocator skips the zero-fill that
    ``bytearray(n)`` pays and asks for huge pages, which halves the cost of first touch."""
    if n >= (1 << 20):
        np = sys.modules.get("numpy")
        if np is None:
            try:
                import numpy as np
            except ImportError:
                np = None
        if np is not None:
            return np.empty(n, dtype=np.uint8)
    return bytearray(n)


def _map(reader: _Reader) -> memoryview:
    """The whole file mapped copy-on-write, or an empty view where mapping is refused (some
    network file systems), in which case buffers are read as usual."""
    import mmap

    try:
        return memoryview(mmap.mmap(reader.fd, reader.size, access=mmap.ACCESS_COPY))
    except (OSError, ValueError):
        return memoryview(b"")


def _unpickler_class(reader: _Reader) -> Any:
    pickler = reader.meta.get("pickler")
    if pickler in ("pickle", "cloudpickle"):
        return pickle.Unpickler
    if pickler == "dill":
        try:
            import dill
        except ImportError as exc:
            raise reader.error("needs dill to load, and dill is not installed") from exc
        return dill.Unpickler
    raise reader.error(f"unknown pickler {pickler!r} in the metadata")


def read_meta(path: Any) -> dict[str, Any]:
    """The entry's metadata, from the header and the JSON section only (one read, no table,
    no checksums of the data): cheap enough to list thousands of entries."""
    with _Reader(path) as reader:
        return reader.meta


def read_entry(
    path: Any, *, mmap: bool = False, secret: bytes | None = None, progress: bool | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load an entry: ``(meta, state)``. Raises EntryError for any damage, a wrong or missing
    signature (when ``secret`` is given), or a variable that cannot be unpickled here.

    With ``mmap=True`` the file is mapped copy-on-write (MAP_PRIVATE) and raw buffer sections
    become slices of the map: restoring costs page-table setup, not reading, and writes into a
    restored array stay private to this process. The checksums of mapped raw buffers are NOT
    verified (that would read every page); the header, metadata, table, pickle stream and
    compressed sections are. ``verify_entry`` checks everything.

    ``progress``: as for ``write_entry`` (a bar once the load runs past a second).
    """
    with _Reader(path) as reader:
        reader.read_table()
        reader.progress = _progress(
            "restoring",
            reader.meta.get("name"),
            sum(s.raw_len for s in reader.sections),
            progress,
        )
        try:
            return _read_state(reader, mmap, secret)
        finally:
            reader.progress.close()


def _read_state(
    reader: _Reader, mmap: bool, secret: bytes | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    stream_sec = reader.sections[0]
    if not mmap and sum(sec.stored_len for sec in reader.sections[1:]) >= PARALLEL_MIN:
        # Parallel readers at interleaved offsets defeat the kernel's sequential readahead on
        # a cold file: ask for the whole data range at once (about a millisecond when cached).
        last = reader.sections[-1]
        _willneed(reader.fd, reader.data_start, last.offset + last.stored_len - reader.data_start)
    stored = reader.read_stored(stream_sec)
    reader.check_signature(secret, stored)
    source = reader.stream_file(stored)
    names = reader.meta.get("variables")
    if not isinstance(names, dict):
        raise reader.error("damaged metadata (no variable list)")
    unpickler_class = _unpickler_class(reader)

    buffers: list[Any] = []
    jobs: list[tuple] = []
    mapped: memoryview | None = None
    total = 0
    for sec in reader.sections[1:]:
        if mmap and sec.all_raw and sec.raw_len:
            if mapped is None:
                mapped = _map(reader)
            if mapped:
                buffers.append(mapped[sec.offset : sec.offset + sec.raw_len])
                reader.progress.add(sec.raw_len)
                continue
        try:
            memory = memoryview(_alloc(sec.raw_len)).cast("B")
        except (ValueError, OverflowError) as exc:  # numpy's "array is too big"
            raise reader.error(
                f"damaged section table (buffer of {sec.raw_len} bytes)"
            ) from exc
        buffers.append(memory)
        jobs.extend(reader.buffer_jobs(sec, memory))
        total += sec.raw_len
    _run(jobs, reader.read_chunk, parallel=total >= PARALLEL_MIN)

    state: dict[str, Any] = {}
    remaining = iter(buffers)
    unpickler = unpickler_class(source, buffers=remaining)
    for name in names:
        try:
            state[name] = unpickler.load()
        except (MemoryError, EntryError):
            raise
        except Exception as exc:
            raise reader.error(
                f"cannot restore variable {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    if source.tell() != reader.sections[0].raw_len or next(remaining, None) is not None:
        raise reader.error("damaged (the pickle stream does not match the variable list)")
    return reader.meta, state


def verify_entry(path: Any, *, secret: bytes | None = None) -> dict[str, Any]:
    """Check every checksum (and the signature, with ``secret``) without unpickling anything;
    return the metadata. Raises EntryError on the first problem found."""
    with _Reader(path) as reader:
        reader.read_table()
        stream_sec = reader.sections[0]
        stored = reader.read_stored(stream_sec)
        reader.check_signature(secret, stored)
        _check_stream(reader, stored)
        jobs = []
        total = 0
        for sec in reader.sections[1:]:
            pos = sec.offset
            for _codec, n, checksum in sec.chunks:
                jobs.append((pos, n, checksum))
                pos += n
            total += sec.stored_len
        _run(jobs, reader.verify_chunk, parallel=total >= PARALLEL_MIN)
        return reader.meta


def _check_stream(reader: _Reader, stored: bytes) -> None:
    pos = 0
    view = memoryview(stored)
    for _codec, n, checksum in reader.sections[0].chunks:
        if _xxh(view[pos : pos + n]) != checksum:
            raise reader.error("damaged pickle stream (checksum mismatch)")
        pos += n
