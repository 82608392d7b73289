"""Front ends for the parity matrix: one case (definitions, inputs, checkpointed blocks, what is
printed after) rendered as a module-level ``with checkpoint``, a ``with checkpoint`` inside a
function, ``@cached_setup`` functions, ``%%checkpoint`` cells run by a real Jupyter kernel, and a
``statecache live`` run followed by plain ``python`` runs. Everything runs in subprocesses
against a real cache directory; only public behaviour is read (stdout, the status lines).

``STATECACHE_TEST_REPO`` points the children at another checkout of statecache (to show that a
test fails on an older commit); by default they import this working tree."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.conftest import subprocess_env

REPO = Path(os.environ.get("STATECACHE_TEST_REPO") or Path(__file__).resolve().parent.parent)
TIMEOUT = 120  # only against hangs; nothing here measures time
OUT = "OUT "  # prefix of the lines a case prints after its blocks: what the user sees


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child that imports statecache from ``REPO``."""
    return subprocess_env(REPO, **extra)


@dataclass(frozen=True)
class Block:
    """One checkpointed block: its body, the names it assigns that later code reads, its globs."""

    name: str
    body: str
    assigns: tuple[str, ...]
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Case:
    """A tiny program: ``defs`` (imports, helpers: module level everywhere), ``setup`` (the
    inputs: in the scope of the blocks), the blocks, ``after`` (prints ``OUT`` lines), the other
    files of the project, and the process's environment variables and arguments."""

    defs: str
    setup: str
    blocks: tuple[Block, ...]
    after: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()


def mark(name: str) -> str:
    """The first line of every block body: counts the runs of the body in ``runs.log``."""
    return f"open('runs.log', 'a').write('{name}\\n')"


def runs(root: Path, name: str) -> int:
    log = root / "runs.log"
    return log.read_text().split().count(name) if log.exists() else 0


def _indent(code: str, by: int = 4) -> str:
    return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * by) + "\n"


def _code(code: str) -> str:
    return textwrap.dedent(code).strip("\n") + "\n" if code.strip() else ""


def _files_arg(block: Block) -> str:
    return f", files={list(block.files)!r}" if block.files else ""


def render_module(case: Case) -> str:
    """Every block a module-level ``with checkpoint``."""
    out = "import statecache as sc\n" + _code(case.defs) + _code(case.setup)
    for b in case.blocks:
        out += f"with sc.checkpoint({b.name!r}{_files_arg(b)}):\n" + _indent(mark(b.name)) + _indent(b.body)
    return out + _code(case.after)


def render_function(case: Case) -> str:
    """The inputs and the blocks are locals of ``main()``."""
    out = "import statecache as sc\n" + _code(case.defs) + "\n\ndef main():\n" + _indent(case.setup or "pass")
    for b in case.blocks:
        out += f"    with sc.checkpoint({b.name!r}{_files_arg(b)}):\n" + _indent(mark(b.name), 8) + _indent(b.body, 8)
    return out + _indent(case.after or "pass") + "\n\nmain()\n"


def render_cached_setup(case: Case) -> str:
    """Every block a ``@cached_setup`` function that declares what it assigns ``global``; the
    inputs are module globals it reads."""
    out = "import statecache as sc\n" + _code(case.defs) + _code(case.setup)
    for b in case.blocks:
        out += f"\n\n@sc.cached_setup(name={b.name!r}{_files_arg(b)})\ndef {b.name}():\n"
        out += f"    global {', '.join(b.assigns)}\n" + _indent(mark(b.name)) + _indent(b.body)
        out += f"\n\n{b.name}()\n"
    return out + _code(case.after)


def notebook_cells(case: Case) -> list[str]:
    """The cells of the notebook form: the environment is set by a cell, as a notebook does."""
    cells = ["%load_ext statecache"]
    if case.env:
        cells.append(f"import os\nos.environ.update({case.env!r})")
    cells.append(_code(case.defs) + _code(case.setup))
    for b in case.blocks:
        flags = "".join(f" --files {g}" for g in b.files)
        cells.append(f"%%checkpoint {b.name}{flags}\n" + mark(b.name) + "\n" + _code(b.body))
    cells.append(_code(case.after))
    return cells


def notebook_with_cells(case: Case) -> list[str]:
    """The notebook form with ``with checkpoint`` blocks in cells instead of the cell magic."""
    cells = notebook_cells(replace(case, blocks=()))
    blocks = [
        f"with sc.checkpoint({b.name!r}{_files_arg(b)}):\n" + _indent(mark(b.name)) + _indent(b.body)
        for b in case.blocks
    ]
    return [cells[0] + "\nimport statecache as sc", *cells[1:-1], *blocks, cells[-1]]


