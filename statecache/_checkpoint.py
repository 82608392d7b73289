"""``with checkpoint("name"):``: skip the body on a hit and restore what it assigned.

The front end only says what the code is (the ``with`` block's body, found from the caller's
frame), what it reads and writes (a ``FrameBinder`` on that frame) and how a hit skips the
body (``_frames.arm_skip``); the engine does the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from types import FrameType

from ._binders import FrameBinder
from ._config import validate_name
from ._engine import Engine, Found, NullEngine, open_engine
from ._errors import StateCacheError
from ._frames import ArmedSkip, SkipBody, arm_skip
from ._settings import Options, where
from ._warnings import warn
from .key import components as _components
from .key.inputs import Reads, with_process_reads
from .key.project import default_cache_dir
from .key.source import Block, find_with_block

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the hit path
if TYPE_CHECKING:
    from typing import Any


def block_reads(block: Block) -> Reads:
    """What a ``with`` block reads and binds, as the key rules take it."""
    reads = Reads(block.assigned, block.inputs, block.attribute_reads, block.environ_keys, block.imports)
    return with_process_reads(reads, block.body)


class checkpoint:  # noqa: N801 - used as a lower-case context manager, like open()
    """``with checkpoint("name") as cp:`` skips its body on a hit and restores what it assigned.

    The key covers the body's code (normalised AST, or ``version=``), the values of the names
    it reads, the code of the user's functions it calls, the data files it opens (re-checked on
    a hit), ``files=`` globs and the implicit inputs of ``key.inputs``. Inputs that the body
    mutates in place are saved and restored too. After the ``with`` line, ``cp.hit``,
    ``cp.reason``, ``cp.key`` and ``cp.entry_path`` say what happened. ``remote=`` (default
    ``STATECACHE_REMOTE``) names a shared cache consulted on a local miss and fed after a save;
    ``remote=False`` shares nothing. ``compress=`` ("auto", "speed" or "size"; default
    ``STATECACHE_COMPRESS``, else "auto") says which buffers a save stores compressed.
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
        version: str | None = None,
        max_age: float | str | None = None,
        remote: str | os.PathLike[str] | bool | None = None,
        compress: str | None = None,
    ):
        self._mode = "new"
        self._block_source: dict[str, Any] | None = None
        self.name = validate_name(name)
        self._options = Options(
            f"checkpoint '{self.name}'", cache_dir=cache_dir, ignore=ignore, files=files, verbose=verbose,
            mmap=mmap, max_size=max_size, version=version, max_age=max_age, remote=remote, compress=compress,
        )
        self._engine: Engine | NullEngine | None = None
        self._binder: FrameBinder | None = None
        self._found: Found | None = None
        self._frame: FrameType | None = None
        self._armed: ArmedSkip | None = None
        self._where = "?"
        self._mode = "idle"

    # -- what happened (issue: know from code whether it hit and why it missed) --

    @property
    def hit(self) -> bool:
        """True when the body was skipped and its state restored."""
        return self._engine is not None and self._engine.hit

    @property
    def reason(self) -> str:
        """Why the body ran ("not cached yet", "input 'n' changed", ...); "" on a hit."""
        return self._engine.reason if self._engine is not None else ""

    @property
    def key(self) -> str:
        """The key of this run ("" when caching is off)."""
        return self._engine.key if self._engine is not None else ""

    @property
    def entry_path(self) -> str | None:
        """The entry file that was restored or saved (None when caching is off)."""
        return self._engine.entry_path if self._engine is not None else None

    def __repr__(self) -> str:
        return f"<statecache.checkpoint {self.name!r} hit={self.hit} reason={self.reason!r}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise StateCacheError(
            f"checkpoint '{self.name}' is a 'with' block, not a decorator: write "
            f"'with statecache.checkpoint({self.name!r}):' around the code, or decorate the "
            f"function with '@statecache.cached_setup(name={self.name!r})'"
        )

    def __del__(self) -> None:
        if getattr(self, "_mode", None) != "idle":
            return
        try:
            warn(
                f"statecache: checkpoint '{self.name}' was created but never entered, so it "
                f"caches nothing: write 'with statecache.checkpoint({self.name!r}):' around the code")
        except Exception:  # at interpreter exit there may be no frame or warnings module left
            pass

    # -- the with block --

    def __enter__(self) -> checkpoint:
        if self._mode != "idle":
            raise StateCacheError(f"checkpoint '{self.name}' is already in use; create a new one per 'with'")
        self._mode = "entering"
        frame = sys._getframe(1)
        settings = self._options.settings(self.name)
        found_block: list[Block] = []

        def locate() -> tuple[str, str]:
            block = find_with_block(frame)
            self._where = where(block.filename, block.with_line)
            self._check_unique(block)
            found_block.append(block)
            return self._where, default_cache_dir(block.filename)

        engine = self._engine = open_engine("checkpoint", self.name, settings, locate)
        self._frame = frame
        found = engine.lookup(lambda: self._components(frame, found_block[0], engine.cache_dir))
        if found is not None:
            block = found_block[0]
            self._found = found
            self._armed = None if block.empty else arm_skip(frame)
            self._mode = "hit"
            return self
        engine.start(self._binder)
        self._mode = "compute"
        return self

    def _components(self, frame: FrameType, block: Block, cache_dir: str) -> dict[str, Any]:
        self._block_source = _block_source(block)
        context = f"checkpoint '{self.name}' at {self._where}"
        binder = self._binder = FrameBinder(frame, block_reads(block), self.name, self._options.ignore, context)
        if block.as_name:
            binder.as_value = (block.as_name, self)
        from .key.astdigest import ast_digest
        from .key.code import frame_edited_after_loading

        # The body's key is read from the file's text; if the file was saved after Python
        # loaded it, the marker keys the code that really runs instead (issue 11 item 1).
        def body_digest() -> bytes:
            return ast_digest(block.body) + frame_edited_after_loading(frame)

        return _components.components(
            code=_components.code_component(body_digest, self._options.version),
            source=_components.source_component(block.filename, cache_dir),
            inputs=binder.inputs(),
            files=_components.files_component(self._options.files, os.path.dirname(os.path.abspath(block.filename))),
        )

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        try:
            return self._exit(exc_type)
        finally:
            self._binder = self._found = None  # the frame and its locals are not kept alive

    def _exit(self, exc_type: type[BaseException] | None) -> bool:
        mode, self._mode = self._mode, "done"
        engine, self._frame = self._engine, None
        if mode == "hit":
            if self._armed is not None:
                self._armed.disarm()
            elif exc_type is None:
                exc_type = SkipBody  # an empty body ran instead of being skipped: same result
            if exc_type is not SkipBody:
                return False
            assert engine is not None and self._binder is not None and self._found is not None
            engine.restore(self._binder, self._found)
            return True
        if mode == "compute":
            assert engine is not None
            if exc_type is not None:
                engine.abort()
                return False
            engine.save(self._collect)
        return False

    def _collect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        assert self._binder is not None
        state, extra = self._binder.state()
        if self._block_source is not None:
            extra = {**extra, "block_source": self._block_source}
        return state, extra

    def _check_unique(self, block: Block) -> None:
        others = [line for line in block.name_lines.get(self.name, []) if line != block.with_line]
        if others:
            raise StateCacheError(
                f"checkpoint '{self.name}' at {self._where}: the name is also used at line {others[0]} "
                "of the same file; give each checkpoint of a file its own name"
            )


def _block_source(block: Block) -> dict[str, Any] | None:
    """The block's lines as this run reads them (``with`` line to the body's end), stored so that
    ``statecache show --explain`` can say which lines changed; None when there are none. Read
    past linecache (``parsing.current_lines``), which must not keep the text for
    ``inspect.getsource`` in a later block to serve unseen."""
    from .key.parsing import current_lines

    last = max((getattr(stmt, "end_lineno", None) or stmt.lineno) for stmt in block.body) if block.body else block.with_line
    lines = current_lines(block.filename)[block.with_line - 1 : last]
    return {"first_line": block.with_line, "text": "".join(lines)} if lines else None
