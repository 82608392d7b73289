"""``statecache live SCRIPT [ARGS...]``: keep a warm copy of the script's state and, on every
save, re-run only what changed, from the nearest snapshot.

Processes (POSIX, fork):

- the *controller* (this process) owns the terminal, watches the files (watchfiles, in a
  thread started only after the last fork it makes) and talks to the workers over a Unix
  socket in a private temporary directory;
- *snapshots* are forked, paused copies of the script's process, taken before the first
  statement, after the leading imports and after every top-level ``with checkpoint(...)``
  block. A snapshot waits on its socket; on ``resume`` it forks a *runner* that executes the
  rest of the new source, statement by statement, as ``__main__``.

On a save, the new source is compared with the old one statement by statement (normalised
AST: comments and formatting do not count); the run resumes in the last snapshot whose
statements are all unchanged and which has not imported a changed local module (so that
module is imported afresh). Snapshots are copy-on-write: each costs only the pages that
later runs write to.

No orphans: the workers form their own process group, killed as a whole on exit (also on
SIGTERM and SIGHUP); the controller is their subreaper on Linux; a paused snapshot exits when
its socket to the controller closes, and a runner dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # socket, selectors and hashlib load only when the loop runs
    import socket

__all__ = ["add_parser", "run", "main"]

MAX_SNAPSHOTS = 8
_TAG = "statecache live"
_HEADER = struct.Struct("!I")
_READ = 1  # selectors.EVENT_READ
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


# ---------------------------------------------------------------------------------------------
# Messages: 4-byte length + JSON (no pickle: nothing executable crosses the socket)


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    data = json.dumps(msg).encode()
    sock.sendall(_HEADER.pack(len(data)) + data)


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


def _recv(sock: socket.socket) -> dict[str, Any] | None:
    """One message, or None when the other side has gone."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    body = _recv_exact(sock, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


class _Conn:
    """The controller's side of one worker's connection (non-blocking, buffered)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.role = ""  # "snapshot" or "runner", after its first message
        self.pid = 0

    def messages(self) -> list[dict[str, Any]] | None:
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
        while len(self.buf) >= _HEADER.size:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) < _HEADER.size + n:
                break
            out.append(json.loads(self.buf[_HEADER.size : _HEADER.size + n]))
            self.buf = self.buf[_HEADER.size + n :]
        return out


# ---------------------------------------------------------------------------------------------
# The script, statement by statement


def _is_checkpoint_with(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, (ast.With, ast.AsyncWith)):
        return False
    for item in stmt.items:
        call = item.context_expr
        if isinstance(call, ast.Call):
            func = call.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name == "checkpoint":
                return True
    return False


@dataclass
class Plan:
    """A parsed version of the script: its top-level statements, the digest of every prefix of
    them (normalised AST), and where snapshots are taken (point i = before statement i)."""

    source: str
    tree: ast.Module
    prefix: list[str]  # prefix[i]: digest of statements [0, i)
    points: dict[int, str]  # snapshot point -> label
    lines: dict[int, int] = field(default_factory=dict)  # point -> first line after it

    @property
    def stmts(self) -> list[ast.stmt]:
        return self.tree.body

    def first_change(self, other: Plan) -> int | None:
        """Index of the first statement that differs from ``other`` (None: same code)."""
        n = min(len(self.prefix), len(other.prefix))
        for i in range(n):
            if self.prefix[i] != other.prefix[i]:
                return i - 1
        if len(self.prefix) == len(other.prefix):
            return None
        return n - 1


def make_plan(source: str, path: str) -> Plan:
    """Parse ``source`` (raises SyntaxError) and find its snapshot points."""
    tree = ast.parse(source, path)
    prefix = [""]
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for stmt in tree.body:
        h.update(ast.dump(stmt, include_attributes=False).encode())
        h.update(b"\0")
        prefix.append(h.copy().hexdigest())
    points = {0: "the start"}
    lines = {0: 1}
    n_imports = 0
    for i, stmt in enumerate(tree.body):
        is_doc = i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
        if isinstance(stmt, (ast.Import, ast.ImportFrom)) or is_doc:
            n_imports = i + 1
        else:
            break
    if n_imports and any(
        isinstance(s, (ast.Import, ast.ImportFrom)) for s in tree.body[:n_imports]
    ):
        points[n_imports] = "the imports"
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, (ast.With, ast.AsyncWith)) and _is_checkpoint_with(stmt):
            call = next(
                it.context_expr for it in stmt.items if isinstance(it.context_expr, ast.Call)
            )
            assert isinstance(call, ast.Call)
            arg = call.args[0] if call.args else None
            name = arg.value if isinstance(arg, ast.Constant) else "?"
            points[i + 1] = f"checkpoint {name!r}"
    for p in points:
        if p == 0:
            continue
        prev = tree.body[p - 1]
        lines[p] = (prev.end_lineno or prev.lineno) + 1
    return Plan(source, tree, prefix, points, lines)


def _future_flags(tree: ast.Module) -> int:
    import __future__

    flags = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            for alias in stmt.names:
                feature = getattr(__future__, alias.name, None)
                flags |= getattr(feature, "compiler_flag", 0)
        elif not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            break
    return flags


# ---------------------------------------------------------------------------------------------
# Which modules are the user's own




def _is_local(filename: str | None) -> bool:
    """A module file the user may edit: a .py that is the user's code."""
    from ..key.provenance import is_user_file

    return bool(filename and filename.endswith(".py") and is_user_file(filename))


