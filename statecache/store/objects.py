"""Object stores behind the remote tier: S3 (through s3fs's botocore client), a shared directory
(``file://``) and any other fsspec filesystem (``memory://`` for tests, ``gs://``, ...).

Each offers the few operations the tier needs, with the same meaning everywhere: create-only
writes (``If-None-Match: *``; ``link(2)`` on a directory), compare-and-swap replacement of small
objects (``If-Match`` on the ETag; re-read then ``rename`` on a directory), ranged and whole reads
pinned to one ETag, listing and deletion. Paths are relative to the tier's root. fsspec and s3fs
are imported only when a store is opened.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .._errors import StateCacheError

PIECE = 16 << 20  # bytes per ranged GET / multipart part
CONCURRENCY = 8  # transfers in flight: PIECE * CONCURRENCY bytes of memory at most


class RemoteError(StateCacheError):
    """The remote could not be used (down, slow, refused credentials, garbage); the tier warns
    and the caller goes on locally. ``down`` is True when retrying soon is pointless."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.down = down


class Info(NamedTuple):
    """An object as the server sees it. ``server_now`` is the server's clock when it answered
    (its ``Date`` header), so that ages compare two readings of one clock."""

    path: str
    size: int
    etag: str
    last_modified: float
    server_now: float


Progress = Callable[[int], None]


