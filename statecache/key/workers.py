"""Reads made by the worker processes of a computing block, which the parent's audit hook
never sees: a ``multiprocessing`` Pool or ``ProcessPoolExecutor`` with fork (Linux's default),
torch's ``DataLoader(num_workers=...)``, a ``branch()`` child.

A forked child inherits the audit hook but not the parent's memory, so what it notes is lost.
Each process that forks gets, before its first fork, a shared page saying how many of its own
recorders are active and an unlinked inbox file; its children keep both (``_ancestors``, for
grandchildren too). A child whose nearest recording ancestor is recording appends what it
reads, writes and lists to that ancestor's inbox (``forward``), with the stat it saw, and the
ancestor notes those events when one of its recorders ends (``leave``). So a worker forked
before the block counts as well as one forked in it.

What cannot be seen is named (``unseen``): programs the block starts (``subprocess``,
``os.system``, ``exec``) and workers that share nothing with this process: ``multiprocessing``
workers started with spawn or forkserver, and joblib's default (loky) workers, which
``_posixsubprocess.fork_exec`` starts with no audit event. All of those are
``multiprocessing`` processes, counted by its process counter whatever starts them. A pool of
such workers started before the block and given work in it (joblib reuses its executor across
``Parallel`` calls) starts nothing in the block: its workers count when they read anything
while the block ran (``_Pooled``).

Such workers may still not stop the save: ``key.tasks`` sees what the block sends them
(``sent``). When every one of them is a pool's worker loop (``started_pool_worker``), whose every
task comes through a watched pickler, and nothing sent holds the user's code or a path, they
run installed code on data only, which reads none of the user's files (``doubt``).
"""

from __future__ import annotations

import os
import sys

from .importwatch import after_import
from .stamps import stat_stamp

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any

#: Audit events by which the block starts another program, whose reads are not seen, and
#: ``os.fork``, by which it starts a child that it sees (``started_program`` counts them).
PROGRAM_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"})
#: A forwarded event: path, the recorder's kind, its detail, the stat stamp before a read.
Event = tuple[str, str, "Any", "tuple[int, ...] | None"]
_COUNT = 8  # bytes of the page: this process's active recorders, little-endian

_page: Any = None  # this process's shared page (an anonymous mmap), made before its first fork
_inbox = -1  # this process's inbox (an unlinked file, opened for appending), likewise
_drained = 0  # how far this process has read its inbox
_active = 0  # recorders this process entered and has not left
_entered = 0  # recorders this process ever entered (``block``)
_ancestors: tuple[tuple[Any, int], ...] = ()  # (page, inbox) of each process above this one

#: the loops of the worker processes whose every task comes through a pickler ``key.tasks``
#: watches, each with the exact type of the task queue it must be given (its first argument):
#: ``multiprocessing.Pool``'s, ``ProcessPoolExecutor``'s, loky's (joblib's copy too). Not
#: joblib's ``MemmappingPool``, whose queue pickles with a pickler of its own.
WORKER_LOOPS = {
    ("multiprocessing.pool", "worker"): ("multiprocessing.queues", "SimpleQueue"),
    ("concurrent.futures.process", "_process_worker"): ("concurrent.futures.process", "_SafeQueue"),
    ("joblib.externals.loky.process_executor", "_process_worker"):
        ("joblib.externals.loky.process_executor", "_SafeQueue"),
    ("loky.process_executor", "_process_worker"): ("loky.process_executor", "_SafeQueue"),
}
for _module, _watch in (("multiprocessing.reduction", "watch_multiprocessing"),
                        ("joblib.externals.loky.backend.reduction", "watch_loky"),
                        ("loky.backend.reduction", "watch_loky")):
    after_import(_module, f"{__package__}.tasks:{_watch}")


class _Frame:
    """What one recorder of this process saw started while it was active (for ``unseen``)."""

    def __init__(self) -> None:
        self.programs: dict[str, None] = {}
        self.forks = 0
        self.processes_before = _processes_made()
        self.pooled = _Pooled()
        self.made = 0  # multiprocessing processes made while it was active, set when it ends
        self.reused = 0  # of ``pooled``, those that read something while it was active, likewise
        self.reused_other = 0  # of those, the ones that are no pool's worker loop, likewise
        self.sends = 0  # objects pickled for other processes while it was active (``sent``)
        self.pool_workers = 0  # pool workers started while it was active (``started_pool_worker``)
        self.doubt: str | None = None  # the first reason what it sent may read the user's files


