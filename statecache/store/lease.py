"""Compute once across machines: a lease object that says "this key is being computed here".

Created create-only, renewed by a heartbeat thread with compare-and-swap on its ETag, judged
stale when the server has not seen it renewed for its time-to-live (the server's ``LastModified``
against the server's own clock, or the same ETag watched that long by the waiter's own clock),
and taken over with compare-and-swap on the stale ETag, so that of several waiters one wins.
Correctness never rests on it: a lost or stolen lease costs duplicated work, never a wrong value.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

from .objects import Info, RemoteError


class Lease:
    """One key's lease on one remote. ``held`` says whether this process holds it; a lease
    that is not held (the remote is unusable, or waiting ran out) is released as a no-op."""

    def __init__(self, store: Any, path: str, ttl: float) -> None:
        self.store = store
        self.path = path
        self.ttl = ttl
        self.pid = os.getpid()
        self.held = False
        self.etag: str | None = None
        self.holder = "another process"
        self.took_over_from: str | None = None
        self._who = {"host": socket.gethostname(), "pid": self.pid, "token": os.urandom(8).hex(), "ttl": ttl}
        self._beats = 0
        self._seen: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """Take the lease if it is free or stale; False while another holder keeps it alive.
        Raises RemoteError when the remote cannot be used."""
        etag = self.store.put_create(self.path, self._body())
        if etag is None:
            found = self.store.get(self.path)
            if found is None:  # released between the two calls: try again next time
                return False
            data, info = found
            ttl = self._describe(data)
            if not self._stale(info, ttl):
                return False
            etag = self.store.put_replace(self.path, self._body(), info.etag)
            if etag is None:  # another waiter took it over first, or the holder renewed it
                return False
            self.took_over_from = self.holder
        self.etag = etag
        self.held = True
        self._thread = threading.Thread(target=self._heartbeat, name="statecache-lease", daemon=True)
        self._thread.start()
        return True

    def _body(self) -> bytes:
        """The lease's content; every renewal differs, so that its ETag changes on any store."""
        self._beats += 1
        return json.dumps({**self._who, "beat": self._beats}).encode()

    def _describe(self, data: bytes) -> float:
        """Note who holds the lease; return the time-to-live it promised."""
        try:
            body = json.loads(data)
            self.holder = f"{body['host']} (pid {int(body['pid'])})"
            return min(max(float(body["ttl"]), 1.0), 24 * 3600.0)
        except (ValueError, KeyError, TypeError):
            self.holder = "an unknown process (an unreadable lease)"
            return self.ttl

    def _stale(self, info: Info, ttl: float) -> bool:
        now = time.monotonic()
        if self._seen is None or self._seen[0] != info.etag:
            self._seen = (info.etag, now)
        return info.server_now - info.last_modified > ttl or now - self._seen[1] > ttl

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                etag = self.store.put_replace(self.path, self._body(), self.etag or "")
            except RemoteError:
                continue  # a blip: the next beat tries again; a long outage lets others take over
            if etag is None:  # judged stale and taken over: the other one computes too
                self.held = False
                return
            self.etag = etag

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (never in a forked child)."""
        if os.getpid() != self.pid or not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl)
        self.held = False
        with contextlib.suppress(RemoteError):
            found = self.store.get(self.path)
            if found is not None and found[1].etag == self.etag:
                self.store.delete(self.path)
