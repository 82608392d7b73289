"""``checkpoint`` and ``cached_setup``: compute a key, restore on a hit, record and save on a miss.

The key is the xxh3-128 digest of a small JSON document of components (code, inputs, explicit
files, environment). The same components are stored in the entry's metadata, so that a miss
can say in a few words what changed since the newest previous version.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from types import CodeType, FrameType, ModuleType
from typing import Any, TypeVar, overload

from ._config import (
    env_dir,
    env_flag,
    env_max_size,
    env_refresh,
    env_secret,
    format_duration,
    format_size,
    validate_name,
)
from ._errors import (
    ConfigError,
    EntryError,
    FingerprintError,
    InvalidNameError,
    StateCacheError,
    UnpicklableError,
)
from ._frames import ArmedSkip, SkipBody, arm_skip, is_function_frame, write_names
from ._warnings import warn
from .key import files as _files
from .key import rng as _rng
from .key.source import Block, find_with_block
from .store.store import Store

F = TypeVar("F", bound=Callable[..., Any])
_RETURN = "return"


# --- settings ------------------------------------------------------------------------------


class _Settings:
    """Arguments merged with the ``STATECACHE_*`` environment, read once per checkpoint use."""

    def __init__(
        self,
        name: str,
        cache_dir: str | os.PathLike[str] | None,
        verbose: bool | None,
        mmap: bool | None,
        max_size: int | str | None,
    ):
        self.disabled = env_flag("STATECACHE_DISABLE")
        self.refresh = env_refresh().applies_to(name)
        self.verbose = (not env_flag("STATECACHE_QUIET")) if verbose is None else bool(verbose)
        self.mmap = env_flag("STATECACHE_MMAP") if mmap is None else bool(mmap)
        self.secret = env_secret()
        if max_size is None:
            self.max_size = env_max_size()
        elif isinstance(max_size, str):
            from ._config import parse_size

            self.max_size = parse_size(max_size, "max_size")
        else:
            self.max_size = int(max_size)
        if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
            raise ConfigError(
                f"cache_dir must be a directory path (a str or pathlib.Path), got {cache_dir!r} "
                f"({type(cache_dir).__name__}); pass e.g. cache_dir='.statecache' or leave it out"
            )
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else env_dir()
        if isinstance(self.cache_dir, bytes):
            self.cache_dir = os.fsdecode(self.cache_dir)


def _as_names(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items: tuple = (value,)
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise ConfigError(
                f"{what} must be a name or a list of names (e.g. {what}=['logger']), got {value!r}"
            ) from None
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what} must be a name or a list of names, got {item!r}")
    return items


def is_cell_file(filename: str) -> bool:
    """True for the pseudo-file of an IPython or Jupyter cell: ``<ipython-input-3-...>`` in the
    terminal, ``<tmp>/ipykernel_<pid>/<hash>.py`` under ipykernel (a name that changes with
    every kernel, so it must never reach a key)."""
    if filename.startswith("<ipython-input-"):
        return True
    head, base = os.path.split(filename)
    parent = os.path.basename(head)
    return (
        parent.startswith("ipykernel_") and parent[10:].isdigit()
        and base.endswith(".py") and base[:-3].isdigit()
    )


def notebook_path() -> str | None:
    """The notebook the running kernel serves: VS Code's ``__vsc_ipynb_file__``, else Jupyter's
    ``JPY_SESSION_NAME`` (absolute in recent servers; a relative one is looked up from the
    kernel's working directory, which Jupyter sets to the notebook's). None when unknown."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    if shell is not None:
        vsc = shell.user_ns.get("__vsc_ipynb_file__")
        if isinstance(vsc, str) and vsc:
            return os.path.abspath(os.path.expanduser(vsc))
    session = os.environ.get("JPY_SESSION_NAME")
    if not session:
        return None
    path = os.path.expanduser(session)
    if os.path.isabs(path) or os.path.exists(path):
        return os.path.abspath(path)
    return os.path.abspath(os.path.basename(path))


