"""The worker processes of the live loop: paused snapshots of the script's state, forked, and
the runners they fork on ``resume``.

The first worker (``origin``) becomes the script's process, as ``python script.py`` would make
it, and serves as the snapshot before the first statement. A runner forks a new snapshot at
each snapshot point it passes; a snapshot waits on its own connection to the controller. No
orphans: a paused snapshot exits when that connection closes, a runner dies with its snapshot
(PR_SET_PDEATHSIG), and a snapshot that sees the controller vanish removes its socket directory.
"""

from __future__ import annotations

import os
import signal
import sys
import types
from typing import TYPE_CHECKING, Any, NoReturn

from . import protocol
from .modules import local_modules
from .terminal import flush_std

if TYPE_CHECKING:
    import socket

    from .plan import Plan

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int) -> None:
    """Linux's prctl(2); nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


class Worker:
    """What a worker process knows: where the controller listens, the script, the version of it
    its state was built from (None: nothing ran yet), the snapshots it forked (a runner reaps
    them), and the files its state depends on as its checkpoints' keys do: every hit or save
    of an entry gives its file records to the recorders active around it, this one included,
    so that the controller can tell a snapshot whose inputs have changed since."""

    def __init__(self, sock_path: str, path: str):
        from ..key.files import FileRecorder

        self.sock_path = sock_path
        self.path = path
        self.files = FileRecorder().__enter__()
        #: records of the data files the statements read, first read first (see forget_reads)
        self.read_outside: dict[tuple[str, str], dict[str, Any]] = {}
        self.plan: Plan | None = None
        self.conn: socket.socket | None = None
        self.snapshot_pids: list[int] = []
        # the script's own signal handlers, which a snapshot replaces and its runners get back
        self.handlers: dict[int, Any] = {
            signal.SIGINT: signal.default_int_handler,
            signal.SIGCHLD: signal.SIG_DFL,
            signal.SIGHUP: signal.SIG_DFL,
            signal.SIGQUIT: signal.SIG_DFL,
        }

    def connect(self, hello: protocol.Message) -> socket.socket:
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock_path)
        protocol.send(s, hello)
        return s

    def snapshot(self, point: int, plan: Plan, run_id: int) -> None:
        """Fork a paused copy of this process; return once the copy has checked in with the
        controller (so the controller hears of it before this runner's next message)."""
        flush_std()
        self.handlers = {sig: signal.getsignal(sig) for sig in self.handlers}
        r, w = os.pipe()
        # a Ctrl-C must not reach the copy before it ignores SIGINT
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            raise
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if pid:
            os.close(w)
            try:
                os.read(r, 1)
            finally:
                os.close(r)
            self.snapshot_pids.append(pid)
            return
        os.close(r)
        self.serve(point, plan.prefix[point], plan.points.get(point, "?"), run_id, w)

    def serve(self, point: int, prefix: str, label: str, run_id: int, ready: int = -1) -> NoReturn:
        """Check in with the controller (then close ``ready``) and wait for commands; each
        ``resume`` forks a runner. Never returns."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap our runners automatically
        # a hangup of the terminal reaches the controller too, which then ends us all; if it has
        # died instead, our connection's end of file says so
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        if self.conn is not None:
            self.conn.close()  # the runner's connection; ours is new
            self.conn = None
        try:
            hello: protocol.SnapshotHello = {
                "type": "snapshot",
                "pid": os.getpid(),
                "point": point,
                "prefix": prefix,
                "label": label,
                "run": run_id,
                "modules": sorted(set(local_modules().values())),
                "files": self.file_records(),
            }
            s = self.connect(hello)
            if ready >= 0:
                os.close(ready)
            while True:
                msg = protocol.recv(s)
                if msg is None:
                    self._controller_gone()
                    break
                if msg["type"] == "exit":
                    break
                if msg["type"] == "resume":
                    self._fork_runner(s, msg)
        except BaseException:  # the controller has gone, or worse: leave quietly
            pass
        os._exit(0)

    def file_records(self) -> list[dict[str, Any]]:
        """The records of the files this state was built from, by absolute path (the state
        holds what was read there, whatever the working directory is now): those of the
        entries hit or saved so far, and those the script's statements read outside them
        (``cfg = json.load(open("cfg.json"))`` above a block)."""
        drop = ("relative", "project_path", "root_path")
        records = {(r["path"], r["kind"]): r for r in self.files.extra}
        for key, record in self.read_outside.items():
            records.setdefault(key, record)
        return [{k: v for k, v in r.items() if k not in drop} for r in records.values()]

    def forget_reads(self) -> None:
        """After a statement: keep a record of each data file or folder it read (its state
        depends on them, whether or not a checkpoint did the reading), then drop the paths the
        recorder saw, so that a long run does not keep every path."""
        if self.files.saw_anything():
            from ..key.files import seen_records

            entries = {(r["path"], r["kind"]) for r in self.files.extra}
            # code, which the sources' watch covers: the script (linecache reads it for keys) and
            # the user's modules
            code = {os.path.realpath(self.path), *local_modules().values()}
            for record in seen_records(self.files).values():
                key, path = (record["path"], record["kind"]), record["path"]
                if key not in entries and os.path.realpath(path) not in code and not _in_cache(path):
                    self.read_outside.setdefault(key, record)
        self.files.forget()

    def _fork_runner(self, s: socket.socket, msg: protocol.Resume) -> None:
        flush_std()
        me = os.getpid()
        if os.fork():
            return
        s.close()
        for sig, handler in self.handlers.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != me:  # the snapshot died before prctl took hold
            os._exit(1)
        self.snapshot_pids = []
        import gc

        gc.freeze()  # a collection would copy every page of the old objects
        from .runner import Run

        Run(self, msg).main()

    def _controller_gone(self) -> None:
        """Our connection closed without ``exit``: the controller died without cleaning up
        (SIGKILL; when it leaves in order, it kills us first). Remove its socket directory."""
        import shutil

        shutil.rmtree(os.path.dirname(self.sock_path), ignore_errors=True)

    def reap_snapshots(self) -> None:
        for pid in list(self.snapshot_pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.snapshot_pids.remove(pid)

    def poll_update(self) -> protocol.Update | None:
        """A newer source the controller sent while we run, if any (between statements)."""
        import select

        assert self.conn is not None
        if not select.select([self.conn], [], [], 0)[0]:
            return None
        msg = protocol.recv(self.conn)
        if msg is None:  # the controller has gone
            os._exit(1)
        return msg if msg["type"] == "update" else None


def _in_cache(path: str) -> bool:
    """A statecache cache directory or a file of one (an entry a hit read, its folder's
    listing, the usage file): it, its directory or the one above holds the cache's tag."""
    from ..store.layout import CACHEDIR_TAG

    parent = os.path.dirname(path)
    return any(os.path.exists(os.path.join(d, CACHEDIR_TAG)) for d in (path, parent, os.path.dirname(parent)))


def main_module(path: str, template: types.ModuleType | None) -> types.ModuleType:
    """The ``__main__`` module ``python script.py`` makes: ``__file__`` and the loader's path
    the script's absolute path, no spec, no package, no cached bytecode, and
    ``__annotations__`` when this interpreter's own ``__main__`` started with one."""
    import builtins
    import importlib.machinery

    mod = types.ModuleType("__main__")
    mod.__file__ = path
    mod.__builtins__ = builtins  # type: ignore[attr-defined]
    mod.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    mod.__cached__ = None  # type: ignore[attr-defined]
    if template is not None and "__annotations__" in vars(template):
        mod.__annotations__ = {}
    return mod


def origin(sock_path: str, path: str, argv: list[str], keep_stdin: bool) -> NoReturn:
    """The first worker: becomes the script's process (``__main__``, ``sys.argv`` with the
    script's name first as typed, ``sys.path[0]`` its real directory) and serves as the
    snapshot before the first statement. Never returns. Without ``keep_stdin`` the script
    reads /dev/null (the terminal stays the loop's)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    # the workers get the terminal during runs: Ctrl-Z would stop them behind the loop's back,
    # Ctrl-\ should only kill a run (runners take it back), never the snapshots
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    if not keep_stdin:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    sys.dont_write_bytecode = True  # a .pyc written by one run must never be read by the next
    sys.modules["__main__"] = main_module(path, sys.modules.get("__main__"))
    sys.argv = list(argv)
    here = os.path.dirname(os.path.realpath(path))
    if getattr(sys.flags, "safe_path", False):  # -P: sys.path[0] is not the launcher's dir
        sys.path.insert(0, here)
    else:
        sys.path[0] = here
    from . import runner  # noqa: F401  (imported once here, not in every runner)

    Worker(sock_path, path).serve(0, "", "the start", 0)
