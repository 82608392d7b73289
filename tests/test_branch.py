"""``branch()`` and ``branch_map()``: experiments in forked children that start from the
parent's state, send values back, report their failures, and leave no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import statecache as sc

np = pytest.importorskip("numpy")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="branch() needs fork")

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # only against hangs


@pytest.fixture(autouse=True)
def no_child_left():
    """After every test: no child process of ours is left, zombie or running."""
    yield
    left = psutil.Process().children(recursive=True)
    assert left == [], f"processes left behind: {left}"


def run_script(tmp_path: Path, code: str, *, check: bool = True) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_child_mutations_do_not_reach_the_parent() -> None:
    items = [1, 2, 3]
    table = {"a": 1, "nested": {"b": [1]}}
    arr = np.arange(1_000_000, dtype=np.float64)
    with sc.branch() as run:
        run.keep(seen=(list(items), table["a"], float(arr[10])))
        items.append(4)
        items[0] = -1
        table["a"] = 99
        table["nested"]["b"].append(2)
        del table["nested"]
        arr[:] = 0
        arr.resize(10, refcheck=False)
        run.keep(after=(list(items), dict(table), float(arr.sum())))
    assert items == [1, 2, 3]
    assert table == {"a": 1, "nested": {"b": [1]}}
    assert arr.shape == (1_000_000,) and arr[10] == 10.0
    assert run.kept["seen"] == ([1, 2, 3], 1, 10.0)  # the child started from the parent's state
    assert run.kept["after"] == ([-1, 2, 3, 4], {"a": 99}, 0.0)
    assert run.exitcode == 0
    assert run.duration is not None and run.duration > 0


def test_keep_sends_values_back_including_lambdas() -> None:
    offset = 5
    with sc.branch() as run:
        run.keep(score=0.75, weights=np.ones((3, 2), dtype=np.float32))
        run.keep(fn=lambda x: x + offset, score=0.9)  # a later keep of a name wins

    assert run.kept["score"] == 0.9
    assert run.kept["weights"].dtype == np.float32 and run.kept["weights"].shape == (3, 2)
    assert run.kept["fn"](1) == 6
    with pytest.raises(sc.StateCacheError, match="outside the branch body"):
        run.keep(late=1)


def test_keep_value_snapshot_is_taken_at_the_call() -> None:
    with sc.branch() as run:
        values = [1]
        run.keep(values=values)
        values.append(2)
    assert run.kept["values"] == [1]


def test_exception_in_child_is_a_branch_error_with_its_traceback() -> None:
    state = {"n": 1}
    with pytest.raises(sc.BranchError) as info, sc.branch():
        state["n"] = 2
        raise ValueError("learning rate too high: 42")
    err = info.value
    assert "ValueError: learning rate too high: 42" in str(err)
    assert "ValueError: learning rate too high: 42" in err.child_traceback
    assert 'raise ValueError("learning rate too high: 42")' in err.child_traceback
    assert err.exitcode == 1
    assert state == {"n": 1}


def test_unpicklable_kept_value_fails_in_the_child_with_its_name() -> None:
    import threading

    with pytest.raises(sc.BranchError, match=r"run\.keep\(lock=\.\.\.\)"), sc.branch() as run:
        run.keep(lock=threading.Lock())


def test_killed_child_names_the_signal() -> None:
    with pytest.raises(sc.BranchError, match="killed by SIGKILL") as info, sc.branch():
        os.kill(os.getpid(), signal.SIGKILL)
    assert info.value.exitcode == -signal.SIGKILL


def test_sys_exit_in_the_body() -> None:
    with sc.branch() as run:
        run.keep(x=1)
        sys.exit(0)
    assert run.kept == {"x": 1} and run.exitcode == 0
    with pytest.raises(sc.BranchError, match="SystemExit") as info, sc.branch():
        sys.exit(3)
    assert info.value.exitcode == 3


def test_branch_in_a_loop_of_twenty() -> None:
    base = np.zeros(100)
    results = []
    for i in range(20):
        with sc.branch() as run:
            base += i  # each child starts from the untouched parent array
            run.keep(total=float(base.sum()), pid=os.getpid())
        results.append(run.kept)
    assert [r["total"] for r in results] == [100.0 * i for i in range(20)]
    assert len({r["pid"] for r in results}) == 20
    assert os.getpid() not in {r["pid"] for r in results}
    assert base.sum() == 0


def test_branch_inside_a_function_and_nested() -> None:
    def experiment(k: int) -> dict:
        local = [k]
        with sc.branch() as outer:
            local.append(1)
            with sc.branch() as inner:
                local.append(2)
                inner.keep(inner_seen=list(local))
            outer.keep(outer_seen=list(local), inner=inner.kept["inner_seen"])
        assert local == [k]
        return outer.kept

    assert experiment(7) == {"outer_seen": [7, 1], "inner": [7, 1, 2]}


def test_a_body_of_only_pass() -> None:
    with sc.branch() as run:
        pass
    assert run.exitcode == 0 and run.kept == {}


# fmt: off
def test_body_on_the_with_line_is_refused() -> None:
    with pytest.raises(sc.StateCacheError, match="own lines"):  # noqa: SIM117
        with sc.branch(): pass  # noqa: E701
# fmt: on


def test_child_output_reaches_stdout_in_order_and_atexit_runs_once(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        import atexit, sys
        import statecache as sc
        atexit.register(lambda: print("ATEXIT of the parent"))
        print("before", end=" ")   # buffered in the parent when the fork happens
        with sc.branch() as run:
            print("in the child")
            print("child stderr", file=sys.stderr)
        print("after", run.exitcode)
        """,
    )
    assert done.stdout.splitlines() == ["before in the child", "after 0", "ATEXIT of the parent"]
    assert "child stderr" in done.stderr


