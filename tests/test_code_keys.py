"""Helper code counts by its normalised source, the same however it was compiled (whole file as
``python script.py`` does, or statement by statement as ``statecache live`` does), and never
keys a newer text on older running code; package versions are found from files' locations."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from conftest import Project, subprocess_env

from statecache.key.code import code_digest
from statecache.key.values import Fingerprinter
from statecache.key.versions import distribution_version

HELPERS = '''\
import time
import math


def slow(x, n=2):
    """Docstring."""
    time.sleep(0)
    return math.floor(x) * n + len(str(time.time() > 0))


@staticmethod
def decorated(x):
    return [slow(i) for i in range(x)]


class Model:
    def fit(self, x):
        return slow(x) + (lambda y: y + 1)(x)

    async def later(self):
        return self.fit(1)


def outer(k):
    def inner(v):
        return v * k
    return inner
'''


def fp(obj: object) -> bytes:
    return Fingerprinter().value(obj, "x")


def load_whole(path: Path) -> dict:
    ns: dict = {"__name__": "helpers"}
    exec(compile(path.read_text(), str(path), "exec", dont_inherit=True), ns)
    return ns


def load_by_statement(path: Path) -> dict:
    """As live mode runs a script: each top-level statement is its own compilation unit."""
    ns: dict = {"__name__": "helpers"}
    for stmt in ast.parse(path.read_text()).body:
        exec(compile(ast.Module([stmt], type_ignores=[]), str(path), "exec", dont_inherit=True), ns)
    return ns


def _functions(ns: dict) -> list[types.FunctionType]:
    model = ns["Model"]
    return [ns["slow"], ns["decorated"].__func__, model.fit, model.later, ns["outer"], ns["outer"](3)]


def test_whole_file_and_statement_by_statement_code_key_alike(tmp_path: Path) -> None:
    path = tmp_path / "helpers.py"
    path.write_text(HELPERS)
    whole, split = load_whole(path), load_by_statement(path)
    if sys.version_info >= (3, 11):  # the compilation unit shows in the bytecode
        assert whole["slow"].__code__.co_code != split["slow"].__code__.co_code
    for a, b in zip(_functions(whole), _functions(split), strict=True):
        assert code_digest(a.__code__).startswith(b"src")
        assert code_digest(a.__code__) == code_digest(b.__code__)
        assert fp(a) == fp(b)
    assert fp(whole["Model"]) == fp(split["Model"])
    assert fp(whole["Model"]().fit) != fp(whole["slow"])


def _variant(tmp_path: Path, name: str, old: str, new: str) -> dict:
    path = tmp_path / f"{name}.py"
    text = HELPERS.replace(old, new)
    assert text != HELPERS or old == new
    path.write_text(text)
    return load_whole(path)


def test_meaning_counts_comments_and_layout_do_not(tmp_path: Path) -> None:
    base = fp(_variant(tmp_path, "base", "", "")["slow"])
    same = [
        ('    """Docstring."""\n', '    """Docstring."""\n    # a comment\n\n'),
        ("math.floor(x) * n", "math.floor( x )*n"),
        ("def slow(x, n=2):", "def slow(x,\n         n=2):"),
    ]
    for i, (old, new) in enumerate(same):
        assert fp(_variant(tmp_path, f"same{i}", old, new)["slow"]) == base, new
    changed = [
        ("math.floor(x) * n", "math.floor(x) + n"),  # same names, constants and variables
        ("math.floor(x)", "math.ceil(x)"),
        ('"""Docstring."""', '"""Other docstring."""'),
        ("n=2", "n=3"),
        ("time.sleep(0)", "time.sleep(0.0)"),
    ]
    digests = {fp(_variant(tmp_path, f"changed{i}", old, new)["slow"]) for i, (old, new) in enumerate(changed)}
    assert len(digests) == len(changed) and base not in digests


def test_code_edited_on_disk_after_loading_keys_by_what_runs(tmp_path: Path) -> None:
    path = tmp_path / "helpers.py"
    path.write_text(HELPERS)
    running = load_whole(path)
    loaded = fp(running["slow"])
    edited = HELPERS.replace("math.floor(x) * n", "math.floor(x) + n")
    path.write_text(edited)
    os.utime(path, ns=(1, 1))  # even with an mtime that looks old
    assert not code_digest(running["slow"].__code__).startswith(b"src")  # the disk no longer matches
    other = tmp_path / "other.py"
    other.write_text(edited)
    fresh = load_whole(other)["slow"]  # the code the edited text compiles to
    assert fp(running["slow"]) != fp(fresh)
    assert fp(running["slow"]) != loaded
    assert running["slow"](3) != fresh(3)  # the edit changes results: keys must differ


def test_code_without_source_counts_by_bytecode() -> None:
    a: dict = {}
    b: dict = {}
    exec("def f(x):\n    return x + 1\n", a)
    exec("def f(x):\n    return x + 2\n", b)
    assert code_digest(a["f"].__code__).startswith(b"bc")
    assert fp(a["f"]) != fp(b["f"])
    c: dict = {}
    exec("def f(x):\n    return x + 1\n", c)
    assert fp(a["f"]) == fp(c["f"])


def test_two_lambdas_on_one_line_are_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "lam.py"
    path.write_text("f, g = (lambda x: x + 1), (lambda x: x * 2)\n")
    ns = load_whole(path)
    assert fp(ns["f"]) != fp(ns["g"])


# ------------------------------------------------------------------ real scripts


@pytest.mark.parametrize("where", ["module", "script", "local-import"])
def test_a_helper_edited_while_the_script_runs_is_not_keyed_by_the_new_text(project: Project, where: str) -> None:
    """An editor saves the helper after Python loaded it, before the block: the result of the
    old code must not be saved under the new text's key (the next run would restore it)."""
    old, new = "return a * b", "return a + b"
    helper = f"def f(a, b=7):\n    {old}\n"
    if where == "module":
        project.write("helpers.py", helper)
        target, call, head = "helpers.py", "helpers.f(6)", "import helpers"
    elif where == "local-import":  # the module counts through an import inside a function
        project.write("helpers.py", helper)
        local = "def run():\n    import helpers\n    return helpers.f(6)\n"
        target, call, head = "helpers.py", "run()", "import helpers\n" + local
    else:
        target, call, head = "main.py", "f(6)", helper
    project.write(
        "main.py",
        head
        + textwrap.dedent(f"""
        import os, pathlib, statecache
        if os.environ.get("EDIT"):
            p = pathlib.Path({target!r})
            p.write_text(p.read_text().replace({old!r}, {new!r}))
        with statecache.checkpoint("calc"):
            y = {call}
        print("y", y)
        """),
    )
    first = project.run("main.py", env={"EDIT": "1"})
    assert first.computed("calc") and "y 42" in first.stdout, first.stderr
    second = project.run("main.py")
    assert second.computed("calc") and "y 13" in second.stdout, second.stderr
    assert "y 13" in project.run("main.py", env={"STATECACHE_DISABLE": "1"}).stdout
    assert project.run("main.py").hit("calc")