def local_modules() -> dict[str, str]:
    """Module name -> file of the user's own modules now imported (``__main__`` excluded)."""
    out = {}
    for name, mod in list(sys.modules.items()):
        if name == "__main__":
            continue
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and _is_local(f):
            out[name] = os.path.realpath(f)
    return out


# ---------------------------------------------------------------------------------------------
# Worker side: snapshots and runners (forked processes)


def _prctl(option: int, arg: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


class _Worker:
    """What a worker process knows: where the controller listens, and the run it belongs to."""

    def __init__(self, sock_path: str, path: str):
        self.sock_path = sock_path
        self.path = path
        self.source = ""  # the source the state of this process was built from
        self.conn: socket.socket | None = None
        self.snapshot_pids: list[int] = []

    def connect(self, hello: dict[str, Any]) -> socket.socket:
        import socket

        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock_path)
        _send(s, hello)
        return s

    # -- snapshots -----------------------------------------------------------------------

    def snapshot(self, point: int, plan: Plan, run_id: int) -> None:
        """Fork a paused copy of this process; the caller (the runner) goes on once the copy
        has checked in with the controller (so the controller hears of it before our next
        message)."""
        _flush()
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
        self.serve_snapshot(point, plan.prefix[point], plan.points.get(point, "?"), run_id, w)

    def serve_snapshot(
        self, point: int, prefix: str, label: str, run_id: int, ready: int = -1
    ) -> None:
        """Check in with the controller (then close ``ready``), wait for commands; each
        ``resume`` forks a runner. Never returns."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap our runners automatically
        if self.conn is not None:
            self.conn.close()  # the runner's connection; ours is new
            self.conn = None
        try:
            s = self.connect(
                {
                    "type": "snapshot",
                    "pid": os.getpid(),
                    "point": point,
                    "prefix": prefix,
                    "label": label,
                    "run": run_id,
                    "modules": sorted(set(local_modules().values())),
                }
            )
            if ready >= 0:
                os.close(ready)
                ready = -1
            while True:
                msg = _recv(s)
                if msg is None or msg["type"] == "exit":
                    break
                if msg["type"] == "resume":
                    _flush()
                    me = os.getpid()
                    pid = os.fork()
                    if pid == 0:
                        s.close()
                        signal.signal(signal.SIGINT, signal.default_int_handler)
                        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
                        if os.getppid() != me:  # the snapshot died before prctl took hold
                            os._exit(1)
                        self.snapshot_pids = []
                        import gc

                        gc.freeze()  # a collection would copy every page of the old objects
                        self.run(msg)  # never returns
        except BaseException:  # the controller has gone, or worse: leave quietly
            pass
        os._exit(0)

    # -- runs --------------------------------------------------------------------------------

    def run(self, msg: dict[str, Any]) -> None:
        """Execute the new source from statement ``start`` on, as ``__main__``. Never returns."""
        import linecache
        import traceback

        started = time.monotonic()
        run_id = msg["run"]
        self.conn = self.connect({"type": "runner", "pid": os.getpid(), "run": run_id})
        path = self.path
        status = "ok"
        try:
            plan = make_plan(msg["source"], path)
            start = msg["start"]
            old_source, self.source = self.source, msg["source"]
            if start and old_source and old_source != plan.source:
                # unchanged statements may have moved (comment lines above them): make the
                # functions they defined point at their new lines, for tracebacks and for
                # checkpoints inside them, which find their source by line
                _fix_lines(
                    sys.modules["__main__"].__dict__,
                    path,
                    make_plan(old_source, path).stmts[:start],
                    plan.stmts[:start],
                )
            for f in msg.get("changed", []):
                _forget_bytecode(f)
            import importlib

            importlib.invalidate_caches()
            linecache.checkcache()
            mod = sys.modules["__main__"]
            mod.__doc__ = ast.get_docstring(plan.tree, clean=False)
            if not os.environ.get("PYTHONBREAKPOINT"):
                sys.breakpointhook = _breakpointhook
            flags = _future_flags(plan.tree)
            resume_ms = (started - msg["t0"]) * 1000
            since = ""
            if msg.get("saved"):
                since = f", {time.time() - msg['saved']:.2f} s after the save"
            where = plan.points.get(start, "?")
            line = plan.lines.get(start, 1)
            if start == 0:
                what = "from the start"
            else:
                what = f"from the snapshot after {where} (line {line})"
            if msg.get("reason"):
                what += f" ({msg['reason']})"
            sys.stderr.write(
                f"\n── {_TAG}: run {run_id} {what}, resumed in {resume_ms:.1f} ms{since} ──\n"
            )
            sys.stderr.flush()
            known_modules = len(sys.modules)
            reported: set[str] = set()
            i = start
            debugger = None
            while i < len(plan.stmts):
                update = self._poll_update()
                if update is not None:
                    if i <= update["first_change"]:
                        # an edit further down than where we are: go on with the new source
                        old_plan, plan = plan, make_plan(update["source"], path)
                        _fix_lines(mod.__dict__, path, old_plan.stmts[:i], plan.stmts[:i])
                        self.source = plan.source
                        flags = _future_flags(plan.tree)
                        linecache.checkcache()
                        _send(self.conn, {"type": "adopted", "run": update["run"]})
                        sys.stderr.write(
                            f"\n── {_TAG}: run {update['run']}: run {run_id} goes on with the "
                            f"edit ({(time.monotonic() - update['t0']) * 1000:.1f} ms) ──\n"
                        )
                        sys.stderr.flush()
                        run_id = update["run"]
                    else:
                        _send(self.conn, {"type": "refused", "run": update["run"]})
                if i in plan.points and i != start:
                    self.snapshot(i, plan, run_id)
                _send(self.conn, {"type": "at", "index": i})
                stmt = plan.stmts[i]
                code = compile(
                    ast.Module(body=[stmt], type_ignores=[]),
                    path,
                    "exec",
                    flags=flags,
                    dont_inherit=True,
                )
                if debugger is not None:
                    sys.settrace(debugger)
                exec(code, mod.__dict__)
                debugger = _debugger_trace()
                if debugger is not None:
                    # stepping on in pdb: from this statement to the next, not through the
                    # loop's own code (or what it calls) in between
                    sys.settrace(None)
                if len(sys.modules) != known_modules:
                    known_modules = len(sys.modules)
                    files = set(local_modules().values()) - reported
                    if files:
                        reported |= files
                        _send(self.conn, {"type": "modules", "files": sorted(files)})
                self._reap_snapshots()
                i += 1
            if len(plan.points) and max(plan.points) == len(plan.stmts) and start < len(plan.stmts):
                self.snapshot(len(plan.stmts), plan, run_id)
        except SystemExit as exc:
            code = exc.code
            if code not in (None, 0):
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
                status = f"exit status {code}"
        except BaseException as exc:
            tb = exc.__traceback__
            # hide this function's frame: the user's traceback starts at their statement
            if tb is not None and tb.tb_frame.f_code is Worker_run_code:
                tb = tb.tb_next
            traceback.print_exception(type(exc), exc, tb)
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        _flush()
        try:
            _send(
                self.conn,
                {
                    "type": "done",
                    "run": run_id,
                    "status": status,
                    "elapsed": time.monotonic() - started,
                },
            )
        except OSError:
            pass
        os._exit(0)

    def _poll_update(self) -> dict[str, Any] | None:
        """A newer source the controller sent while we run, if any (between statements)."""
        import select

        assert self.conn is not None
        if not select.select([self.conn], [], [], 0)[0]:
            return None
        msg = _recv(self.conn)
        if msg is None:  # the controller has gone
            os._exit(1)
        return msg if msg.get("type") == "update" else None

    def _reap_snapshots(self) -> None:
        for pid in list(self.snapshot_pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.snapshot_pids.remove(pid)


Worker_run_code = _Worker.run.__code__


def _span(stmt: ast.stmt) -> tuple[int, int]:
    decorators = getattr(stmt, "decorator_list", [])
    first = min([stmt.lineno, *(d.lineno for d in decorators)])
    return first, stmt.end_lineno or stmt.lineno


def _shift_code(code: Any, delta: int) -> Any:
    consts = tuple(
        _shift_code(c, delta) if hasattr(c, "co_firstlineno") else c for c in code.co_consts
    )
    return code.replace(co_firstlineno=code.co_firstlineno + delta, co_consts=consts)


def _fix_lines(
    namespace: dict[str, Any], path: str, old: list[ast.stmt], new: list[ast.stmt]
) -> None:
    """Shift the code of functions (and methods) defined by ``old`` statements to the lines
    of the same statements in ``new``."""
    import types

    moves = []
    for o, n in zip(old, new, strict=True):
        (o_first, o_last), (n_first, _) = _span(o), _span(n)
        if o_first != n_first:
            moves.append((o_first, o_last, n_first - o_first))
    if not moves:
        return

    def delta_for(line: int) -> int:
        for first, last, delta in moves:
            if first <= line <= last:
                return delta
        return 0

    seen: set[int] = set()

    def visit(obj: Any, depth: int = 0) -> None:
        if obj is None or id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            code = obj.__code__
            if code.co_filename == path:
                delta = delta_for(code.co_firstlineno)
                if delta:
                    obj.__code__ = _shift_code(code, delta)
            visit(getattr(obj, "__wrapped__", None), depth + 1)
        elif isinstance(obj, type):
            if getattr(obj, "__module__", None) != "__main__":
                return
            first = getattr(obj, "__firstlineno__", None)  # 3.13: inspect.getsource(cls)
            if isinstance(first, int) and delta_for(first):
                try:
                    obj.__firstlineno__ = first + delta_for(first)  # type: ignore[attr-defined]
                except (AttributeError, TypeError):
                    pass
            for value in list(vars(obj).values()):
                visit(value, depth + 1)
        elif isinstance(obj, (staticmethod, classmethod)):
            visit(obj.__func__, depth + 1)
        elif isinstance(obj, property):
            for f in (obj.fget, obj.fset, obj.fdel):
                visit(f, depth + 1)
        elif callable(obj) and hasattr(obj, "__wrapped__"):
            visit(obj.__wrapped__, depth + 1)

    for value in list(namespace.values()):
        visit(value)


def _debugger_trace() -> Any:
    """The global trace function if it is a debugger's (bdb: pdb and friends)."""
    trace = sys.gettrace()
    bdb = sys.modules.get("bdb")
    if trace is None or bdb is None:
        return None
    return trace if isinstance(getattr(trace, "__self__", None), bdb.Bdb) else None