def test_uncaught_branch_error_shows_the_child_traceback(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        import statecache as sc

        def train():
            raise RuntimeError("diverged at epoch 3")

        with sc.branch():
            train()
        """,
        check=False,
    )
    assert done.returncode == 1
    assert "statecache._errors.BranchError" in done.stderr or "BranchError" in done.stderr
    assert "Traceback in the child" in done.stderr
    assert 'in train\n    raise RuntimeError("diverged at epoch 3")' in done.stderr


def test_ctrl_c_in_the_parent_stops_the_child(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            import statecache as sc
            try:
                with sc.branch():
                    print("child", os.getpid(), flush=True)
                    time.sleep(600)
            except KeyboardInterrupt:
                print("parent interrupted", flush=True)
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("child ")
        child_pid = int(line.split()[1])
        assert psutil.pid_exists(child_pid)
        proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` would
        rest = proc.communicate(timeout=TIMEOUT)[0]
    finally:
        proc.kill()
        proc.wait()
    assert "parent interrupted" in rest
    assert proc.returncode == 0
    # the child was the parent's to reap: it is gone, not a zombie
    assert not psutil.pid_exists(child_pid)


def test_no_fork_is_a_clear_error(tmp_path: Path) -> None:
    done = run_script(
        tmp_path,
        """
        import os
        del os.fork            # as on Windows
        import statecache as sc
        try:
            with sc.branch():
                print("never")
        except sc.StateCacheError as exc:
            print("ERROR:", exc)
        try:
            sc.branch_map(abs, [1])
        except sc.StateCacheError as exc:
            print("ERROR:", exc)
        """,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and "never" not in done.stdout
    assert all("needs os.fork()" in line and "Linux and macOS" in line for line in lines)


def test_branch_map_results_in_order_from_the_same_state() -> None:
    state = {"count": 0}

    def experiment(k: int) -> tuple[int, int, int]:
        state["count"] += k  # would leak between experiments if they shared a process
        time.sleep(0.01 * (5 - k))  # finish out of order
        return k, state["count"], os.getpid()

    results = sc.branch_map(experiment, range(6), workers=3)
    assert [(k, c) for k, c, _ in results] == [(k, k) for k in range(6)]
    assert len({pid for _, _, pid in results}) == 6
    assert state["count"] == 0


def test_branch_map_failure_names_the_item() -> None:
    def experiment(k: int) -> int:
        if k == 3:
            raise KeyError(f"missing column {k}")
        return k

    with pytest.raises(sc.BranchError, match=r"item 3") as info:
        sc.branch_map(experiment, range(5), workers=2)
    assert "KeyError: 'missing column 3'" in info.value.child_traceback


def test_branch_map_returns_closures_and_rejects_bad_workers() -> None:
    fns = sc.branch_map(lambda k: lambda x: x * k, [2, 3], workers=1)
    assert [f(10) for f in fns] == [20, 30]
    assert sc.branch_map(abs, []) == []
    with pytest.raises(sc.StateCacheError, match="at least 1 worker"):
        sc.branch_map(abs, [1], workers=0)


def test_branch_in_a_jupyter_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import statecache as sc\nx = [1]"),
        nbformat.v4.new_code_cell(
            "with sc.branch() as run:\n"
            "    x.append(2)\n"
            "    print('from the child')\n"
            "    run.keep(n=len(x))\n"
            "print(run.kept, x, run.exitcode)"
        ),
    ]
    # the kernel imports this working tree
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3").execute()
    text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
    assert "from the child" in text
    assert "{'n': 2} [1] 0" in text


def test_branch_under_an_installed_tracer(tmp_path: Path) -> None:
    """A debugger or coverage tracer keeps running and is back in place after the block."""
    done = run_script(
        tmp_path,
        """
        import sys
        import statecache as sc

        seen = []

        def tracer(frame, event, arg):
            if frame.f_code.co_filename == __file__ and event == "line":
                seen.append(frame.f_lineno)
            return tracer

        def main():
            ran = []
            with sc.branch() as run:
                ran.append("body")
                run.keep(ok=True)
            after = sys._getframe().f_lineno
            print("parent ran the body:", ran, "kept:", run.kept)
            print("tracer back:", sys.gettrace() is tracer, "saw the line after:", after in seen)

        sys.settrace(tracer)
        main()
        sys.settrace(None)
        """,
    )
    assert "parent ran the body: [] kept: {'ok': True}" in done.stdout
    assert "tracer back: True saw the line after: True" in done.stdout
