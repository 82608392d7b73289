"""The controller's record of the paused snapshots: which are still valid for the current
version of the script, which to resume from, which to drop when there are too many."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol
from .plan import Plan

MAX_SNAPSHOTS = 8  # the default cap


@dataclass
class Snapshot:
    pid: int
    point: int  # the state before statement ``point``
    prefix: str  # digest of the statements it ran
    label: str
    modules: set[str]  # the user's module files it has imported
    conn: protocol.Connection
    run: int  # the run that took it
    files: list[dict[str, Any]] = field(default_factory=list)  # what its entries' keys read
    seq: int = 0  # arrival order

    @classmethod
    def from_hello(cls, msg: protocol.SnapshotHello, conn: protocol.Connection) -> Snapshot:
        return cls(
            msg["pid"], msg["point"], msg["prefix"], msg["label"], set(msg["modules"]), conn,
            msg["run"], msg["files"],
        )

    def valid_for(self, plan: Plan | None) -> bool:
        """Whether this state is that of the first ``point`` statements of ``plan`` now: the
        same code, and the files its checkpoints read unchanged (as a hit would check them)."""
        if self.point == 0:
            return True
        if plan is None or not plan.agrees_up_to(self.point, self.prefix):
            return False
        if not self.files:
            return True
        from ..key.files import changed_record

        return not any(changed_record(r) for r in self.files)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Snapshots:
    """The snapshots that have checked in, by pid. ``drop_conn`` is how the controller stops
    listening to a connection."""

    def __init__(self, max_count: int, drop_conn: Callable[[protocol.Connection], None]):
        self.max_count = max_count
        self.by_pid: dict[int, Snapshot] = {}
        self.drop_conn = drop_conn
        self.seq = 0

    def __len__(self) -> int:
        return len(self.by_pid)

    def pop(self, pid: int) -> Snapshot | None:
        return self.by_pid.pop(pid, None)

    def pids(self) -> list[int]:
        return list(self.by_pid)

    def start(self) -> Snapshot | None:
        return next((s for s in self.by_pid.values() if s.point == 0), None)

    def add(self, snap: Snapshot, plan: Plan | None, run_id: int) -> bool:
        """Keep ``snap`` unless it is a late one of a run given up on (a newer edit, a changed
        module): that one is not trusted. It replaces an older copy of the same state."""
        if snap.point != 0 and (snap.run != run_id or not snap.valid_for(plan)):
            self.retire(snap)
            return False
        self.seq += 1
        snap.seq = self.seq
        for old in list(self.by_pid.values()):
            if old.point == snap.point and old.prefix == snap.prefix:
                self.retire(old)
        self.by_pid[snap.pid] = snap
        self.enforce_cap(plan)
        return True

    def best_for(self, plan: Plan) -> Snapshot | None:
        """The valid snapshot furthest into ``plan``; None before the start has checked in."""
        valid = [s for s in self.by_pid.values() if s.valid_for(plan)]
        return max(valid, key=lambda s: s.point, default=None)

    def retire_importers(self, modules: set[str]) -> None:
        """Drop the snapshots that hold the old version of an edited module (not the start)."""
        for snap in list(self.by_pid.values()):
            if snap.point != 0 and snap.modules & modules:
                self.retire(snap)

    def enforce_cap(self, plan: Plan | None) -> None:
        """Keep at most ``max_count``: drop those of older versions of the script first (kept
        meanwhile: undoing an edit resumes from them), then the earliest ones, never the start
        and the imports."""
        keep = (0, plan.imports_point if plan is not None else -1)
        while len(self.by_pid) > self.max_count:
            snaps = list(self.by_pid.values())
            stale = sorted((s for s in snaps if not s.valid_for(plan)), key=lambda s: s.seq)
            current = sorted(
                (s for s in snaps if s.valid_for(plan) and s.point not in keep),
                key=lambda s: s.point,
            )
            victims = stale + current
            if not victims:
                return
            self.retire(victims[0])

    def retire(self, snap: Snapshot) -> None:
        self.by_pid.pop(snap.pid, None)
        try:
            protocol.send_blocking(snap.conn.sock, {"type": "exit"})
        except OSError:
            pass
        kill(snap.pid)
        self.drop_conn(snap.conn)