_frames: list[_Frame] = []  # one per active recorder, innermost last
_last: _Frame | None = None  # the frame of the recorder that ended last


def _prepare() -> None:
    """Before a fork: the page and the inbox that the child will share with this process."""
    global _page, _inbox
    if _page is not None:
        return
    try:
        import mmap

        page = mmap.mmap(-1, _COUNT)
        _inbox = _open_inbox()
    except (OSError, ValueError):  # no page, no forwarding: the children's reads stay unseen
        return
    _page = page
    _write_count()


def _open_inbox() -> int:
    """An unlinked file open for appending (gone with the last process holding it): a memfd
    where there is one, else a file made and removed at once in the temp folder. Not through
    ``tempfile``, whose import would slow the first ``branch()`` of a process."""
    flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    if hasattr(os, "memfd_create"):
        import fcntl

        fd = os.memfd_create("statecache-inbox", os.MFD_CLOEXEC)
        fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)
        return fd
    folder = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(folder, f".statecache-inbox-{os.getpid()}-{os.urandom(6).hex()}")
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)
    return fd


def _in_child() -> None:
    """After a fork, in the child: the parent's page and inbox are an ancestor's now; the
    child's recorders (copies of the parent's) are not its own."""
    global _page, _inbox, _drained, _active, _ancestors
    if _page is not None:
        _ancestors = (*_ancestors, (_page, _inbox))
    _page, _inbox, _drained, _active = None, -1, 0, 0
    _frames.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_prepare, after_in_child=_in_child)


def _write_count() -> None:
    if _page is not None:
        _page[:_COUNT] = _active.to_bytes(_COUNT, "little")


def _recording(page: Any) -> bool:
    try:
        return page[:_COUNT] != b"\0" * _COUNT
    except (ValueError, OSError):  # closed
        return False


def _nearest_recording() -> int:
    """The inbox of the nearest ancestor that is recording now, or -1."""
    for page, inbox in reversed(_ancestors):
        if _recording(page):
            return inbox
    return -1


def parent_recording() -> bool:
    """Whether a process above this one is recording now: then what this process opens must
    be told (``forward``) although it records nothing itself. False at once in a process that
    was not forked from one that imported statecache."""
    return bool(_ancestors) and _nearest_recording() >= 0


