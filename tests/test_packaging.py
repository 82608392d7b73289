"""The package as a user installs it: a wheel built from this tree, installed into a clean venv
(core dependencies only, no PYTHONPATH to the checkout), imports, types, runs and describes
itself. Plus the metadata rules that keep pyproject, the README and CI from drifting apart.

The wheel and the venv are built once per session (about 12 s of CPU, most of it pip)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
NOT_SOURCE = ("__pycache__", ".statecache", "*.egg-info", ".mypy_cache")


def clean_env(**extra: str) -> dict[str, str]:
    """An environment that cannot reach the checkout: what a user of the wheel has."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STATECACHE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(**env), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


class Installed:
    def __init__(self, root: Path, wheel: Path, venv: Path):
        self.root, self.wheel, self.venv = root, wheel, venv
        self.python = venv / "bin" / "python"

    def python_c(self, code: str, cwd: Path | None = None) -> str:
        return run([str(self.python), "-c", textwrap.dedent(code)], cwd or self.root).stdout


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Copy what the build reads (so it writes nothing into the checkout), build the wheel,
    install it with its core dependencies into a fresh venv. The venv gets no pip of its own
    (this environment's pip installs into it): seeding one is a third of the fixture's CPU time, and
    nothing here runs the venv's pip."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    shutil.copytree(REPO / "statecache", source / "statecache", ignore=shutil.ignore_patterns(*NOT_SOURCE))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), "."], source)
    [wheel] = (root / "dist").glob("statecache-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)], root)
    return Installed(root, wheel, venv)


def source_modules(source: Path) -> list[str]:
    modules = []
    for path in sorted((source / "statecache").rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules.append(".".join(parts))
    return modules


def optional_imports() -> set[str]:
    """Top-level names of what the user-facing extras bring (ipython -> IPython, ...)."""
    names = set()
    for extra, reqs in PROJECT["optional-dependencies"].items():
        if extra not in ("dev", "test", "lint"):
            names |= {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in reqs}
    return names


def test_every_module_of_the_tree_is_in_the_wheel_and_imports(installed: Installed) -> None:
    modules = source_modules(installed.root / "source")
    out = installed.python_c(
        f"""
        import importlib, json, warnings
        warnings.simplefilter("ignore")
        result = {{}}
        for name in {modules!r}:
            try:
                module = importlib.import_module(name)
                result[name] = ["ok", module.__file__]
            except ModuleNotFoundError as e:
                result[name] = ["missing", e.name]
        print(json.dumps(result))
        """
    )
    result = json.loads(out)
    assert len(result) == len(modules) > 10
    site = str(installed.venv)
    optional = optional_imports()
    for name, (status, detail) in result.items():
        if status == "ok":
            assert detail.startswith(site), f"{name} imported from {detail}, not from the wheel"
        else:  # only an optional extra's package may be missing (IPython for the magics)
            assert detail.split(".")[0].lower() in optional, f"{name}: no module {detail!r}"
    assert result["statecache"][0] == "ok"
    script_module = PROJECT["scripts"]["statecache"].split(":")[0]
    assert result[script_module][0] == "ok"


def test_the_console_script_runs(installed: Installed, tmp_path: Path) -> None:
    out = run([str(installed.venv / "bin" / "statecache"), "ls", "--dir", str(tmp_path / "c")], tmp_path)
    assert "Traceback" not in out.stderr


def test_a_script_hits_on_its_second_run_with_the_installed_package(installed: Installed, tmp_path: Path) -> None:
    (tmp_path / "script.py").write_text(
        "import statecache as sc\n\nwith sc.checkpoint('data'):\n    values = [1, 2, 3]\n"
        "print('VALUES', values, sc.__file__)\n"
    )
    first = run([str(installed.python), "script.py"], tmp_path)
    second = run([str(installed.python), "script.py"], tmp_path)
    assert "'data' computing" in first.stderr
    assert "'data' restored" in second.stderr and "VALUES [1, 2, 3]" in second.stdout
    assert str(installed.venv) in second.stdout


def test_py_typed_is_shipped_and_mypy_reads_the_types(installed: Installed, tmp_path: Path) -> None:
    package = Path(installed.python_c("import statecache, os; print(os.path.dirname(statecache.__file__))").strip())
    assert (package / "py.typed").is_file()
    (tmp_path / "user.py").write_text(
        "import statecache\n\nreveal_type(statecache.checkpoint)\nx: int = statecache.StateCacheError('a')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(installed.python), "--no-incremental",
         "--cache-dir", str(tmp_path / ".mypy"), "user.py"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=600,
    )
    assert "import-untyped" not in proc.stdout and "py.typed" not in proc.stdout, proc.stdout
    assert re.search(r"Revealed type is .*checkpoint", proc.stdout), proc.stdout
    assert 'Incompatible types in assignment (expression has type "StateCacheError"' in proc.stdout, proc.stdout


def test_metadata_says_mit_and_the_one_version(installed: Installed) -> None:
    from statecache._version import __version__

    out = installed.python_c(
        """
        import importlib.metadata as m
        meta = m.metadata("statecache")
        print(meta["Version"]); print(meta["License-Expression"]); print(meta["Requires-Python"])
        print("|".join(meta.get_all("Classifier")))
        print("|".join(str(f) for f in m.files("statecache") if "licenses" in str(f)))
        """
    )
    version, license_expr, requires_python, classifiers, licenses = out.splitlines()
    assert version == __version__
    assert license_expr == "MIT"
    assert requires_python == ">=3.10"
    assert "Typing :: Typed" in classifiers.split("|")
    assert "Programming Language :: Python :: 3.10" in classifiers and "3.13" in classifiers
    assert licenses.endswith("licenses/LICENSE")
    assert "MIT License" in (REPO / "LICENSE").read_text()


# --- pyproject, README and CI agree (no build) ----------------------------------------------


def flatten_extra(name: str) -> set[str]:
    """An extra's requirements with ``statecache[a,b]`` self-references expanded."""
    out: set[str] = set()
    for req in PROJECT["optional-dependencies"][name]:
        m = re.fullmatch(r"statecache\[([^\]]+)\]", req)
        if m:
            for sub in m.group(1).split(","):
                out |= flatten_extra(sub.strip())
        else:
            out.add(req)
    return out


def flatten_group(name: str) -> set[str]:
    out: set[str] = set()
    for item in PYPROJECT["dependency-groups"][name]:
        out |= flatten_group(item["include-group"]) if isinstance(item, dict) else {item}
    return out


@pytest.mark.parametrize("name", ["test", "lint", "dev"])
def test_each_dependency_group_lists_what_its_extra_lists(name: str) -> None:
    assert flatten_group(name) == flatten_extra(name)


def test_version_has_one_source() -> None:
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "statecache._version.__version__"}


def test_torch_is_not_in_dev_and_lint_tools_are_pinned() -> None:
    assert not any(r.startswith("torch") for r in flatten_extra("dev"))
    assert all("==" in r for r in flatten_extra("lint"))


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    m = re.search(r"Test it \(fresh machine[^\n]*:\n\n    (.+)\n", readme)
    assert m, "the README has no 'Test it' command"
    for part in m.group(1).split(" && "):
        assert part in ci, f"README step {part!r} is not in .ci/run"


PEP723_BLOCK = r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$"  # PEP 723's own


def test_the_pep723_example_declares_its_dependencies_and_hits_on_its_second_run(tmp_path: Path) -> None:
    from conftest import Project

    text = (REPO / "examples" / "pep723_example.py").read_text()
    [block] = [m for m in re.finditer(PEP723_BLOCK, text) if m.group("type") == "script"]
    content = "".join(line[2:] if line.startswith("# ") else line[1:]
                      for line in block.group("content").splitlines(keepends=True))
    meta = tomllib.loads(content)
    assert {re.split(r"[<>=\[ ]", d, maxsplit=1)[0] for d in meta["dependencies"]} == {"statecache", "numpy"}
    assert meta["requires-python"] == PROJECT["requires-python"]
    assert meta["tool"]["uv"]["sources"]["statecache"]["path"] == ".."  # the checkout, from examples/
    project = Project(tmp_path)
    project.write("pep723_example.py", text)
    first = project.run("pep723_example.py")
    second = project.run("pep723_example.py")
    assert first.computed("embeddings") and second.hit("embeddings")
    result = [line for line in first.stdout.splitlines() if line.startswith("nearest")]
    assert result and result == [line for line in second.stdout.splitlines() if line.startswith("nearest")]
