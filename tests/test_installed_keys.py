"""Installed code below the surface (issue 11 item 4): an installed package counts by its
version and by the versions of the installed distributions it requires, transitively (its
own optional extras too), so that upgrading a dependency (pyarrow under pandas, scipy under
scikit-learn) is a miss. Fake distributions in a temporary ``site-packages`` directory;
real scripts run twice or more, each value compared with a fresh run under
``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Project, Run
from multicase import assert_cases, case_values, fresh_values

MAIN = """
import statecache as sc
import fakelib
with sc.checkpoint("a"):
    y = fakelib.f()
print("y", y)
"""


def install(site: Path, dist: str, module: str, version: str, source: str, requires: tuple[str, ...] = ()) -> None:
    """A distribution as pip leaves it: the package and its .dist-info (any older one removed)."""
    for old in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
        shutil.rmtree(old)
    (site / module).mkdir(parents=True, exist_ok=True)
    (site / module / "__init__.py").write_text(source)
    meta = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    meta.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {dist}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (meta / "METADATA").write_text("\n".join(lines) + "\n\nA fake distribution.\n")
    (meta / "top_level.txt").write_text(module + "\n")


def value(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def setup(tmp_path: Path) -> tuple[Project, Path, dict[str, str]]:
    site = tmp_path / "lib" / "site-packages"
    install(site, "fake-lib", "fakelib", "1.0", "import fakedep\n__version__ = '1.0'\n"
            "def f():\n    import fakeopt\n    return fakedep.value() + fakeopt.BONUS\n",
            ("fakedep>=1", 'fakeopt; extra == "fast"'))
    install(site, "fakedep", "fakedep", "1.0", "import fakedeeper\ndef value():\n    return fakedeeper.VALUE\n",
            ("fakedeeper", 'pytest; extra == "test"'))
    install(site, "fakedeeper", "fakedeeper", "1.0", "VALUE = 1\n")
    install(site, "fakeopt", "fakeopt", "1.0", "BONUS = 10\n")
    project = Project(tmp_path / "project")
    project.write("main.py", MAIN)
    env = {"PYTHONPATH": str(site)}
    first = project.run("main.py", env=env)
    assert value(first) == "y 11"
    second = project.run("main.py", env=env)
    assert second.hit("a") and value(second) == "y 11", second.stderr
    return project, site, env


def outcome(project: Project, env: dict[str, str]) -> tuple[bool, str]:
    run = project.run("main.py", env=env)
    fresh = project.run("main.py", env={**env, "STATECACHE_DISABLE": "1"})
    assert value(run) == value(fresh), run.stderr
    again = project.run("main.py", env=env)
    assert again.hit("a") and value(again) == value(run), again.stderr
    return run.hit("a"), value(run)


def test_upgrading_a_dependency_of_an_installed_package_is_a_miss(tmp_path: Path) -> None:
    project, site, env = setup(tmp_path)
    install(site, "fakedeeper", "fakedeeper", "1.1", "VALUE = 2\n")  # two levels down
    assert outcome(project, env) == (False, "y 12")
    install(site, "fakeopt", "fakeopt", "1.1", "BONUS = 20\n")  # an optional extra it uses
    assert outcome(project, env) == (False, "y 22")


def test_what_the_dependencies_do_not_require_does_not_count(tmp_path: Path) -> None:
    project, site, env = setup(tmp_path)
    install(site, "pytest-fake-unrelated", "unrelated", "9.9", "")  # required by no one
    assert outcome(project, env) == (True, "y 11")


NAMESPACE = """
import numpy as np
import statecache as sc
import fixes
np.mean = fixes.mean  # the user's code put into an installed library's namespace

def run():
    return float(np.mean([1.0, 2.0, 3.0]))

with sc.checkpoint("a"):
    y = run()
print("y", y)
"""


def test_user_code_installed_into_a_library_namespace_counts_by_its_code(project: Project) -> None:
    project.write("fixes.py", "def mean(values):\n    return sum(values) / len(values) * 10\n")
    project.write("main.py", NAMESPACE)
    assert value(project.run("main.py")) == "y 20.0"
    assert project.run("main.py").hit("a")
    project.write("fixes.py", "def mean(values):\n    return sum(values) / len(values) * 100\n")
    assert outcome(project, {}) == (False, "y 200.0")
    project.write("fixes.py", "def mean(values):  # a comment\n    return sum(values) / len(values) * 100\n")
    assert outcome(project, {}) == (True, "y 200.0")


SETTINGS = {
    # (set above the block, read in the block or in a helper)
    "pandas-display": ("pd.options.display.precision = {v}", "pd.options.display.precision * 2"),
    "pandas-mode": ("pd.set_option('mode.chained_assignment', {s})", "str(pd.options.mode.chained_assignment)"),
    "stdlib-attribute": ("logging.root.setLevel({v})", "logging.root.level + 1"),
}
WHERE = ("block", "helper")
EVERY = [f"{setting}-{where}" for setting in SETTINGS for where in WHERE]

ACCESSOR = """
import pandas as pd

