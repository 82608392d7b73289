"""``branch()`` and ``branch_map()``: run an experiment in a forked child that starts from the
parent's warm state (copy-on-write) and cannot damage it.

    with statecache.branch() as run:      # the body runs in a child; the parent skips it
        model.fit(X, y)
        run.keep(score=model.score(X, y))  # pickled back to the parent
    print(run.kept["score"])

    scores = statecache.branch_map(lambda lr: fit(lr).score, [0.1, 0.01], workers=2)

POSIX only (``os.fork``). Caveats of fork apply: threads of the parent do not exist in the
child, CUDA contexts cannot be used after fork, sockets and database connections are shared
with the parent (open new ones in the body).
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._errors import BranchError, StateCacheError

__all__ = ["Branch", "branch", "branch_map"]

T = TypeVar("T")
R = TypeVar("R")

_KILL_GRACE = 1.0  # seconds a child gets after SIGTERM before SIGKILL


def _require_fork(what: str) -> None:
    if not hasattr(os, "fork"):
        raise StateCacheError(
            f"{what} needs os.fork(), which this platform ({sys.platform}) does not have; "
            "it works on Linux and macOS. Run the experiment without it, or under WSL."
        )


def _dumps(value: Any, name: str) -> bytes:
    """Pickle one kept value: pickle first, cloudpickle for lambdas, local classes, closures."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as first:
        try:
            import cloudpickle

            return bytes(cloudpickle.dumps(value, protocol=5))
        except Exception as exc:
            raise StateCacheError(
                f"run.keep({name}=...): the value ({type(value).__name__}) cannot be pickled "
                f"to send it back to the parent ({first}; cloudpickle: {exc}). Keep a "
                "picklable summary of it instead (numbers, arrays, dicts, ...)."
            ) from None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _exitcode(status: int) -> int:
    """``waitpid`` status -> exit code, negative signal number for a killed child (as subprocess)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 1


def _child_exit(payload: bytes, fd: int, code: int) -> None:
    """Send the payload, flush stdio and leave the child without running the parent's atexit
    handlers, finally blocks or buffered-file flushes of objects it shares with the parent."""
    try:
        view = memoryview(payload)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.close(fd)
    except OSError:
        code = code or 1
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(code)


def _in_child_setup() -> None:
    """In the child: the garbage collector leaves the inherited objects alone (walking them
    would copy every page that holds one: the copy-on-write saving gone); a SIGINT handler
    of the parent gives way to KeyboardInterrupt, so Ctrl-C interrupts the body."""
    import gc

    gc.freeze()
    if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN,):
        try:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        except ValueError:  # not the main thread
            pass


class _Child:
    """One forked child seen from the parent: its pid, result pipe and exit status."""

    def __init__(self, pid: int, fd: int, started: float):
        self.pid = pid
        self.fd = fd
        self.started = started
        self.chunks: list[bytes] = []
        self.status: int | None = None
        self.finished: float | None = None
        self.done = False  # exited and its pipe drained
        self.pidfd: int | None = None
        if hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                self.pidfd = None

    def _read(self) -> bool | None:
        """Read once: True if data came, None if nothing is there now, False at end of file."""
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return None
        if not data:
            return False
        self.chunks.append(data)
        return True

    def poll(self, block: bool = False) -> bool:
        """Reap the child if it has exited (wait for it with ``block``); True once it has."""
        if self.status is None:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
            if pid == 0:
                return False
            self.status = status
            self.finished = time.perf_counter()
        return True

    def step(self, ready: list[int]) -> bool:
        """Advance after a select(); True once the child is done."""
        if self.done:
            return True
        eof = False
        if self.fd in ready:
            eof = self._read() is False
        if eof:
            # the child closes its end only when it leaves
            self.poll(block=True)
        if self.poll():
            # everything it wrote is in the pipe now; a grandchild that still holds the
            # write end open (a fork in the body) must not keep us waiting for end of file
            while not eof and self._read():
                pass
            self.close()
            self.done = True
        return self.done

    def fds(self) -> list[int]:
        if self.done:
            return []
        return [self.fd] + ([self.pidfd] if self.pidfd is not None else [])

    def close(self) -> None:
        for fd in (self.fd, self.pidfd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = -1
        self.pidfd = None

    def kill(self) -> None:
        """Stop the child: SIGTERM, then SIGKILL after a grace period; always reaped."""
        try:
            if self.status is None:
                try:
                    os.kill(self.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + _KILL_GRACE
                while not self.poll():
                    if time.monotonic() > deadline:
                        os.kill(self.pid, signal.SIGKILL)
                        self.poll(block=True)
                        break
                    time.sleep(0.002)
        except ChildProcessError:
            pass
        except BaseException:
            # a second Ctrl-C while stopping: make sure the child is gone, then go on raising
            try:
                os.kill(self.pid, signal.SIGKILL)
                self.poll(block=True)
            except (ProcessLookupError, ChildProcessError):
                pass
            raise
        finally:
            self.close()
            self.done = True

    def payload(self) -> dict[str, Any] | None:
        data = b"".join(self.chunks)
        if not data:
            return None
        try:
            result = pickle.loads(data)
        except Exception as exc:  # e.g. a kept value whose class the parent cannot import
            return {"ok": False, "unreadable": f"{type(exc).__name__}: {exc}"}
        return result if isinstance(result, dict) else None


def _pump(children: list[_Child]) -> None:
    """Block until at least one of the children that are not done yet is done."""
    while True:
        fds = [fd for c in children for fd in c.fds()]
        if not fds:
            return
        ready, _, _ = select.select(fds, [], [], 0.05)
        if any([c.step(ready) for c in children if not c.done]):
            return


def _wait(children: list[_Child]) -> None:
    """Read the children's pipes until each has exited and its pipe is drained."""
    while any(not c.done for c in children):
        _pump(children)


