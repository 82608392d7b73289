"""The code key against what users do to code (issue 11, classes 1 and 12): a script saved
while it runs (lines added or removed above a block, the block itself edited, another block
brought to its line) neither ends the run nor keys the old code by the new text; a helper that
only stores into a global (a timing dict) keeps its hit, one that reads it does not; a block
that keeps a helper's source sees an edit of its comments. Each script serves several cases,
one checkpoint each, and every value after a change is compared with a fresh run."""

from __future__ import annotations

import types

from conftest import Project, Run
from test_redteam import HEAD

from statecache.key.code import scan_refs


def values(run: Run) -> dict[str, str]:
    return dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)


def fresh(project: Project, env: dict[str, str] | None = None) -> Run:
    return project.run("script.py", env={**(env or {}), "STATECACHE_DISABLE": "1"})


# -- the script saved while it runs ------------------------------------------------------------

EDITS_ITSELF = """
def edit(*pairs):  # stands for an editor saving this script while it runs
    if os.path.exists('edit.flag'):
        os.remove('edit.flag')
        with open(__file__) as f:
            text = f.read()
        for old, new in pairs:
            assert old in text, old
            text = text.replace(old, new, 1)
        with open(__file__, 'w') as f:
            f.write(text)
"""

# Lines without code added and removed: the running code is the new text's but for lines.
MOVED = HEAD + EDITS_ITSELF + """
edit(('# pad 1\\n# pad 2\\n', ''), ('# mark\\n', '# mark\\n# new 1\\n# new 2\\n# new 3\\n'))
# pad 1
# pad 2
with sc.checkpoint('removed-above'):
    ya = 6 * 7
with sc.checkpoint('next-block-moved-here'):
    yb = 6 * 8
# mark
def in_function():
    with sc.checkpoint('in-function'):
        yc = 6 * 9
    return yc

@sc.cached_setup
def setup(n):
    return n * 10

print(f'removed-above={ya}')
print(f'next-block-moved-here={yb}')
print(f'in-function={in_function()}')
print(f'setup={setup(4)}')
"""

# Code edited: only the text kept when statecache was imported knows what runs.
EDITED = HEAD + "from statecache import checkpoint  # keeps the script's text (key/maintext.py)\n" + EDITS_ITSELF + """
edit(('x0 = 1\\n', 'x0 = 1\\nx1 = 2\\n'), ('6 * ' + '7', '6 * ' + '80'), ('# gone\\nwith', 'with'))
x0 = 1
with checkpoint('lines-added-above'):
    ya = 6 * 5
with checkpoint('edited'):
    yb = 6 * 7
# gone
with checkpoint('other-block-at-its-line'):
    yc = 6 * 6
def in_function():
    with checkpoint('in-function'):
        yd = 6 * 9
    return yd

print(f'lines-added-above={ya}')
print(f'edited={yb}')
print(f'other-block-at-its-line={yc}')
print(f'in-function={in_function()}')
"""


def edit_while_running(project: Project, script: str) -> tuple[Run, Run, Run, Run]:
    """The run that edits its script, the next one, a fresh one and the rerun."""
    project.write("script.py", script)
    project.write("edit.flag", "")
    editing = project.run("script.py", check=False)
    assert editing.returncode == 0, editing.stderr
    return editing, project.run("script.py"), fresh(project), project.run("script.py")


def test_a_script_saved_with_only_lines_moved_while_it_runs(project: Project) -> None:
    editing, after, want, again = edit_while_running(project, MOVED)
    cases = ["removed-above", "next-block-moved-here", "in-function"]
    assert values(editing) == values(want) == values(after), editing.stderr
    for case in cases:  # the key of the new text is the key of the code that ran: it hits
        assert editing.computed(case) and after.hit(case), (case, editing.stderr, after.stderr)
    assert values(again) == values(want) and all(again.hit(case) for case in [*cases, "setup"]), again.stderr


def test_a_script_saved_with_code_edits_while_it_runs(project: Project) -> None:
    editing, after, want, again = edit_while_running(project, EDITED)
    cases = ["lines-added-above", "edited", "other-block-at-its-line", "in-function"]
    assert all(editing.computed(case) for case in cases), editing.stderr
    assert values(editing)["edited"] == "42"  # what the loaded code computes, not what it keys
    assert values(after) == values(want), after.stderr
    assert values(want)["edited"] == "480"
    assert all(again.hit(case) for case in cases), again.stderr


# -- what a helper's code reads of its globals ------------------------------------------------

