"""Reading an entry: one open descriptor, ``preadv`` straight into the final memory (or a
copy-on-write map), every byte checked against the table's checksums, the signature checked
with a secret, and any damage an EntryError naming the file: never a crash, never a wrong value.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys

import xxhash

from .._errors import EntryError
from .format import (
    ALIGN,
    FLAG_SIGNED,
    FORMAT_VERSION,
    HEADER,
    KIND_STREAM,
    MAGIC,
    RAW,
    TRAILER,
    TRAILER_MAGIC,
    Section,
    align,
    parse_table,
    xxh,
)
from .meta import EntryMeta, parse_meta
from .progress import NoProgress, progress_bar

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

if TYPE_CHECKING:
    from typing import Any

    from .feed import BufferFeed

READ_PIECE = 256 << 10  # raw chunks are read and hashed this much at a time (cache-resident)
HEAD_READ = 64 << 10  # first read of an entry: header + meta, often the whole file
WHOLE_STREAM_MAX = 1 << 20  # a raw stream up to this size is read whole, in one pread

# A small hit (a pickle stream of raw chunks, no buffer sections) needs only this module, format
# and meta: the codec (threads, zstd) and the compressed stream file are imported when a
# section needs them, and the writer's pickling module not at all.


class Reader:
    """One open entry file: every read goes through this one fd, so a concurrent replace or
    unlink of the path leaves us with the complete old file or an error, never a mix."""

    def __init__(self, path: Any) -> None:
        self.path = os.fspath(path)
        self.progress: NoProgress = NoProgress()
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

    def __enter__(self) -> Reader:
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

    def pread_into(self, target: memoryview, offset: int) -> None:
        """Fill ``target`` from the file at ``offset``, or raise: the file ends early."""
        preadv = getattr(os, "preadv", None)
        done, total = 0, target.nbytes
        while done < total:
            if preadv is not None:
                n = preadv(self.fd, [target[done:]], offset + done)
            else:
                data = os.pread(self.fd, total - done, offset + done)
                n = len(data)
                target[done : done + n] = data
            if n <= 0:
                raise self.error(f"truncated: the file ends before offset {offset + total}")
            done += n

    def _open(self) -> None:
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise self.error("not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise self.error(
                f"owned by uid {st.st_uid}, not by you (uid {os.getuid()}); refusing to load it"
            )
        self.size = st.st_size
        self.head = os.pread(self.fd, min(self.size, HEAD_READ), 0)
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
        if len(self.head) < HEADER.size:
            raise self.error("truncated header")
        _, _, self.flags, meta_len, meta_hash, self.data_start, header_hash = HEADER.unpack_from(
            self.head
        )
        if xxh(self.head[: HEADER.size - 8]) != header_hash:
            raise self.error("damaged header (checksum mismatch)")
        meta_end = HEADER.size + meta_len
        if self.data_start != align(meta_end) or self.data_start + TRAILER.size > self.size:
            raise self.error("truncated or damaged (metadata runs past the end of the file)")
        if meta_end <= len(self.head):
            self.meta_bytes = self.head[HEADER.size : meta_end]
        else:
            self.meta_bytes = self.pread(meta_len, HEADER.size)
        if xxh(self.meta_bytes) != meta_hash:
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
        return self.head[: HEADER.size]

    def read_table(self) -> None:
        """Read and check the trailer and the section table."""
        size = self.size
        small = size <= len(self.head)
        if small:
            trailer = self.head[size - TRAILER.size : size]
        else:
            trailer = self.pread(TRAILER.size, size - TRAILER.size)
        table_offset, table_len, table_hash, self.digest, magic = TRAILER.unpack(trailer)
        self.trailer_head = trailer[:24]
        if magic != TRAILER_MAGIC:
            raise self.error("truncated or damaged (no valid trailer at the end of the file)")
        if (
            table_offset % ALIGN
            or table_offset < self.data_start
            or table_offset + table_len != size - TRAILER.size
        ):
            raise self.error("truncated or damaged (trailer points outside the file)")
        if small:
            table = self.head[table_offset : table_offset + table_len]
        else:
            table = self.pread(table_len, table_offset)
        if xxh(table) != table_hash:
            raise self.error("damaged section table (checksum mismatch)")
        self.table_bytes = table
        try:
            self.sections, self.chunk_size = parse_table(table, self.data_start, table_offset)
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

    def read_stored(self, sec: Section) -> bytes:
        """A section's stored bytes: a slice of the first read when it holds them (a small
        entry is read by one pread in all), else read from the file."""
        end = sec.offset + sec.stored_len
        if end <= len(self.head):
            return self.head[sec.offset : end]
        return self.pread(sec.stored_len, sec.offset)

    def stream_pieces(self, stored: bytes) -> list[tuple[int, memoryview]]:
        """(codec, stored bytes) of every chunk of the pickle stream, each checked first."""
        view = memoryview(stored)
        pieces = []
        pos = 0
        for codec, n, checksum in self.sections[0].chunks:
            piece = view[pos : pos + n]
            pos += n
            if xxh(piece) != checksum:
                raise self.error("damaged pickle stream (checksum mismatch)")
            pieces.append((codec, piece))
        return pieces

    def stream_file(self, stored: bytes) -> Any:
        """The pickle stream as a file for the Unpickler, every chunk checksummed first."""
        sec = self.sections[0]
        pieces = self.stream_pieces(stored)
        if all(codec == RAW for codec, _ in pieces):
            self.progress.add(sec.raw_len)
            return io.BytesIO(stored)
        from .stream import StreamFile

        return StreamFile(pieces, sec.raw_len, self.chunk_size, self.error, self.progress)

    def raw_stream(self) -> Any:
        """A big unsigned stream of raw chunks as a file read chunk by chunk through one
        reused buffer (``rawstream``), not copied whole into fresh memory first."""
        from .rawstream import RawStream

        sec = self.sections[0]
        return RawStream(self.pread_into, sec.chunks, sec.offset, self.error, self.progress)

    def buffer_jobs(self, sec: Section, target: memoryview) -> list[tuple]:
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
                self.pread_into(target, offset)
                digest = xxh(target)
            else:
                h = xxhash.xxh3_64()
                for start in range(0, target.nbytes, READ_PIECE):
                    piece = target[start : start + READ_PIECE]
                    self.pread_into(piece, offset + start)
                    h.update(piece)
                digest = h.intdigest()
            if digest != checksum:
                raise self.error("damaged buffer section (checksum mismatch)")
        else:
            from .codec import unzstd_into

            stored = self.pread(n, offset)
            if xxh(stored) != checksum:
                raise self.error("damaged buffer section (checksum mismatch)")
            try:
                unzstd_into(stored, target)
            except ValueError as exc:
                raise self.error(str(exc)) from exc
        self.progress.add(target.nbytes)

    def verify_chunk(self, job: tuple) -> None:
        offset, n, checksum = job
        if xxh(self.pread(n, offset)) != checksum:
            raise self.error(f"damaged section at offset {offset} (checksum mismatch)")


def _willneed(fd: int, offset: int, length: int) -> None:
    fadvise = getattr(os, "posix_fadvise", None)
    if fadvise is not None and length > 0:
        try:
            fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass


def read_meta(path: Any) -> EntryMeta:
    """The entry's metadata, from the header and the JSON section only (one read, no table,
    no checksums of the data): cheap enough to list thousands of entries."""
    with Reader(path) as reader:
        return reader.meta


def read_entry(
    path: Any, *, mmap: bool = False, secret: bytes | None = None, progress: bool | None = None
) -> tuple[EntryMeta, dict[str, Any]]:
    """Load an entry: ``(meta, state)``. Raises EntryError for any damage, a wrong or missing
    signature (when ``secret`` is given), or a variable that cannot be unpickled here.

    With ``mmap=True`` the file is mapped copy-on-write (MAP_PRIVATE) and raw buffer sections
    become slices of the map: restoring costs page-table setup, not reading, and writes into a
    restored array stay private to this process. The checksums of mapped raw buffers are NOT
    verified (that would read every page); the header, metadata, table, pickle stream and
    compressed sections are. ``verify_entry`` checks everything.

    ``progress``: as for ``write_entry`` (a bar once the load runs past a second).
    """
    with Reader(path) as reader:
        return load_entry(reader, mmap=mmap, secret=secret, progress=progress)


def load_entry(
    reader: Reader, *, mmap: bool = False, secret: bytes | None = None, progress: bool | None = None
) -> tuple[EntryMeta, dict[str, Any]]:
    """``read_entry`` on an open Reader, whose ``meta`` the caller may have looked at first: one
    open and one metadata parse for a hit, and the state read from the very file (descriptor)
    whose metadata was judged, so a file replaced in between cannot pair one with the other."""
    reader.read_table()
    reader.progress = progress_bar(
        "restoring", reader.meta.get("name"), sum(s.raw_len for s in reader.sections), progress
    )
    loaded = False
    try:
        found = _read_state(reader, mmap, secret)
        loaded = True
        return found
    finally:
        reader.progress.close()
        functions = sys.modules.get(f"{__package__}.main_functions")
        if functions is not None:  # loaded only for entries holding functions of __main__
            functions.settle(loaded)


def _read_state(
    reader: Reader, mmap: bool, secret: bytes | None
) -> tuple[EntryMeta, dict[str, Any]]:
    sec = reader.sections[0]
    rebuild = True
    if secret is None and sec.all_raw and sec.raw_len > WHOLE_STREAM_MAX:
        source = reader.raw_stream()
    else:
        stored = reader.read_stored(sec)
        reader.check_signature(secret, stored)
        source = reader.stream_file(stored)
        rebuild = not names_no_array(source, stored)
    names = reader.meta.get("variables")
    if not isinstance(names, dict):
        raise reader.error("damaged metadata (no variable list)")
    try:
        unpickler = unpickler_class(reader.meta.get("pickler"), rebuild)
    except LookupError as exc:
        raise reader.error(str(exc)) from exc
    if len(reader.sections) == 1:  # no buffer section: a small hit imports no feed (threads)
        state = _unpickle(reader, unpickler(source, buffers=()).load, names)
        exhausted = True
    else:
        feed = _read_buffers(reader, mmap)
        try:
            state = _unpickle(reader, unpickler(source, buffers=feed).load, names)
        finally:
            feed.close()  # before the caller closes the fd that its threads read
        exhausted = feed.exhausted
    if source.tell() != reader.sections[0].raw_len or not exhausted:
        raise reader.error("damaged (the pickle stream does not match the variable list)")
    return reader.meta, state


def _unpickle(reader: Reader, load: Any, names: dict[str, Any]) -> dict[str, Any]:
    """Each variable in turn, with the cyclic garbage collector as the caller left it. Pausing
    it made 1M small objects restore slower, not faster: the whole state then sat in the
    youngest generation, whose one collection after the load (objects long out of the CPU
    cache) cost 1.0-1.2 s against 0.2-0.3 s for the small collections of ``pickle.load``."""
    state: dict[str, Any] = {}
    for name in names:
        try:
            state[name] = load()
        except (MemoryError, EntryError):
            raise
        except Exception as exc:
            raise reader.error(
                f"cannot restore variable {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    return state


def _buffer_memory(reader: Reader, mmap: bool) -> list[tuple[memoryview, bool]]:
    """(memory, mapped) for every buffer section: with ``mmap``, a raw section's slice of the
    file's copy-on-write map; otherwise new memory to read it into, one arena for the small
    ones (``memory.arena``)."""
    from .memory import ARENA_MAX, ARENA_MIN, arena, file_map

    sections = reader.sections[1:]
    mapped = memoryview(b"")
    if mmap and any(sec.all_raw and sec.raw_len for sec in sections):
        mapped = file_map(reader.fd, reader.size)
    small = [s.raw_len for s in sections if not _mapped(s, mapped) and s.raw_len < ARENA_MAX]
    pieces = iter((arena(small) if sum(small) >= ARENA_MIN else None) or ())
    out = []
    for sec in sections:
        if _mapped(sec, mapped):
            out.append((mapped[sec.offset : sec.offset + sec.raw_len], True))
            continue
        piece = next(pieces, None) if sec.raw_len < ARENA_MAX else None
        out.append((_fresh(reader, sec.raw_len) if piece is None else piece, False))
    return out


def _mapped(sec: Section, mapped: memoryview) -> bool:
    return bool(mapped) and sec.all_raw and sec.raw_len > 0


def _fresh(reader: Reader, n: int) -> memoryview:
    from .memory import fresh

    try:
        return memoryview(fresh(n)).cast("B")
    except (ValueError, OverflowError) as exc:  # numpy's "array is too big"
        raise reader.error(f"damaged section table (buffer of {n} bytes)") from exc


def _read_buffers(reader: Reader, mmap: bool) -> BufferFeed:
    """The out-of-band buffers, each read (and checked) into its final memory or mapped, fed
    to the Unpickler as they complete (read ahead on threads when there is enough to share)."""
    from .feed import BufferFeed

    buffers: list[Any] = []
    jobs: list[list[tuple]] = []
    total = 0
    memories = _buffer_memory(reader, mmap)
    for sec, (memory, mapped) in zip(reader.sections[1:], memories, strict=True):
        buffers.append(memory)
        if mapped:
            jobs.append([])
            reader.progress.add(sec.raw_len)
        else:
            jobs.append(reader.buffer_jobs(sec, memory))
            total += sec.raw_len
    if not total:  # no buffer, or all mapped: a small hit imports no codec
        return BufferFeed(buffers, jobs, reader.read_chunk)
    from .codec import PARALLEL_MIN, threads

    if total < PARALLEL_MIN:
        return BufferFeed(buffers, jobs, reader.read_chunk)

    # Parallel readers at interleaved offsets defeat the kernel's sequential readahead on a
    # cold file: ask for the whole data range at once (on a reader thread: a few ms when cached)
    last = reader.sections[-1]
    span = last.offset + last.stored_len - reader.data_start
    return BufferFeed(
        buffers, jobs, reader.read_chunk, threads(),
        before=lambda: _willneed(reader.fd, reader.data_start, span),
    )


def names_no_array(source: Any, stored: bytes) -> bool:
    """Whether a small raw stream, held whole, cannot name numpy's array rebuild: a global is
    named by its literal text, so a stream without the bytes of the name cannot call it."""
    return (
        isinstance(source, io.BytesIO)
        and len(stored) <= WHOLE_STREAM_MAX
        and stored.find(b"_frombuffer") < 0
    )


def unpickler_class(pickler: object, rebuild: bool = True) -> Any:
    """The Unpickler for an entry written by ``pickler`` (one of ``pickling.PICKLERS``);
    LookupError (saying why) if none here. cloudpickle's output loads with plain pickle.
    ``rebuild``: with numpy's array rebuild replaced (``_rebuilding``); a stream that cannot
    name it is unpickled by the plain class (no Python ``find_class`` per global)."""
    if pickler in ("pickle", "cloudpickle"):
        import pickle

        base: type = pickle.Unpickler
    elif pickler == "dill":
        try:
            import dill
        except ImportError as exc:
            raise LookupError("needs dill to load, and dill is not installed") from exc
        base = dill.Unpickler
    else:
        raise LookupError(f"unknown pickler {pickler!r} in the metadata")
    return _rebuilding(base) if rebuild else base


_REBUILDING: dict[type, type] = {}


def _rebuilding(base: type) -> type:
    """``base`` with numpy's array rebuild replaced by ``arrays.frombuffer`` (a small array
    comes back owning its data); looked up once per stream, as globals are memoised."""
    cls = _REBUILDING.get(base)
    if cls is None:

        class Unpickler(base):
            def find_class(self, module: str, name: str) -> Any:
                if name == "_frombuffer":
                    from .arrays import FROMBUFFER, frombuffer

                    if (module, name) in FROMBUFFER:
                        return frombuffer
                return super().find_class(module, name)

        cls = _REBUILDING[base] = Unpickler
    return cls


def verify_entry(path: Any, *, secret: bytes | None = None) -> EntryMeta:
    """Check every checksum (and the signature, with ``secret``) without unpickling anything;
    return the metadata. Raises EntryError on the first problem found."""
    from .codec import PARALLEL_MIN, run_jobs

    with Reader(path) as reader:
        reader.read_table()
        stream_sec = reader.sections[0]
        stored = reader.read_stored(stream_sec)
        reader.check_signature(secret, stored)
        reader.stream_pieces(stored)
        jobs = []
        total = 0
        for sec in reader.sections[1:]:
            pos = sec.offset
            for _codec, n, checksum in sec.chunks:
                jobs.append((pos, n, checksum))
                pos += n
            total += sec.stored_len
        run_jobs(jobs, reader.verify_chunk, parallel=total >= PARALLEL_MIN)
        return reader.meta

