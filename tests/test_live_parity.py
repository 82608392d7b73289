"""``statecache live script.py`` and ``python script.py`` give the script the same process and
its checkpoints the same keys, so each reuses the other's entries; the run keys the source it
runs. Also in-process: where two versions of a script differ, and the polling watcher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import live_helpers
from tests.live_helpers import (
    TIMEOUT,
    components,
    env,
    idle,
    keys_of,
    live_first_run,
    live_session,
    plain_run,
    write,
)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="live mode needs fork")

# the fixtures: the project (a script and its module), and every loop's TMPDIR, left empty
project, live_tmpdir = live_helpers.project, live_helpers.live_tmpdir


HELPER_SCRIPT = """\
import time
import statecache


def helper():
    time.sleep(0)
    return 42


with statecache.checkpoint("a"):
    y = helper()
print("y", y)
"""


def test_a_live_run_and_a_plain_run_share_their_entries(project: Path) -> None:
    """`statecache live script.py` then `python script.py`: the same key, a hit. A helper that
    uses a module imported by another statement is compiled in another unit by live mode."""
    write(project / "script.py", HELPER_SCRIPT)
    live_out = live_first_run(project)
    assert "'a' computing" in live_out and "y 42" in live_out
    done = plain_run(project)
    assert "y 42" in done.stdout
    assert "'a' restored" in done.stderr, components(project, "a")
    assert len(keys_of(project, "a")) == 1


def test_a_plain_run_and_a_live_run_share_their_entries(project: Path) -> None:
    write(project / "script.py", HELPER_SCRIPT)
    done = plain_run(project)
    assert "'a' computing" in done.stderr
    live_out = live_first_run(project)
    assert "y 42" in live_out
    assert "'a' restored" in live_out, components(project, "a")
    assert len(keys_of(project, "a")) == 1


INTROSPECT = '''\
"""The docstring."""
import sys
import statecache


def f():
    return 1


"""a string statement: not a docstring"""
m = sys.modules["__main__"]
for what, value in [
    ("argv", sys.argv),
    ("path0", sys.path[0]),
    ("file", __file__),
    ("name", __name__),
    ("doc", __doc__),
    ("attrs", sorted(k for k in vars(m) if k.startswith("__"))),
    ("spec", m.__spec__),
    ("package", m.__package__),
    ("loader", (type(m.__loader__).__name__, m.__loader__.name, m.__loader__.path)),
    ("cached", m.__cached__),
    ("builtins", type(m.__builtins__).__name__),
    ("code", (f.__code__.co_filename, f.__code__.co_firstlineno, f.__module__)),
    ("frame", (sys._getframe().f_code.co_filename, sys._getframe().f_lineno)),
]:
    print("INFO", what, repr(value))
with statecache.checkpoint("reads"):
    seen = (sys.argv, __file__, __doc__, __name__, f())
print("INFO", "seen", repr(seen))
'''


def test_live_gives_the_script_what_python_gives_it(project: Path) -> None:
    """`__main__`, `sys.argv`, `sys.path[0]`, `__file__`, `__doc__`, code file names and line
    numbers are those of `python script.py`; so is the key of a block that reads them."""
    write(project / "script.py", INTROSPECT)
    live_out = live_first_run(project, "--n", "3")
    plain = plain_run(project, "--n", "3")
    info_live = [line for line in live_out.splitlines() if line.startswith("INFO")]
    info_plain = [line for line in plain.stdout.splitlines() if line.startswith("INFO")]
    assert len(info_plain) == 14
    assert info_live == info_plain
    assert "INFO doc 'The docstring.'" in info_plain
    assert "'reads' restored" in plain.stderr, components(project, "reads")


EDITS_ITSELF = """\
import os
import statecache

if not os.path.exists("edited"):
    # a save while this run goes on: two lines above, the same code
    text = open(__file__).read()
    open(__file__, "w").write("# one\\n# two\\n" + text)
    open("edited", "w").close()
with statecache.checkpoint("block"):
    value = "VALUE_ONE"
print("value", value)
"""


def test_the_run_reads_the_source_it_runs_not_a_newer_save(project: Path) -> None:
    """A save during a run (here: lines added above, the code the same, so the loop goes on)
    does not change what the run's checkpoint reads as its source: the text that runs."""
    write(project / "script.py", EDITS_ITSELF)
    with live_session(project) as child:
        child.expect(r"run 1 (finished|ended)[^\r\n]*")
        out = child.before + child.after
        idle(child)
    assert "value VALUE_ONE" in out and "'block' computing" in out, out
    assert "run 1 finished" in out, out
    done = plain_run(project)
    assert (project / "script.py").read_text().startswith("# one\n# two\n")
    assert "value VALUE_ONE" in done.stdout and "'block' restored" in done.stderr