_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _fork_child() -> tuple[int, int]:
    """Fork with a result pipe: returns (pid, fd), fd being the read end in the parent and the
    write end in the child (pid 0).

    In the parent, SIGINT and SIGTERM stay blocked on return: a Ctrl-C between the fork and the
    moment the caller holds the child would leak a running child. The caller calls
    ``_unblock()`` once it can stop the child.
    """
    r, w = os.pipe()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # or the child would print the parent's buffered output again
        except Exception:
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        _unblock()
        os.close(r)
        os.close(w)
        raise
    if pid == 0:
        os.close(r)
        _in_child_setup()
        _unblock()
        return 0, w
    os.close(w)
    os.set_blocking(r, False)
    return pid, r


def _unblock() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)


def _failure(where: str, child: _Child, result: dict[str, Any] | None) -> BranchError:
    status = child.status if child.status is not None else 0
    code = _exitcode(status)
    if result is not None and "traceback" in result:
        tb = result["traceback"]
        return BranchError(
            f"{where}: the child (pid {child.pid}) raised {result['error']}\n\n"
            f"Traceback in the child:\n{tb}".rstrip(),
            child_traceback=tb,
            exitcode=code,
        )
    if result is not None and "unreadable" in result:
        return BranchError(
            f"{where}: the parent cannot unpickle the values the child kept "
            f"({result['unreadable']}); keep plain values or classes the parent can import",
            exitcode=code,
        )
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == 9 else ""
        return BranchError(
            f"{where}: the child (pid {child.pid}) was killed by {_signal_name(sig)} "
            f"(signal {sig}){hint}",
            exitcode=code,
        )
    return BranchError(
        f"{where}: the child (pid {child.pid}) exited with status {code} before the end of the "
        "block (os._exit() or sys.exit() in the body?)",
        exitcode=code,
    )