@pd.api.extensions.register_dataframe_accessor("geo")
class Geo:
    def __init__(self, df):
        self._df = df

    def total(self):
        return int(self._df["a"].sum()) * {factor}
"""


def pandas_script() -> str:
    """Every setting, each with its own variable V_<setting>, read by one block and by one
    helper: checkpoints ``<setting>-block`` and ``<setting>-helper``; and checkpoint
    ``accessor``, which calls the user's accessor class (geo.py) on a frame."""
    lines = ["import logging", "import os", "import pandas as pd", "import statecache as sc", "import geo"]
    for n, (setting, (assign, read)) in enumerate(SETTINGS.items()):
        lines += [f"v{n} = int(os.environ.get('V_{n}', '3'))", f"s{n} = \"'warn'\" if v{n} == 3 else \"'raise'\"",
                  assign.format(v=f"v{n}", s=f"eval(s{n})"), f"def read{n}():", f"    return {read}"]
        for where in WHERE:
            case = f"{setting}-{where}"
            lines += [f"with sc.checkpoint({case!r}):", f"    y{n}{where} = {read if where == 'block' else f'read{n}()'}",
                      f"print('y {case}', y{n}{where})"]
    lines += ["frame = pd.DataFrame({'a': [1, 2, 3]})", "with sc.checkpoint('accessor'):", "    total = frame.geo.total()",
              "print('y accessor', total)"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pandas_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One script, run twice as written; then one setting changed per step (so each setting's
    miss is its own), the first step also multiplying the accessor's result by 100 in geo.py;
    each step is a fresh run, the changed run and the same again."""
    pytest.importorskip("pandas")
    project = Project(tmp_path_factory.mktemp("pandas"))
    project.write("geo.py", ACCESSOR.format(factor=1))
    project.write("main.py", pandas_script())
    runs: dict[str, Any] = {"first": project.run("main.py"), "second": project.run("main.py"), "steps": []}
    env: dict[str, str] = {}
    for n in range(len(SETTINGS)):
        env[f"V_{n}"] = "5"
        if n == 0:
            project.write("geo.py", ACCESSOR.format(factor=100))
        fresh = fresh_values(project, "main.py", env)
        runs["steps"].append((fresh, project.run("main.py", env=env), project.run("main.py", env=env)))
    return runs


def test_settings_nested_in_an_installed_module_are_inputs(pandas_runs: dict[str, Any]) -> None:
    """``pd.options.display.precision``: data reached through an installed module's namespace
    objects counts by value, read in the block as in a helper. Each step's cases miss for
    their own setting, with what a fresh run prints, and hit on the next run."""
    first = pandas_runs["first"]
    assert_cases(first, EVERY, hit=False)
    assert_cases(pandas_runs["second"], EVERY, hit=True, fresh=case_values(first))
    for setting, (fresh, changed, again) in zip(SETTINGS, pandas_runs["steps"], strict=True):
        cases = [f"{setting}-{where}" for where in WHERE]
        assert_cases(changed, cases, hit=False, fresh=fresh)
        for case in cases:
            assert case_values(changed)[case] != case_values(first)[case], f"{case}: the setting must change the value"
        assert_cases(again, cases, hit=True, fresh=fresh)


def test_a_pandas_accessor_class_of_the_user_counts_by_its_code(pandas_runs: dict[str, Any]) -> None:
    """geo.py's edit (in the first step) is a miss with the new value; the runs before it and
    the one after it hit."""
    assert_cases(pandas_runs["first"], ["accessor"], hit=False, fresh={"accessor": "6"})
    assert_cases(pandas_runs["second"], ["accessor"], hit=True, fresh={"accessor": "6"})
    fresh, edited, again = pandas_runs["steps"][0]
    assert fresh["accessor"] == "600"
    assert_cases(edited, ["accessor"], hit=False, fresh=fresh)
    assert_cases(again, ["accessor"], hit=True, fresh=fresh)