def _breakpointhook(*args: Any, **kwargs: Any) -> None:
    """``breakpoint()`` in a live run: pdb that steps from one statement of the script to the
    next without stopping in the loop's own code between them."""
    import pdb

    pdb.Pdb(skip=[__name__]).set_trace(sys._getframe(1))


def _forget_bytecode(filename: str) -> None:
    """Remove the cached bytecode of an edited module: a save within the same second that keeps
    the file's size would otherwise pass the .pyc's mtime+size check and run the old code."""
    import importlib.util

    try:
        os.unlink(importlib.util.cache_from_source(filename))
    except (OSError, ValueError, NotImplementedError):
        pass


def _origin(sock_path: str, path: str, argv: list[str], keep_stdin: bool) -> None:
    """The first worker: becomes the script's process (``__main__``, ``argv`` with the script's
    name first, sys.path) and serves as the snapshot before the first statement. Never
    returns. Without ``keep_stdin`` the script reads /dev/null (the terminal stays the loop's)."""
    import builtins
    import importlib.machinery
    import types

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
    mod = types.ModuleType("__main__")
    mod.__file__ = path
    mod.__builtins__ = builtins  # type: ignore[attr-defined]
    mod.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    mod.__cached__ = None  # type: ignore[attr-defined]
    sys.modules["__main__"] = mod
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    worker = _Worker(sock_path, path)
    worker.serve_snapshot(0, "", "the start", 0)


