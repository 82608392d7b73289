"""A real S3 server on loopback for the remote-tier tests, and broken endpoints beside it that
stall, answer garbage or refuse the credentials (the faults a remote shows). Only 127.0.0.1 is
ever used. Test modules load the fixtures with ``pytest_plugins = ("tests.remote_server",)``;
the helpers below (an entry, a tier, a damaged object) are shared by the remote test modules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

HOST = "127.0.0.1"
SECRET = "team-secret"
NAME, KEY = "features", "ab" * 16


def aws_env(endpoint: str) -> dict[str, str]:
    """Dummy credentials, the test server as the S3 endpoint, and no look-up of any real
    configuration or instance metadata (nothing may leave the machine)."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": HOST,
        "no_proxy": HOST,
    }


@dataclass
class S3Server:
    endpoint: str
    port: int

    def env(self, endpoint: str | None = None) -> dict[str, str]:
        return aws_env(endpoint or self.endpoint)

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = "sc-" + uuid.uuid4().hex[:20]
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == HOST
    try:
        yield S3Server(f"http://{HOST}:{port}", port)
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The test server's endpoint and dummy credentials in this process's environment."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


@pytest.fixture
def bucket_url(s3_server: S3Server) -> str:
    """``s3://<a fresh bucket>/team``."""
    return f"s3://{s3_server.new_bucket()}/team"


_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>The '
    b"AWS Access Key Id you provided does not exist in our records.</Message></Error>"
)
FORBIDDEN = (
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: "
    + str(len(_DENIED)).encode() + b"\r\n\r\n" + _DENIED
)


class BrokenEndpoint:
    """A broken S3 endpoint on 127.0.0.1. ``mode``: ``"stall"`` reads requests and never answers, ``"garbage"`` answers every request with
    bytes that are not HTTP, ``"forbidden"`` refuses every request as S3 does wrong keys. ``connections`` counts the clients; ``closed_by_client`` counts
    those that hung up (an exiting process does)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.closed_by_client = 0
        self.received = 0
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.endpoint = f"http://{HOST}:{self.port}"
        self._stop = False
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            self._answer(client)

    def _answer(self, client: socket.socket) -> None:
        try:
            while True:
                data = client.recv(1 << 16)
                if not data:
                    with self._lock:
                        self.closed_by_client += 1
                    return
                with self._lock:
                    self.received += len(data)
                if self.mode == "garbage" and b"\r\n\r\n" in data:
                    client.sendall(b"\x00\xffnot http at all\r\n\r\n")
                    return
                if self.mode == "forbidden" and b"\r\n\r\n" in data:
                    # a HEAD response has no body, or the client reads it as the next response
                    client.sendall(FORBIDDEN.split(b"\r\n\r\n")[0] + b"\r\n\r\n" if data.startswith(b"HEAD") else FORBIDDEN)
        except OSError:
            with self._lock:
                self.closed_by_client += 1

    def close(self) -> None:
        self._stop = True
        self.listener.close()


class ThrottledProxy:
    """A slow remote: a TCP proxy on 127.0.0.1 in front of the S3 server that passes every byte
    both ways at most ``rate`` bytes per second (per connection and direction), so that a
    transfer of N bytes takes at least N / rate seconds, however fast the machine. With
    ``cut_after`` it instead closes a connection once that many bytes of one response went
    through: a download cut short mid-body. With ``lose_answer_to`` (a bytes pattern) the first
    POST whose request line holds it reaches the server, but its answer is lost (the
    connection closes instead): a request that went through while the client saw it fail."""

    def __init__(self, target_port: int, rate: int, cut_after: int | None = None,
                 lose_answer_to: bytes | None = None) -> None:
        self.target_port = target_port
        self.rate = rate
        self.cut_after = cut_after
        self.lose_answer_to = lose_answer_to
        self.lost = 0
        self.listener = socket.create_server((HOST, 0))
        self.endpoint = f"http://{HOST}:{self.listener.getsockname()[1]}"
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target_port))
            losing = threading.Event()  # this connection's next answer is lost
            threading.Thread(target=self._pump, args=(client, server, False, losing), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True, losing), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool, losing: threading.Event) -> None:
        step = max(1, min(1 << 20, self.rate // 20))  # a slice per 50 ms
        passed = 0
        try:
            while data := src.recv(step):
                if not answers and self._loses(data):
                    losing.set()
                if answers and losing.is_set():
                    self.lost += 1
                    break
                if answers and self.cut_after is not None and passed + len(data) > self.cut_after:
                    if passed < self.cut_after:
                        dst.sendall(data[: self.cut_after - passed])
                    self.cuts += 1
                    break
                dst.sendall(data)
                passed += len(data)
                if self.cut_after is None:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _loses(self, data: bytes) -> bool:
        line = data.split(b"\r\n", 1)[0]
        return (self.lose_answer_to is not None and self.lost == 0 and line.startswith(b"POST ")
                and self.lose_answer_to in line)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def stalled_endpoint() -> Iterator[BrokenEndpoint]:
    p = BrokenEndpoint("stall")
    try:
        yield p
    finally:
        p.close()


# ----------------------------------------------------------------------------- shared helpers


def wait_until(test, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20_000):  # a guard against a hang, not a limit the behaviour is held to
        if test():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(params=["s3", "dir"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, S3Server | None]:
    """The remote in both forms a team uses: an S3 bucket, a directory on a shared mount."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return f"s3://{server.new_bucket()}/team", server
    shared = tmp_path / "shared-mount"
    shared.mkdir()
    return f"file://{shared}", None


def make_entry(directory: Path, secret: bytes = SECRET.encode(), n: int = 300_000, noise: bool = False) -> Path:
    import numpy as np

    from statecache.entry.writer import write_entry

    path = directory / NAME / f"{KEY}.sc"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(n) if noise else np.arange(n)
    write_entry(str(path), {"X": data}, {"name": NAME, "key": KEY, "created": time.time()}, secret=secret)
    return path


def tier_for(url: str, secret: str = SECRET, **kw):  # type: ignore[no-untyped-def]
    from statecache.store.remote import RemoteTier

    return RemoteTier(url, secret=secret.encode(), **kw)


def publish_now(tier, path: Path) -> None:  # type: ignore[no-untyped-def]
    upload = tier.publish(NAME, KEY, str(path))
    upload.thread.join()
    assert upload.error is None and upload.created


def corrupt(remote: str, server: S3Server | None, object_path: str, change) -> None:  # type: ignore[no-untyped-def]
    if server is None:
        target = Path(remote[len("file://") :]) / object_path
        data = change(target.read_bytes())
        target.unlink()  # objects are create-only: an attacker replaces the file
        target.write_bytes(data)
        return
    bucket, prefix = remote[len("s3://") :].split("/", 1)
    client = server.client()
    key = f"{prefix}/{object_path}"
    data = change(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    client.put_object(Bucket=bucket, Key=key, Body=data)


def flip_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out, err
