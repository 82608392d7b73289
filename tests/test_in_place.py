"""Identity survives a hit (issue 11 item 6): the objects a block mutated, and the objects they
refer to that the block kept, come back as the same objects the script holds, so other names
for them see the change, as after the computing run; objects the block replaced keep their old
state. Every case runs a real script three times: it computes, hits with the output of a fresh
``STATECACHE_DISABLE=1`` run, and hits again."""

from __future__ import annotations

import pytest
from conftest import Project
from test_redteam import fresh

HEAD = "import statecache as sc\n"


def sections(stdout: str) -> dict[str, str]:
    """What each case of a many-case script printed, by the ``== name`` line that opens it."""
    found: dict[str, str] = {}
    name = ""
    for line in stdout.splitlines(keepends=True):
        if line.startswith("== "):
            name = line[3:].strip()
            found[name] = ""
        elif name:
            found[name] += line
    return found


def check(project: Project, script: str, names: list[str], checkpoints: list[str] | None = None) -> dict[str, str]:
    """The script's checkpoints (by default one per case, named for it; each case printing under
    ``== case``) compute, then hit twice, each case printing what a fresh
    ``STATECACHE_DISABLE=1`` run prints. Returns that, by case."""
    project.write("script.py", HEAD + script)
    computed = project.run("script.py")
    expected = sections(fresh(project, "script.py"))
    assert sorted(expected) == sorted(names), expected
    runs = [("the computing run", computed), ("a hit", project.run("script.py")), ("a second hit", project.run("script.py"))]
    for label, run in runs:
        for name in checkpoints or names:
            done = run.computed(name) if run is computed else run.hit(name)
            assert done, f"{name}: {label} did not {'compute' if run is computed else 'hit'}\n{run.stderr}"
        got = sections(run.stdout)
        for name in names:
            assert got.get(name) == expected[name], f"{name}: {label} printed {got.get(name)!r}\n{run.stderr}"
    return expected


def cases(template: str, blocks: dict[str, str]) -> str:
    """``template`` once per case: ``{block}`` its block, ``{k}`` its name (its checkpoint's
    name, and the ending of its variables' names)."""
    return "".join(template.replace("{block}", block).replace("{k}", name) for name, block in blocks.items())


PIPELINES = """
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
y = np.array([0, 0, 1, 1])
"""
PIPELINE = """
clf{k} = LogisticRegression()
scaler{k} = StandardScaler()
pipe{k} = Pipeline([("scale", scaler{k}), ("clf", clf{k})])
{block}
print("== {k}")
print(hasattr(clf{k}, "coef_"), hasattr(scaler{k}, "mean_"), pipe{k}.steps[1][1] is clf{k})
print(np.round(clf{k}.coef_, 3).tolist() if hasattr(clf{k}, "coef_") else None)
"""
FITS = {
    "with_block": "with sc.checkpoint('{k}'):\n    pipe{k}.fit(X, y)",
    "in_function": "def main():\n    with sc.checkpoint('{k}'):\n        pipe{k}.fit(X, y)\nmain()",
    "cached_setup": "@sc.cached_setup(name='{k}')\ndef fit{k}(p, X, y):\n    p.fit(X, y)\nfit{k}(pipe{k}, X, y)",
    "with_result": "with sc.checkpoint('{k}'):\n    model{k} = pipe{k}.fit(X, y)\nassert model{k} is pipe{k}",
    "cached_setup_result": "@sc.cached_setup(name='{k}')\ndef fit{k}(p, X, y):\n    return p.fit(X, y)\n"
    "assert fit{k}(pipe{k}, X, y) is pipe{k}",
}
# The block swaps in a new classifier: the old one, held as ``clf``, was never fitted, and a hit
# must not fit it (a merge by position would).
REPLACED = {
    "replaced": "with sc.checkpoint('{k}'):\n    pipe{k}.steps[1] = ('clf', LogisticRegression(C=0.5))\n"
    "    pipe{k}.fit(X, y)\nprint('== C')\nprint(pipe{k}.steps[1][1].C)",
}


def test_a_fitted_pipeline_step_held_under_another_name_is_fitted_and_a_replaced_step_is_not(project: Project) -> None:
    pytest.importorskip("sklearn")
    script = PIPELINES + cases(PIPELINE, FITS) + cases(PIPELINE, REPLACED)
    out = check(project, script, [*FITS, "replaced", "C"], [*FITS, "replaced"])
    for name in FITS:
        assert out[name].startswith("True True True\n"), (name, out[name])
    assert out["replaced"].startswith("False True False\n") and out["C"] == "0.5\n", out


