"""Writing an entry: pickle the state, encode its sections, and put the file in place
atomically (temp file, fsync, rename), signed with a secret if given.

A reader sees the old entry, the new one, or none, never a part: the temp file's name (from
``store.layout``) names its writer, so ``gc`` removes it only once that process is gone. The
directory is not fsynced after the rename: its data fsynced first, an entry visible after a
crash is whole, and the crash can only lose the newest entry (a miss, as for any cache); a
second fsync per save cost 2-7 ms, as much as the whole save of a small state.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ..store.layout import temp_path
from .codec import Pool, StreamSink, encode_buffers
from .format import (
    CHUNK,
    FORMAT_VERSION,
    KIND_BUFFER,
    KIND_STREAM,
    TRAILER_MAGIC,
    SectionRecord,
    align,
    pack_header,
    pack_table,
    pack_trailer_head,
)
from .meta import EntryMeta, VariableRecord, parse_meta
from .pickling import Serialised, serialise
from .policy import check_mode
from .progress import NoProgress, progress_bar


class WrittenEntry(NamedTuple):
    """What ``write_entry`` wrote: where, how big, which variables, which pickler, how long."""

    path: str
    size: int
    variables: dict[str, VariableRecord]
    pickler: str
    seconds: float


class _Out:
    """Sequential writes to a fd: small pieces are gathered and written by one ``writev``
    (without copying them together), big ones written as they are."""

    def __init__(self, fd: int, mac: Any) -> None:
        self.fd = fd
        self.pos = 0
        self.mac = mac
        self.pending: list[memoryview] = []  # views of live objects, written before they go
        self.pending_bytes = 0

    def write(self, data: Any, *, mac: bool = False) -> None:
        if mac and self.mac is not None:
            self.mac.update(data)
        view = memoryview(data).cast("B")
        n = view.nbytes
        if n < _SMALL:
            self.pending.append(view)
            self.pending_bytes += n
            if self.pending_bytes >= _GATHER or len(self.pending) >= _IOV_MAX:
                self.flush()
        else:
            self.flush()
            _write_all(self.fd, view)
        self.pos += n

    def pad(self) -> None:
        gap = align(self.pos) - self.pos
        if gap:
            self.write(bytes(gap))

    def flush(self) -> None:
        if self.pending:
            _writev_all(self.fd, self.pending)
            self.pending = []
            self.pending_bytes = 0


_SMALL = 256 << 10  # pieces below this are gathered
_GATHER = 1 << 20  # and written once this many bytes are pending
_IOV_MAX = 512  # at most this many pieces per writev (POSIX guarantees 16, Linux takes 1024)


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _writev_all(fd: int, views: list[memoryview]) -> None:
    writev = getattr(os, "writev", None)
    if writev is None:  # Windows
        for view in views:
            _write_all(fd, view)
        return
    while views:
        n = writev(fd, views)
        while views and n >= views[0].nbytes:  # a short write: go on from where it stopped
            n -= views[0].nbytes
            views = views[1:]
        if views and n:
            views = [views[0][n:], *views[1:]]


def write_entry(
    path: Any,
    state: dict[str, Any],
    meta: EntryMeta | dict[str, Any],
    *,
    secret: bytes | None = None,
    progress: bool | None = None,
    compress: str = "auto",
) -> WrittenEntry:
    """Serialise ``state`` and write it with ``meta`` to ``path``, atomically (temp file, fsync,
    rename). Raises UnpicklableError (nothing written) when no pickler
    accepts the state, and re-raises any OSError after removing the temp file.

    ``progress``: draw a progress bar on stderr once the save runs past a second (None: only
    when stderr is a terminal and STATECACHE_QUIET is not set). A ``meta`` that breaks the
    schema raises EntryError before anything is written: never an entry no reader accepts.
    ``compress``: "auto", "speed" or "size", which buffers are stored compressed (``policy``)."""
    t0 = time.perf_counter()
    mode = check_mode(compress)
    path = os.fspath(path)
    pool = Pool()
    bar = progress_bar("saving", meta.get("name"), None, progress)
    try:
        ser = serialise(state, lambda: _fresh_sink(pool, bar, mode))
        meta_bytes = _meta_bytes(meta, ser, secret is not None)
        bar.set_total(_state_size(ser))
        size = _write_atomically(
            path, lambda out: _write_parts(out, meta_bytes, ser, pool, bar, mode), secret, bar
        )
    finally:
        bar.close()
        pool.close()
    return WrittenEntry(path, size, ser.variables, ser.pickler, time.perf_counter() - t0)


def _fresh_sink(pool: Pool, bar: NoProgress, mode: str) -> StreamSink:
    bar.restart()  # a new pickler attempt starts the count again
    return StreamSink(pool, bar, mode)


def _state_size(ser: Serialised) -> int:
    return int(ser.sink.pos) + sum(b.nbytes for b in ser.buffers)


def _meta_bytes(meta: EntryMeta | dict[str, Any], ser: Serialised, signed: bool) -> bytes:
    """The caller's metadata plus the writer's fields, as compact JSON, checked as the reader
    will check it (tuples are arrays by then)."""
    from .._version import __version__

    full: dict[str, Any] = dict(meta)
    full.update(
        format=FORMAT_VERSION,
        pickler=ser.pickler,
        variables=ser.variables,
        state_size=_state_size(ser),
        python=f"{sys.version_info[0]}.{sys.version_info[1]}",
        statecache_version=__version__,
        signed=signed,
    )
    encoded = json.dumps(full, separators=(",", ":")).encode()
    parse_meta(json.loads(encoded))
    return encoded


def _write_parts(
    out: _Out, meta_bytes: bytes, ser: Serialised, pool: Pool, bar: NoProgress, mode: str
) -> None:
    """Header, metadata, the stream and buffer sections, the table and the trailer."""
    out.write(pack_header(meta_bytes, out.mac is not None), mac=True)
    out.write(meta_bytes, mac=True)
    out.pad()
    table = [_write_section(out, KIND_STREAM, ser.sink.pos, ser.sink.chunks, mac=True)]
    results = encode_buffers(pool, ser.buffers, mode)
    for buf in ser.buffers:
        n_chunks = -(-buf.nbytes // CHUNK)
        table.append(
            _write_section(out, KIND_BUFFER, buf.nbytes, itertools.islice(results, n_chunks), bar)
        )
    out.pad()
    table_bytes = pack_table(table)
    trailer_head = pack_trailer_head(out.pos, table_bytes)
    out.write(table_bytes)
    digest = bytes(32)
    if out.mac is not None:
        out.mac.update(table_bytes)
        out.mac.update(trailer_head)
        digest = out.mac.digest()
    out.write(trailer_head + digest + TRAILER_MAGIC)
    out.flush()


def _write_section(
    out: _Out,
    kind: int,
    raw_len: int,
    futures: Iterable[Any],
    bar: NoProgress | None = None,
    *,
    mac: bool = False,
) -> SectionRecord:
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


def _write_atomically(
    path: str, write: Callable[[_Out], None], secret: bytes | None, bar: NoProgress
) -> int:
    """Run ``write(out)`` into a private temp file beside ``path``, fsync it and rename it into
    place; the temp file is removed on any failure. Returns the file's size."""
    mac = None
    if secret is not None:
        import hmac

        mac = hmac.new(secret, digestmod="sha256")
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        out = _Out(fd, mac)
        write(out)
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
    return size


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
