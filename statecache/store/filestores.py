"""Stores on a file system: a directory on a shared mount (``file://``), and any other fsspec
filesystem (``memory://`` in tests, ``gs://``, ...) with the guarantees that filesystem allows.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .layout import temp_path
from .objects import (
    PIECE,
    Accept,
    Info,
    LocalDiskError,
    Progress,
    RemoteError,
    download_in_pieces,
    pwrite_all,
)


class DirectoryStore:
    """A directory on a shared mount. Objects are written to a temp name and linked into place
    (create-only and never partial); replacing re-reads the ETag (inode and mtime) and renames,
    which is as close to compare-and-swap as POSIX allows. Files get the umask's permissions so
    that a group can share the directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        if not os.path.isdir(self.root):
            raise RemoteError(f"{self.root} is not a directory (create it, or mount the share)", down=True)

    def _path(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/"))

    @staticmethod
    def _info(path: str, st: os.stat_result) -> Info:
        return Info(path, st.st_size, f"{st.st_ino}-{st.st_mtime_ns}-{st.st_size}", st.st_mtime, time.time())

    def head(self, path: str) -> Info | None:
        try:
            return self._info(path, os.stat(self._path(path)))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(str(exc), down=True) from None

    def get(self, path: str) -> tuple[bytes, Info] | None:
        try:
            with open(self._path(path), "rb") as f:
                return f.read(), self._info(path, os.fstat(f.fileno()))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(str(exc)) from None

    @contextlib.contextmanager
    def _pinned(self, path: str, etag: str) -> Iterator[int]:
        try:
            fd = os.open(self._path(path), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise RemoteError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            if self._info(path, os.fstat(fd)).etag != etag:
                raise RemoteError(f"{path} changed while it was read")
            yield fd
        finally:
            os.close(fd)

    def download(
        self, path: str, fd: int, size: int, etag: str, progress: Progress, head: int, accept: Accept
    ) -> bool:
        """Copied in the kernel (``copy_file_range``: no bytes through Python, and a server-side
        copy on NFS 4.2 or a reflink where the filesystem can), else read and written."""
        with self._pinned(path, etag) as src:

            def read(start: int, end: int) -> bytes:
                data = os.pread(src, end - start, start)
                if len(data) != end - start:
                    raise RemoteError(f"truncated download: the file ends before {size} bytes")
                return data

            if not download_in_pieces(read, fd, head, progress, head, accept):
                return False
            offset = _copy_in_kernel(src, fd, head, size, progress)
            return download_in_pieces(read, fd, size, progress, head, accept, start=offset)

    def _write_temp(self, path: str, fill: Callable[[int], None]) -> str:
        target = self._path(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = temp_path(target)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fill(fd)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp

    def _create(self, path: str, fill: Callable[[int], None]) -> bool:
        if os.path.lexists(self._path(path)):
            return False
        try:
            tmp = self._write_temp(path, fill)
        except OSError as exc:
            raise RemoteError(f"cannot write {path}: {exc.strerror or exc}") from None
        try:
            os.link(tmp, self._path(path))  # fails if the name exists: create-only, never partial
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            raise RemoteError(f"cannot create {path}: {exc.strerror or exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def upload_create(self, path: str, fd: int, size: int, progress: Progress) -> bool:
        def fill(out: int) -> None:
            for offset in range(0, size, PIECE):
                data = os.pread(fd, min(PIECE, size - offset), offset)
                pwrite_all(out, data, offset)
                progress(len(data))

        return self._create(path, fill)

    def put_create(self, path: str, data: bytes) -> str | None:
        if not self._create(path, lambda out: pwrite_all(out, data, 0)):
            return None
        info = self.head(path)
        return info.etag if info else None

    def put_replace(self, path: str, data: bytes, etag: str) -> str | None:
        current = self.head(path)
        if current is None or current.etag != etag:
            return None
        tmp = None
        try:
            tmp = self._write_temp(path, lambda out: pwrite_all(out, data, 0))
            os.replace(tmp, self._path(path))
        except OSError as exc:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise RemoteError(f"cannot replace {path}: {exc.strerror or exc}") from None
        info = self.head(path)
        return info.etag if info else None

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(path))

    def list(self, under: str) -> list[Info]:
        found = []
        top = self._path(under)
        for directory, _dirs, files in os.walk(top):
            for f in files:
                if f.startswith("."):
                    continue
                full = os.path.join(directory, f)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                with contextlib.suppress(FileNotFoundError):
                    found.append(self._info(rel, os.stat(full)))
        return found


def _copy_in_kernel(src: int, dst: int, offset: int, size: int, progress: Progress) -> int:
    """Copy ``src`` to ``dst`` from ``offset`` on with ``copy_file_range``, a PIECE at a time;
    where it is missing or refused (another kernel, filesystem or platform), stop: the offset
    reached is returned and the caller copies the rest itself."""
    copy = getattr(os, "copy_file_range", None)
    while copy is not None and offset < size:
        try:
            n = copy(src, dst, min(PIECE, size - offset), offset, offset)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise LocalDiskError(f"cannot write the local cache: {exc.strerror}") from None
            break
        if n <= 0:
            raise RemoteError(f"truncated download: the file ends before {size} bytes")
        offset += n
        progress(n)
    return offset


# ---------------------------------------------------------------------------------- other fsspec


class FsspecStore:
    """Any other fsspec filesystem (``memory://`` in tests). Create-only and compare-and-swap
    hold among the threads of one process (a lock); across processes they are as good as the
    filesystem's own exclusive-create mode, and otherwise best effort."""

    _lock = threading.Lock()

    def __init__(self, protocol: str, root: str, options: dict[str, Any]) -> None:
        import fsspec

        self.fs = fsspec.filesystem(protocol, skip_instance_cache=protocol != "memory", **options)
        self.root = root.rstrip("/")

    def _path(self, path: str) -> str:
        return f"{self.root}/{path}"

    def _wrap(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def _etag(data: bytes) -> str:
        import xxhash

        return xxhash.xxh3_128_hexdigest(data)

    def _info(self, path: str, raw: dict[str, Any], etag: str | None = None) -> Info:
        modified = modified_time(raw)
        tag = etag or str(
            raw.get("ETag") or raw.get("etag") or raw.get("checksum") or f"{raw.get('size')}-{modified}"
        )
        return Info(path, int(raw.get("size") or 0), tag, modified, time.time())

    def head(self, path: str) -> Info | None:
        return self._wrap(lambda: self._info(path, self.fs.info(self._path(path))))

    def get(self, path: str) -> tuple[bytes, Info] | None:
        def go() -> tuple[bytes, Info]:
            data = self.fs.cat_file(self._path(path))
            return data, self._info(path, self.fs.info(self._path(path)), self._etag(data))

        return self._wrap(go)

    def _read_range(self, path: str, start: int, end: int) -> bytes:
        data = self._wrap(lambda: self.fs.cat_file(self._path(path), start=start, end=end))
        if data is None or len(data) != end - start:
            raise RemoteError(f"truncated download at offset {start}")
        return bytes(data)

    def download(
        self, path: str, fd: int, size: int, etag: str, progress: Progress, head: int, accept: Accept
    ) -> bool:
        """Not pinned to ``etag`` (fsspec has no conditional read): objects are create-only, and a
        download that mixed two objects would fail the verification that follows it."""
        return download_in_pieces(
            lambda start, end: self._read_range(path, start, end), fd, size, progress, head, accept
        )

    def _create(self, path: str, write: Callable[[Any], None]) -> bool:
        full = self._path(path)
        with self._lock:
            if self.fs.exists(full):
                return False
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            try:
                with self.fs.open(full, "xb") as f:
                    write(f)
            except FileExistsError:
                return False
            except OSError as exc:
                raise RemoteError(f"cannot write {path}: {exc}") from None
            return True

    def upload_create(self, path: str, fd: int, size: int, progress: Progress) -> bool:
        def write(f: Any) -> None:
            for offset in range(0, size, PIECE):
                data = os.pread(fd, min(PIECE, size - offset), offset)
                f.write(data)
                progress(len(data))

        return self._create(path, write)

    def put_create(self, path: str, data: bytes) -> str | None:
        return self._etag(data) if self._create(path, lambda f: f.write(data)) else None

    def put_replace(self, path: str, data: bytes, etag: str) -> str | None:
        with self._lock:
            current = self.get(path)
            if current is None or current[1].etag != etag:
                return None
            self._wrap(lambda: self.fs.pipe_file(self._path(path), data))
            return self._etag(data)

    def delete(self, path: str) -> None:
        self._wrap(lambda: self.fs.rm_file(self._path(path)))

    def list(self, under: str) -> list[Info]:
        found = self._wrap(lambda: self.fs.find(self._path(under), detail=True)) or {}
        root = self.fs._strip_protocol(self.root).strip("/") + "/"
        out = []
        for name, raw in found.items():
            rel = name.lstrip("/")
            out.append(self._info(rel[len(root) :] if rel.startswith(root) else rel, raw))
        return out


def modified_time(raw: dict[str, Any]) -> float:
    """When an object was last written, from an fsspec ``info()``: local and memory
    (``mtime``/``created``), s3fs (``LastModified``), adlfs (``last_modified``), gcsfs
    (``updated``, an ISO string); now when it says nothing (an age of 0: ``gc`` keeps it)."""
    import datetime

    for field in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = raw.get(field)
        if isinstance(value, str):
            try:
                value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return time.time()