def default_cache_dir(filename: str) -> str:
    """``.statecache`` beside the file holding the checkpoint; for notebook cells beside the
    notebook (``notebook_path()``); else in the working directory."""
    if is_cell_file(filename):
        notebook = notebook_path()
        base = os.path.dirname(notebook) if notebook else os.getcwd()
        return os.path.join(base, ".statecache")
    if os.path.isfile(filename):
        return os.path.join(os.path.dirname(os.path.abspath(filename)), ".statecache")
    return os.path.join(os.getcwd(), ".statecache")


def _status(settings: _Settings, text: str) -> None:
    if settings.verbose:
        print(f"statecache: {text}", file=sys.stderr, flush=True)


# --- keys ----------------------------------------------------------------------------------


def _env_component() -> str:
    from .entry.format import FORMAT_VERSION

    return f"python{sys.version_info[0]}.{sys.version_info[1]}/format{FORMAT_VERSION}"


def _files_component(patterns: tuple[str, ...], base_dir: str) -> dict[str, str]:
    """Explicit ``files=``: every file each glob matches, by content (a stat cache is not kept:
    the digest runs at several GB/s)."""
    import glob

    from .key.fingerprint import file_digest

    out: dict[str, str] = {}
    for pattern in patterns:
        full = os.path.join(base_dir, os.path.expanduser(pattern))
        matches = sorted(glob.glob(full, recursive=True))
        if not matches:
            out[f"{pattern}: no match"] = ""
        for path in matches:
            if os.path.isfile(path):
                try:
                    out[os.path.relpath(path, base_dir)] = file_digest(path)
                except OSError as exc:
                    raise ConfigError(
                        f"files={pattern!r} matches {path}, which cannot be read "
                        f"({exc.strerror or exc}): fix its permissions or leave it out of files="
                    ) from None
    return out


def _key_of(components: Mapping[str, Any]) -> str:
    from .key.fingerprint import digest

    return digest(json.dumps(components, sort_keys=True).encode()).hex()


def _miss_reason(store: Store, name: str, components: Mapping[str, Any]) -> str:
    """What changed since the newest entry of the same checkpoint, in a few words."""
    source = components.get("source")
    previous = [m for _, m in store.versions(name) if m.get("components", {}).get("source") == source]
    if not previous:
        return "not cached yet"
    old = previous[0].get("components", {})
    if old.get("env") != components.get("env"):
        return "Python or statecache format version changed"
    if old.get("code") != components.get("code"):
        return "code changed"
    reasons = []
    old_inputs, new_inputs = old.get("inputs", {}), components.get("inputs", {})
    for label, value in new_inputs.items():
        if label not in old_inputs:
            reasons.append(f"new input '{label}'")
        elif old_inputs[label] != value:
            reasons.append(f"input '{label}' changed")
    reasons += [f"input '{label}' gone" for label in old_inputs if label not in new_inputs]
    old_files, new_files = old.get("files", {}), components.get("files", {})
    reasons += [f"file {p} changed" for p in new_files if old_files.get(p) != new_files[p]]
    reasons += [f"file {p} gone" for p in old_files if p not in new_files]
    if not reasons:
        return "settings changed"
    return ", ".join(reasons[:3]) + (f" (+{len(reasons) - 3} more)" if len(reasons) > 3 else "")


# --- the shared life cycle of a cached computation --------------------------------------------

_unusable_dirs: set[str] = set()  # cache directories already warned about in this process



