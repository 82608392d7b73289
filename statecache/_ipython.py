"""The IPython/Jupyter extension: ``%load_ext statecache``.

``%%checkpoint NAME [--ignore a,b] [--files GLOB] [--force] [--mmap] [--quiet] [--compress MODE]
[--remote URL|off]`` caches a cell: the key is the cell's normalised code, the values of the
names it reads from the user namespace (helpers defined in earlier cells count by their code,
like the user's own functions in a script), the ``--files`` globs and the Python version,
exactly as for ``checkpoint``; ``--compress`` is ``compress=`` (auto, speed or size), ``--remote`` is
``remote=`` (a URL or shared mount for this cell; ``off``: ``remote=False``). On a hit
the cell does not run: the names it assigned are restored and what it printed (stdout, stderr,
rich display outputs, the value of its last expression) is shown again.

``%statecache ls|show|clear|gc|verify ...`` runs the ``statecache`` command line on the
notebook's cache directory.

This is the only module that imports IPython.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
from collections.abc import Iterator
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from ._binders import NamespaceBinder
from ._config import validate_name
from ._engine import open_engine
from ._errors import ConfigError, FingerprintError, StateCacheError
from ._settings import Options
from .key import components as _components
from .key.components import notebook_path
from .key.inputs import reads_of
from .key.project import default_cache_dir

#: Metadata key of an entry that holds the outputs a ``%%checkpoint`` cell produced.
OUTPUTS_META = "cell_outputs"

#: Display formats that only make sense with a live front-end model (widgets): dropped when
#: recording, the other formats of the same output (text/plain) are kept.
_LIVE_ONLY = ("application/vnd.jupyter.widget-view+json",)

_USAGE = (
    "Usage: %%checkpoint NAME [--ignore a,b] [--files GLOB] [--force] [--mmap] [--quiet] [--version V]\n"
    "         [--compress auto|speed|size] [--remote URL|off]\n"
    "         (the first line of a cell; the rest of the cell is the cached block)\n"
    "       %statecache ls|show|clear|gc|verify [ARGS]  (the statecache command line, on the\n"
    "         notebook's cache directory unless --dir or STATECACHE_DIR says otherwise)"
)


class _ArgParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"%%checkpoint: {message}\n{_USAGE}")


def _parser() -> argparse.ArgumentParser:
    p = _ArgParser(prog="%%checkpoint", add_help=False)
    p.add_argument("name")
    p.add_argument("--ignore", action="append", default=[], metavar="a,b")
    p.add_argument("--files", action="append", default=[], metavar="GLOB")
    p.add_argument("--force", action="store_true")
    p.add_argument("--mmap", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--version", default=None, metavar="V")
    p.add_argument("--compress", default=None, metavar="auto|speed|size")
    p.add_argument("--remote", default=None, metavar="URL|off")
    return p


def parse_line(line: str) -> argparse.Namespace:
    """The options of a ``%%checkpoint`` line (UsageError when malformed)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"%%checkpoint: {exc}\n{_USAGE}") from None
    opts = _parser().parse_args(words)
    opts.ignore = tuple(n.strip() for item in opts.ignore for n in item.split(",") if n.strip())
    if opts.remote is not None and opts.remote.strip().lower() == "off":
        opts.remote = False  # remote=False: nothing of this cell is fetched or published
    return opts


def notebook_cache_dir() -> str:
    """The default cache directory of code typed into cells: beside the notebook, else the
    working directory (what ``checkpoint`` uses in a cell)."""
    return default_cache_dir("<ipython-input-0-0>")


# --- recording what a cell shows ----------------------------------------------------------


class _Tee:
    """A text stream that forwards everything to the real one and records it."""

    def __init__(self, stream: Any, recorder: _Recorder, kind: str):
        self._stream = stream
        self._recorder = recorder
        self._kind = kind

    def write(self, text: str) -> int:
        if not self._recorder.busy and isinstance(text, str):
            self._recorder.stream(self._kind, text)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._stream, attr)


