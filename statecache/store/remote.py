"""The shared remote tier: a second store, on an object store or a shared mount, behind the
local cache directory.

Layout under the URL (``s3://bucket/prefix``, ``file:///mnt/team/cache``, ``memory://x``)::

    v1/entries/<name>/<key>.<key id>.sc    the local entry file byte for byte; written once
    v1/leases/<name>/<key>.<key id>.json   "being computed by ...": the only object that changes

The key id (16 hex digits of a hash of the secret) is in the object names, so that teams with
different secrets can share a bucket and an entry signed with another secret is a clean miss
that says so. A remote is refused without ``STATECACHE_SECRET``: a pickle from a shared bucket
runs code, so only signed entries are published or loaded, and every downloaded byte is verified
(checksums and HMAC) in a temp file of the local tier before it is renamed into place: bytes
straight from the remote are never unpickled. Faults (remote down, slow, garbage, refused
credentials, a truncated download, a killed lease holder) are warnings; the caller goes on with
the local tier. One filesystem client per process (fsspec's async clients refuse to run in a
forked child: ``branch()`` and ``live`` fork).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._errors import ConfigError, EntryError
from .._warnings import warn
from .layout import temp_path
from .lease import Lease
from .objects import RemoteError, open_store

LAYOUT = "v1"
_HEAD_READ = 64 << 10  # the first ranged read: header and metadata of nearly every entry
_POLL = 2.0  # seconds between looks while another machine computes
REFUSED = (
    "a remote cache ({url}) needs STATECACHE_SECRET: entries are pickles, and loading a pickle "
    "runs code, so statecache only shares entries signed with a secret the team holds. Set "
    "STATECACHE_SECRET to the same value on every machine (or unset STATECACHE_REMOTE)."
)

Check = Callable[[Any], bool]  # the entry's metadata (EntryMeta) -> still valid here?


class Fetched(NamedTuple):
    """A remote entry now in the local tier at ``path``: load it from there."""

    path: str
    size: int
    seconds: float
    url: str


class RemoteEntry(NamedTuple):
    name: str
    key: str
    key_id: str
    size: int
    last_modified: float  # the server's clock
    age: float  # seconds since last_modified, by the server's clock
    path: str


def key_id(secret: bytes) -> str:
    """Names the secret without revealing it: 16 hex digits of a domain-separated SHA-256."""
    return hashlib.sha256(b"statecache key id\0" + secret).hexdigest()[:16]


class RemoteTier:
    """One remote URL. Raises ConfigError without a secret; every other failure is a warning
    and a miss, after which the caller goes on locally."""

    def __init__(
        self,
        url: str,
        *,
        secret: bytes | None,
        wait_seconds: float = 600.0,
        lease_ttl: float = 60.0,
        exit_wait: float = 60.0,
        timeout: float = 30.0,
        storage_options: dict[str, Any] | None = None,
        status: Callable[[str], None] | None = None,
    ) -> None:
        if not secret:
            raise ConfigError(REFUSED.format(url=url))
        self.url = url.rstrip("/")
        self.secret = secret
        self.key_id = key_id(secret)
        self.wait_seconds = wait_seconds
        self.lease_ttl = lease_ttl
        self.exit_wait = exit_wait
        self.timeout = timeout
        self.storage_options = dict(storage_options or {})
        self.status = status or _status
        self._stores: dict[int, Any] = {}
        self._down: tuple[int, str] | None = None

    # ------------------------------------------------------------------ names and the client

    def entry_object(self, name: str, key: str) -> str:
        return f"{LAYOUT}/entries/{name}/{key}.{self.key_id}.sc"

    def lease_object(self, name: str, key: str) -> str:
        return f"{LAYOUT}/leases/{name}/{key}.{self.key_id}.json"

    def store(self) -> Any:
        """This process's client for the remote (a forked child makes its own)."""
        pid = os.getpid()
        if self._down is not None and self._down[0] == pid:
            raise RemoteError(self._down[1], down=True)
        found = self._stores.get(pid)
        if found is None:
            self._stores.clear()  # a parent's client is unusable after fork
            try:
                found = open_store(self.url, dict(self.storage_options), self.timeout)
            except ImportError as exc:
                raise RemoteError(
                    f"needs {exc.name or 'fsspec'}: pip install 'statecache[remote]'", down=True
                ) from None
            except RemoteError:
                raise
            except Exception as exc:  # bad options, unknown protocol
                raise RemoteError(f"{type(exc).__name__}: {exc}", down=True) from None
            self._stores[pid] = found
        return found

    def _failed(self, exc: RemoteError, doing: str, name: str) -> None:
        if exc.down:
            self._down = (os.getpid(), str(exc))
        advice = (
            "check the network, the URL and the credentials (AWS_* variables or ~/.aws)"
            if exc.down
            else "if this persists, check the remote with `statecache remote ls`"
        )
        warn(
            f"statecache: the remote cache {self.url} failed while {doing} '{name}' ({exc}); "
            f"{advice}. Going on with the local cache only."
        )

    # ------------------------------------------------------------------ reading

    def fetch(self, name: str, key: str, local_path: str, check: Check | None = None) -> Fetched | None:
        """After a local miss: bring the remote entry into ``local_path`` and return it, or None
        (not there, refused by ``check``, damaged, or the remote failed: warned)."""
        return self._fetch(name, key, local_path, check, explain=True)

    def _fetch(
        self, name: str, key: str, local_path: str, check: Check | None, explain: bool
    ) -> Fetched | None:
        started = time.perf_counter()
        try:
            store = self.store()
            info = store.head(self.entry_object(name, key))
            if info is None:
                if explain:
                    self._explain_miss(store, name, key)
                return None
            if not self._download(store, info, name, key, local_path, check):
                return None
        except RemoteError as exc:
            self._failed(exc, "fetching", name)
            return None
        return Fetched(local_path, info.size, time.perf_counter() - started, self.url)

    def _explain_miss(self, store: Any, name: str, key: str) -> None:
        """An entry of this key signed with another secret is a miss that says so."""
        others = [
            e.key_id
            for e in self._entries(store, [name])
            if e.key == key and e.key_id != self.key_id
        ]
        if others:
            warn(
                f"statecache: the remote cache {self.url} holds '{name}' key {key[:12]} signed "
                f"with another secret (key id {others[0]}; yours is {self.key_id}); not using "
                "it. Use the team's STATECACHE_SECRET to share its entries."
            )

    def _download(
        self, store: Any, info: Any, name: str, key: str, local_path: str, check: Check | None
    ) -> bool:
        from ..entry.reader import read_meta, verify_entry

        os.makedirs(os.path.dirname(local_path), mode=0o700, exist_ok=True)
        tmp = temp_path(local_path)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        done = False
        try:
            os.ftruncate(fd, info.size)  # sparse: read_meta sees the header in a file of full size
            head = min(info.size, _HEAD_READ)
            os.pwrite(fd, store.read_range(info.path, 0, head, info.etag), 0)
            try:
                meta = read_meta(tmp)
            except EntryError:
                meta = None  # metadata past the first read, or garbage: verify_entry decides
            if meta is not None and not self._acceptable(meta, name, key, check):
                return False
            store.download(info.path, fd, head, info.size, info.etag, lambda n: None)
            os.fsync(fd)
            try:
                meta = verify_entry(tmp, secret=self.secret)
            except EntryError as exc:
                warn(
                    f"statecache: ignoring the remote entry {self.url}/{info.path} ({exc}); "
                    f"computing '{name}' here. Remove it with `statecache remote gc --key {key[:12]}`."
                )
                return False
            if not self._acceptable(meta, name, key, check):
                return False
            os.replace(tmp, local_path)
            done = True
            return True
        finally:
            os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _acceptable(self, meta: Mapping[str, Any], name: str, key: str, check: Check | None) -> bool:
        if meta.get("name") != name or meta.get("key") != key:
            warn(
                f"statecache: ignoring the remote entry of '{name}' in {self.url}: it holds "
                f"'{meta.get('name')}' key {str(meta.get('key'))[:12]} (an object copied or "
                "renamed into place); computing it here."
            )
            return False
        return check is None or bool(check(meta))

    # ------------------------------------------------------------------ compute once

    def obtain(self, name: str, key: str, local_path: str, check: Check | None = None) -> Fetched | Lease:
        """After a local miss: the entry, fetched (load it), or a Lease: compute, save locally,
        then ``publish(..., lease=lease)`` (or ``lease.release()`` if computing failed). While
        another machine holds the lease, wait for its entry up to ``wait_seconds``, taking the
        lease over when its holder stops renewing it."""
        fetched = self.fetch(name, key, local_path, check)
        if fetched is not None:
            return fetched
        try:
            lease = Lease(self.store(), self.lease_object(name, key), self.lease_ttl)
        except RemoteError:
            return _unheld()
        deadline = time.monotonic() + self.wait_seconds
        announced = False
        while True:
            try:
                if lease.try_acquire():
                    if lease.took_over_from:
                        warn(
                            f"statecache: '{name}' was being computed by {lease.took_over_from}, "
                            f"which stopped renewing its lease on {self.url}; computing it here."
                        )
                    return lease
            except RemoteError as exc:
                self._failed(exc, "leasing", name)
                return lease
            if time.monotonic() >= deadline:
                warn(
                    f"statecache: waited {self.wait_seconds:.0f} s for {lease.holder} to compute "
                    f"'{name}' (lease on {self.url}); computing it here as well. Raise "
                    "STATECACHE_REMOTE_WAIT to wait longer."
                )
                return lease
            if not announced:
                self.status(
                    f"'{name}' is being computed by {lease.holder}; waiting for it on {self.url}"
                )
                announced = True
            time.sleep(min(_POLL, self.lease_ttl / 4, max(0.0, deadline - time.monotonic())))
            fetched = self._fetch(name, key, local_path, check, explain=False)
            if fetched is not None:
                return fetched
            if self._down is not None:
                return lease

    # ------------------------------------------------------------------ publishing

    def publish(self, name: str, key: str, local_path: str, lease: Lease | None = None) -> Upload | None:
        """Upload a just-saved local entry in a background thread, create-only; release
        ``lease`` once it is there. None when there is nothing to do (the remote is down)."""
        try:
            store = self.store()
            fd = os.open(local_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (RemoteError, OSError):
            if lease is not None:
                lease.release()
            return None
        upload = Upload(self, store, name, key, local_path, fd, lease)
        _track(upload)
        upload.thread.start()
        return upload

    def push(self, name: str, key: str, local_path: str) -> bool:
        """Upload one local entry now (``statecache remote push``); False if it was there."""
        upload = self.publish(name, key, local_path)
        if upload is None:
            raise RemoteError(self._down[1] if self._down else "the remote is unusable", down=True)
        upload.thread.join()
        if upload.error is not None:
            raise upload.error
        return upload.created

    # ------------------------------------------------------------------ listing (CLI)

    def entries(self, names: list[str] | None = None) -> list[RemoteEntry]:
        """Every entry object on the remote (all key ids), optionally of some names only."""
        return self._entries(self.store(), names)

    def _entries(self, store: Any, names: list[str] | None) -> list[RemoteEntry]:
        found = []
        for under in [f"{LAYOUT}/entries/{n}" for n in names] if names else [f"{LAYOUT}/entries"]:
            for info in store.list(under):
                parts = info.path.split("/")
                if len(parts) != 4 or not parts[3].endswith(".sc"):
                    continue
                key, _, kid = parts[3][: -len(".sc")].partition(".")
                found.append(
                    RemoteEntry(
                        parts[2], key, kid, info.size, info.last_modified,
                        info.server_now - info.last_modified, info.path,
                    )
                )
        return found

    def leases(self) -> list[Any]:
        """Every lease object (Info), for ``gc``."""
        return list(self.store().list(f"{LAYOUT}/leases"))

    def remove(self, path: str) -> None:
        """Delete one object (an entry's or a lease's ``path`` as listed), for ``gc``."""
        self.store().delete(path)

    def abort_stale_uploads(self, older_than: float) -> int:
        """Abort unfinished multipart uploads (S3 only) started more than ``older_than`` s ago."""
        store = self.store()
        abort = getattr(store, "abort_stale_uploads", None)
        return int(abort(older_than)) if abort is not None else 0


class Upload:
    """One background upload of a local entry: verified locally first (only signed, intact
    entries leave the machine), then create-only; someone else publishing first is fine."""

    def __init__(
        self, tier: RemoteTier, store: Any, name: str, key: str, local_path: str, fd: int, lease: Lease | None
    ) -> None:
        self.tier = tier
        self.store = store
        self.name = name
        self.key = key
        # the open descriptor keeps the entry readable if the local tier evicts it meanwhile
        self.fd = fd
        self.source = f"/dev/fd/{fd}" if os.path.isdir("/dev/fd") else local_path
        self.lease = lease
        self.pid = os.getpid()
        self.created = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"statecache-upload-{name}", daemon=True)

    def _run(self) -> None:
        from ..entry.reader import verify_entry

        try:
            verify_entry(self.source, secret=self.tier.secret)
            size = os.fstat(self.fd).st_size
            path = self.tier.entry_object(self.name, self.key)
            if self.store.head(path) is None:
                self.created = self.store.upload_create(path, self.fd, size, lambda n: None)
        except RemoteError as exc:
            self.error = exc
            self.tier._failed(exc, "publishing", self.name)
        except EntryError as exc:
            self.error = exc
            warn(f"statecache: not publishing '{self.name}' to {self.tier.url}: {exc}")
        except BaseException as exc:  # never let a background thread die with a traceback
            self.error = exc
            warn(f"statecache: publishing '{self.name}' to {self.tier.url} failed ({type(exc).__name__}: {exc})")
        finally:
            os.close(self.fd)
            if self.lease is not None:
                self.lease.release()