def test_plans_differ_exactly_where_the_code_does() -> None:
    import ast

    from statecache.key.astdigest import ast_digest
    from statecache.live.plan import make_plan, module_digest

    base = 'import os\nx = u"a"  # note\nwith checkpoint("c"):\n    y = 1\nprint(x, y)\n'
    plan = make_plan(base, "s.py")
    assert plan.points == {0: "the start", 1: "the imports", 3: "checkpoint 'c'"}
    assert plan.lines == {0: 1, 1: 2, 3: 5}
    # comments, blank lines, layout and the u prefix are not code
    same = 'import os\n\n# new comment\nx = "a"\nwith checkpoint( "c" ):\n    y = 1\nprint(x,y)\n'
    assert make_plan(same, "s.py").first_change(plan) is None
    # a change of meaning is found at its statement; the prefixes before it agree
    changed = make_plan(base.replace("y = 1", "y = 2"), "s.py")
    assert changed.first_change(plan) == 2
    assert changed.agrees_up_to(2, plan.prefix[2]) and not changed.agrees_up_to(3, plan.prefix[3])
    assert make_plan(base + "z = 3\n", "s.py").first_change(plan) == 4
    assert make_plan('"""doc"""\n' + base, "s.py").first_change(plan) == 0
    # a module's digest is the keys' digest of its tree
    assert module_digest("s.py", base) == ast_digest(ast.parse(base)).hex()
    assert module_digest("s.py", same) == module_digest("s.py", base)
    assert module_digest("s.py", "x = (") is None


def test_the_polling_watcher_reports_saves(tmp_path: Path) -> None:
    import select

    from statecache.live.watcher import CATCH_UP, Watcher

    f = tmp_path / "m.py"
    f.write_text("A = 1\n")
    w = Watcher([str(tmp_path)], polling=True)
    try:

        def next_batch() -> set[str]:
            assert select.select([w.fd], [], [], TIMEOUT)[0], "no report"
            return w.take()

        assert next_batch() == {CATCH_UP}  # watching now: catch up with earlier saves
        f.write_text("A = 22\n")
        assert str(f) in next_batch()
        os.unlink(f)
        assert str(f) in next_batch()
    finally:
        w.stop()


HANDLERS = """\
import signal
import statecache


def on_signal(signum, frame):
    pass


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)
with statecache.checkpoint("setup"):
    x = 1
handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT)]
names = [h.__name__ if callable(h) else h.name for h in handlers]
print("handlers", *names, "TAG")
"""


def test_signal_handlers_the_script_set_are_its_own_after_a_resume(project: Path) -> None:
    """A snapshot ignores signals while it waits; the runs it starts get the script's own
    handlers back, as they were when the snapshot was taken."""
    write(project / "script.py", HANDLERS)
    expected = "handlers on_signal on_signal SIG_DFL SIG_DFL"
    with live_session(project) as child:
        child.expect(f"{expected} TAG")
        idle(child)
        write(project / "script.py", HANDLERS.replace("TAG", "again"))
        child.expect(r"run 2 from the snapshot after checkpoint 'setup'")
        child.expect(r"handlers [^\r\n]* again")
        assert child.after.startswith(expected), child.after
        idle(child)
    assert expected in plain_run(project).stdout


READS_DATA = """\
import statecache

with statecache.checkpoint("load"):
    with open("data.txt") as fh:
        data = fh.read().strip()
print("data", data, "TAG")
"""


def test_a_data_file_saved_since_the_snapshot_is_read_again(project: Path) -> None:
    """The block read data.txt; data.txt is saved, then the script's tail: the re-run must see
    the new data, as `python script.py` (a miss: the file is in the key) and a run without
    the cache do: the snapshot after the block is not resumed from."""
    write(project / "data.txt", "one\n")
    write(project / "script.py", READS_DATA)
    with live_session(project) as child:
        child.expect("data one TAG")
        idle(child)
        write(project / "data.txt", "two\n")
        write(project / "script.py", READS_DATA.replace("TAG", "again"))
        child.expect(r"data (\w+) again")
        live_data = child.match.group(1)
        idle(child)
        # the data unchanged since: the next edit resumes after the block again
        write(project / "script.py", READS_DATA.replace("TAG", "third"))
        child.expect(r"run 3 from the snapshot after checkpoint 'load'")
        child.expect("data two third")
        idle(child)
    fresh = plain_run(project, environ=env(STATECACHE_DISABLE="1")).stdout
    assert "data two third" in fresh
    assert "data two third" in plain_run(project).stdout
    assert live_data == "two"


READS_CONFIG = """\
import json
import statecache

cfg = json.load(open("cfg.json"))
with statecache.checkpoint("setup"):
    data = [cfg["n"]] * 3
print("data", data, "TAG")
"""


def test_a_file_read_outside_the_blocks_and_saved_since_is_read_again(project: Path) -> None:
    """The config is read before the block (its value is in the block's key); saved, then the
    script's tail saved: the re-run must see the new config, as `python script.py` does."""
    write(project / "cfg.json", '{"n": 1}\n')
    write(project / "script.py", READS_CONFIG)
    with live_session(project) as child:
        child.expect(r"data \[1, 1, 1\] TAG")
        idle(child)
        write(project / "cfg.json", '{"n": 2}\n')
        write(project / "script.py", READS_CONFIG.replace("TAG", "again"))
        child.expect(r"data (\[[^\]]*\]) again")
        live_data = child.match.group(1)
        idle(child)
    assert "data [2, 2, 2] again" in plain_run(project, environ=env(STATECACHE_DISABLE="1")).stdout
    assert "data [2, 2, 2] again" in plain_run(project).stdout
    assert live_data == "[2, 2, 2]"