NODE = """
class Node:
    def __init__(self, name, children=()):
        self.name, self.children, self.seen = name, list(children), 0
"""
GRAPH = """
leaf{k} = Node("leaf")
mid{k} = Node("mid", [leaf{k}])
root{k} = Node("root", [mid{k}, (leaf{k}, "tag")])
table{k} = {"leaf": leaf{k}, "all": [root{k}, mid{k}]}
{block}
print("== {k}")
print(leaf{k}.seen, mid{k}.seen, root{k}.seen, table{k}["leaf"] is leaf{k}, root{k}.children[1][0] is leaf{k})
print(mid{k}.children[0] is leaf{k}, [x is leaf{k} for x in getattr(mid{k}, "extra", [])], len(root{k}.children))
"""
WALKS = {
    # a walk that mutates every node reached from one input
    "walk": "def visit(n):\n    n.seen += 1\n    for c in n.children:\n        visit(c[0] if isinstance(c, tuple) else c)\n"
    "with sc.checkpoint('{k}'):\n    visit(root{k})",
    # nodes reached through a dict input, one given a new attribute
    "through_dict": "with sc.checkpoint('{k}'):\n    for n in table{k}['all']:\n        n.seen = 5\n"
    "    table{k}['leaf'].seen = 7\n    table{k}['all'][1].extra = [table{k}['leaf']]",
    # a new node added that refers to kept ones; a result that holds a kept node
    "new_node": "with sc.checkpoint('{k}'):\n    root{k}.children.append(Node('new', [leaf{k}]))\n    leaf{k}.seen = 2\n"
    "    found = {'m': mid{k}}\nprint('== found')\nprint(found['m'] is mid{k}, root{k}.children[-1].children[0] is leaf{k})",
}
CONTAINERS = {
    "deque": "import collections\nq = collections.deque([1], maxlen=3)\nalias = {'q': q}\n"
    "with sc.checkpoint('{k}'):\n    q.extend([2, 3, 4])\nprint('== {k}')\nprint(q, alias['q'] is q, alias['q'])\n",
    "defaultdict": "import collections\nd = collections.defaultdict(list)\nheld = [d]\n"
    "with sc.checkpoint('{k}'):\n    d['k'].append(1)\nprint('== {k}')\nprint(dict(d), held[0] is d, dict(held[0]))\n",
    "bytearray": "buf = bytearray(b'a')\nviews = [buf]\nwith sc.checkpoint('{k}'):\n    buf += b'bc'\n    buf.extend(b'd')\n"
    "print('== {k}')\nprint(buf, views[0] is buf, views[0])\n",
    "bytearray_local": "def main():\n    buf = bytearray(b'a')\n    views = [buf]\n    with sc.checkpoint('{k}'):\n"
    "        buf += b'b'\n    print('== {k}')\n    print(buf, views[0] is buf, views[0])\nmain()\n",
    "nested_array": "import numpy as np\nparts = {'w': np.zeros(3)}\nw = parts['w']\nholder = {'parts': parts}\n"
    "with sc.checkpoint('{k}'):\n    holder['parts']['w'] += 1\n    holder['parts']['n'] = 1\n"
    "print('== {k}')\nprint(w, parts, parts['w'] is w)\n",
}
# ``with checkpoint(...) as cp`` in a loop binds the current checkpoint
LOOP = "print('== loop')\nfor i in range(2):\n    with sc.checkpoint('loop_a' if i else 'loop_b') as cp:\n        y = i\n    print(cp.name, y)\n"


def test_user_object_graphs_and_containers_mutated_by_the_block_keep_their_identity(project: Project) -> None:
    script = NODE + cases(GRAPH, WALKS) + cases("{block}", CONTAINERS) + LOOP
    out = check(project, script, [*WALKS, "found", *CONTAINERS, "loop"], [*WALKS, *CONTAINERS, "loop_a", "loop_b"])
    for name in WALKS:
        assert " True True\n" in out[name], (name, out[name])
    assert out["found"] == "True True\n", out["found"]
    for name in CONTAINERS:
        assert "True" in out[name], (name, out[name])
    assert out["loop"] == "loop_b 0\nloop_a 1\n", out["loop"]


def test_a_rewired_restore_in_process(tmp_path) -> None:
    """The record and the rewiring without a process: a kept object two levels down takes the
    saved content, a replaced one is left alone, and a new tuple refers to the kept object."""
    import copy

    from statecache._identity import Before, Rewire, kept

    class Box:
        def __init__(self, v):
            self.v = v

    inner, old = Box(1), Box(2)
    outer = {"inner": inner, "old": old}
    before = Before({"outer": outer})
    inner.v = 10
    outer["old"] = Box(20)
    outer["pair"] = (inner, "x")
    record = kept({"outer": outer}, before, {"outer": "outer"})
    assert record is not None
    saved_state, saved_record = copy.deepcopy(({"outer": outer}, record))  # as a load gives them
    now_inner, now_old = Box(1), Box(2)
    now = {"inner": now_inner, "old": now_old}
    rewire = Rewire(saved_record, lambda label: {"outer": now}[label])
    assert rewire.pair(saved_state["outer"], now)
    rewire.run()
    assert rewire.sub(saved_state["outer"]) is now
    assert now["inner"] is now_inner and now_inner.v == 10
    assert now_old.v == 2 and now["old"] is not now_old and now["old"].v == 20
    assert now["pair"][0] is now_inner