def _error_payload(exc: BaseException) -> bytes:
    import traceback

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return pickle.dumps(
        {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": tb}, protocol=5
    )


class Branch:
    """The handle ``with branch() as run`` gives: ``keep()`` in the child; ``kept``,
    ``exitcode``, ``duration`` and ``pid`` in the parent after the block."""

    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}
        self.exitcode: int | None = None
        self.duration: float | None = None
        self.pid: int | None = None
        self._pickled: dict[str, bytes] = {}
        self._in_child = False
        self._fd = -1
        self._armed: Any = None
        self._frame: Any = None
        self._as_name: str | None = None
        self._where = "branch"

    def __repr__(self) -> str:
        state = "running" if self.exitcode is None else f"exitcode={self.exitcode}"
        return f"<statecache.branch {self._where} pid={self.pid} {state} kept={list(self.kept)}>"

    def keep(self, **values: Any) -> None:
        """Send ``values`` back to the parent (pickled now, so a later mutation does not count);
        they appear in ``run.kept`` after the block. A later keep of the same name wins."""
        if not self._in_child:
            raise StateCacheError(
                f"run.keep() at {self._where} called outside the branch body; call it inside "
                "the 'with statecache.branch() as run:' block"
            )
        for name, value in values.items():
            self._pickled[name] = _dumps(value, name)
            self.kept[name] = value

    def __enter__(self) -> Branch:
        _require_fork("statecache.branch()")
        frame = sys._getframe(1)
        from ._frames import arm_skip
        from .key.source import find_with_block

        block = find_with_block(frame, what="branch")
        self._frame, self._as_name = frame, block.as_name
        self._where = f"branch at {frame.f_code.co_filename}:{block.with_line}"
        started = time.perf_counter()
        pid, fd = _fork_child()
        if pid == 0:
            self._in_child = True
            self._fd = fd
            self.pid = os.getpid()
            return self
        self.pid = pid
        self._child = _Child(pid, fd, started)
        try:
            _unblock()
            if not block.empty:
                # a body of only ``pass`` compiles to no instruction the skip could interrupt
                # inside the block; running it in the parent does nothing anyway
                self._armed = arm_skip(frame)
        except BaseException:  # Ctrl-C before the block began: stop the child
            if self._armed is not None:
                self._armed.disarm()
            self._child.kill()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self._in_child:
            self._exit_child(exc)
        from ._frames import SkipBody

        child = self._child
        try:
            if self._armed is not None:
                self._armed.disarm()
            if exc is not None and not isinstance(exc, SkipBody):
                # raised in the parent before the body started: stop the child, go on raising
                child.kill()
                return False
            _wait([child])
        except BaseException:  # Ctrl-C or another exception while waiting: stop the child
            child.kill()
            self.exitcode = _exitcode(child.status) if child.status is not None else None
            raise
        self.exitcode = _exitcode(child.status or 0)
        self.duration = (child.finished or time.perf_counter()) - child.started
        result = child.payload()
        if self._as_name and self._armed is not None:
            from ._frames import write_names

            write_names(self._frame, {self._as_name: self})  # the skip came before Python's store
        self._frame = None
        if result is not None and "kept" in result:
            self.kept = self._unpickle_kept(result["kept"])
        if result is not None and result.get("ok"):
            return True
        raise _failure(self._where, child, result)

    def _unpickle_kept(self, pickled: dict[str, bytes]) -> dict[str, Any]:
        kept = {}
        for name, data in pickled.items():
            try:
                kept[name] = pickle.loads(data)
            except Exception as exc:
                raise BranchError(
                    f"{self._where}: the parent cannot unpickle run.keep({name}=...) "
                    f"({type(exc).__name__}: {exc}); keep values whose classes the parent "
                    "can import (plain numbers, arrays, dicts, ...)",
                    exitcode=self.exitcode,
                ) from None
        return kept

    def _exit_child(self, exc: BaseException | None) -> None:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            try:
                payload = pickle.dumps({"ok": True, "kept": self._pickled}, protocol=5)
            except Exception as err:  # pragma: no cover - bytes always pickle
                payload = _error_payload(err)
            _child_exit(payload, self._fd, 0)
        assert exc is not None
        if isinstance(exc, SystemExit):
            code = exc.code if isinstance(exc.code, int) else 1
            err_payload = pickle.dumps(
                {
                    "ok": False,
                    "error": f"SystemExit({exc.code!r})",
                    "traceback": f"SystemExit: {exc.code}\n",
                    "kept": self._pickled,
                },
                protocol=5,
            )
            _child_exit(err_payload, self._fd, code)
        _child_exit(_error_payload(exc), self._fd, 1)


def branch() -> Branch:
    """Run the body of the ``with`` in a forked child; the parent skips it and waits.

    The child sees all the parent's state (copy-on-write: nothing is copied until written) and
    exits at the end of the block; the parent's state stays as it was. Values passed to
    ``run.keep(name=value)`` come back in ``run.kept``; an exception in the child is raised in
    the parent as ``BranchError`` with the child's traceback. Ctrl-C stops the child.
    """
    return Branch()


def branch_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None) -> list[R]:
    """``[fn(item) for item in items]``, each call in its own child forked from the current
    state, at most ``workers`` (default: the CPU count) at a time; results in the items' order.

    Every call starts from the same warm state: what one call mutates, the others never see.
    Results are pickled back (cloudpickle fallback). A failing call raises ``BranchError``
    (naming the item) as soon as it is seen, after the other children are stopped.
    """
    _require_fork("statecache.branch_map()")
    items = list(items)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 1:
        raise StateCacheError(f"branch_map(workers={workers}): give at least 1 worker")
    results: list[Any] = [None] * len(items)
    running: dict[int, _Child] = {}
    done: dict[int, _Child] = {}
    next_index = 0
    where = f"branch_map({getattr(fn, '__qualname__', fn)!s})"
    try:
        while next_index < len(items) or running:
            while next_index < len(items) and len(running) < workers:
                started = time.perf_counter()
                pid, fd = _fork_child()
                if pid == 0:
                    _run_map_child(fn, items[next_index], fd)
                running[next_index] = _Child(pid, fd, started)
                next_index += 1
                _unblock()
            _pump(list(running.values()))
            for i, c in list(running.items()):
                if c.done:
                    done[i] = running.pop(i)
            failed = [i for i, c in done.items() if not (c.payload() or {}).get("ok")]
            if failed:
                i = min(failed)
                err = _failure(f"{where}, item {i} ({items[i]!r:.60})", done[i], done[i].payload())
                raise err
    finally:
        for c in running.values():
            c.kill()
    for i, c in done.items():
        payload = c.payload()
        assert payload is not None
        results[i] = pickle.loads(payload["value"])
    return results


def _run_map_child(fn: Callable[[Any], Any], item: Any, fd: int) -> None:
    try:
        value = fn(item)
        payload = pickle.dumps({"ok": True, "value": _dumps(value, "result")}, protocol=5)
    except BaseException as exc:
        _child_exit(_error_payload(exc), fd, 1)
    _child_exit(payload, fd, 0)