def forward(path: str, kind: str, detail: Any = None) -> None:
    """In a forked child whose ancestor records: append the event (an absolute ``path``, the
    recorder's kind of it, the recorder's plain ``detail`` of it, and for a read the stat
    stamp before it) to that ancestor's inbox. One ``write`` of one line, so that the
    workers' lines do not interleave."""
    if not _ancestors:
        return
    inbox = _nearest_recording()
    if inbox < 0:
        return
    stamp: list[int] | None = None
    if kind == "opened":
        from .provenance import is_data_path

        try:
            st = os.stat(path)
        except (OSError, ValueError):
            st = None
        if not is_data_path(path, mode=st.st_mode if st is not None else 0):
            return  # the interpreter's and the packages' files: the parent would drop them too
        stamp = list(stat_stamp(st)) if st is not None else None
    import json  # only a worker of a recording block writes (not on import statecache)

    line = json.dumps([path, kind, detail, stamp], ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        os.write(inbox, line.encode("utf-8", "surrogateescape"))
    except OSError:
        pass


def enter() -> None:
    """One of this process's recorders starts."""
    global _active, _entered
    _frames.append(_Frame())
    _active += 1
    _entered += 1
    _write_count()


def leave() -> list[Event]:
    """One of this process's recorders ends: the events its workers forwarded since the last
    ``leave`` (path, kind, detail, the stamp before a read), in the order they were written;
    the caller notes them as its own, for every recorder still active."""
    global _active, _last
    _active = max(0, _active - 1)
    if _frames:
        _last = _frames.pop()
        _last.made = _processes_made() - _last.processes_before
        _last.reused, _last.reused_other = _last.pooled.used()
    _write_count()
    return _drain()


def _drain() -> list[Event]:
    global _drained
    if _inbox < 0:
        return []
    chunks: list[bytes] = []
    offset = _drained
    while True:
        try:
            data = os.pread(_inbox, 1 << 20, offset)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
        offset += len(data)
    text = b"".join(chunks)
    complete = text.rfind(b"\n") + 1  # a line still being written is read at the next leave
    _drained += complete
    import json

    events: list[Event] = []
    for line in text[:complete].splitlines():
        try:
            path, kind, detail, stamp = json.loads(line.decode("utf-8", "surrogateescape"))
        except ValueError:
            continue
        events.append((path, kind, detail, tuple(stamp) if stamp is not None else None))
    return events


def started_program(event: str, args: tuple[Any, ...]) -> None:
    """An audit event by which a recording block starts another program (note its name) or
    forks (count it)."""
    if not _frames:
        return
    if event == "os.fork":
        for frame in _frames:
            frame.forks += 1
        return
    try:
        name = _program_name(event, args)
    except (IndexError, TypeError, ValueError):
        name = None
    for frame in _frames:
        frame.programs.setdefault(name or event, None)


def _program_name(event: str, args: tuple[Any, ...]) -> str | None:
    """The program an audit event starts, by its file name (``git``): the audited arguments are
    (executable, args, ...) for Popen, (mode, path, ...) for ``os.spawn*``, (command,) for
    ``os.system``, (path, ...) else; a shell's command by its text."""
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        shell = len(argv) > 2 and argv[1] == "-c" and os.path.basename(str(argv[0])) in _SHELLS
        if shell and isinstance(argv[2], str):
            return _command(argv[2])  # shell=True
        what = argv[0] if argv else args[0]
    elif event == "os.system":
        return _command(os.fsdecode(args[0]))
    else:
        what = args[1] if event == "os.spawn" else args[0]
    return os.path.basename(os.fsdecode(what)) if isinstance(what, (str, bytes, os.PathLike)) else None


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh"})


def _command(text: str) -> str:
    """A shell command as named in a warning: its text, cut short."""
    text = " ".join(text.split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _processes_made() -> int:
    """How many ``multiprocessing`` processes this process has made (any start method): the
    counter their names come from, read from its ``repr`` (``count(5)``) so as not to move it;
    0 when multiprocessing is not loaded."""
    process = sys.modules.get("multiprocessing.process")
    counter = repr(getattr(process, "_process_counter", "count(1)"))
    try:
        return int(counter[counter.index("(") + 1:counter.index(")")]) - 1
    except ValueError:
        return 0


class _Pooled:
    """The live ``multiprocessing`` workers (loky's too) not started by fork, when a recorder
    starts, each with how much it had read (``_read_bytes``): those that read anything before
    the recorder ends were given work by the block, whose reads are not seen. Nothing is read
    while ``multiprocessing`` is not loaded."""

    def __init__(self) -> None:
        self.before: dict[int, int | None] = {}
        self.other: set[int] = set()  # those that are no pool's worker loop
        process = sys.modules.get("multiprocessing.process")
        for child in list(getattr(process, "_children", ())):
            popen = getattr(child, "_popen", None)
            pid = getattr(popen, "pid", None)
            running = getattr(popen, "returncode", None) is None
            if isinstance(pid, int) and running and getattr(popen, "method", "") != "fork":
                self.before[pid] = _read_bytes(pid)
                if _pool_workers is None or child not in _pool_workers:
                    self.other.add(pid)

    def used(self) -> tuple[int, int]:
        """How many of them read something since (all, where that cannot be known), and how
        many of those are no pool's worker loop."""
        used = [pid for pid, read in self.before.items() if read is None or _read_bytes(pid) != read]
        return len(used), sum(1 for pid in used if pid in self.other)


def runs_worker_loop(process: Any) -> bool:
    """Whether a ``multiprocessing`` process object being started runs one of the
    ``WORKER_LOOPS`` on its own kind of task queue (its class's ``run`` not replaced): then all
    its work comes through a watched pickler. Asked before it starts: ``start()`` drops the
    target and arguments."""
    base = getattr(sys.modules.get("multiprocessing.process"), "BaseProcess", None)
    if base is None or not isinstance(process, base) or type(process).run is not base.run:
        return False
    args = getattr(process, "_args", None)
    if not isinstance(args, tuple) or not args:
        return False
    queue = WORKER_LOOPS.get(_name(getattr(process, "_target", None)))
    return queue is not None and _name(type(args[0])) == queue


def _name(obj: Any) -> tuple[Any, Any]:
    return getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)


_pool_workers: Any = None  # a WeakSet of the process objects ``started_pool_worker`` named


def started_pool_worker(process: Any) -> None:
    """``key.tasks``: this process starts ``process``, which runs one of the ``WORKER_LOOPS``
    with nothing of the user's code or paths (its initializer was inspected too): later
    blocks that give it work see all of that work."""
    global _pool_workers
    if _pool_workers is None:
        import weakref

        _pool_workers = weakref.WeakSet()
    _pool_workers.add(process)
    for frame in _frames:
        frame.pool_workers += 1


def _read_bytes(pid: int) -> int | None:
    """The bytes process ``pid`` has read through system calls (pipes too: a task sent to a
    worker is a read), from Linux's ``/proc/<pid>/io``; None where that is not known."""
    try:
        fd = os.open(f"/proc/{pid}/io", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        text = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in text.splitlines():
        if line.startswith(b"rchar:"):
            return int(line[6:])
    return None


def recording_here() -> bool:
    """Whether a recorder of this process is active (what it pickles for others counts)."""
    return bool(_frames)


def block() -> int:
    """A number that changes whenever a recorder of this process starts."""
    return _entered


def doubted() -> bool:
    """Whether every active recorder already has a doubt (nothing more need be inspected)."""
    return all(frame.doubt is not None for frame in _frames)


def sent(doubt: str | None) -> None:
    """``key.tasks``: the block pickled an object for another process; ``doubt`` says why it
    may make a worker read the user's files (None: it cannot)."""
    for frame in _frames:
        frame.sends += 1
        if frame.doubt is None:
            frame.doubt = doubt


def doubt() -> str | None:
    """Asked when the block's recorder has ended and ``unseen`` counts workers: why what they
    ran may have read the user's files, or None when every one of them is a pool worker
    that got only what ``key.tasks`` saw and found free of the user's code and paths."""
    frame = _last
    if frame is None:
        return None
    if frame.doubt is not None:
        return frame.doubt
    started_other = max(0, frame.made - frame.forks - frame.pool_workers)
    if started_other or frame.reused_other:
        return f"{started_other + frame.reused_other} of them are no pool worker, whose work is not all seen"
    if frame.reused and not frame.sends:
        return "its workers ran work that was not sent in the block"
    return None


def unseen() -> tuple[list[str], int]:
    """What the block ran whose reads statecache cannot see, asked when its recorder has
    ended: (the programs it started, by name; how many workers it used that share nothing
    with this process: the ``multiprocessing`` processes it made less the forks it made,
    which are seen, and the unforked workers started before it that it gave work to)."""
    if _last is None:
        return [], 0
    return list(_last.programs), max(0, _last.made - _last.forks) + _last.reused


def may_save(name: str, where: str, declared: bool = False) -> bool:
    """After a block ran (its recorder has ended): warn, once, naming what it ran whose reads
    cannot be seen, and say whether its state may be saved. Programs (``git rev-parse``, a
    compiler) are named and the state saved: most read no data of the block's, and a rule
    that never saved them would leave common blocks uncached. Workers that share nothing
    with this process and run installed code on data only (``doubt`` is None: a scikit-learn
    ``n_jobs=``) read none of the user's files: the state is saved. Others may run the user's
    code or be given a path: nothing they read is known, so the state is not saved (when in
    doubt, miss), unless the block names its files (``declared``: ``files=[...]``), which then
    stand for their reads."""
    from .._warnings import warn

    programs, spawned = unseen()
    why = doubt() if spawned and not declared else None
    if programs:
        warn(f"statecache: '{name}' at {where} ran {', '.join(programs)}: what another program reads is "
             "not seen, so a change of a file it reads does not recompute the block. Name such files "
             "with files=[...].")
    if spawned and declared:
        warn(f"statecache: '{name}' at {where} used {spawned} worker process(es) that share no memory "
             "with it (spawn, forkserver, joblib's loky), whose reads cannot be seen: it is saved, keyed "
             "on its files=[...]; a file they read that is not listed there does not recompute it.")
    elif why is not None:
        warn(f"statecache: '{name}' at {where} used {spawned} worker process(es) that share no memory "
             f"with it (spawn, forkserver, joblib's loky), whose reads cannot be seen ({why}): it is not "
             "saved. List the files they read in files=[...], or read them above the block and pass the "
             "data (multiprocessing workers started with fork are seen).")
    return declared or why is None