class _Cached:
    """Key lookup, locking, loading, recording and saving, shared by both public forms."""

    def __init__(self, kind: str, name: str, where: str, settings: _Settings, cache_dir: str):
        self.kind = kind
        self.name = name
        self.where = where
        self.settings = settings
        self.cache_dir = cache_dir
        self.store: Store | None = None
        self.key = ""
        self.components: dict[str, Any] = {}
        self.lock: Any = None
        self.recorder: _files.FileRecorder | None = None
        self.rng_before: dict[str, Any] = {}
        self.started = 0.0
        self.reason = ""

    def open_store(self) -> bool:
        try:
            self.store = Store(self.cache_dir)
            return True
        except OSError as exc:
            if self.cache_dir in _unusable_dirs:  # one warning per directory, not per checkpoint
                return False
            _unusable_dirs.add(self.cache_dir)
            warn(
                f"statecache: cannot use the cache directory {self.cache_dir} ({exc.strerror or exc}); "
                f"'{self.name}' and every other checkpoint using it run without caching. Set "
                "STATECACHE_DIR or cache_dir= to a writable directory.")
            return False

    def lookup(self, components: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The cached (meta, state) for these components, or None (then the lock is held)."""
        assert self.store is not None
        self.components = components
        self.key = _key_of(components)[:32]
        if self.settings.refresh:
            self.reason = "refresh requested"
        else:
            found = self._load()
            if found is not None:
                return found
        try:
            self.lock = self.store.lock(self.name, self.key)
            self._acquire()
        except OSError as exc:
            warn(f"statecache: cannot lock '{self.name}' in {self.cache_dir} ({exc}); computing without caching")
            self.store = None
            return None
        if not self.settings.refresh and os.path.exists(self.store.entry_path(self.name, self.key)):
            found = self._load()  # another process computed it while we waited
            if found is not None:
                self.release()
                return found
        if not self.reason:
            self.reason = _miss_reason(self.store, self.name, components)
        return None

    def _acquire(self) -> None:
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=0.2)
        except Timeout:
            _status(self.settings, f"'{self.name}' is being computed by another process; waiting for it")
            self.lock.acquire()

    def release(self) -> None:
        if self.lock is not None:
            try:
                self.lock.release()
            except Exception:
                pass
            self.lock = None

    def _stale_dependency(self, meta: dict[str, Any]) -> str | None:
        """Why the entry's recorded files or random generators no longer match (None: they do)."""
        for record in meta.get("files", []):
            changed = _files.changed_record(record)
            if changed:
                return changed
        return _rng.changed(meta.get("rng", {}))

    def _load(self) -> tuple[dict[str, Any], dict[str, Any]] | None:
        from .entry.format import read_entry, read_meta

        assert self.store is not None
        path = self.store.entry_path(self.name, self.key)
        started = time.perf_counter()
        try:
            # The metadata alone can already tell a changed data file: no unpickling (and no
            # gigabytes read) for an entry that would be refused. It can only decide a miss; a
            # hit is decided below on the verified entry.
            changed = self._stale_dependency(read_meta(path))
        except FileNotFoundError:
            return None
        except Exception:
            changed = None  # damaged metadata: read_entry below says what is wrong
        if changed:
            self.reason = changed
            return None
        try:
            meta, state = read_entry(
                path,
                mmap=self.settings.mmap,
                secret=self.settings.secret,
                progress=None if self.settings.verbose else False,
            )
        except FileNotFoundError:
            return None
        except (EntryError, OSError) as exc:
            warn(f"statecache: ignoring the cache entry of '{self.name}' ({exc}); computing it again")
            self.reason = "the cached entry could not be read"
            return None
        if meta.get("name") != self.name or meta.get("key") != self.key:
            # A valid entry of another checkpoint or key renamed or copied into place (by hand,
            # a sync tool, or replayed by someone who can write the cache dir): never its state.
            warn(
                f"statecache: ignoring the cache entry of '{self.name}' (cache entry {path}: it "
                f"holds '{meta.get('name')}' key {str(meta.get('key'))[:32]}, not this key; a file "
                "copied or renamed into place); computing it again")
            self.reason = "the cached entry could not be read"
            return None
        changed = self._stale_dependency(meta)
        if changed:
            self.reason = changed
            return None
        self.store.touch(path)
        seconds = time.perf_counter() - started
        size = meta.get("state_size", os.path.getsize(path))
        computed = meta.get("compute_seconds")
        _status(
            self.settings,
            f"'{self.name}' restored {format_size(size)} in {format_duration(seconds)}"
            + (f" (computed in {format_duration(computed)})" if computed is not None else ""),
        )
        _files.add_to_active(meta.get("files", []))
        return meta, state

    def start_computing(self) -> None:
        _status(self.settings, f"'{self.name}' computing ({self.reason})")
        self.recorder = _files.FileRecorder().__enter__()
        self.rng_before = _rng.capture()
        self.started = time.perf_counter()

    def finish(self, state: dict[str, Any] | None, extra_meta: dict[str, Any]) -> None:
        """Save ``state`` (None: the computation failed, save nothing) and release the lock."""
        compute_seconds = time.perf_counter() - self.started
        rng = _rng.records(self.rng_before, _rng.capture()) if state is not None else {}
        try:
            if self.recorder is not None:
                self.recorder.__exit__(None, None, None)
            if state is None or self.store is None:
                return
            self._save(state, {**extra_meta, "rng": rng}, compute_seconds)
        finally:
            self.release()

    def _save(self, state: dict[str, Any], extra_meta: dict[str, Any], compute_seconds: float) -> None:
        from .entry.format import write_entry

        assert self.store is not None and self.recorder is not None
        files = _files.snapshot(self.recorder, [self.store.root])
        meta = {
            "name": self.name,
            "key": self.key,
            "kind": self.kind,
            "source": {"file": self.where.rsplit(":", 1)[0], "line": int(self.where.rsplit(":", 1)[1])},
            "created": time.time(),
            "compute_seconds": compute_seconds,
            "files": files,
            "components": self.components,
            **extra_meta,
        }
        path = self.store.entry_path(self.name, self.key)
        try:
            written = write_entry(
                path,
                state,
                meta,
                secret=self.settings.secret,
                progress=None if self.settings.verbose else False,
            )
        except UnpicklableError as exc:
            warn(f"statecache: '{self.name}' at {self.where} was not saved: {exc}")
            return
        except OSError as exc:
            warn(
                f"statecache: '{self.name}' at {self.where} was not saved ({exc.strerror or exc}); the "
                "program goes on with the state it computed. Free some space or point "
                "STATECACHE_DIR elsewhere.")
            return
        _files.add_to_active(files)
        _status(
            self.settings,
            f"'{self.name}' saved {format_size(sum(v.get('size', 0) for v in written.variables.values()))} "
            f"({format_size(written.size)} on disk) in {format_duration(written.seconds)} "
            f"(computed in {format_duration(compute_seconds)})",
        )
        if self.settings.max_size is not None:
            from .store.maintenance import after_save

            after_save(self.store.root, self.settings.max_size, path, self.settings.verbose)


def _where(filename: str, line: int) -> str:
    return f"{os.path.abspath(filename) if os.path.exists(filename) else filename}:{line}"


def _source_id(filename: str, cache_dir: str) -> str:
    """The checkpoint's file as the key sees it: relative to the cache directory's parent, so
    that moving a project together with its cache keeps the keys. Notebook cells count as
    their notebook's (``<ipython>`` when it is unknown): cell file names change per kernel."""
    if is_cell_file(filename):
        filename = notebook_path() or "<ipython>"
    if not os.path.exists(filename):
        return filename
    try:
        return os.path.relpath(os.path.abspath(filename), os.path.dirname(os.path.abspath(cache_dir)))
    except ValueError:
        return os.path.abspath(filename)


def _fingerprint_inputs(
    fp: Any, values: Mapping[str, Any], label: Callable[[str], str], context: str
) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        try:
            out[name] = fp.value(value, label(name)).hex()
        except FingerprintError as exc:
            raise FingerprintError(f"{context}: {exc}") from None
    return out


# --- checkpoint ----------------------------------------------------------------------------

class checkpoint:  # noqa: N801 - used as a lower-case context manager, like open()
    """``with checkpoint("name"):`` skips its body on a hit and restores what it assigned.

    The key covers the body's code (normalised AST), the values of the names it reads, the
    code of the user's functions it calls, the data files it opens (re-checked on a hit) and
    ``files=`` globs. Inputs that the body mutates in place are saved and restored too.
    """

    def __init__(
        self,
        name: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        ignore: str | Iterable[str] = (),
        files: str | Iterable[str] = (),
        verbose: bool | None = None,
        mmap: bool | None = None,
        max_size: int | str | None = None,
    ):
        self.name = validate_name(name)
        self.ignore = _as_names(ignore, "ignore")
        self.files = _as_names(files, "files")
        self._options = (cache_dir, verbose, mmap, max_size)
        self._mode = "idle"
        self._cached: _Cached | None = None
        self._frame: FrameType | None = None
        self._armed: ArmedSkip | None = None
        self._module_chains: set[str] = set()  # input labels such as "helpers.SCALE"

    def __enter__(self) -> checkpoint:
        if self._mode != "idle":
            raise StateCacheError(f"checkpoint '{self.name}' is already in use; create a new one per 'with'")
        frame = sys._getframe(1)
        cache_dir, verbose, mmap, max_size = self._options
        settings = _Settings(self.name, cache_dir, verbose, mmap, max_size)
        if settings.disabled:
            self._mode = "disabled"
            return self
        block = find_with_block(frame)
        where = _where(block.filename, block.with_line)
        self._check_unique(block, where)
        root = settings.cache_dir or default_cache_dir(block.filename)
        cached = _Cached("checkpoint", self.name, where, settings, root)
        self._cached, self._frame, self._block = cached, frame, block
        if not cached.open_store():
            self._mode = "disabled"
            return self
        inputs = self._input_values(frame, block)
        context = f"checkpoint '{self.name}' at {where}"
        from .key.fingerprint import Fingerprinter, ast_digest

        fp = Fingerprinter(ignore=self.ignore)
        self._input_fps = _fingerprint_inputs(fp, inputs, lambda n: n, context)
        self._inputs = inputs
        components = {
            "code": ast_digest(block.body).hex(),
            "source": _source_id(block.filename, cached.cache_dir),
            "inputs": self._input_fps,
            "files": _files_component(self.files, os.path.dirname(os.path.abspath(block.filename))),
            "env": _env_component(),
        }
        found = cached.lookup(components)
        if found is not None:
            self._restore_on_skip = found
            self._armed = None if block.empty else arm_skip(frame, block.body_lines)
            self._mode = "hit"
            return self
        cached.start_computing()
        self._mode = "compute"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        mode, self._mode = self._mode, "done"
        if mode == "hit":
            if self._armed is not None:
                self._armed.disarm()
            elif exc_type is None:
                exc_type = SkipBody  # an empty body ran instead of being skipped: same result
            if exc_type is not SkipBody:
                return False
            assert self._frame is not None
            meta, state = self._restore_on_skip
            if self._block.as_name:
                state = {**state, self._block.as_name: self}
            self._write_back(self._frame, state, meta.get("unbound", []))
            _rng.restore(meta.get("rng", {}))
            self._frame = None
            return True
        if mode == "compute":
            assert self._cached is not None and self._frame is not None
            frame, self._frame = self._frame, None
            if exc_type is not None:
                self._cached.finish(None, {})
                return False
            state, unbound = self._collect(frame)
            self._cached.finish(state, {"unbound": unbound})
        return False

    # -- helpers --

    def _check_unique(self, block: Block, where: str) -> None:
        others = [line for line in block.name_lines.get(self.name, []) if line != block.with_line]
        if others:
            raise StateCacheError(
                f"checkpoint '{self.name}' at {where}: the name is also used at line {others[0]} "
                "of the same file; give each checkpoint of a file its own name"
            )

    def _input_values(self, frame: FrameType, block: Block) -> dict[str, Any]:
        import builtins

        namespace = frame.f_locals
        values: dict[str, Any] = {}
        for name in block.inputs:
            if name in self.ignore:
                continue
            if name in namespace:
                values[name] = namespace[name]
            elif name in frame.f_globals:
                values[name] = frame.f_globals[name]
            elif hasattr(builtins, name):
                continue  # a builtin: fixed by the Python version, which is in the key
            # else: unbound before the block; nothing to fingerprint
        values.update(self._implicit_inputs(block, values, frame))
        return values

    def _implicit_inputs(self, block: Block, values: dict[str, Any], frame: FrameType) -> dict[str, Any]:
        """Data read through installed modules (``sys.argv``, ``np.pi``), which count by
        version only; attributes of the user's modules by value (``helpers.SCALE`` may have
        been set at run time, ``pkg.sub`` is a module of its own); environment variables read
        with a constant key; and the modules the body imports, by their source."""
        from .key.fingerprint import Fingerprinter, is_plain_data
        from .key.provenance import is_user_module

        extra: dict[str, Any] = {}
        for chain in block.attribute_reads:
            name = chain[0]
            if name in self.ignore:
                continue
            module = values.get(name)
            if module is None and name in block.assigned:
                # ``import helpers`` above the block and again in the body: the module the
                # body rebinds the name to is (nearly always) the one bound now.
                module = frame.f_locals.get(name, frame.f_globals.get(name))
            if not isinstance(module, ModuleType):
                continue
            if is_user_module(module):
                self._user_module_chain(chain, module, extra)
                continue
            label = f"{name}.{chain[1]}"
            if len(chain) != 2 or label in self.ignore or chain == ("os", "environ"):
                continue
            value = getattr(module, chain[1], None)
            if is_plain_data(value):
                extra[label] = value
        for key in block.environ_keys:
            label = f"os.environ[{key!r}]"
            if label not in self.ignore:
                extra[label] = os.environ.get(key)
        if block.imports:
            fp = Fingerprinter()
            package = str(frame.f_globals.get("__package__") or "")
            for modname, level, names in block.imports:
                label = f"import {'.' * level}{modname}" + (f" ({', '.join(names)})" if names else "")
                if label not in self.ignore:
                    extra[label] = fp.import_digest(modname, level, names, package)
        return extra

    def _user_module_chain(self, chain: tuple[str, ...], module: ModuleType, extra: dict[str, Any]) -> None:
        """``helpers.SCALE``, ``pkg.sub.f``: each attribute along the chain by its current value,
        as long as it is one of the user's modules (beyond that, the value covers the rest)."""
        from .key.provenance import is_user_module

        value: Any = module
        for i in range(1, len(chain)):
            label = ".".join(chain[: i + 1])
            if label in self.ignore:
                return
            value = getattr(value, chain[i], _NO_ATTRIBUTE)
            extra[label] = value
            self._module_chains.add(label)
            if not (isinstance(value, ModuleType) and is_user_module(value)):
                return

    def _collect(self, frame: FrameType) -> tuple[dict[str, Any], list[str]]:
        """The names the body bound, plus inputs it mutated in place; and the unbound ones."""
        from .key.fingerprint import Fingerprinter

        namespace = frame.f_locals
        local_names = _local_names(frame)
        state: dict[str, Any] = {}
        unbound: list[str] = []
        for name in self._block.assigned:
            space = namespace if (local_names is None or name in local_names) else frame.f_globals
            if name not in space:
                unbound.append(name)
            elif _reopen_hazard(space[name]):
                # ``with open(path, "w") as f``: dill would pickle f as a handle and reopen it,
                # mode "w", when the entry is loaded, emptying the file the block wrote. Left
                # out: after a hit the name is unbound (loud), never a truncated file (silent).
                unbound.append(name)
                if not space[name].closed:
                    warn(
                        f"statecache: '{self.name}' does not save {name!r}, a file open for "
                        "writing: restoring it would reopen and empty the file. Open it after "
                        "the block.")
            else:
                state[name] = space[name]
        fp = Fingerprinter(ignore=self.ignore)
        for name, before in self._input_fps.items():
            if name in state:
                continue
            if name in self._module_chains:  # helpers.MODEL = ..., helpers.TABLE[k] = ...
                value = _resolve_chain(frame, name)
                if value is _NO_ATTRIBUTE:
                    if self._inputs[name] is not _NO_ATTRIBUTE:
                        unbound.append(name)  # del helpers.X
                    continue
            elif not name.isidentifier():  # sys.argv, os.environ[...]: not names
                continue
            else:
                value = self._inputs[name]
            try:
                changed = fp.value(value, name).hex() != before
            except FingerprintError:
                changed = True
            if changed:
                state[name] = value
        return state, unbound

    def _write_back(self, frame: FrameType, state: dict[str, Any], unbound: list[str]) -> None:
        # Attributes of the user's modules that the body set or mutated (dotted labels; the
        # module itself is restored by reference, so only its attribute can carry the change).
        dotted = [k for k in (*state, *unbound) if "." in k]
        for label in dotted:
            owner = _resolve_chain(frame, label.rpartition(".")[0])
            attr = label.rpartition(".")[2]
            if owner is _NO_ATTRIBUTE:
                continue
            if label in state:
                value = state.pop(label)
                if not _update_in_place(getattr(owner, attr, _NO_ATTRIBUTE), value):
                    setattr(owner, attr, value)
            elif hasattr(owner, attr):
                delattr(owner, attr)
        unbound = [n for n in unbound if "." not in n]
        # Inputs the body mutated (not names it bound): other names may refer to the same
        # object (model_cfg = cfg["model"]), so the object itself takes the saved content.
        assigned = set(self._block.assigned)
        for name in [k for k in state if k not in assigned]:
            current, saved = _resolve_chain(frame, name), state[name]
            if _update_in_place(current, saved):
                del state[name]
                for other, value in state.items():  # y = x in the body: y is x again
                    if value is saved:
                        state[other] = current
        local_names = _local_names(frame)
        if local_names is None:
            write_names(frame, state, unbound)
            return
        local = {k: v for k, v in state.items() if k in local_names}
        write_names(frame, local, [n for n in unbound if n in local_names])
        for k, v in state.items():
            if k not in local_names:
                frame.f_globals[k] = v
        for n in unbound:
            if n not in local_names:
                frame.f_globals.pop(n, None)


def _update_in_place(current: Any, saved: Any) -> bool:
    """Give ``current`` the content of ``saved`` without changing its identity, for the common
    mutable containers and numpy arrays of the same type (and shape and dtype); False (nothing
    done) for anything else."""
    kind = type(current)
    if kind is not type(saved) or current is saved:
        return False
    if kind is list or kind is bytearray:
        current[:] = saved
    elif kind is dict or kind is set:
        current.clear()
        current.update(saved)
    else:
        np = sys.modules.get("numpy")
        if (
            np is None or kind is not np.ndarray or current.shape != saved.shape
            or current.dtype != saved.dtype or not current.flags.writeable or current.dtype.hasobject
        ):
            return False
        current[...] = saved
    return True


def _reopen_hazard(value: Any) -> bool:
    """A file object that dill would reopen on load with a mode that creates or truncates the
    file (``"w"``, ``"x"``), or a closed one (the ``with open(...) as f`` idiom)."""
    import io

    if not isinstance(value, io.IOBase):
        return False
    mode = getattr(value, "mode", "")
    return value.closed or (isinstance(mode, str) and ("w" in mode or "x" in mode))


class _NoAttribute:
    """Stands for an attribute of a user's module that does not exist (yet) before the block."""


_NO_ATTRIBUTE = _NoAttribute()


def _resolve_chain(frame: FrameType, label: str) -> Any:
    """The current value of ``name.attr.attr`` in the frame (``_NO_ATTRIBUTE`` if any part of
    it is missing)."""
    name, *attrs = label.split(".")
    value = frame.f_locals.get(name, frame.f_globals.get(name, _NO_ATTRIBUTE))
    for attr in attrs:
        if value is _NO_ATTRIBUTE:
            break
        value = getattr(value, attr, _NO_ATTRIBUTE)
    return value


def _local_names(frame: FrameType) -> set[str] | None:
    """The names local to a function frame (None for module and class frames)."""
    if not is_function_frame(frame):
        return None
    code = frame.f_code
    return set(code.co_varnames) | set(code.co_cellvars) | set(code.co_freevars)


# --- cached_setup --------------------------------------------------------------------------


@overload
def cached_setup(func: F) -> F: ...


@overload
def cached_setup(
    func: None = None,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    ignore: str | Iterable[str] = (),
    files: str | Iterable[str] = (),
    verbose: bool | None = None,
    mmap: bool | None = None,
    max_size: int | str | None = None,
) -> Callable[[F], F]: ...


def cached_setup(
    func: F | None = None,
    *,
    name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    ignore: str | Iterable[str] = (),
    files: str | Iterable[str] = (),
    verbose: bool | None = None,
    mmap: bool | None = None,
    max_size: int | str | None = None,
) -> Any:
    """Cache a setup function's return value and the module globals it assigns (``global x``).

    The key covers the function's code and, transitively, the code of the user's functions it
    calls, its argument values (``ignore=`` leaves some out), the globals it reads, the data
    files it opens, ``files=`` globs and the Python version.
    """
    ignored = _as_names(ignore, "ignore")
    patterns = _as_names(files, "files")

    def decorate(fn: F) -> F:
        if not callable(fn) or not hasattr(fn, "__code__"):
            raise StateCacheError(f"cached_setup decorates a Python function, not {fn!r}")
        if name is not None:
            entry_name = validate_name(name)
        else:
            derived = fn.__qualname__.replace("<locals>.", "").replace("<", "").replace(">", "")
            try:
                entry_name = validate_name(derived)
            except InvalidNameError:
                import re

                suggestion = re.sub(r"[^A-Za-z0-9._-]", "_", derived).lstrip(".")[:100] or "setup"
                raise InvalidNameError(
                    f"cached_setup names its entries after the function, and {derived!r} is not a "
                    "valid entry name (1 to 100 letters, digits, '.', '_' or '-', not starting "
                    f"with '.'): give one, e.g. @cached_setup(name={suggestion!r})"
                ) from None
        code = fn.__code__
        where = _where(code.co_filename, code.co_firstlineno)
        assigned_globals = _stored_globals(code)
        import inspect

        signature = inspect.signature(fn)
        names_used = _names_used(code)
        for ignored_name in ignored:
            if ignored_name not in signature.parameters and ignored_name not in names_used:
                raise ConfigError(
                    f"cached_setup {entry_name!r}: ignore= names {ignored_name!r}, which is neither a "
                    f"parameter of {fn.__qualname__}{signature} nor a global it reads"
                )

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            settings = _Settings(entry_name, cache_dir, verbose, mmap, max_size)
            if settings.disabled:
                return fn(*args, **kwargs)
            root = settings.cache_dir or default_cache_dir(code.co_filename)
            cached = _Cached("cached_setup", entry_name, where, settings, root)
            if not cached.open_store():
                return fn(*args, **kwargs)
            from .key.fingerprint import Fingerprinter

            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            fp = Fingerprinter(ignore=ignored)
            context = f"cached_setup '{entry_name}' ({fn.__qualname__} at {where})"
            arguments = {k: v for k, v in bound.arguments.items() if k not in ignored}
            components = {
                "code": _fingerprint_inputs(fp, {"code": fn}, lambda n: f"function {fn.__qualname__}", context)["code"],
                "source": _source_id(code.co_filename, cached.cache_dir),
                "inputs": _fingerprint_inputs(fp, arguments, lambda n: f"argument '{n}'", context),
                "files": _files_component(patterns, os.path.dirname(os.path.abspath(code.co_filename))),
                "env": _env_component(),
            }
            found = cached.lookup(components)
            if found is not None:
                meta, state = found
                fn.__globals__.update({k: v for k, v in state.items() if k != _RETURN})
                _rng.restore(meta.get("rng", {}))
                return state[_RETURN]
            cached.start_computing()
            try:
                result = fn(*args, **kwargs)
            except BaseException:
                cached.finish(None, {})
                raise
            stored = {n: fn.__globals__[n] for n in assigned_globals if n in fn.__globals__}
            cached.finish({_RETURN: result, **stored}, {})
            return result

        wrapper.__statecache_name__ = entry_name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _names_used(code: Any) -> set[str]:
    """Every global or attribute name the function's code (nested code included) mentions."""
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))
    return names


def _stored_globals(code: Any) -> list[str]:
    """Names the function assigns with ``global`` (STORE_GLOBAL), its nested code included."""
    import dis

    names: dict[str, None] = {}
    stack = [code]
    while stack:
        c = stack.pop()
        for instr in dis.get_instructions(c):
            if instr.opname == "STORE_GLOBAL":
                names.setdefault(instr.argval, None)
        stack.extend(k for k in c.co_consts if isinstance(k, CodeType))
    return list(names)

