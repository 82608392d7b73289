"""The live loop's controller: the process that owns the terminal, watches the files, keeps
the snapshots and decides where each run resumes.

It talks to its workers over a Unix socket in a private temporary directory, removed when
it leaves. Its workers form their own process group, killed as a whole on exit (also on
SIGTERM and SIGHUP); on Linux it is their subreaper, so it reaps every one of them.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from . import protocol
from .plan import Plan, make_plan
from .snapshots import MAX_SNAPSHOTS, Snapshot, Snapshots, kill
from .sources import Sources, print_syntax_error
from .terminal import Terminal, say
from .watcher import CATCH_UP, Watcher

if TYPE_CHECKING:
    import selectors

    from .group import WorkerGroup

_READ = 1  # selectors.EVENT_READ


class Controller:
    """The loop that owns the terminal: watches files, keeps snapshots, starts runs."""

    def __init__(self, path: str, argv: list[str], max_snapshots: int = MAX_SNAPSHOTS):
        self.arg0 = path  # sys.argv[0] as typed, like python does
        self.path = os.path.abspath(path)  # __file__ and the code's filename, like python
        self.real = os.path.realpath(path)  # the file we watch
        self.argv = argv
        self.plan: Plan | None = None
        self.sources = Sources(self.real)
        self.snapshots = Snapshots(max(3, max_snapshots), self._drop_conn)
        self.run_id = 0
        self.running: protocol.Connection | None = None
        self.run_at = -1  # the statement the current run is executing
        self.update: tuple[Plan, float] | None = None  # an edit sent to the current run
        self.pending_run: protocol.Resume | None = None  # waits for the start snapshot
        self.stopping = False
        self.idle_due = False
        self.interrupts = 0
        self.group: WorkerGroup | None = None
        self.watcher: Watcher | None = None
        self.exit_code = 0
        self.sel: selectors.BaseSelector | None = None
        self.terminal: Terminal | None = None

    # -- setup and teardown -------------------------------------------------------------------

    def main(self) -> int:
        """Run the loop until ``q``, a second Ctrl-C, SIGTERM or SIGHUP; the exit code."""
        from .._errors import StateCacheError, UsageError

        if not hasattr(os, "fork"):
            raise StateCacheError(
                f"statecache live needs os.fork(), which this platform ({sys.platform}) lacks; "
                "use it on Linux or macOS (or under WSL)"
            )
        if not os.path.isfile(self.path):
            raise UsageError(f"no such file: {self.path}")  # a bad argument: exit status 2
        import ctypes  # noqa: F401  (loaded once here, so that runners need not import it)
        import selectors

        from .group import WorkerGroup

        self.sel = selectors.DefaultSelector()
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(wake_w)
        old = {
            s: signal.signal(s, self._on_signal)
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }
        # we write to the terminal while a run holds it: never be stopped for that (TOSTOP)
        old_ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        try:
            self.terminal = Terminal(self.sel)
            self.group = WorkerGroup()
            self.sel.register(self.group.listener, _READ, "listen")
            argv = [self.arg0, *self.argv]
            self.group.spawn(self.path, argv, self.terminal.owned, (wake_r, wake_w), list(old))
            self.sel.register(wake_r, _READ, "wake")
            self.terminal.open_input()
            self._watch_file(self.real)
            self._load_script()
            self._loop()
        finally:
            self._shutdown()
            signal.set_wakeup_fd(-1)
            for s, h in old.items():
                signal.signal(s, h)
            signal.signal(signal.SIGTTOU, old_ttou)
            for fd in (wake_r, wake_w):
                os.close(fd)
        return self.exit_code

    def _shutdown(self) -> None:
        """Give the terminal back, stop watching, end every worker."""
        if self.terminal is not None:
            self.terminal.take()
        if self.watcher is not None:
            self.watcher.stop()
        if self.group is not None:
            self.group.shutdown(self.snapshots.pids())
        if self.sel is not None:
            self.sel.close()

    # -- signals and commands --------------------------------------------------------------

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
        else:
            self.exit_code = 128 + signum
            self.stopping = True

    def _on_stdin(self) -> bool:
        """Enter re-runs, ``q`` quits; True to leave."""
        assert self.terminal is not None
        for cmd in self.terminal.commands() or []:
            if cmd in ("q", "quit", "exit"):
                say("bye")
                return True
            if cmd != "":
                say(f"unknown command {cmd!r} (Enter: re-run, q: quit)")
            elif self.plan is None:
                say("nothing to run: fix the script first")
            else:
                self._restart(self.plan, set(), "re-run")
        return False

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self.sel is not None
        while not self.stopping:
            if self.interrupts:
                self.interrupts = 0
                if self.running is None:
                    say("bye")
                    return
                run_id = self.run_id
                self._stop_run()
                say(f"run {run_id} stopped (Ctrl-C again to quit)")
                self.idle_due = True
            events = self.sel.select(timeout=0.01 if self.idle_due else 0.5)
            if not events and self.idle_due:
                # all that the ended run's snapshots had to say has arrived
                self.idle_due = False
                if self.running is None:
                    self._idle_line()
            for key, _ in events:
                if self._on_event(key.data, key.fd):
                    return
            self._reap()

    def _on_event(self, what: Any, fd: int) -> bool:
        """Handle one ready file descriptor; True to leave."""
        if what == "listen":
            self._accept()
        elif what == "wake":
            try:
                while os.read(fd, 512):
                    pass
            except BlockingIOError:
                pass
        elif what == "stdin":
            return self._on_stdin()
        elif what == "watch":
            assert self.watcher is not None
            self._on_changes(self.watcher.take())
        elif isinstance(what, protocol.Connection):
            self._on_conn(what)
        return False

    def _idle_line(self) -> None:
        n = self.sources.module_count
        mods = f" and {n} module{'s' if n != 1 else ''}" if n > 0 else ""
        k = len(self.snapshots)
        say(
            f"watching {os.path.basename(self.path)}{mods}; "
            f"{k} snapshot{'s' if k != 1 else ''} (Enter: re-run, q: quit, Ctrl-C: stop/quit)"
        )

    def _reap(self) -> None:
        assert self.group is not None
        for pid in self.group.reaped():
            snap = self.snapshots.pop(pid)
            if snap is not None:
                self._drop_conn(snap.conn)
            if pid == self.group.pgid:  # the start snapshot: nothing can run any more
                say("the start snapshot died; leaving")
                self.exit_code = 1
                self.stopping = True

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.group is not None and self.sel is not None
        for conn in self.group.accept():
            self.sel.register(conn.sock, _READ, conn)

    def _drop_conn(self, conn: protocol.Connection) -> None:
        assert self.sel is not None
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _on_conn(self, conn: protocol.Connection) -> None:
        msgs = conn.messages()
        if msgs is None:
            self._on_hangup(conn)
            return
        for msg in msgs:
            if not self._on_message(conn, msg):
                return

    def _on_hangup(self, conn: protocol.Connection) -> None:
        self._drop_conn(conn)
        if conn.role == "snapshot":
            self.snapshots.pop(conn.pid)
        elif conn is self.running:
            self.running = None
            self._take_terminal()
            if self.update is not None:
                self._update_failed()
                return
            say(f"run {self.run_id} ended abruptly (killed?)")
            self.idle_due = True

    def _on_message(self, conn: protocol.Connection, msg: protocol.Message) -> bool:
        """Handle one message from a worker; False when the rest of its batch is moot."""
        running = conn is self.running
        if msg["type"] == "snapshot":
            conn.role, conn.pid = "snapshot", msg["pid"]
            self._add_snapshot(Snapshot.from_hello(msg, conn))
        elif msg["type"] == "runner":
            conn.role, conn.pid = "runner", msg["pid"]
            if msg["run"] != self.run_id:  # a run we have already given up on
                kill(msg["pid"])
                self._drop_conn(conn)
                return False
            self.running = conn
        elif msg["type"] == "modules":
            for f in msg["files"]:
                self._watch_file(f)
        elif msg["type"] == "at" and running:
            self.run_at = msg["index"]
        elif msg["type"] == "adopted" and running and msg["run"] == self.run_id:
            self.update = None
        elif msg["type"] == "refused" and running and msg["run"] == self.run_id and self.update:
            self._update_failed()
            return False
        elif msg["type"] == "done":
            return self._on_done(conn, msg)
        return True

    def _on_done(self, conn: protocol.Connection, msg: protocol.Done) -> bool:
        if conn is self.running and self.update is not None:
            self._update_failed()  # it ended before it saw the edit
            return False
        if msg["run"] != self.run_id:
            return True
        from .._config import format_duration

        self.running = None
        self._take_terminal()
        took = format_duration(msg["elapsed"])
        if msg["status"] == "interrupted":
            say(f"run {msg['run']} stopped after {took} (Ctrl-C again to quit)")
        else:
            tail = "finished" if msg["status"] == "ok" else f"ended ({msg['status']})"
            say(f"run {msg['run']} {tail} in {took}")
        self.idle_due = True
        return True

    # -- snapshots and runs ------------------------------------------------------------------

    def _add_snapshot(self, snap: Snapshot) -> None:
        if not self.snapshots.add(snap, self.plan, self.run_id):
            return
        if snap.point == 0 and self.pending_run is not None:
            msg, self.pending_run = self.pending_run, None
            self._resume(msg)

    def _give_terminal(self) -> None:
        if self.terminal is not None:
            assert self.group is not None
            self.terminal.give(self.group.pgid)

    def _take_terminal(self) -> None:
        if self.terminal is not None:
            self.terminal.take()

    def _stop_run(self) -> None:
        """Interrupt the current run; one stuck in C code is killed after a second."""
        import select

        conn = self.running
        if conn is None:
            return
        self.running = None
        self.update = None
        try:
            os.kill(conn.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        # let the run print where it stopped
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not select.select([conn.sock], [], [], 0.05)[0]:
                continue
            got = conn.messages()
            if got is None or any(m["type"] == "done" for m in got):
                break
        kill(conn.pid)
        self._drop_conn(conn)
        self._take_terminal()

    def _kill_run(self) -> None:
        if self.running is not None:
            kill(self.running.pid)
            self._drop_conn(self.running)
            self.running = None
        self._take_terminal()

    # -- edits -----------------------------------------------------------------------------

    def _watch_file(self, f: str) -> None:
        if not self.sources.watch(f):
            return
        assert self.sel is not None
        if self.watcher is not None:
            self.watcher.stop()
            self.sel.unregister(self.watcher.fd)
        self.watcher = Watcher(sorted(self.sources.dirs), lambda: list(self.sources.texts))
        self.sel.register(self.watcher.fd, _READ, "watch")

    def _on_changes(self, paths: set[str]) -> None:
        if CATCH_UP in paths:
            paths = set(self.sources.texts)
        edit = self.sources.edits(paths)
        plan = self.plan
        if edit.script:
            try:
                new = self._parse()
            except SyntaxError as exc:
                print_syntax_error(exc)
                say("waiting for the next save")
                return
            if plan is not None and new.first_change(plan) is None and not edit.modules:
                self.plan = new
                say(f"{os.path.basename(self.path)}: no change in code (comments or layout)")
                return
            plan = new
        if plan is not None and (edit.script or edit.modules):
            names = ", ".join(sorted(os.path.basename(m) for m in edit.modules))
            self._restart(plan, edit.modules, f"{names} changed" if names else "", edit.saved)

    def _parse(self) -> Plan:
        text = self.sources.script_text()
        if not text.strip():
            # an editor that truncates, then writes: wait for the content
            raise SyntaxError(f"{os.path.basename(self.path)} is empty")
        return make_plan(text, self.path)

    def _load_script(self) -> None:
        try:
            plan = self._parse()
        except SyntaxError as exc:
            print_syntax_error(exc)
            say("waiting for the next save")
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
        update: protocol.Update = {
            "type": "update",
            "run": self.run_id,
            "source": plan.source,
            "first_change": first,
            "t0": t0,
        }
        try:
            protocol.send_blocking(running.sock, update)
        except OSError:
            return False
        self.plan = plan
        self.update = (plan, saved)
        line = plan.stmts[first].lineno if first < len(plan.stmts) else "the end"
        say(
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
        self._kill_run()
        self.plan = plan
        self.snapshots.retire_importers(changed_modules)
        self.run_id += 1
        msg: protocol.Resume = {
            "type": "resume",
            "run": self.run_id,
            "source": plan.source,
            "start": 0,
            "changed": sorted(changed_modules),
            "t0": t0,
            "saved": saved,
            "reason": reason,
        }
        best = self.snapshots.best_for(plan)
        if best is None:  # the start snapshot has not checked in yet
            self.pending_run = msg
            return
        msg["start"] = best.point
        self._resume(msg, best)

    def _resume(self, msg: protocol.Resume, snap: Snapshot | None = None) -> None:
        if snap is None:
            snap = self.snapshots.start()
            msg["start"] = 0
            if snap is None:
                self.pending_run = msg
                return
        try:
            protocol.send_blocking(snap.conn.sock, msg)
            self._give_terminal()
        except OSError:
            say("a snapshot died; starting over from the start")
            self.snapshots.retire(snap)
            if snap.point != 0:
                self._resume(msg)
