"""The life of one cached computation, the same for every front end: settings, store,
per-key lock, lookup, hit or compute, save, the status line and the miss reason.

A front end (``checkpoint``, ``cached_setup``, ``%%checkpoint``) says what its code is and how
its state is collected and put back (a binder, see ``_binders``), and drives an engine::

    engine = open_engine("checkpoint", name, settings, locate)
    found = engine.lookup(make_components)      # None: compute
    if found: engine.restore(binder, found)     # state, generators, process changes
    else:
        engine.start(binder)
        ... run the code (engine.abort() if it raises) ...
        engine.save(binder.state)

When caching is off (``STATECACHE_DISABLE``, an unusable cache directory) ``open_engine``
returns a ``NullEngine`` with the same API that never calls ``make_components`` nor saves, so
front ends have no "disabled" branches.

Second store tiers (a remote cache, see ``_tiers``) plug in through ``Tier`` and ``add_tier``
or ``remote=``/``STATECACHE_REMOTE`` (``remote=False``: none): a tier is asked for an entry
after a local miss (it copies the entry into the local store, which then loads and verifies it
as any other), and is given every entry after a local save.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable

from ._binders import RETURN, Binder
from ._config import format_duration, format_size
from ._errors import EntryError, UnpicklableError
from ._warnings import warn
from .key import components as _components

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path

# what front ends and plug-ins take from here (the tier interface is re-exported: plug-ins add
# tiers through the engine; front ends take their settings from ``_settings``)
__all__ = ["Engine", "Found", "NullEngine", "Tier", "add_tier", "open_engine", "remove_tier"]

if TYPE_CHECKING:
    from typing import Any

    from ._effects import ProcessState
    from ._settings import Settings
    from ._tiers import Tier, add_tier, remove_tier
    from .entry.meta import EntryMeta
    from .key.files import FileRecorder
    from .store.store import Store


def __getattr__(name: str) -> Any:
    """The tier interface, imported on first use: a local hit loads no tier code."""
    if name in ("Tier", "add_tier", "remove_tier"):
        from . import _tiers

        return getattr(_tiers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Found:
    """A hit: the entry's metadata and the saved state (name -> value). (A plain class: a
    NamedTuple class costs the first hit of a process about 1 M instructions to build.)"""

    __slots__ = ("meta", "state")

    def __init__(self, meta: EntryMeta, state: dict[str, Any]) -> None:
        self.meta, self.state = meta, state


Collected = tuple[dict[str, "Any"], dict[str, "Any"]]  # (state, extra metadata)


class NullEngine:
    """Caching off: the same API as ``Engine``; nothing is looked up, keyed or saved."""

    enabled = False
    key = ""
    cache_dir = ""
    entry_path: str | None = None

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        self.hit = False

    def lookup(self, make_components: Callable[[], dict[str, Any]]) -> Found | None:
        return None

    def restore(self, binder: Binder, found: Found) -> None:
        raise AssertionError("a null engine never finds an entry")

    def start(self, binder: Binder | None = None) -> None:
        pass

    def abort(self) -> None:
        pass

    def save(self, collect: Callable[[], Collected]) -> None:
        pass


_unusable_dirs: set[str] = set()  # cache directories already warned about in this process


def open_engine(
    kind: str, name: str, settings: Settings, locate: Callable[[], tuple[str, str]]
) -> Engine | NullEngine:
    """The engine of one use of checkpoint ``name``. ``locate()`` gives (``file:line``, the
    default cache directory); it is not called when caching is disabled."""
    if settings.disabled:
        return NullEngine(name, "caching disabled (STATECACHE_DISABLE)")
    site, default_dir = locate()
    cache_dir = settings.cache_dir or default_dir
    from .store.store import Store

    try:
        store = Store(cache_dir)
    except OSError as exc:
        if cache_dir not in _unusable_dirs:  # one warning per directory, not per checkpoint
            _unusable_dirs.add(cache_dir)
            warn(
                f"statecache: cannot use the cache directory {cache_dir} ({exc.strerror or exc}); "
                f"'{name}' and every other checkpoint using it run without caching. Set "
                "STATECACHE_DIR or cache_dir= to a writable directory.")
        return NullEngine(name, f"cache directory {cache_dir} unusable")
    return Engine(kind, name, site, settings, store)


class Engine:
    """Lookup, locking, loading, recording and saving of one cached computation."""

    enabled = True

    def __init__(self, kind: str, name: str, site: str, settings: Settings, store: Store):
        self.kind = kind
        self.name = name
        self.where = site
        self.settings = settings
        self.store: Store | None = store
        self.cache_dir = store.root
        self.key = ""
        self.components: dict[str, Any] = {}
        self.reason = ""
        self.hit = False
        self.entry_path: str | None = None
        self._consulted: list[Tier] = []  # tiers asked for this key: each gets publish or abandon
        self._lock: Any = None
        self._recorder: FileRecorder | None = None
        self._rng_before: dict[str, Any] = {}
        self._process_before: ProcessState | None = None
        self._seeded: tuple[str, ...] = ()
        self._started = 0.0

    @functools.cached_property
    def tiers(self) -> list[Tier]:
        """The second tiers of this use, found on its first local miss: a local hit imports no
        remote code (and fsspec loads only when a remote is asked)."""
        from ._tiers import active_tiers

        return active_tiers(self.settings.remote, self.settings.shared)

    def status(self, text: str) -> None:
        """One status line on stderr, unless quiet."""
        if self.settings.verbose:
            print(f"statecache: {text}", file=sys.stderr, flush=True)

    # -- lookup --

    def lookup(self, make_components: Callable[[], dict[str, Any]]) -> Found | None:
        """The cached entry for these components, or None: then the per-key lock is held
        (another process computing the same key is waited for) and ``start()`` comes next."""
        from .key.stdin import not_saved_reason, unknown_reads

        assert self.store is not None
        self.components, unknown = unknown_reads(make_components)
        self.key = _components.key_of(self.components)
        self.entry_path = self.store.entry_path(self.name, self.key)
        if unknown:  # what the code reads cannot be known before it runs: no key can hold it
            warn(not_saved_reason(self.name, self.where, unknown))
            self.reason, self.store = f"reads {' and '.join(unknown)} from a pipe or a terminal", None
            return None
        if self.settings.refresh:
            self.reason = "refresh requested"
        else:
            found = self._load()
            if found is not None:
                return found
        try:
            self._lock = self.store.lock(self.name, self.key)
            self._acquire()
        except OSError as exc:
            warn(f"statecache: cannot lock '{self.name}' in {self.cache_dir} ({exc}); computing without caching")
            self.store = None
            return None
        if not self.settings.refresh:
            found = self._load_after_wait()
            if found is not None:
                self._release()
                return found
        if not self.reason:
            self.reason = self._miss_reason()
        return None

    def _load_after_wait(self) -> Found | None:
        """Another process computed the entry while we waited, or a tier has it."""
        assert self.store is not None and self.entry_path is not None
        if os.path.exists(self.entry_path):
            return self._load()
        for tier in self.tiers:
            self._consulted.append(tier)
            try:
                fetched = tier.fetch(self.name, self.key, self.entry_path, check=self._still_valid)
            except Exception as exc:  # a tier's failure is a miss, never a crash
                warn(f"statecache: could not fetch '{self.name}' from {tier!r} ({exc})")
                continue
            if fetched:
                found = self._load(source=getattr(fetched, "url", None), fetch_seconds=getattr(fetched, "seconds", 0.0))
                if found is not None:
                    self._abandon()
                    return found
        return None

    def _still_valid(self, meta: Any) -> bool:
        """Whether an entry's metadata still holds here (for a tier, before it downloads)."""
        return self._refusal(meta) is None

    def _refusal(self, meta: EntryMeta) -> str | None:
        """Why an entry's metadata no longer holds here (a changed file or generator, or its
        age), or None: the one judgement of a local hit and of a tier's entry alike."""
        return self._stale_dependency(meta) or self._expired(meta) or self._moved(meta)

    def _moved(self, meta: EntryMeta) -> str | None:
        """Why an entry whose state holds paths of its project's folder is refused here (a copy
        of the project elsewhere), or None; most entries hold none: no import on their hits."""
        if "root_paths" not in meta:
            return None
        from .key.rootpaths import moved_root

        return moved_root(meta)

    def _acquire(self) -> None:
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0.2)
        except Timeout:
            self.status(f"'{self.name}' is being computed by another process; waiting for it")
            self._lock.acquire()

    def _release(self) -> None:
        if self._lock is not None:
            try:
                self._lock.release()
            except Exception:
                pass
            self._lock = None

    def _miss_reason(self) -> str:
        """What changed since the newest entry of the same checkpoint, in a few words."""
        assert self.store is not None
        source = self.components.get("source")
        for _, meta in self.store.versions(self.name):
            old = meta.get("components", {})
            if old.get("source") == source:
                return _components.summary(_components.changes(old, self.components))
        return "not cached yet"

    def _stale_dependency(self, meta: EntryMeta) -> str | None:
        """Why the entry's recorded files or random generators no longer match (None: they do).
        An entry that records no files list at all (another writer, a damaged copy) cannot say
        what it read: a miss, never a hit on trust."""
        if "files" not in meta:
            return "the entry records no data files"
        if meta["files"]:
            from .key.files import changed_record

            for record in meta["files"]:
                changed = changed_record(dict(record), self.store.root if self.store else None)
                if changed:
                    return changed
        drawn = {k: r for k, r in meta.get("rng", {}).items() if not r.get("seeded")}
        if drawn:  # most blocks draw no random numbers: no import on their hits
            from .key import rng

            return rng.changed(drawn)
        return None

    def _expired(self, meta: EntryMeta) -> str | None:
        """"expired" for an entry older than ``max_age`` (None: no limit, or young enough)."""
        limit = self.settings.max_age
        if limit is not None and time.time() - meta.get("created", 0.0) > limit:
            return f"expired (older than max_age={format_duration(limit)})"
        return None

    def _load(self, source: str | None = None, fetch_seconds: float = 0.0) -> Found | None:
        """The local entry's state, or None (a refusal or a damaged file: ``reason`` says).
        ``source`` is the tier it was just fetched from, named in the one status line, whose
        time counts the fetch too."""
        from .entry.reader import Reader, load_entry

        assert self.store is not None and self.entry_path is not None
        path = self.entry_path
        started = time.perf_counter()
        try:
            with Reader(path) as reader:
                # The metadata alone can already tell a changed data file: no unpickling (and no
                # gigabytes read) for an entry that would be refused. The state is then read
                # from the same descriptor, so the metadata judged is the one loaded (and, with
                # STATECACHE_SECRET, verified).
                try:
                    changed = self._refusal(reader.meta)
                except Exception as exc:  # metadata of a shape no writer of ours gives it
                    raise reader.error(f"damaged metadata ({type(exc).__name__}: {exc})") from None
                if changed:
                    self.reason = changed
                    return None
                if not self._holds_this_checkpoint(reader.meta, path):
                    return None  # before any unpickling: loading writes into live closure cells
                meta, state = load_entry(
                    reader, mmap=self.settings.mmap, secret=self.settings.secret,
                    progress=None if self.settings.verbose else False,
                )
                size = meta.get("state_size", reader.size)
        except FileNotFoundError:
            return None
        except (EntryError, OSError) as exc:
            warn(f"statecache: ignoring the cache entry of '{self.name}' ({exc}); computing it again")
            self.reason = "the cached entry could not be read"
            return None
        self.store.touch(path)
        computed = meta.get("compute_seconds")
        self.status(
            f"'{self.name}' restored {format_size(size)}" + (f" from {source}" if source else "")
            + f" in {format_duration(time.perf_counter() - started + fetch_seconds)}"
            + (f" (computed in {format_duration(computed)})" if computed is not None else ""),
        )
        _tell_recorders(meta.get("files", []))
        self.hit, self.reason = True, ""
        return Found(meta, state)

    def _holds_this_checkpoint(self, meta: EntryMeta, path: str) -> bool:
        """Whether the entry at ``path`` is this checkpoint's under this key. A valid entry of
        another checkpoint or key renamed or copied into place (by hand, a sync tool, or
        replayed by someone who can write the cache dir) is never restored: it warns and misses."""
        if meta.get("name") == self.name and meta.get("key") == self.key:
            return True
        warn(
            f"statecache: ignoring the cache entry of '{self.name}' (cache entry {path}: it "
            f"holds '{meta.get('name')}' key {str(meta.get('key'))[:32]}, not this key; a file "
            "copied or renamed into place); computing it again")
        self.reason = "the cached entry could not be read"
        return False

    # -- hit --

    def restore(self, binder: Binder, found: Found) -> None:
        """Put a hit's state back through the front end's binder, its random generators and
        what the computing run changed in the process (``sys.path``, ``sys.argv``, environment)."""
        binder.restore(found.state, list(found.meta.get("unbound", [])))
        drawn = found.meta.get("rng")
        if drawn:
            from .key import rng

            rng.restore(dict(drawn))
        effects = found.meta.get("effects")
        if effects:  # most blocks change nothing in the process: no import on their hits
            from . import _effects

            _effects.replay(effects)

    # -- compute and save --

    def start(self, binder: Binder | None = None) -> None:
        """The code runs now: record the files it opens and the random generators it advances
        (except those the code seeds before drawing, whose state before does not count), and
        have the binder note the objects its inputs reach (what a later hit fills in place).
        Only a computing run pays for that walk, never a hit."""
        from . import _effects
        from .key import rng
        from .key.files import FileRecorder

        if binder is not None:
            binder.remember_inputs()
        self._seeded = binder.reads.seeded if binder is not None else ()
        self.status(f"'{self.name}' computing ({self.reason})")
        self._recorder = FileRecorder().__enter__()
        self._rng_before = rng.capture()
        self._process_before = _effects.capture()
        self._started = time.perf_counter()

    def abort(self) -> None:
        """The code raised: save nothing, release the lock."""
        self._finish(None)

    def save(self, collect: Callable[[], Collected]) -> None:
        """The code completed: save what ``collect()`` gives (state, extra metadata)."""
        self._finish(collect)

    def _finish(self, collect: Callable[[], Collected] | None) -> None:
        from .key import rng as _rng

        compute_seconds = time.perf_counter() - self._started
        try:
            rng = _rng.records(self._rng_before, _rng.capture()) if collect is not None else {}
            for generator in self._seeded:
                if generator in rng:
                    rng[generator]["seeded"] = True  # its state before does not count
            if self._recorder is not None:
                self._recorder.__exit__(None, None, None)
            if collect is None:
                return
            from .key.workers import may_save

            if not may_save(self.name, self.where, declared=any(self.components.get("files", {}).values())):
                return  # its workers' reads are unknown (may_save warned, naming them)
            effects: dict[str, Any] = {}
            if self._process_before is not None:
                from . import _effects

                effects = dict(_effects.difference(self._process_before, _effects.capture()))
                if effects.get("unreplayable"):
                    return  # a hit would differ from this run (_effects warned, naming it)
            state, extra = collect()
            if effects:
                extra = {**extra, "effects": effects}
            if self.store is not None:
                self._save(state, {**extra, "rng": rng}, compute_seconds)
        finally:
            self._release()
            self._abandon()  # after a publish, nothing is left to abandon

    def _meta(self, extra: dict[str, Any], compute_seconds: float) -> EntryMeta:
        from .key.files import snapshot

        assert self.store is not None and self._recorder is not None
        file, _, line = self.where.rpartition(":")
        meta: dict[str, Any] = {
            "name": self.name,
            "key": self.key,
            "kind": self.kind,
            "source": {"file": file, "line": int(line)},
            "created": time.time(),
            "compute_seconds": compute_seconds,
            "files": snapshot(self._recorder, [self.store.root]),
            "components": self.components,
            **extra,
        }
        return meta  # type: ignore[return-value]

    def _save(self, state: dict[str, Any], extra: dict[str, Any], compute_seconds: float) -> None:
        from .entry.writer import write_entry
        from .key.rootpaths import root_record

        assert self.store is not None and self.entry_path is not None
        meta = self._meta({**extra, **root_record(state)}, compute_seconds)
        path = self.entry_path
        try:
            written = write_entry(
                path, state, dict(meta), secret=self.settings.secret,
                progress=None if self.settings.verbose else False, compress=self.settings.compress,
            )
        except UnpicklableError as exc:
            warn(f"statecache: '{self.name}' at {self.where} was not saved: {self._unpicklable(exc)}")
            return
        except EntryError as exc:
            warn(f"statecache: '{self.name}' at {self.where} was not saved ({exc}); the program goes on "
                 "with the state it computed")
            return
        except OSError as exc:
            warn(
                f"statecache: '{self.name}' at {self.where} was not saved ({exc.strerror or exc}); the "
                "program goes on with the state it computed. Free some space or point "
                "STATECACHE_DIR elsewhere.")
            return
        _tell_recorders(meta["files"])
        self.status(
            f"'{self.name}' saved {format_size(sum(v.get('size', 0) for v in written.variables.values()))} "
            f"({format_size(written.size)} on disk) in {format_duration(written.seconds)} "
            f"(computed in {format_duration(compute_seconds)})",
        )
        if self.settings.max_size is not None:
            from .store.maintenance import after_save

            after_save(self.store.root, self.settings.max_size, path, self.settings.verbose)
        self._publish(path)

    def _unpicklable(self, exc: UnpicklableError) -> str:
        """The pickler's message; for a function's return value, a fix that applies to it
        (there is no name to ``del``)."""
        text = str(exc)
        if RETURN not in exc.names or "\nFix:" not in text:
            return text
        return text.split("\nFix:", 1)[0] + (
            "\nFix: make the function return values that can be pickled (build the others "
            "after the call), or make the type picklable (define __getstate__/__reduce__). "
            "Nothing was written; the program goes on with the value it computed."
        )

    def _publish(self, path: str) -> None:
        consulted, self._consulted = self._consulted, []
        for tier in consulted:
            try:
                tier.publish(self.name, self.key, path)
            except Exception as exc:
                warn(f"statecache: could not publish '{self.name}' to {tier!r} ({exc})")

    def _abandon(self) -> None:
        """Nothing will be published for this key: tiers let go of what they hold for it."""
        consulted, self._consulted = self._consulted, []
        for tier in consulted:
            abandon = getattr(tier, "abandon", None)
            if abandon is not None:
                try:
                    abandon(self.name, self.key)
                except Exception as exc:
                    warn(f"statecache: could not release '{self.name}' on {tier!r} ({exc})")


def _tell_recorders(records: list[Any]) -> None:
    """Give the files an entry depends on to every checkpoint computing around this one (an
    inner hit or save): the outer entry depends on them too."""
    if records:  # no import on the hits of blocks that read no file
        from .key.files import add_to_active

        add_to_active([dict(r) for r in records])
