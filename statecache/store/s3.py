"""An S3 bucket (or any S3-compatible server) as the remote tier's store, spoken to with
botocore's requests on fsspec's IO loop (through s3fs's client), so that transfers run
concurrently: ranged GETs pinned to the ETag, multipart uploads completed create-only and
aborted on any failure. s3fs is imported when a store is opened, never before.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from .objects import (
    CONCURRENCY,
    PIECE,
    Accept,
    Info,
    LocalDiskError,
    Progress,
    RemoteError,
    write_local,
)

STREAMS = 4  # concurrent GETs of one download
READ = 1 << 20  # bytes taken from a response at a time (the progress bar moves by this much)


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
        import asyncio

        from botocore.exceptions import BotoCoreError, ClientError
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, coro_fn, *args, timeout=self.timeout * 4 if timeout == -1.0 else timeout)
        except (RemoteError, LocalDiskError):
            raise
        except ClientError as exc:
            raise _client_error(exc) from None
        except Exception as exc:  # aiohttp's and botocore's own: the request did not go through
            unreachable = isinstance(exc, (BotoCoreError, OSError, TimeoutError, asyncio.TimeoutError))
            raise RemoteError(f"{type(exc).__name__}: {exc}", down=unreachable) from None

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

    def download(
        self, path: str, fd: int, size: int, etag: str, progress: Progress, head: int, accept: Accept
    ) -> bool:
        """The object (pinned to ``etag``) into ``fd`` at the same offsets: ``STREAMS``
        contiguous ranged GETs streamed concurrently, one request each (some servers pay per
        request for the whole object: moto copies it). The first GET starts at 0 and is judged
        by ``accept()`` once ``head`` bytes are in; only then do the others start."""

        async def go() -> bool:
            import asyncio

            s3 = await self._client()
            step = max(PIECE, -(-size // STREAMS))
            judged: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

            async def stream(offset: int, end: int) -> None:
                r = await s3.get_object(
                    Bucket=self.bucket, Key=self._key(path), Range=f"bytes={offset}-{end - 1}", IfMatch=etag
                )
                async with r["Body"] as body:
                    while offset < end and (data := await body.read(min(READ, end - offset))):
                        write_local(fd, data, offset)
                        offset += len(data)
                        progress(len(data))
                        if not judged.done() and offset >= head:
                            judged.set_result(accept())
                            if not judged.result():
                                return
                if offset != end:
                    raise RemoteError(f"truncated download: the object ends at {offset} of {size} bytes")

            tasks: list[asyncio.Future[None]] = [asyncio.ensure_future(stream(0, min(size, step)))]
            try:
                waiting: list[asyncio.Future[Any]] = [tasks[0], judged]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not judged.done() or not judged.result():
                    await tasks[0]  # its error, or the end of a refused (or tiny) object
                    return judged.done() and judged.result()
                tasks += [asyncio.ensure_future(stream(o, min(size, o + step))) for o in range(step, size, step)]
                await asyncio.gather(*tasks)
                return True
            finally:
                # a failed stream must not leave others writing into fd after it is closed
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        return bool(self._run(go, timeout=None))

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

        tasks = [asyncio.ensure_future(part(i + 1, o)) for i, o in enumerate(range(0, size, PIECE))]
        try:
            parts = await asyncio.gather(*tasks)
            try:
                await s3.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": list(parts)}, IfNoneMatch="*",
                )
            except Exception as exc:
                # botocore retries a completion that timed out; the first one may have gone
                # through (moto then answers the retry 500, S3 404): look before failing
                if _status_of(exc) in (409, 412) or not await self._landed(s3, key, size):
                    raise
            return True
        except BaseException as exc:
            for task in tasks:  # no part may read fd once the caller has closed it
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # an unfinished multipart upload is invisible but billed: never leave one behind
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, Exception) and _status_of(exc) in (409, 412):
                return False
            raise

    async def _landed(self, s3: Any, key: str, size: int) -> bool:
        """Whether ``key`` now holds an object of ``size`` bytes (a completion that went through)."""
        try:
            r = await s3.head_object(Bucket=self.bucket, Key=key)
        except Exception:
            return False
        return int(r.get("ContentLength", -1)) == size

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