class _Recorder:
    """Records the outputs of a running cell while they are shown as usual: streams through a
    tee of ``sys.stdout``/``sys.stderr``, rich outputs through the shell's display publisher."""

    def __init__(self, shell: Any):
        self.shell = shell
        self.events: list[dict[str, Any]] = []
        self.busy = 0
        self._saved: dict[str, Any] = {}

    def stream(self, kind: str, text: str) -> None:
        if self.events and self.events[-1]["type"] == kind:
            self.events[-1]["parts"].append(text)
        elif text:
            self.events.append({"type": kind, "parts": [text]})

    def outputs(self) -> list[dict[str, Any]]:
        """The recorded outputs, as stored: stream text joined, each line reduced to what a
        carriage return left visible (a progress bar's last state, not its every step)."""
        out = []
        for event in self.events:
            if "parts" in event:
                text = _visible("".join(event["parts"]))
                if event["type"] == "stderr":  # status lines of checkpoints inside the cell
                    text = "".join(
                        line for line in text.splitlines(keepends=True)
                        if not line.startswith("statecache: ")
                    )
                if text:
                    out.append({"type": event["type"], "text": text})
            else:
                out.append({k: v for k, v in event.items() if k != "display_id"})
        return out

    def _display(self, data: Any, metadata: Any, transient: Any, update: bool) -> None:
        if not isinstance(data, dict):
            return
        data = {k: v for k, v in data.items() if k not in _LIVE_ONLY}
        if not data:
            return
        display_id = (transient or {}).get("display_id") if isinstance(transient, dict) else None
        event = {"type": "display", "data": data, "metadata": metadata or {}}
        try:
            json.dumps(event)
        except (TypeError, ValueError):
            return  # not JSON: cannot be stored in the entry's metadata; shown, not replayed
        if update:
            for old in self.events:
                if old.get("display_id") == display_id and display_id is not None:
                    old["data"], old["metadata"] = event["data"], event["metadata"]
            return
        if display_id is not None:
            event["display_id"] = display_id
        self.events.append(event)

    def __enter__(self) -> _Recorder:
        pub = self.shell.display_pub
        self._saved = {
            "stdout": sys.stdout,
            "stderr": sys.stderr,
            "publish": pub.__dict__.get("publish"),
            "clear_output": pub.__dict__.get("clear_output"),
        }
        publish, clear_output = pub.publish, pub.clear_output

        def recording_publish(data: Any, metadata: Any = None, *args: Any, **kwargs: Any) -> Any:
            self._display(data, metadata, kwargs.get("transient"), bool(kwargs.get("update")))
            self.busy += 1  # the terminal's publisher prints text/plain: not a second record
            try:
                return publish(data, metadata, *args, **kwargs)
            finally:
                self.busy -= 1

        def recording_clear_output(*args: Any, **kwargs: Any) -> Any:
            self.events.clear()  # what was cleared is not part of what the cell shows at the end
            return clear_output(*args, **kwargs)

        pub.publish = recording_publish
        pub.clear_output = recording_clear_output
        sys.stdout = _Tee(sys.stdout, self, "stdout")
        sys.stderr = _Tee(sys.stderr, self, "stderr")
        return self

    def flush_figures(self) -> None:
        """Show (and record) the figures that matplotlib's inline backend would show right
        after the cell: they are part of what the cell displays."""
        backend = sys.modules.get("matplotlib_inline.backend_inline")
        if backend is None:
            return
        try:
            import matplotlib

            if "inline" not in str(matplotlib.get_backend()):
                return
            backend.flush_figures()
        except Exception:
            pass

    def result(self, value: Any) -> None:
        """Record the mime bundle of the cell's value (the real display hook shows it)."""
        try:
            data, metadata = self.shell.display_formatter.format(value)
        except Exception:
            return
        before = len(self.events)
        self._display(data, metadata, None, False)
        if len(self.events) > before:
            self.events[-1]["type"] = "result"

    def __exit__(self, *exc: Any) -> None:
        pub = self.shell.display_pub
        for attr in ("publish", "clear_output"):
            if self._saved[attr] is None:
                pub.__dict__.pop(attr, None)
            else:
                setattr(pub, attr, self._saved[attr])
        sys.stdout, sys.stderr = self._saved["stdout"], self._saved["stderr"]


def _visible(text: str) -> str:
    """Each line as a terminal or notebook shows it after carriage returns overwrote it."""
    if "\r" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        body = line[:-1] if line.endswith("\r") else line  # \r\n line ends
        lines.append(body.rsplit("\r", 1)[-1])
    return "\n".join(lines)


class _Replayed:
    """The value of a restored cell's last expression as it was displayed (its mime bundle)."""

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]):
        self._data, self._metadata = data, metadata

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        return self._data, self._metadata

    def __repr__(self) -> str:
        return str(self._data.get("text/plain", "<restored output>"))


def replay(shell: Any, events: list[dict[str, Any]]) -> _Replayed | None:
    """Show recorded outputs again, in order; the last expression's value is returned (for the
    display hook, so that it shows as the cell's result, ``Out[n]``)."""
    result = None
    for event in events:
        kind = event.get("type")
        if kind in ("stdout", "stderr"):
            stream = getattr(sys, kind)
            stream.write(event.get("text", ""))
            stream.flush()
        elif kind == "display":
            sys.stdout.flush()
            sys.stderr.flush()
            shell.display_pub.publish(data=event.get("data", {}), metadata=event.get("metadata", {}))
        elif kind == "result":
            result = _Replayed(event.get("data", {}), event.get("metadata", {}))
    return result


