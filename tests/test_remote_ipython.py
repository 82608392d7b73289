"""``%%checkpoint NAME --remote URL|off`` under IPython: the cell's ``remote=``. A URL shares the
cell between two clones (an S3 server on loopback and a shared directory) with no
``STATECACHE_REMOTE`` set; ``off`` keeps the cell off a ``STATECACHE_REMOTE`` that is set; a
value that is not a URL is a usage error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Project, Run

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import SECRET  # noqa: E402

pytest.importorskip("IPython")
pytest_plugins = ("tests.remote_server",)  # the S3 server and the `url` remote (s3, dir)

CELL = (
    "import numpy as np\n"
    "get_ipython().run_cell_magic('checkpoint', 'features @OPTIONS@', "
    "'open(\"ran.log\", \"a\").write(\"ran\\\\n\")\\n"
    "X = np.arange(200_000) * 7\\nprint(\"sum\", int(X.sum()))\\n')\n"
)


def ipython(project: Project, options: str, env: dict[str, str], check: bool = True) -> Run:
    project.root.mkdir(parents=True, exist_ok=True)
    code = CELL.replace("@OPTIONS@", options)
    return project.run("-m", "IPython", "--no-banner", "--colors=nocolor", "--ext", "statecache",
                       "-c", code, env=env, check=check)


def runs(project: Project) -> int:
    log = project.root / "ran.log"
    return len(log.read_text().split()) if log.exists() else 0


def test_a_cell_with_remote_shares_between_two_clones(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    env = {"STATECACHE_SECRET": SECRET, **(server.env() if server is not None else {})}
    one, two = Project(tmp_path / "alice" / "nb"), Project(tmp_path / "bob" / "work" / "nb")
    first = ipython(one, f"--remote {remote}", env)
    assert first.computed("features") and "sum 139999300000" in first.stdout
    second = ipython(two, f"--remote {remote}", env)
    assert second.hit("features") and runs(two) == 0, second.stderr
    assert any("restored" in line and f"from {remote}" in line for line in second.status)
    assert "sum 139999300000" in second.stdout  # the cell's output replayed
    assert two.entries("features")[0].read_bytes() == one.entries("features")[0].read_bytes()


def test_remote_off_keeps_a_cell_off_statecache_remote(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    env = {"STATECACHE_SECRET": SECRET, "STATECACHE_REMOTE": f"file://{shared}"}
    off = Project(tmp_path / "off")
    assert ipython(off, "--remote off", env).computed("features")
    assert not [p for p in shared.rglob("*") if p.is_file()]  # nothing published, no lease
    assert ipython(Project(tmp_path / "one"), "", env).computed("features")  # publishes
    assert [p for p in shared.rglob("*.sc")]
    other = Project(tmp_path / "other")
    first = ipython(other, "--remote OFF", env)  # "off" in any case
    assert first.computed("features") and runs(other) == 1  # the remote's entry is not fetched
    assert not any(" from " in line for line in first.status if "restored" in line)
    assert ipython(Project(tmp_path / "two"), "", env).hit("features")  # the remote's entry


@pytest.mark.parametrize("option", ["--remote relative/dir", "--remote="])
def test_a_cell_refuses_a_remote_that_is_no_url(tmp_path: Path, option: str) -> None:
    project = Project(tmp_path / "nb")
    run = ipython(project, option, {"STATECACHE_SECRET": SECRET}, check=False)
    shown = run.stdout + run.stderr
    assert "%%checkpoint 'features': remote=" in shown and "s3://bucket/prefix" in shown
    assert "Usage: %%checkpoint" in shown and "[--remote URL|off]" in shown
    assert runs(project) == 0


def test_parse_line_reads_remote() -> None:
    from statecache._ipython import parse_line

    assert parse_line("f --remote s3://b/p").remote == "s3://b/p"
    assert parse_line("f --remote off").remote is False
    assert parse_line("f").remote is None