@dataclass
class Outcome:
    """What one run showed: the ``OUT`` lines, the status lines, everything for messages."""

    out: list[str]
    status: list[str]
    text: str

    def hit(self, name: str) -> bool:
        return any(f"'{name}' restored" in line for line in self.status)

    def computed(self, name: str) -> bool:
        return any(f"'{name}' computing" in line for line in self.status)


def _outcome(stdout: str, stderr: str) -> Outcome:
    lines = (stdout + "\n" + stderr).splitlines()
    return Outcome(
        out=[ln for ln in stdout.splitlines() if ln.startswith(OUT)],
        status=[ln for ln in lines if ln.startswith("statecache:")],
        text=f"--- stdout\n{stdout}\n--- stderr\n{stderr}",
    )


def write_case(root: Path, case: Case, script: str | None) -> None:
    """The project's files (and the script, when the front end has one)."""
    for rel, text in case.files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if script is not None:
        (root / "script.py").write_text(script)


def run_script(
    cwd: Path, script: str = "script.py", *args: str, env: dict[str, str] | None = None, python: str = sys.executable
) -> Outcome:
    """``python SCRIPT ARGS`` in ``cwd`` as a user runs it; a non-zero exit fails the test."""
    proc = subprocess.run(
        [python, script, *args],
        cwd=cwd,
        env=child_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    outcome = _outcome(proc.stdout, proc.stderr)
    if proc.returncode != 0:
        raise AssertionError(f"python {script} exited {proc.returncode}\n{outcome.text}")
    return outcome


def run_python(root: Path, case: Case, *, disabled: bool = False) -> Outcome:
    """``python script.py ARGS`` in ``root``, with the case's environment."""
    extra = dict(case.env)
    if disabled:
        extra["STATECACHE_DISABLE"] = "1"
    return run_script(root, "script.py", *case.argv, env=extra)


_FRESH_IGNORED = shutil.ignore_patterns(".statecache", "runs.log", "*.ipynb")
# the oracle's outcome by what determines it (every file of the copy, the environment, the
# arguments): four of the six front ends run the same module-level program for a rule
_fresh_outcomes: dict[str, Outcome] = {}


def _tree_digest(root: Path, case: Case) -> str:
    import hashlib

    digest = hashlib.sha256(repr((sorted(case.env.items()), case.argv, sys.executable)).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"\0{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def fresh_run(root: Path, case: Case, script: str) -> Outcome:
    """The oracle: the same program in a copy of the project without its cache or run log,
    with ``STATECACHE_DISABLE=1``. A copy whose every file, environment and arguments equal
    those of one already run (another front end's, for the same rule) gets that run's outcome."""
    n = 0
    while (copy := root.parent / f"{root.name}-fresh{n}").exists():
        n += 1
    shutil.copytree(root, copy, ignore=_FRESH_IGNORED)
    write_case(copy, case, script)
    key = _tree_digest(copy, case)
    if key not in _fresh_outcomes:
        _fresh_outcomes[key] = run_python(copy, case, disabled=True)
    return _fresh_outcomes[key]


class ScriptFrontEnd:
    """A front end whose program is a script run by ``python``."""

    def __init__(self, ident: str, render: Any):
        self.id = ident
        self.render = render

    def script(self, case: Case) -> str:
        return str(self.render(case))

    def write(self, root: Path, case: Case) -> None:
        write_case(root, case, self.script(case))

    def first(self, root: Path, case: Case) -> Outcome:
        return run_python(root, case)

    def again(self, root: Path, case: Case) -> Outcome:
        return run_python(root, case)

    def fresh(self, root: Path, case: Case) -> Outcome:
        return fresh_run(root, case, self.script(case))

    def close(self) -> None:
        pass


class LiveFrontEnd(ScriptFrontEnd):
    """The first run under ``statecache live script.py`` (left with ``q`` once idle), the later
    ones plain ``python script.py``: the two must share their entries."""

    def __init__(self) -> None:
        super().__init__("live-then-python", render_module)

    def first(self, root: Path, case: Case) -> Outcome:
        return run_live(root, case.argv, case.env)


def run_live(root: Path, argv: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Outcome:
    """One run of ``python -m statecache live script.py ARGS`` in a pseudo-terminal, left with
    ``q`` once the run is over."""
    import pexpect

    child = pexpect.spawn(
        sys.executable,
        ["-m", "statecache", "live", "script.py", *argv],
        cwd=str(root),
        env={**child_env(**(env or {})), "PYTHONUNBUFFERED": "1", "TERM": "dumb"},
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(50, 200),
    )
    try:
        child.expect(r"watching script\.py")
        seen = str(child.before)
        child.expect(r"Ctrl-C: stop/quit\)")
        child.sendline("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen).replace("\r", "")
    assert child.exitstatus == 0, f"statecache live exited {child.exitstatus}\n{text}"
    return _outcome(text, "")


class NotebookFrontEnd:
    """``%%checkpoint`` cells (or ``with checkpoint`` in cells) executed by one real kernel (nbclient) for the whole test: each
    run starts from an empty namespace (``%reset -f``) with the project's own modules
    forgotten, as after a restart, and executes every cell of the notebook as saved."""

    def __init__(self, kernel_dirs: list[str], kernel_name: str, ident: str = "notebook", cells: Any = notebook_cells):
        self.id = ident
        self.cells = cells
        self.kernel_dirs = kernel_dirs
        self.kernel_name = kernel_name
        self.client: Any = None
        self.ctx: Any = None
        self.root: Path | None = None

    def write(self, root: Path, case: Case) -> None:
        import nbformat

        write_case(root, case, None)
        cells = [nbformat.v4.new_code_cell(c) for c in self.cells(case)]
        nbformat.write(nbformat.v4.new_notebook(cells=cells), root / "analysis.ipynb")

    def _start(self, root: Path) -> None:
        import nbformat
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager
        from nbclient import NotebookClient

        ksm = KernelSpecManager(kernel_dirs=self.kernel_dirs)
        km = KernelManager(kernel_name=self.kernel_name, kernel_spec_manager=ksm)
        self.client = NotebookClient(nbformat.v4.new_notebook(), km=km, timeout=TIMEOUT)
        env = child_env(JPY_SESSION_NAME=str(root / "analysis.ipynb"))
        self.ctx = self.client.setup_kernel(env=env, cwd=str(root))
        self.ctx.__enter__()
        self.root = root

    def first(self, root: Path, case: Case) -> Outcome:
        if self.client is None:
            self._start(root)
        return self.again(root, case)

    def again(self, root: Path, case: Case) -> Outcome:
        import nbformat

        forget = (
            "%reset -f\nimport sys, importlib\n"
            f"for _m in [m for m, v in list(sys.modules.items()) if str(getattr(v, '__file__', None) or '').startswith({str(root)!r})]:\n"
            "    del sys.modules[_m]\nimportlib.invalidate_caches()\n%reset -f"
        )
        saved = nbformat.read(root / "analysis.ipynb", as_version=4)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(forget), *saved.cells])
        self.client.nb = nb
        stdout, stderr = "", ""
        for i, cell in enumerate(nb.cells):
            self.client.execute_cell(cell, i)
            for o in cell.outputs if i else ():
                if o["output_type"] == "error":
                    raise AssertionError(f"cell {i} raised {o['ename']}: {o['evalue']}\n{stdout}\n{stderr}")
                if o["output_type"] == "stream" and o["name"] == "stdout":
                    stdout += o["text"]
                elif o["output_type"] == "stream":
                    stderr += o["text"]
        return _outcome(stdout, stderr)

    def fresh(self, root: Path, case: Case) -> Outcome:
        """The same code as a module-level script with caching off (the oracle)."""
        return fresh_run(root, case, render_module(case))

    def close(self) -> None:
        if self.ctx is not None:
            km = self.client.km if self.client is not None else None
            try:
                self.ctx.__exit__(None, None, None)
            finally:
                # nbclient leaves running a kernel whose manager it was handed
                if km is not None and km.has_kernel:
                    km.shutdown_kernel(now=True)
            self.ctx = self.client = None


def make_kernel_spec(root: Path, name: str) -> list[str]:
    """A kernel spec that runs this test environment's Python; returns the kernel dirs."""
    spec = root / name
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))
    return [str(root)]


def execute_notebook(path: Path, kernel_dirs: list[str], kernel_name: str, **env: str) -> Outcome:
    """Execute a saved notebook in a new kernel (as after a restart), with ``JPY_SESSION_NAME``
    set to its path as Jupyter does and ``env`` in the kernel's environment."""
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    ksm = KernelSpecManager(kernel_dirs=kernel_dirs)
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    client = NotebookClient(nb, km=km, timeout=TIMEOUT)
    try:
        client.execute(env=child_env(JPY_SESSION_NAME=str(path), **env), cwd=str(path.parent))
    finally:
        if km.has_kernel:  # nbclient leaves running a kernel whose manager it was handed
            km.shutdown_kernel(now=True)
    streams = [o for c in nb.cells for o in c.outputs if o["output_type"] == "stream"]
    stdout = "".join(o["text"] for o in streams if o["name"] == "stdout")
    stderr = "".join(o["text"] for o in streams if o["name"] != "stdout")
    return _outcome(stdout, stderr)


def write_notebook(path: Path, cells: list[str]) -> Path:
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    return path