_uploads: list[Upload] = []
_uploads_lock = threading.Lock()
_at_exit: list[int] = []  # the pids that registered wait_for_uploads


def _track(upload: Upload) -> None:
    with _uploads_lock:
        if os.getpid() not in _at_exit:
            atexit.register(wait_for_uploads)
            _at_exit.append(os.getpid())
        _uploads[:] = [u for u in _uploads if u.thread.is_alive() or not u.thread.ident]
        _uploads.append(upload)


def wait_for_uploads(limit: float | None = None) -> list[Upload]:
    """At exit: wait at most ``limit`` seconds (default: the longest ``exit_wait`` of the tiers
    uploading) for uploads in progress; say on stderr when some are cut short. Returns those."""
    pending = [u for u in _uploads if u.pid == os.getpid() and u.thread.is_alive()]
    if not pending:
        return []
    limit = max(u.tier.exit_wait for u in pending) if limit is None else limit
    deadline = time.monotonic() + limit
    pending[0].thread.join(timeout=min(0.5, limit))
    if any(u.thread.is_alive() for u in pending):
        names = ", ".join(f"'{u.name}'" for u in pending if u.thread.is_alive())
        _status(f"waiting up to {limit:.0f} s for the upload of {names} to {pending[0].tier.url}")
    for u in pending:
        u.thread.join(timeout=max(0.0, deadline - time.monotonic()))
    cut = [u for u in pending if u.thread.is_alive()]
    if cut:
        names = ", ".join(f"'{u.name}'" for u in cut)
        print(
            f"statecache: the upload of {names} to {cut[0].tier.url} did not finish in "
            f"{limit:.0f} s and was abandoned (the local cache has it; `statecache remote push` "
            "publishes it later)",
            file=sys.stderr,
            flush=True,
        )
    return cut


def _unheld() -> Lease:
    """A lease that is not held: the caller computes; releasing it does nothing."""
    return Lease(None, "", 1.0)


def _status(text: str) -> None:
    from .._config import env_flag

    try:
        quiet = env_flag("STATECACHE_QUIET")
    except ConfigError:
        quiet = False
    if not quiet:
        print(f"statecache: {text}", file=sys.stderr, flush=True)


def remote_from_env(status: Callable[[str], None] | None = None) -> RemoteTier | None:
    """The tier named by ``STATECACHE_REMOTE`` (None when unset). Without ``STATECACHE_SECRET``
    it is refused with a warning that says why, and None is returned: the local cache works."""
    from .._config import env_remote, env_remote_lease, env_remote_wait, env_secret

    url = env_remote()
    if url is None:
        return None
    try:
        return RemoteTier(
            url, secret=env_secret(), wait_seconds=env_remote_wait(), lease_ttl=env_remote_lease(), status=status
        )
    except ConfigError as exc:
        warn(f"statecache: {exc}")
        return None