# --- the magics --------------------------------------------------------------------------


def _checkpoint_cells(path: str) -> Iterator[tuple[int, str | None, str]]:
    """(cell number from 1, cell id, checkpoint name) of each ``%%checkpoint`` cell of a saved
    notebook."""
    try:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
    except (OSError, ValueError):
        return
    cells = nb.get("cells") if isinstance(nb, dict) else None
    for number, cell in enumerate(cells if isinstance(cells, list) else [], 1):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        text = "".join(source) if isinstance(source, list) else str(source)
        first = text.lstrip().split("\n", 1)[0]
        if not first.startswith("%%checkpoint"):
            continue
        try:
            words = shlex.split(first[len("%%checkpoint"):])
        except ValueError:
            continue
        names = [w for w in words if not w.startswith("-")]
        if names:
            yield number, cell.get("id"), names[0]


@magics_class
class StatecacheMagics(Magics):
    """``%%checkpoint`` and ``%statecache``."""

    def __init__(self, shell: Any):
        super().__init__(shell)
        self.cell_id: str | None = None
        self._names: dict[str, str | None] = {}

    def pre_run_cell(self, info: Any) -> None:
        self.cell_id = getattr(info, "cell_id", None)

    # -- %%checkpoint --

    @cell_magic
    def checkpoint(self, line: str, cell: str) -> Any:
        """Cache this cell: ``%%checkpoint NAME [--ignore a,b] [--files GLOB] [--force]
        [--mmap] [--quiet] [--version V] [--compress MODE] [--remote URL|off]``. See
        ``help(statecache)`` and the README."""
        __tracebackhide__ = True  # IPython leaves this frame out of the cell's traceback
        opts = parse_line(line)
        try:
            name = validate_name(opts.name)
        except StateCacheError as exc:
            raise UsageError(f"%%checkpoint: {exc}") from None
        shell = self.shell
        assert shell is not None
        count = shell.execution_count
        code = shell.transform_cell(cell)
        # Cached under the whole cell's name, with its first line as a comment: line numbers in
        # tracebacks and in linecache are those of the cell as the user sees it.
        source = f"# %%checkpoint {line}\n{code}"
        filename = shell.compile.cache(source, count, raw_code=f"%%checkpoint {line}\n{cell}")
        tree = shell.compile.ast_parse(source, filename=filename)
        assert isinstance(tree, ast.Module)
        try:
            quiet_result = bool(shell.displayhook.semicolon_at_end_of_expression(code))
        except Exception:  # tokenize errors: the compile below reports them
            quiet_result = False
        try:
            options = Options(
                f"%%checkpoint '{name}'", ignore=opts.ignore, files=opts.files, version=opts.version,
                verbose=False if opts.quiet else None, mmap=True if opts.mmap else None,
                compress=opts.compress, remote=opts.remote,
            )
        except ConfigError as exc:
            raise UsageError(f"{exc}\n{_USAGE}") from None
        settings = options.settings(name)
        if opts.force:
            settings.refresh = True
        notebook = notebook_path()
        label = f"cell In[{count}]" + (f" of {notebook}" if notebook else "")
        context = f"%%checkpoint '{name}' ({label})"

        def locate() -> tuple[str, str]:
            number = self._check_unique(name, notebook, context)
            # the entry's source: the notebook and the cell's number in it (else In[n])
            return f"{notebook or '<ipython>'}:{number or (count if isinstance(count, int) else 0)}", notebook_cache_dir()

        engine = open_engine("cell", name, settings, locate)
        binder = NamespaceBinder(shell.user_ns, reads_of(tree.body), name, options.ignore, context)
        found = engine.lookup(lambda: self._components(binder, tree, filename, options, notebook, engine.cache_dir))
        if found is not None:
            engine.restore(binder, found)
            return replay(shell, found.meta.get("cell_outputs", []))  # OUTPUTS_META
        engine.start(binder)
        recorder = _Recorder(shell) if engine.enabled else None
        try:
            value = self._run(tree, filename, recorder, quiet_result)
        except BaseException:
            engine.abort()
            raise

        def collect() -> tuple[dict[str, Any], dict[str, Any]]:
            state, extra = binder.state()
            outputs = recorder.outputs() if recorder is not None else []
            return state, {**extra, OUTPUTS_META: outputs, "cell": label}

        engine.save(collect)
        return value

    @staticmethod
    def _components(
        binder: NamespaceBinder, tree: ast.Module, filename: str, options: Options,
        notebook: str | None, cache_dir: str,
    ) -> dict[str, Any]:
        from .key.astdigest import ast_digest

        try:
            inputs = binder.inputs()
        except FingerprintError as exc:
            raise FingerprintError(
                f"{exc}\n(in a %%checkpoint cell, leave an input out with --ignore NAME)"
            ) from None
        base_dir = os.path.dirname(notebook) if notebook else os.getcwd()
        return _components.components(
            code=_components.code_component(lambda: ast_digest(tree.body), options.version),
            source=_components.source_component(filename, cache_dir),
            inputs=inputs,
            files=_components.files_component(options.files, base_dir),
        )

    def _run(self, tree: ast.Module, filename: str, recorder: _Recorder | None, quiet: bool) -> Any:
        """Execute the cell's code in the user namespace; the value of a last expression is
        returned (IPython displays it as the cell's result)."""
        __tracebackhide__ = True
        shell = self.shell
        assert shell is not None
        module = shell.transform_ast(ast.Module(body=list(tree.body), type_ignores=[]))
        body = list(module.body) if module is not None else list(tree.body)
        last = body.pop() if body and isinstance(body[-1], ast.Expr) and not quiet else None
        assert last is None or isinstance(last, ast.Expr)
        compiler: Any = shell.compile
        ns_globals, ns_locals = shell.user_global_ns, shell.user_ns
        if recorder is not None:
            recorder.__enter__()
        try:
            exec(compiler(ast.Module(body=body, type_ignores=[]), filename, "exec"), ns_globals, ns_locals)
            value = None
            if last is not None:
                expr = ast.Expression(last.value)
                ast.copy_location(expr, last)
                value = eval(compiler(expr, filename, "eval"), ns_globals, ns_locals)
            if recorder is not None:
                recorder.flush_figures()
                if value is not None:
                    recorder.result(value)
        finally:
            if recorder is not None:
                recorder.__exit__(None, None, None)
        return value

    def _check_unique(self, name: str, notebook: str | None, context: str) -> int | None:
        """One ``%%checkpoint`` cell per name and notebook: the cells seen in this session (by
        the cell id front-ends send) and the cells of the saved notebook. Returns the cell's
        number in the saved notebook when known."""
        cell_id = self.cell_id
        previous = self._names.get(name)
        if cell_id is not None and previous is not None and previous != cell_id:
            raise StateCacheError(
                f"{context}: another cell of this notebook already ran '%%checkpoint {name}'; "
                "give each %%checkpoint cell its own name"
            )
        self._names[name] = cell_id
        if not notebook or not os.path.isfile(notebook):
            return None
        same = [(number, cid) for number, cid, n in _checkpoint_cells(notebook) if n == name]
        if len(same) > 1 and (cell_id is None or any(cid != cell_id for _, cid in same)):
            numbers = ", ".join(str(number) for number, _ in same)
            raise StateCacheError(
                f"{context}: the saved notebook has {len(same)} cells named '{name}' (cells "
                f"{numbers}); give each %%checkpoint cell its own name (and save the notebook)"
            )
        return same[0][0] if same else None

    # -- %statecache --

    @line_magic
    def statecache(self, line: str) -> None:
        """The statecache command line on this notebook's cache directory:
        ``%statecache ls``, ``%statecache clear NAME``, ``show``, ``gc``, ``verify``."""
        from .cli.main import BUILTIN, main

        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%statecache: {exc}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(_USAGE)
            return
        if argv[0] not in BUILTIN:
            raise UsageError(
                f"%statecache: unknown command {argv[0]!r}; use one of {', '.join(BUILTIN)}"
            )
        if not any(a == "--dir" or a.startswith("--dir=") for a in argv[1:]):
            # as the command line finds it (STATECACHE_DIR, else the nearest .statecache),
            # looking from the notebook's folder rather than the kernel's working directory
            from .cli.common import find_cache_dir

            start = os.path.dirname(notebook_cache_dir())
            argv[1:1] = ["--dir", find_cache_dir(None, cwd=start).path]
        sys.stdout.flush()
        main(argv)
        sys.stdout.flush()
        sys.stderr.flush()


_loaded: dict[int, StatecacheMagics] = {}


def load_ipython_extension(ip: Any) -> None:
    """``%load_ext statecache``: register ``%%checkpoint`` and ``%statecache``."""
    if id(ip) in _loaded:
        return
    magics = StatecacheMagics(ip)
    ip.register_magics(magics)
    ip.events.register("pre_run_cell", magics.pre_run_cell)
    _loaded[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    """``%unload_ext statecache``: remove the magics again."""
    magics = _loaded.pop(id(ip), None)
    if magics is None:
        return
    try:
        ip.events.unregister("pre_run_cell", magics.pre_run_cell)
    except ValueError:
        pass
    table = ip.magics_manager.magics
    table["cell"].pop("checkpoint", None)
    table["line"].pop("statecache", None)