def open_store(url: str, options: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """The object store for ``url``: ``s3://bucket/prefix``, ``file:///shared/dir`` (or a plain
    path), or any other fsspec URL."""
    protocol, _, rest = url.partition("://")
    if not rest:
        protocol, rest = "file", url
    if protocol == "file":
        return DirectoryStore(rest)
    if protocol in ("s3", "s3a"):
        return S3Store(rest, dict(options or {}), timeout)
    return FsspecStore(protocol, rest, dict(options or {}))


# ---------------------------------------------------------------------------------- S3


class S3Store:
    """A bucket and prefix, spoken to with botocore's requests on fsspec's IO loop."""

    def __init__(self, location: str, options: dict[str, Any], timeout: float) -> None:
        import s3fs

        bucket, _, prefix = location.partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.timeout = timeout
        config = {
            "connect_timeout": min(timeout, 10.0),
            "read_timeout": timeout,
            "retries": {"max_attempts": 2, "mode": "standard"},
            **options.pop("config_kwargs", {}),
        }
        self.fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs=config, **options)

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _run(self, coro_fn: Callable[..., Any], *args: Any, timeout: float | None = -1.0) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, coro_fn, *args, timeout=self.timeout * 4 if timeout == -1.0 else timeout)
        except ClientError as exc:
            raise _client_error(exc) from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise RemoteError(f"{type(exc).__name__}: {exc}", down=True) from None

    async def _client(self) -> Any:
        await self.fs.set_session()
        return await self.fs.get_s3(self.bucket)

    def head(self, path: str) -> Info | None:
        async def go() -> Info | None:
            s3 = await self._client()
            try:
                r = await s3.head_object(Bucket=self.bucket, Key=self._key(path))
            except Exception as exc:
                if _status_of(exc) == 404:
                    return None
                raise
            return _info(path, r, r["ContentLength"])

        return self._run(go)

    def get(self, path: str) -> tuple[bytes, Info] | None:
        async def go() -> tuple[bytes, Info] | None:
            s3 = await self._client()
            try:
                r = await s3.get_object(Bucket=self.bucket, Key=self._key(path))
            except Exception as exc:
                if _status_of(exc) == 404:
                    return None
                raise
            async with r["Body"] as body:
                data = await body.read()
            return data, _info(path, r, len(data))

        return self._run(go)

    def read_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        async def go() -> bytes:
            return await self._get_range(await self._client(), path, start, end, etag)

        return self._run(go)

    async def _get_range(self, s3: Any, path: str, start: int, end: int, etag: str) -> bytes:
        r = await s3.get_object(
            Bucket=self.bucket, Key=self._key(path), Range=f"bytes={start}-{end - 1}", IfMatch=etag
        )
        async with r["Body"] as body:
            data = await body.read()
        if len(data) != end - start:
            raise RemoteError(f"truncated download: {len(data)} of {end - start} bytes at offset {start}")
        return data

    def download(self, path: str, fd: int, start: int, size: int, etag: str, progress: Progress) -> None:
        """Bytes ``start..size`` of the object (pinned to ``etag``) into ``fd`` at the same offsets."""

        async def go() -> None:
            import asyncio

            s3 = await self._client()
            gate = asyncio.Semaphore(CONCURRENCY)

            async def piece(offset: int) -> None:
                async with gate:
                    data = await self._get_range(s3, path, offset, min(size, offset + PIECE), etag)
                _pwrite_all(fd, data, offset)
                progress(len(data))

            await asyncio.gather(*(piece(o) for o in range(start, size, PIECE)))

        self._run(go, timeout=None)

    def upload_create(self, path: str, fd: int, size: int, progress: Progress) -> bool:
        """Upload ``fd``'s first ``size`` bytes create-only; False when the object existed."""

        async def go() -> bool:
            s3 = await self._client()
            key = self._key(path)
            if size < 2 * PIECE:
                try:
                    await s3.put_object(Bucket=self.bucket, Key=key, Body=os.pread(fd, size, 0), IfNoneMatch="*")
                except Exception as exc:
                    if _status_of(exc) in (409, 412):
                        return False
                    raise
                progress(size)
                return True
            return await self._multipart(s3, key, fd, size, progress)

        return bool(self._run(go, timeout=None))

    async def _multipart(self, s3: Any, key: str, fd: int, size: int, progress: Progress) -> bool:
        import asyncio

        mpu = await s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        upload_id = mpu["UploadId"]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def part(number: int, offset: int) -> dict[str, Any]:
            async with gate:
                body = os.pread(fd, min(PIECE, size - offset), offset)
                r = await s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                )
            progress(len(body))
            return {"PartNumber": number, "ETag": r["ETag"]}

        try:
            parts = await asyncio.gather(*(part(i + 1, o) for i, o in enumerate(range(0, size, PIECE))))
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": list(parts)}, IfNoneMatch="*",
            )
            return True
        except BaseException as exc:
            # an unfinished multipart upload is invisible but billed: never leave one behind
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, Exception) and _status_of(exc) in (409, 412):
                return False
            raise

    def put_create(self, path: str, data: bytes) -> str | None:
        return self._put(path, data, IfNoneMatch="*")

    def put_replace(self, path: str, data: bytes, etag: str) -> str | None:
        return self._put(path, data, IfMatch=etag)

    def _put(self, path: str, data: bytes, **condition: str) -> str | None:
        async def go() -> str | None:
            s3 = await self._client()
            try:
                r = await s3.put_object(Bucket=self.bucket, Key=self._key(path), Body=data, **condition)
            except Exception as exc:
                if _status_of(exc) in (404, 409, 412):
                    return None
                raise
            return str(r["ETag"])

        return self._run(go)

    def delete(self, path: str) -> None:
        async def go() -> None:
            s3 = await self._client()
            await s3.delete_object(Bucket=self.bucket, Key=self._key(path))

        self._run(go)

    def list(self, under: str) -> list[Info]:
        async def go() -> list[Info]:
            s3 = await self._client()
            found = []
            prefix = self._key(under).rstrip("/") + "/"
            cut = len(self.prefix) + 1 if self.prefix else 0
            async for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                now = _server_now(page)
                for item in page.get("Contents", []):
                    found.append(Info(item["Key"][cut:], item["Size"], item["ETag"],
                                      item["LastModified"].timestamp(), now))
            return found

        return self._run(go)

    def abort_stale_uploads(self, older_than: float) -> int:
        """Abort multipart uploads under the prefix started more than ``older_than`` s ago."""

        async def go() -> int:
            s3 = await self._client()
            r = await s3.list_multipart_uploads(Bucket=self.bucket, Prefix=self._key(""))
            now, n = _server_now(r), 0
            for up in r.get("Uploads", []):
                if now - up["Initiated"].timestamp() > older_than:
                    await s3.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    n += 1
            return n

        return int(self._run(go))


