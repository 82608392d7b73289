"""The messages between the live controller and its workers, and how they cross the socket.

A message is a 4-byte big-endian length and a JSON object with a ``type`` field: no pickle, so
nothing executable crosses the socket. Each kind is a TypedDict below; ``Message`` is their
union, narrowed by ``msg["type"]``.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

if TYPE_CHECKING:  # socket loads only when the loop runs
    import socket

HEADER = struct.Struct("!I")


# -- worker -> controller ---------------------------------------------------------------------


class SnapshotHello(TypedDict):
    """A paused snapshot checks in: where in the script it stands and what it has imported."""

    type: Literal["snapshot"]
    pid: int
    point: int  # taken before statement ``point``
    prefix: str  # digest of statements [0, point)
    label: str  # "the start", "the imports", "checkpoint 'x'"
    run: int  # the run that took it
    modules: list[str]  # the user's module files it has imported
    files: list[dict[str, Any]]  # the records of the files its checkpoints' entries depend on


class RunnerHello(TypedDict):
    type: Literal["runner"]
    pid: int
    run: int


class At(TypedDict):
    """The runner is about to execute statement ``index``."""

    type: Literal["at"]
    index: int


class Modules(TypedDict):
    """The runner imported more of the user's modules: watch them."""

    type: Literal["modules"]
    files: list[str]


class Adopted(TypedDict):
    """The runner goes on with the source of the ``update`` of run ``run``."""

    type: Literal["adopted"]
    run: int


class Refused(TypedDict):
    """The runner is past the update's first changed statement: start over."""

    type: Literal["refused"]
    run: int


class Done(TypedDict):
    type: Literal["done"]
    run: int
    status: str  # "ok", "error", "interrupted", "exit status N"
    elapsed: float


# -- controller -> worker ---------------------------------------------------------------------


class Resume(TypedDict):
    """To a snapshot: fork a runner that executes ``source`` from statement ``start`` on."""

    type: Literal["resume"]
    run: int
    source: str
    start: int
    changed: list[str]  # edited module files: their cached bytecode is removed
    t0: float  # controller's monotonic clock when it decided
    saved: float  # mtime of the save that caused it (0: none)
    reason: str


class Update(TypedDict):
    """To the running runner: a newer source whose first change is still ahead of it."""

    type: Literal["update"]
    run: int
    source: str
    first_change: int
    t0: float


class Exit(TypedDict):
    type: Literal["exit"]


Message = (
    SnapshotHello | RunnerHello | At | Modules | Adopted | Refused | Done | Resume | Update | Exit
)


def encode(msg: Message) -> bytes:
    data = json.dumps(msg).encode()
    return HEADER.pack(len(data)) + data


def decode(body: bytes) -> Message:
    return cast(Message, json.loads(body))


def send(sock: socket.socket, msg: Message) -> None:
    sock.sendall(encode(msg))


def send_blocking(sock: socket.socket, msg: Message) -> None:
    """Send on a socket kept non-blocking otherwise (the controller's side)."""
    sock.setblocking(True)
    try:
        send(sock, msg)
    finally:
        sock.setblocking(False)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        try:
            data = sock.recv(n)
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        if not data:
            return None
        chunks.append(data)
        n -= len(data)
    return b"".join(chunks)


def recv(sock: socket.socket) -> Message | None:
    """One message (blocking), or None when the other side has gone."""
    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    body = _recv_exact(sock, HEADER.unpack(head)[0])
    return None if body is None else decode(body)


class Connection:
    """The controller's side of one worker's connection (non-blocking, buffered)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.role = ""  # "snapshot" or "runner", after its first message
        self.pid = 0

    def messages(self) -> list[Message] | None:
        """Messages that have fully arrived; None at end of file."""
        try:
            data = self.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            out.append(decode(self.buf[HEADER.size : HEADER.size + n]))
            self.buf = self.buf[HEADER.size + n :]
        return out

    def close(self) -> None:
        self.sock.close()
