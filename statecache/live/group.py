"""The live loop's workers as the controller holds them: the socket they call it on, in a
private temporary directory; the first worker, forked as the leader of their own process
group; and, on the way out, every one of them killed and reaped and the directory removed.

On Linux the controller is the workers' subreaper, so the orphans (snapshots whose runner
ended) are its children to reap. Were the controller killed without cleaning up, a snapshot
that notices removes the directory (``worker.Worker.serve``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from . import protocol
from .snapshots import kill
from .terminal import flush_std
from .worker import PR_SET_CHILD_SUBREAPER, prctl

if TYPE_CHECKING:
    import socket

_SOCKET_PATH_MAX = 100  # sun_path is 104 bytes on macOS, 108 on Linux


class WorkerGroup:
    def __init__(self) -> None:
        import socket
        import tempfile

        self.tmp = tempfile.mkdtemp(prefix="statecache-live-")
        self.sock_path = os.path.join(self.tmp, "s")
        if len(os.fsencode(self.sock_path)) > _SOCKET_PATH_MAX and os.path.isdir("/tmp"):
            os.rmdir(self.tmp)  # a long TMPDIR: a socket path has a small limit
            self.tmp = tempfile.mkdtemp(prefix="statecache-live-", dir="/tmp")
            self.sock_path = os.path.join(self.tmp, "s")
        self.listener: socket.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.pgid = 0
        prctl(PR_SET_CHILD_SUBREAPER, 1)

    def spawn(
        self, path: str, argv: list[str], keep_stdin: bool, close: tuple[int, ...],
        caught: list[int],
    ) -> None:
        """Fork the first worker (``worker.origin``); in it, close the file descriptors
        ``close`` and put the signals ``caught`` back to their defaults (SIGINT: ignored)."""
        flush_std()
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for s in caught:
                    signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.SIG_IGN)
                self.listener.close()
                for fd in close:
                    os.close(fd)
                from .worker import origin

                origin(self.sock_path, path, argv, keep_stdin)
            finally:
                os._exit(1)
        self.pgid = pid
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass

    def accept(self) -> Iterator[protocol.Connection]:
        """The workers that have connected since the last call."""
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            yield protocol.Connection(sock)

    def reaped(self) -> Iterator[int]:
        """The pids of the workers that have exited since the last call."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            yield pid

    def shutdown(self, also: list[int]) -> None:
        """Kill the group and the pids ``also`` (snapshots that left it), reap every child,
        remove the socket directory."""
        import shutil

        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in also:
            kill(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
        self.listener.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
