"""One live run: execute the script's new source from a snapshot point on, statement by
statement, as ``__main__``, forking a snapshot at each snapshot point it passes.

Between statements the run takes an edit whose first change is still ahead of it (a slow setup
still computing goes on with the new source instead of starting over), reports the user's
modules it imported, and keeps a debugger stepping from one statement to the next without
stopping in this code.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from . import protocol
from .modules import forget_bytecode, local_modules
from .plan import Plan, make_plan
from .relocate import compile_statement, fix_lines, hold_source
from .terminal import TAG, flush_std

if TYPE_CHECKING:
    import socket

_PACKAGE = __name__.rpartition(".")[0]  # frames of this package are never the user's


class Host(Protocol):
    """The worker process a run executes in (see ``worker.Worker``)."""

    path: str
    plan: Plan | None  # the version of the script the process's state was built from
    conn: socket.socket | None

    def connect(self, hello: protocol.Message) -> socket.socket: ...
    def snapshot(self, point: int, plan: Plan, run_id: int) -> None: ...
    def poll_update(self) -> protocol.Update | None: ...
    def reap_snapshots(self) -> None: ...
    def forget_reads(self) -> None: ...


class Run:
    """The run of a ``resume`` message, in a freshly forked runner."""

    def __init__(self, host: Host, msg: protocol.Resume):
        self.host = host
        self.msg = msg
        self.started = time.monotonic()
        self.run_id = msg["run"]
        self.path = host.path
        self.mod = sys.modules["__main__"]
        self.plan = make_plan(msg["source"], self.path)
        self.conn = host.conn = host.connect(
            {"type": "runner", "pid": os.getpid(), "run": self.run_id}
        )
        self.known_modules = 0
        self.reported: set[str] = set()

    def main(self) -> NoReturn:
        """Run, report how it ended, exit the process."""
        status = "ok"
        try:
            self.prepare()
            self.banner()
            self.execute()
        except SystemExit as exc:
            status = _exit_status(exc)
        except BaseException as exc:
            print_user_traceback(exc)
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        flush_std()
        done: protocol.Done = {
            "type": "done",
            "run": self.run_id,
            "status": status,
            "elapsed": time.monotonic() - self.started,
        }
        try:
            protocol.send(self.conn, done)
        except OSError:
            pass
        os._exit(0)

    def prepare(self) -> None:
        """Make the snapshot's state fit the new source: moved functions, edited modules."""
        import importlib

        for f in self.msg["changed"]:
            forget_bytecode(f)
        importlib.invalidate_caches()
        self.adopt(self.plan, self.msg["start"])
        self.mod.__doc__ = ast.get_docstring(self.plan.tree, clean=False)
        if not os.environ.get("PYTHONBREAKPOINT"):
            sys.breakpointhook = breakpointhook
        self.known_modules = len(sys.modules)

    def banner(self) -> None:
        msg, start = self.msg, self.msg["start"]
        resume_ms = (self.started - msg["t0"]) * 1000
        since = f", {time.time() - msg['saved']:.2f} s after the save" if msg["saved"] else ""
        if start == 0:
            what = "from the start"
        else:
            where = self.plan.points.get(start, "?")
            what = f"from the snapshot after {where} (line {self.plan.lines.get(start, 1)})"
        if msg["reason"]:
            what += f" ({msg['reason']})"
        sys.stderr.write(
            f"\n── {TAG}: run {self.run_id} {what}, resumed in {resume_ms:.1f} ms{since} ──\n"
        )
        sys.stderr.flush()

    def execute(self) -> None:
        start = i = self.msg["start"]
        debugger = None
        while i < len(self.plan.stmts):
            self.take_update(i)
            if i in self.plan.points and i != start:
                self.host.snapshot(i, self.plan, self.run_id)
            at: protocol.At = {"type": "at", "index": i}
            protocol.send(self.conn, at)
            debugger = self.step(i, debugger)
            self.report_modules()
            self.host.reap_snapshots()
            self.host.forget_reads()
            i += 1
        end = len(self.plan.stmts)
        if end in self.plan.points and start < end:
            self.host.snapshot(end, self.plan, self.run_id)

    def step(self, i: int, debugger: Any) -> Any:
        """Execute statement ``i``; the debugger's trace function if one is stepping."""
        code = compile_statement(self.plan.stmts[i], self.path, self.plan.flags, first=i == 0)
        if debugger is not None:
            sys.settrace(debugger)
        exec(code, self.mod.__dict__)
        debugger = debugger_trace()
        if debugger is not None:
            # stepping on in pdb: from this statement to the next, not through the loop's own
            # code (or what it calls) in between
            sys.settrace(None)
        return debugger

    def take_update(self, i: int) -> None:
        """Go on with a newer source if its first change is at statement ``i`` or later."""
        update = self.host.poll_update()
        if update is None:
            return
        if i > update["first_change"]:
            refused: protocol.Refused = {"type": "refused", "run": update["run"]}
            protocol.send(self.conn, refused)
            return
        self.adopt(make_plan(update["source"], self.path), i)
        adopted: protocol.Adopted = {"type": "adopted", "run": update["run"]}
        protocol.send(self.conn, adopted)
        took = (time.monotonic() - update["t0"]) * 1000
        sys.stderr.write(
            f"\n── {TAG}: run {update['run']}: run {self.run_id} goes on with the "
            f"edit ({took:.1f} ms) ──\n"
        )
        sys.stderr.flush()
        self.run_id = update["run"]

    def adopt(self, plan: Plan, done: int) -> None:
        """Go on with ``plan`` from statement ``done`` on: the functions the statements before
        it defined move to those statements' lines in ``plan`` (comment lines added above
        them), and ``linecache`` answers with ``plan``'s text."""
        import linecache

        old, self.plan, self.host.plan = self.host.plan, plan, plan
        if done and old is not None and old.source != plan.source:
            fix_lines(self.mod.__dict__, self.path, old.stmts[:done], plan.stmts[:done])
        linecache.checkcache()
        hold_source(self.path, plan.source)

    def report_modules(self) -> None:
        """Tell the controller of the user's modules imported since the last statement."""
        if len(sys.modules) == self.known_modules:
            return
        self.known_modules = len(sys.modules)
        files = set(local_modules().values()) - self.reported
        if files:
            self.reported |= files
            msg: protocol.Modules = {"type": "modules", "files": sorted(files)}
            protocol.send(self.conn, msg)


def _exit_status(exc: SystemExit) -> str:
    code = exc.code
    if code in (None, 0):
        return "ok"
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    return f"exit status {code}"


def print_user_traceback(exc: BaseException) -> None:
    """The traceback as ``python script.py`` prints it: from the user's statement on, without
    the frames of the loop's own code above it."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith(_PACKAGE):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def debugger_trace() -> Any:
    """The global trace function if it is a debugger's (bdb: pdb and friends)."""
    trace = sys.gettrace()
    bdb = sys.modules.get("bdb")
    if trace is None or bdb is None:
        return None
    return trace if isinstance(getattr(trace, "__self__", None), bdb.Bdb) else None


def breakpointhook(*args: Any, **kwargs: Any) -> None:
    """``breakpoint()`` in a live run: pdb that steps from one statement of the script to the
    next without stopping in the loop's own code between them."""
    import pdb

    pdb.Pdb(skip=[_PACKAGE + ".*"]).set_trace(sys._getframe(1))