def test_live_and_python_share_helper_keys_in_a_real_process(project: Project) -> None:
    """The same unchanged script, compiled statement by statement (as live mode runs it) and
    whole (python script.py), computes one entry."""
    project.write("main.py", "import time\n" + HELPERS.replace("import time\n", "") + textwrap.dedent("""
        import statecache
        with statecache.checkpoint("calc"):
            y = slow(3) + Model().fit(2)
        print("y", y)
        """))
    runner = project.write(
        "by_statement.py",
        """
        import ast, sys
        path = sys.argv[1]
        sys.argv[:] = sys.argv[1:]  # as python main.py (and live mode) give it
        ns = {"__name__": "__main__", "__file__": path}
        sys.modules["__main__"].__dict__.update(ns)
        for stmt in ast.parse(open(path).read()).body:
            code = compile(ast.Module([stmt], type_ignores=[]), path, "exec", dont_inherit=True)
            exec(code, sys.modules["__main__"].__dict__)
        """,
    )
    first = project.run(str(runner), str(project.root / "main.py"))
    assert first.computed("calc"), first.stderr
    second = project.run("main.py")
    assert second.hit("calc") and second.stdout == first.stdout, second.stderr
    assert len(project.entries("calc")) == 1


# ------------------------------------------------------------------ package versions


def test_version_of_a_package_whose_import_name_differs_from_its_distribution() -> None:
    import importlib.metadata

    for top, dist in (("yaml", "PyYAML"), ("dateutil", "python-dateutil"), ("sklearn", "scikit-learn")):
        try:
            expected = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        assert distribution_version(top) == expected


@pytest.mark.parametrize("layout", ["record", "top_level"])
def test_version_found_from_the_dist_info_beside_the_package(tmp_path: Path, layout: str) -> None:
    top = f"sc_fake_{layout}"
    site = tmp_path / "site"
    (site / top).mkdir(parents=True)
    (site / top / "__init__.py").write_text("")
    for name, version in (("unrelated", "9.9"), (f"Fake-Dist-{layout}", "1.2.3")):
        meta = site / f"{name.replace('-', '_')}-{version}.dist-info"
        meta.mkdir()
        (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nbody\n")
        mine = version == "1.2.3"
        if layout == "top_level":
            (meta / "top_level.txt").write_text(f"{top}\n" if mine else "unrelated\n")
        else:
            files = f"{top}/__init__.py,sha256=x,0\n" if mine else "unrelated.py,,\n"
            (meta / "RECORD").write_text(files + f"{meta.name}/METADATA,,\n")
    code = (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "from statecache.key.versions import distribution_version, package_version\n"
        f"print(distribution_version({top!r}), 'importlib.metadata' in sys.modules)\n"
        f"import {top}\n"
        f"print(package_version({top!r} + '.sub'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True, check=True
    ).stdout.split()
    # found without importlib.metadata (which reads every package's file list), the same
    # before and after the package is imported
    assert out == ["1.2.3", "False", "1.2.3"]


FRAMES = """\
import sys
SCALE = 7
def frame_of_g():
    return sys._getframe()
FRAME = sys._getframe()
"""


@pytest.mark.parametrize("load", [load_whole, load_by_statement])
def test_a_frame_knows_whether_its_file_still_holds_its_code(tmp_path: Path, load) -> None:
    from statecache.key.code import frame_edited_after_loading

    path = tmp_path / "frames.py"
    path.write_text(FRAMES)
    ns = load(path)
    module_frame, function_frame = ns["FRAME"], ns["frame_of_g"]()
    assert frame_edited_after_loading(module_frame) == b""
    assert frame_edited_after_loading(function_frame) == b""
    path.write_text(FRAMES.replace("SCALE = 7", "SCALE = 8").replace("    return sys._getframe()", "    return sys._getframe(0)"))
    assert frame_edited_after_loading(function_frame).startswith(b"ran")
    if load is load_whole:  # the module's code holds SCALE = 7, the file says 8
        assert frame_edited_after_loading(module_frame).startswith(b"ran")
    else:  # live mode ran that statement alone, and it is unchanged
        assert frame_edited_after_loading(module_frame) == b""