HELPERS = """
import functools, time
TIMINGS = {}
LOG = {}
CHOICE = {}

class Stats:
    last = 0.0
STATS = Stats()

def step(x):
    t = time.perf_counter()
    TIMINGS['step'] = time.perf_counter() - t  # written, never read
    return x * 2

def stamped(x):
    STATS.last = time.perf_counter()  # an attribute written, never read
    return x + 1

def timed(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        t = time.perf_counter()
        r = fn(*args)
        TIMINGS[fn.__name__] = time.perf_counter() - t
        return r
    return wrapper

@timed
def square(x):
    return x * x

def record(name):
    LOG[name] = 1
    return name

def pick(x):
    CHOICE['last'] = x
    return CHOICE.get('mode', 1) * x  # stored into and read: the read counts

def f():
    # lr tuned on 2024-01
    return 1
"""

GLOBALS_SCRIPT = HEAD + """
import inspect
import helpers
helpers.CHOICE['mode'] = int(os.environ.get('MODE', '1'))
print('warm', helpers.step(1), helpers.square(2), helpers.stamped(0), helpers.pick(1))
with sc.checkpoint('dict-store'):
    ya = helpers.step(3)
with sc.checkpoint('attribute-store'):
    yb = helpers.stamped(4)
with sc.checkpoint('decorator-wrapper'):
    yc = helpers.square(5)
with sc.checkpoint('restores-what-it-stored'):
    yd = helpers.record('block')
with sc.checkpoint('read-counts'):
    ye = helpers.pick(6)
with sc.checkpoint('keeps-source'):
    source = inspect.getsource(helpers.f)
    yf = helpers.f()
print(f'dict-store={ya}')
print(f'attribute-store={yb}')
print(f'decorator-wrapper={yc}')
print(f'restores-what-it-stored={yd} {sorted(helpers.LOG)}')
print(f'read-counts={ye}')
print(f'keeps-source={source.splitlines()[1].strip()}')
"""


def test_globals_a_helper_only_stores_into_are_no_inputs(project: Project) -> None:
    project.write("helpers.py", HELPERS)
    project.write("script.py", GLOBALS_SCRIPT)
    cases = ["dict-store", "attribute-store", "decorator-wrapper", "restores-what-it-stored",
             "read-counts", "keeps-source"]
    computed = project.run("script.py")
    assert all(computed.computed(case) for case in cases), computed.stderr
    unchanged = project.run("script.py")
    assert all(unchanged.hit(case) for case in cases), unchanged.stderr
    assert values(unchanged) == values(computed) == values(fresh(project))
    assert values(unchanged)["restores-what-it-stored"] == "block ['block']"

    project.write("helpers.py", HELPERS.replace("2024-01", "2024-02"))
    env = {"MODE": "2"}
    after = project.run("script.py", env=env)
    want = fresh(project, env)
    assert values(after) == values(want), after.stderr
    assert values(want)["read-counts"] == "12" and values(want)["keeps-source"] == "# lr tuned on 2024-02"
    assert all(project.run("script.py", env=env).hit(case) for case in cases)


def _stored_into(fn: types.FunctionType) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    chains: dict[tuple[str, ...], None] = {}
    stored: dict[tuple[str, ...], None] = {}
    scan_refs(fn.__code__, chains, {}, stored)
    return set(chains), set(stored)


def test_only_an_item_or_attribute_store_is_left_out() -> None:
    ns: dict[str, object] = {}
    exec(
        "def store(k, v):\n    T[k] = v\n"
        "def store_key_expr(o, i):\n    T[o.name, i + 1] = 0\n"
        "def attribute(v):\n    S.last = v\n"
        "def delete(k):\n    del T[k]\n"
        "def augmented(k):\n    T[k] += 1\n"
        "def get(k):\n    return T.get(k)\n"
        "def contains(k):\n    return k in T\n"
        "def append(v):\n    T.append(v)\n"
        "def nested_attribute(v):\n    S.a.b = v\n"
        "def called_key(k):\n    T[f(k)] = 1\n"
        "def stores_and_reads(k):\n    T[k] = 1\n    return len(T)\n",
        ns,
    )
    left_out = ["store", "store_key_expr", "attribute", "delete"]
    for name in left_out:
        reads, stored = _stored_into(ns[name])  # type: ignore[arg-type]
        assert not any(c[0] in ("T", "S") for c in reads) and stored, name
    for name in ["augmented", "get", "contains", "append", "nested_attribute", "called_key", "stores_and_reads"]:
        reads, _ = _stored_into(ns[name])  # type: ignore[arg-type]
        assert any(c[0] in ("T", "S") for c in reads), name