def _status_of(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(response.get("Error", {}).get("Code", ""))
    if code in ("NoSuchKey", "NotFound", "404"):
        return 404
    if code in ("PreconditionFailed", "412"):
        return 412
    return int(status) if status else None


def _client_error(exc: Any) -> RemoteError:
    error = exc.response.get("Error", {})
    code, message = error.get("Code", "?"), error.get("Message", "")
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "403"):
        return RemoteError(f"access refused ({code}: {message}); check the AWS credentials", down=True)
    if code in ("NoSuchBucket",):
        return RemoteError(f"no such bucket ({message})", down=True)
    return RemoteError(f"{code}: {message}".rstrip(": "))


def _server_now(response: dict[str, Any]) -> float:
    from email.utils import parsedate_to_datetime

    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError):
        return time.time()


def _info(path: str, r: dict[str, Any], size: int) -> Info:
    return Info(path, int(size), str(r["ETag"]), r["LastModified"].timestamp(), _server_now(r))


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


# ---------------------------------------------------------------------------------- a directory


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

    def read_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        with self._pinned(path, etag) as fd:
            data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            raise RemoteError(f"truncated download: {len(data)} of {end - start} bytes at offset {start}")
        return data

    def download(self, path: str, fd: int, start: int, size: int, etag: str, progress: Progress) -> None:
        with self._pinned(path, etag) as src:
            for offset in range(start, size, PIECE):
                data = os.pread(src, min(PIECE, size - offset), offset)
                if len(data) != min(PIECE, size - offset):
                    raise RemoteError(f"truncated download: the file ends before {size} bytes")
                _pwrite_all(fd, data, offset)
                progress(len(data))

    def _write_temp(self, path: str, fill: Callable[[int], None]) -> str:
        target = self._path(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
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
                _pwrite_all(out, data, offset)
                progress(len(data))

        return self._create(path, fill)

    def put_create(self, path: str, data: bytes) -> str | None:
        if not self._create(path, lambda out: _pwrite_all(out, data, 0)):
            return None
        info = self.head(path)
        return info.etag if info else None

    def put_replace(self, path: str, data: bytes, etag: str) -> str | None:
        current = self.head(path)
        if current is None or current.etag != etag:
            return None
        try:
            tmp = self._write_temp(path, lambda out: _pwrite_all(out, data, 0))
            os.replace(tmp, self._path(path))
        except OSError as exc:
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
        modified = raw.get("mtime") or raw.get("created") or raw.get("LastModified") or time.time()
        if hasattr(modified, "timestamp"):
            modified = modified.timestamp()
        tag = etag or str(raw.get("ETag") or raw.get("checksum") or f"{raw.get('size')}-{modified}")
        return Info(path, int(raw.get("size") or 0), tag, float(modified), time.time())

    def head(self, path: str) -> Info | None:
        return self._wrap(lambda: self._info(path, self.fs.info(self._path(path))))

    def get(self, path: str) -> tuple[bytes, Info] | None:
        def go() -> tuple[bytes, Info]:
            data = self.fs.cat_file(self._path(path))
            return data, self._info(path, self.fs.info(self._path(path)), self._etag(data))

        return self._wrap(go)

    def read_range(self, path: str, start: int, end: int, etag: str) -> bytes:
        data = self._wrap(lambda: self.fs.cat_file(self._path(path), start=start, end=end))
        if data is None or len(data) != end - start:
            raise RemoteError(f"truncated download at offset {start}")
        return bytes(data)

    def download(self, path: str, fd: int, start: int, size: int, etag: str, progress: Progress) -> None:
        for offset in range(start, size, PIECE):
            data = self.read_range(path, offset, min(size, offset + PIECE), etag)
            _pwrite_all(fd, data, offset)
            progress(len(data))

    def _create(self, path: str, write: Callable[[Any], None]) -> bool:
        full = self._path(path)
        with self._lock:
            if self.fs.exists(full):
                return False
            self.fs.makedirs(self.fs._parent(full), exist_ok=True)
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

