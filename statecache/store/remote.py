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

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .._errors import ConfigError
from .._warnings import warn
from .lease import Lease
from .objects import LocalDiskError, RemoteError
from .upload import Upload, status_line, track

LAYOUT = "v1"
_POLL = 2.0  # seconds between looks while another machine computes
DOWN_SECONDS = 300.0  # an unreachable remote is not asked again for this long
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


def open_store(url: str, options: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """The object store for ``url``: ``s3://bucket/prefix``, ``file:///shared/dir`` (or a plain
    path), or any other fsspec URL."""
    protocol, _, rest = url.partition("://")
    if not rest:
        protocol, rest = "file", url
    if protocol == "file":
        from .filestores import DirectoryStore

        return DirectoryStore(rest)
    if protocol in ("s3", "s3a"):
        from .s3 import S3Store

        return S3Store(rest, dict(options or {}), timeout)
    from .filestores import FsspecStore

    return FsspecStore(protocol, rest, dict(options or {}))


def missing_package(url: str, exc: ImportError) -> str:
    """The package a store for ``url`` needs that failed to import: the one fsspec names for the
    protocol (gcsfs for ``gs://``, adlfs for ``az://``), else the module Python could not find."""
    protocol = url.partition("://")[0]
    try:
        from fsspec.registry import known_implementations
    except ImportError:
        return "fsspec"
    implementation = known_implementations.get(protocol, {}).get("class", "")
    return implementation.split(".")[0] or (exc.name or "fsspec").split(".")[0]


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
        self.status = status or status_line
        self._stores: dict[int, Any] = {}
        self._down: tuple[int, str, float] | None = None  # (pid, why, when): skip the remote a while
        self._unusable: set[tuple[str, str]] = set()  # (name, key) whose remote entry we refused

    # ------------------------------------------------------------------ names and the client

    def entry_object(self, name: str, key: str) -> str:
        return f"{LAYOUT}/entries/{name}/{key}.{self.key_id}.sc"

    def lease_object(self, name: str, key: str) -> str:
        return f"{LAYOUT}/leases/{name}/{key}.{self.key_id}.json"

    def store(self) -> Any:
        """This process's client for the remote (a forked child makes its own)."""
        pid = os.getpid()
        if self._is_down():
            raise RemoteError(self._down[1] if self._down else "", down=True)
        found = self._stores.get(pid)
        if found is None:
            self._stores.clear()  # a parent's client is unusable after fork
            try:
                found = open_store(self.url, dict(self.storage_options), self.timeout)
            except ImportError as exc:
                package = missing_package(self.url, exc)
                install = "'statecache[remote]'" if package in ("fsspec", "s3fs") else package
                raise RemoteError(
                    f"{self.url.partition('://')[0]}:// URLs need the {package} package, which is "
                    "not installed", down=True, advice=f"pip install {install}",
                ) from None
            except RemoteError:
                raise
            except Exception as exc:  # bad options, unknown protocol
                raise RemoteError(f"{type(exc).__name__}: {exc}", down=True) from None
            self._stores[pid] = found
        return found

    def failed(self, exc: RemoteError, doing: str, name: str) -> None:
        """Warn that ``doing`` (fetching, leasing, publishing) ``name`` failed; a remote that
        cannot be reached is skipped for ``DOWN_SECONDS``, so that no checkpoint waits on it."""
        if exc.down:
            self._down = (os.getpid(), str(exc), time.monotonic())
        advice = exc.advice or (
            "check the network, the URL and the credentials (AWS_* variables or ~/.aws)"
            if exc.down
            else "if this persists, check the remote with `statecache ls --remote`"
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
            if info.size == 0:
                warn(f"statecache: ignoring the remote entry {self.url}/{info.path} (an empty object)")
                self._unusable.add((name, key))
                return None
            from .download import download_entry

            if not download_entry(self, store, info, name, key, local_path, check):
                self._unusable.add((name, key))
                return None
        except RemoteError as exc:
            self.failed(exc, "fetching", name)
            return None
        except (LocalDiskError, OSError) as exc:
            warn(
                f"statecache: could not fetch '{name}' from {self.url} into the local cache "
                f"({exc}); computing it here. Free some space or point STATECACHE_DIR elsewhere."
            )
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

    def acceptable(self, meta: Mapping[str, Any], name: str, key: str, check: Check | None) -> bool:
        refusal = self.refusal(meta, name, key, check)
        if refusal:
            warn(refusal)
        return refusal is None

    def refusal(self, meta: Mapping[str, Any], name: str, key: str, check: Check | None) -> str | None:
        """Why an entry's metadata is not this checkpoint's here: a warning to give, "" when
        ``check`` refused it (the engine says why), None when it is acceptable."""
        if meta.get("name") != name or meta.get("key") != key:
            return (
                f"statecache: ignoring the remote entry of '{name}' in {self.url}: it holds "
                f"'{meta.get('name')}' key {str(meta.get('key'))[:12]} (an object copied or "
                "renamed into place); computing it here."
            )
        return None if check is None or check(meta) else ""

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
        if (name, key) in self._unusable:
            # the remote holds this key but it is damaged or does not fit here: no waiting
            self._try(lease, name)
            return lease
        return self._wait(lease, name, key, local_path, check)

    def _try(self, lease: Lease, name: str) -> bool | None:
        """Take the lease: True (held), False (another holder keeps it), None (remote failed)."""
        try:
            if not lease.try_acquire():
                return False
        except RemoteError as exc:
            self.failed(exc, "leasing", name)
            return None
        if lease.took_over_from:
            warn(
                f"statecache: '{name}' was being computed by {lease.took_over_from}, which "
                f"stopped renewing its lease on {self.url}; computing it here."
            )
        return True

    def _wait(self, lease: Lease, name: str, key: str, local_path: str, check: Check | None) -> Fetched | Lease:
        deadline = time.monotonic() + self.wait_seconds
        announced = False
        while self._try(lease, name) is False:
            if time.monotonic() >= deadline:
                warn(
                    f"statecache: waited {self.wait_seconds:.0f} s for {lease.holder} to compute "
                    f"'{name}' (lease on {self.url}); computing it here as well. Raise "
                    "STATECACHE_REMOTE_WAIT to wait longer."
                )
                break
            if not announced:
                self.status(f"'{name}' is being computed by {lease.holder}; waiting for it on {self.url}")
                announced = True
            time.sleep(min(_POLL, self.lease_ttl / 4, max(0.0, deadline - time.monotonic())))
            fetched = self._fetch(name, key, local_path, check, explain=False)
            if fetched is not None:
                return fetched
            if self._is_down() or (name, key) in self._unusable:
                break
        if lease.held:
            # the holder may have published and released between our last look and taking it
            fetched = self._fetch(name, key, local_path, check, explain=False)
            if fetched is not None:
                lease.release()
                return fetched
        return lease

    def _is_down(self) -> bool:
        down = self._down
        return down is not None and down[0] == os.getpid() and time.monotonic() - down[2] < DOWN_SECONDS

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
        track(upload)
        upload.thread.start()
        return upload

    def push(self, name: str, key: str, local_path: str) -> bool:
        """Upload one local entry now (``statecache push``); False if it was there."""
        from ..entry.progress import progress_bar

        upload = self.publish(name, key, local_path)
        if upload is None:
            raise RemoteError(self._down[1] if self._down else "the remote is unusable", down=True)
        bar = progress_bar(f"uploading to {self.url}", name, upload.size, None)
        upload.watch(bar)
        upload.thread.join()
        bar.close()
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


def _unheld() -> Lease:
    """A lease that is not held: the caller computes; releasing it does nothing."""
    return Lease(None, "", 1.0)


def remote_from_env(url: str | None = None, status: Callable[[str], None] | None = None) -> RemoteTier | None:
    """The tier at ``url`` (default ``STATECACHE_REMOTE``; None when neither is set), with
    ``STATECACHE_REMOTE_WAIT`` and ``STATECACHE_REMOTE_LEASE``. Without ``STATECACHE_SECRET``
    it is refused with a warning that says why, and None is returned: the local cache works."""
    from .._config import env_remote, env_remote_lease, env_remote_wait, env_secret

    url = url or env_remote()
    if url is None:
        return None
    try:
        return RemoteTier(
            url, secret=env_secret(), wait_seconds=env_remote_wait(), lease_ttl=env_remote_lease(), status=status
        )
    except ConfigError as exc:
        warn(f"statecache: {exc}")
        return None


class EngineTier:
    """A RemoteTier through the engine's second-tier hooks: ``fetch`` is ``obtain`` (fetch, or
    take the lease, or wait for the machine that holds it), ``publish`` uploads in the
    background and then releases the lease, ``abandon`` releases it when computing failed."""

    def __init__(self, remote: RemoteTier) -> None:
        self.remote = remote
        self._leases: dict[tuple[str, str], Lease] = {}

    def __repr__(self) -> str:
        return f"the remote cache {self.remote.url}"

    def fetch(self, name: str, key: str, dest: str, check: Check | None = None) -> Fetched | None:
        """The entry fetched into ``dest`` (the engine names its URL and time in its one
        "restored ... from" line), or None."""
        got = self.remote.obtain(name, key, dest, check)
        if isinstance(got, Fetched):
            return got
        self._leases[(name, key)] = got
        return None

    def publish(self, name: str, key: str, path: str) -> None:
        self.remote.publish(name, key, path, lease=self._leases.pop((name, key), None))

    def abandon(self, name: str, key: str) -> None:
        lease = self._leases.pop((name, key), None)
        if lease is not None:
            lease.release()


_engine_tiers: dict[str, EngineTier | None] = {}


def engine_tier(url: str | None = None) -> EngineTier | None:
    """The process's one EngineTier for ``url`` (default ``STATECACHE_REMOTE``), or None when
    no remote is set or it was refused (warned once)."""
    from .._config import env_remote

    url = url or env_remote()
    if url is None:
        return None
    if url not in _engine_tiers:
        remote = remote_from_env(url)
        _engine_tiers[url] = EngineTier(remote) if remote is not None else None
    return _engine_tiers[url]