# ---------------------------------------------------------------------------------------------
# Controller side


@dataclass
class _Snapshot:
    pid: int
    point: int
    prefix: str
    label: str
    modules: set[str]
    conn: _Conn
    run: int
    seq: int = 0


class Controller:
    """The loop that owns the terminal: watches files, keeps snapshots, starts runs."""

    def __init__(self, path: str, argv: list[str], max_snapshots: int = MAX_SNAPSHOTS):
        self.arg0 = path  # sys.argv[0] as typed, like python does
        self.path = os.path.abspath(path)  # __file__ and the code's filename, like python
        self.real = os.path.realpath(path)  # the file we watch
        self.argv = argv
        self.max_snapshots = max(3, max_snapshots)
        self.plan: Plan | None = None
        self.texts: dict[str, str] = {}  # watched file -> last text seen
        self.module_digests: dict[str, str | None] = {}
        self.snapshots: dict[int, _Snapshot] = {}
        self.seq = 0
        self.run_id = 0
        self.running: _Conn | None = None
        self.run_at = -1  # the statement the current run is executing
        self.update: tuple[Plan, float] | None = None  # an edit sent to the current run
        self.pending_run: dict[str, Any] | None = None  # waits for the start snapshot
        self.stopping = False
        self.idle_due = False
        self.interrupts = 0
        self.tty: list[Any] | None = None
        self.tty_given = False
        self.stdin_fd = -1
        import selectors

        self.sel = selectors.DefaultSelector()
        self.pgid = 0
        self.watch_dirs: set[str] = set()
        self.watcher: Any = None
        self.exit_code = 0

    def say(self, text: str) -> None:
        sys.stderr.write(f"{_TAG}: {text}\n")
        sys.stderr.flush()

    # -- setup and teardown -------------------------------------------------------------------

    def main(self) -> int:
        import selectors
        import socket
        import tempfile

        if not hasattr(os, "fork"):
            from .._errors import StateCacheError

            raise StateCacheError(
                f"statecache live needs os.fork(), which this platform ({sys.platform}) lacks; "
                "use it on Linux or macOS (or under WSL)"
            )
        if not os.path.isfile(self.path):
            from .._errors import StateCacheError

            raise StateCacheError(f"no such file: {self.path}")
        import ctypes  # noqa: F401  (loaded once here, so that runners need not import it)

        self.tmp = tempfile.mkdtemp(prefix="statecache-live-")
        sock_path = os.path.join(self.tmp, "s")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(64)
        self.listener.setblocking(False)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        wake_r, self.wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        old = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        self.tty = self._foreground_terminal()
        # we write to the terminal while a run holds it: never be stopped for that (TOSTOP)
        old_ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        _flush()
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for s in old:
                    signal.signal(s, signal.SIG_DFL if s != signal.SIGINT else signal.SIG_IGN)
                self.listener.close()
                os.close(wake_r)
                os.close(self.wake_w)
                _origin(sock_path, self.path, [self.arg0, *self.argv], self.tty is not None)
            finally:
                os._exit(1)
        self.pgid = pid
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        try:
            self.sel.register(self.listener, selectors.EVENT_READ, "listen")
            self.sel.register(wake_r, selectors.EVENT_READ, "wake")
            self.stdin_fd = -1
            background = self.tty is None and _isatty(0)  # `statecache live x.py &`
            if sys.stdin is not None and not sys.stdin.closed and not background:
                try:
                    os.set_blocking(sys.stdin.fileno(), True)
                    self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
                    self.stdin_fd = sys.stdin.fileno()
                except (ValueError, OSError):
                    pass
            self.stdin_buf = b""
            self._watch_file(self.real)
            self._load_script()
            self._loop()
        finally:
            self._shutdown()
            signal.set_wakeup_fd(-1)
            for s, h in old.items():
                signal.signal(s, h)
            signal.signal(signal.SIGTTOU, old_ttou)
        return self.exit_code

    # -- the terminal ------------------------------------------------------------------------
    #
    # During a run the terminal belongs to the workers' process group, as a shell gives it to
    # a job: the script reads it (input(), breakpoint()) and Ctrl-C goes to the script. Between
    # runs it is the loop's again (Enter, q, Ctrl-C to quit).

    def _foreground_terminal(self) -> list[Any] | None:
        """The terminal's settings if stdin is a terminal and we are its foreground."""
        try:
            import termios

            if not os.isatty(0) or os.tcgetpgrp(0) != os.getpgrp():
                return None
            return termios.tcgetattr(0)
        except (OSError, ImportError, ValueError):
            return None

    def _give_terminal(self) -> None:
        if self.tty is None or self.tty_given:
            return
        try:
            os.tcsetpgrp(0, self.pgid)
        except OSError:
            return
        self.tty_given = True
        if self.stdin_fd >= 0:
            try:
                self.sel.unregister(self.stdin_fd)
            except (KeyError, ValueError):
                pass

    def _take_terminal(self) -> None:
        """Back to the loop: our process group in the foreground, the terminal's settings as
        they were (a debugger or a killed run may have changed them), typed-ahead input
        dropped."""
        if not self.tty_given:
            return
        self.tty_given = False
        import termios

        try:  # SIGTTOU is ignored: allowed from the background
            os.tcsetpgrp(0, os.getpgrp())
            assert self.tty is not None
            termios.tcsetattr(0, termios.TCSADRAIN, self.tty)
            termios.tcflush(0, termios.TCIFLUSH)
        except (OSError, termios.error):
            pass
        if self.stdin_fd >= 0:
            try:
                self.sel.register(self.stdin_fd, _READ, "stdin")
            except (KeyError, ValueError):
                pass

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
        else:
            self.exit_code = 128 + signum
            self.stopping = True

    def _shutdown(self) -> None:
        """Kill every worker and reap them; remove the socket directory."""
        import shutil

        self._take_terminal()
        if self.watcher is not None:
            self.watcher.stop()
        if self.pgid:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for snap in self.snapshots.values():
            try:
                os.kill(snap.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        # as subreaper we inherit the orphaned workers: wait for all of them
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
        try:
            self.listener.close()
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping:
            if self.interrupts:
                self.interrupts = 0
                if self.running is not None:
                    run_id = self.run_id
                    self._stop_run()
                    self.say(f"run {run_id} stopped (Ctrl-C again to quit)")
                    self.idle_due = True
                else:
                    self.say("bye")
                    return
            events = self.sel.select(timeout=0.01 if self.idle_due else 0.5)
            if not events and self.idle_due:
                # all that the ended run's snapshots had to say has arrived
                self.idle_due = False
                if self.running is None:
                    self._idle_line()
            for key, _ in events:
                what = key.data
                if what == "listen":
                    self._accept()
                elif what == "wake":
                    try:
                        while os.read(key.fd, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif what == "stdin":
                    if self._on_stdin(key.fd):
                        return
                elif what == "watch":
                    self._on_changes(self.watcher.take())
                elif isinstance(what, _Conn):
                    self._on_conn(what)
            self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            snap = self.snapshots.pop(pid, None)
            if snap is not None:
                self._drop_conn(snap.conn)
            if pid == self.pgid:  # the start snapshot: nothing can run any more
                self.say("the start snapshot died; leaving")
                self.exit_code = 1
                self.stopping = True

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            conn = _Conn(sock)
            self.sel.register(sock, _READ, conn)

    def _drop_conn(self, conn: _Conn) -> None:
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _on_conn(self, conn: _Conn) -> None:
        msgs = conn.messages()
        if msgs is None:
            self._drop_conn(conn)
            if conn.role == "snapshot":
                self.snapshots.pop(conn.pid, None)
            elif conn is self.running:
                self.running = None
                self._take_terminal()
                if self.update is not None:
                    self._update_failed()
                    return
                self.say(f"run {self.run_id} ended abruptly (killed?)")
                self.idle_due = True
            return
        for msg in msgs:
            kind = msg["type"]
            if kind == "snapshot":
                conn.role, conn.pid = "snapshot", msg["pid"]
                self._add_snapshot(
                    _Snapshot(
                        msg["pid"],
                        msg["point"],
                        msg["prefix"],
                        msg["label"],
                        set(msg["modules"]),
                        conn,
                        msg["run"],
                    )
                )
            elif kind == "runner":
                conn.role, conn.pid = "runner", msg["pid"]
                if msg["run"] == self.run_id:
                    self.running = conn
                else:  # a run we have already given up on
                    self._kill(msg["pid"])
                    self._drop_conn(conn)
                    return
            elif kind == "modules":
                for f in msg["files"]:
                    self._watch_file(f)
            elif kind == "at":
                if conn is self.running:
                    self.run_at = msg["index"]
            elif kind == "adopted":
                if conn is self.running and msg["run"] == self.run_id:
                    self.update = None
            elif kind == "refused":
                if conn is self.running and msg["run"] == self.run_id and self.update:
                    self._update_failed()
                    return
            elif kind == "done":
                if conn is self.running and self.update is not None:
                    self._update_failed()  # it ended before it saw the edit
                    return
                if msg["run"] != self.run_id:
                    continue
                self.running = None
                self._take_terminal()
                status = msg["status"]
                took = _duration(msg["elapsed"])
                if status == "interrupted":
                    self.say(f"run {msg['run']} stopped after {took} (Ctrl-C again to quit)")
                    self.idle_due = True
                    continue
                tail = "finished" if status == "ok" else f"ended ({status})"
                self.say(f"run {msg['run']} {tail} in {took}")
                self.idle_due = True

    def _idle_line(self) -> None:
        n = len(self.texts) - 1
        mods = f" and {n} module{'s' if n != 1 else ''}" if n > 0 else ""
        self.say(
            f"watching {os.path.basename(self.path)}{mods}; "
            f"{len(self.snapshots)} snapshot{'s' if len(self.snapshots) != 1 else ''} "
            "(Enter: re-run, q: quit, Ctrl-C: stop/quit)"
        )

    def _valid(self, snap: _Snapshot, plan: Plan | None = None) -> bool:
        """Whether the snapshot's state is that of the first ``snap.point`` statements of the
        plan (same normalised code)."""
        plan = plan or self.plan
        if snap.point == 0:
            return True
        return (
            plan is not None
            and snap.point < len(plan.prefix)
            and plan.prefix[snap.point] == snap.prefix
        )

    def _add_snapshot(self, snap: _Snapshot) -> None:
        # a late snapshot of a run given up on (a newer edit, a changed module) is not trusted
        if snap.point != 0 and (snap.run != self.run_id or not self._valid(snap)):
            self._retire(snap)
            return
        self.seq += 1
        snap.seq = self.seq
        for old in list(self.snapshots.values()):
            if old.point == snap.point and old.prefix == snap.prefix:
                self._retire(old)
        self.snapshots[snap.pid] = snap
        if snap.point == 0 and self.pending_run is not None:
            msg, self.pending_run = self.pending_run, None
            self._resume(msg)
        self._enforce_cap()

    def _enforce_cap(self) -> None:
        """Keep at most ``max_snapshots``: drop those of older versions of the script first
        (kept meanwhile: undoing an edit resumes from them), then the earliest ones, never
        the start and the imports."""
        plan = self.plan
        imports = -1
        if plan is not None:
            imports = next((p for p, label in plan.points.items() if label == "the imports"), -1)
        while len(self.snapshots) > self.max_snapshots:
            stale = sorted(
                (s for s in self.snapshots.values() if not self._valid(s)), key=lambda s: s.seq
            )
            current = sorted(
                (
                    s
                    for s in self.snapshots.values()
                    if self._valid(s) and s.point not in (0, imports)
                ),
                key=lambda s: s.point,
            )
            victims = stale + current
            if not victims:
                return
            self._retire(victims[0])

    def _retire(self, snap: _Snapshot) -> None:
        self.snapshots.pop(snap.pid, None)
        try:
            _send_blocking(snap.conn.sock, {"type": "exit"})
        except OSError:
            pass
        self._kill(snap.pid)
        self._drop_conn(snap.conn)

    def _kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_run(self) -> None:
        conn = self.running
        if conn is None:
            return
        self.running = None
        self.update = None
        try:
            os.kill(conn.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        # let the run print where it stopped; a run stuck in C code is killed after a second
        import select

        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not select.select([conn.sock], [], [], 0.05)[0]:
                continue
            got = conn.messages()
            if got is None or any(m["type"] == "done" for m in got):
                break
        self._kill(conn.pid)
        self._drop_conn(conn)
        self._take_terminal()

    def _on_stdin(self, fd: int) -> bool:
        """Enter re-runs, ``q`` quits; True to leave."""
        try:
            data = os.read(fd, 1024)
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(fd)  # end of input: keep watching files
            return False
        self.stdin_buf += data
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            cmd = line.strip().decode(errors="replace")
            if cmd in ("q", "quit", "exit"):
                self.say("bye")
                return True
            if cmd == "":
                if self.plan is None:
                    self.say("nothing to run: fix the script first")
                else:
                    self._restart(self.plan, set(), "re-run")
            else:
                self.say(f"unknown command {cmd!r} (Enter: re-run, q: quit)")
        return False

    # -- files -------------------------------------------------------------------------------

    def _watch_file(self, f: str) -> None:
        f = os.path.realpath(f)
        if f in self.texts:
            return
        self.texts[f] = _read(f) or ""
        if f != self.real:
            self.module_digests[f] = _module_digest(f)
        d = os.path.dirname(f)
        if d not in self.watch_dirs:
            self.watch_dirs.add(d)
            if self.watcher is not None:
                self.watcher.stop()
                self.sel.unregister(self.watcher.fd)
            self.watcher = _Watcher(sorted(self.watch_dirs))
            self.sel.register(self.watcher.fd, _READ, "watch")

    def _on_changes(self, paths: set[str]) -> None:
        if _CATCH_UP in paths:
            paths = set(self.texts)
        saved = 0.0
        changed_modules: set[str] = set()
        script_changed = False
        for p in paths:
            real = os.path.realpath(p)
            if real not in self.texts:
                continue
            text = _read(real)
            if text is None or text == self.texts[real]:
                continue
            self.texts[real] = text
            try:
                saved = max(saved, os.stat(real).st_mtime)
            except OSError:
                pass
            if real == self.real:
                script_changed = True
            else:
                digest = _module_digest(real)
                if digest is None:
                    _report_syntax_error(real, text)
                    continue
                if digest != self.module_digests.get(real):
                    self.module_digests[real] = digest
                    changed_modules.add(real)
                else:
                    self.say(f"{os.path.basename(real)}: no change in code (comments or layout)")
        plan = self.plan
        if script_changed:
            try:
                new = self._parse()
            except SyntaxError as exc:
                _print_syntax_error(exc)
                self.say("waiting for the next save")
                return
            if plan is not None and new.first_change(plan) is None and not changed_modules:
                self.plan = new
                self.say(f"{os.path.basename(self.path)}: no change in code (comments or layout)")
                return
            plan = new
        if plan is None:
            return
        if script_changed or changed_modules:
            names = ", ".join(sorted(os.path.basename(m) for m in changed_modules))
            self._restart(plan, changed_modules, f"{names} changed" if names else "", saved)

    def _parse(self) -> Plan:
        text = self.texts[self.real]
        if not text.strip():
            # an editor that truncates, then writes: wait for the content
            raise SyntaxError(f"{os.path.basename(self.path)} is empty")
        return make_plan(text, self.path)

    def _load_script(self) -> None:
        try:
            plan = self._parse()
        except SyntaxError as exc:
            _print_syntax_error(exc)
            self.say("waiting for the next save")
            return
        self._restart(plan, set())

    def _restart(
        self, plan: Plan, changed_modules: set[str], reason: str = "", saved: float = 0.0
    ) -> None:
        """Stop the current run, drop the snapshots the change invalidates, resume from the
        last one still valid."""
        t0 = time.monotonic()
        if self._send_update(plan, changed_modules, t0, saved):
            return
        self._restart_from_snapshot(plan, changed_modules, t0, saved, reason)

    def _send_update(self, plan: Plan, changed_modules: set[str], t0: float, saved: float) -> bool:
        """If the current run has not reached the first changed statement yet (a slow setup
        still computing), let it go on with the new source instead of starting over."""
        running, old = self.running, self.plan
        if running is None or changed_modules or self.update is not None or old is None:
            return False
        first = plan.first_change(old)
        if first is None or not 0 <= self.run_at < first:
            return False
        self.run_id += 1
        try:
            _send_blocking(
                running.sock,
                {
                    "type": "update",
                    "run": self.run_id,
                    "source": plan.source,
                    "first_change": first,
                    "t0": t0,
                },
            )
        except OSError:
            return False
        self.plan = plan
        self.update = (plan, saved)
        line = plan.stmts[first].lineno if first < len(plan.stmts) else "the end"
        self.say(
            f"edit at line {line}, after the statement running now: "
            f"run {self.run_id - 1} will go on with it"
        )
        return True

    def _update_failed(self) -> None:
        """The run could not take the edit (it had gone past it, or ended): start over."""
        assert self.update is not None
        plan, saved = self.update
        self._restart_from_snapshot(plan, set(), time.monotonic(), saved)

    def _restart_from_snapshot(
        self, plan: Plan, changed_modules: set[str], t0: float, saved: float, reason: str = ""
    ) -> None:
        self.update = None
        self.run_at = -1
        if self.running is not None:
            self._kill(self.running.pid)
            self._drop_conn(self.running)
            self.running = None
        self._take_terminal()
        self.plan = plan
        for snap in list(self.snapshots.values()):
            if snap.point != 0 and snap.modules & changed_modules:
                self._retire(snap)  # holds the old version of a changed module
        self.run_id += 1
        msg = {
            "type": "resume",
            "run": self.run_id,
            "source": plan.source,
            "changed": sorted(changed_modules),
            "t0": t0,
            "saved": saved,
            "reason": reason,
        }
        best = max(
            (s for s in self.snapshots.values() if self._valid(s, plan)),
            key=lambda s: s.point,
            default=None,
        )
        if best is None:  # the start snapshot has not checked in yet
            self.pending_run = msg | {"start": 0}
            return
        self._resume(msg | {"start": best.point}, best)

    def _resume(self, msg: dict[str, Any], snap: _Snapshot | None = None) -> None:
        if snap is None:
            snap = next(s for s in self.snapshots.values() if s.point == 0)
            msg["start"] = 0
        try:
            _send_blocking(snap.conn.sock, msg)
            self._give_terminal()
        except OSError:
            self.say("a snapshot died; starting over from the start")
            self._retire(snap)
            if snap.point != 0:
                self._resume(msg)
            return


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _send_blocking(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.setblocking(True)
    try:
        _send(sock, msg)
    finally:
        sock.setblocking(False)


def _duration(seconds: float) -> str:
    from .._config import format_duration

    return format_duration(seconds)


def _read(path: str) -> str | None:
    """The file's text; None when it cannot be read (an editor between delete and rename)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError:
        return None


def _module_digest(path: str) -> str | None:
    """Normalised-AST digest of a module's source; None when it does not parse."""
    try:
        tree = ast.parse(_read(path) or "", path)
    except (SyntaxError, ValueError):
        return None
    import hashlib

    return hashlib.blake2b(ast.dump(tree).encode(), digest_size=16).hexdigest()


def _print_syntax_error(exc: SyntaxError) -> None:
    import traceback

    sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
    sys.stderr.flush()


def _report_syntax_error(path: str, text: str) -> None:
    try:
        ast.parse(text, path)
    except SyntaxError as exc:
        _print_syntax_error(exc)
        sys.stderr.write(f"{_TAG}: waiting for the next save\n")


_CATCH_UP = "\0catch-up"


class _Watcher:
    """watchfiles in a thread; changes wake the controller's select through a pipe."""

    def __init__(self, dirs: list[str]):
        import threading

        self.r, self.w = os.pipe()
        os.set_blocking(self.r, False)
        self.fd = self.r
        self.changes: set[str] = set()
        self.ready = False
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(dirs,), daemon=True)
        self.thread.start()

    def _run(self, dirs: list[str]) -> None:
        import watchfiles

        try:
            for changes in watchfiles.watch(
                *dirs,
                watch_filter=None,
                debounce=400,
                step=20,
                stop_event=self.stop_event,
                recursive=False,
                raise_interrupt=False,
                rust_timeout=200,
                yield_on_timeout=True,
            ):
                with self.lock:
                    if not changes and not self.ready:
                        # the first idle tick: watching for sure now; catch up with saves
                        # made while the watch was being set up
                        self.ready = True
                        self.changes.add(_CATCH_UP)
                    elif not changes:
                        continue
                    self.changes.update(p for _, p in changes)
                try:
                    os.write(self.w, b"!")
                except OSError:
                    return
        except Exception as exc:  # pragma: no cover - a vanished directory
            sys.stderr.write(f"{_TAG}: file watching stopped: {exc}\n")

    def take(self) -> set[str]:
        try:
            while os.read(self.r, 512):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            out, self.changes = self.changes, set()
        return out

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=2)
        for fd in (self.r, self.w):
            try:
                os.close(fd)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# Command line


_USAGE = "%(prog)s [-h] [--max-snapshots N] SCRIPT [ARGS...]"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``statecache live`` with the CLI."""
    p = subparsers.add_parser(
        "live",
        usage=_USAGE,
        help="run a script, then re-run only what changed on every save",
        description=(
            "Run SCRIPT as __main__; keep paused snapshots after its imports and after each "
            "top-level checkpoint block; on every save of the script or of one of your own "
            "modules it imported, resume from the last snapshot before the change. "
            "Enter re-runs, Ctrl-C stops a run, a second Ctrl-C or 'q' leaves."
        ),
    )
    _arguments(p)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-snapshots",
        type=int,
        default=MAX_SNAPSHOTS,
        metavar="N",
        help=f"keep at most N paused snapshots (default {MAX_SNAPSHOTS}, at least 3)",
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="SCRIPT [ARGS...]",
        help="the Python script to run, and the arguments it gets",
    )


def run(args: argparse.Namespace) -> int:
    """Run the live loop; the exit code of ``statecache live``."""
    if not args.command or args.command[0].startswith("-"):
        from .._errors import UsageError

        raise UsageError("give the script to run: statecache live SCRIPT [ARGS...]")
    return Controller(args.command[0], list(args.command[1:]), args.max_snapshots).main()


def main(argv: list[str] | None = None) -> int:
    """``python -m statecache.live.loop SCRIPT [ARGS...]``."""
    p = argparse.ArgumentParser(prog="python -m statecache.live.loop", usage=_USAGE)
    _arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:
        from .._errors import StateCacheError

        if isinstance(exc, StateCacheError):
            print(f"statecache: error: {exc}", file=sys.stderr)
            return 2 if type(exc).__name__ == "UsageError" else 1
        raise


if __name__ == "__main__":
    sys.exit(main())
