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


def check(project: Project, script: str) -> str:
    project.write("script.py", HEAD + script)
    computed = project.run("script.py")
    assert "'a' computing" in computed.stderr, computed.stderr
    expected = fresh(project, "script.py")
    assert computed.stdout == expected
    for _ in range(2):
        hit = project.run("script.py")
        assert hit.hit("a"), hit.stderr
        assert hit.stdout == expected, hit.stderr
    return expected


PIPELINE = """
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
y = np.array([0, 0, 1, 1])
clf = LogisticRegression()
scaler = StandardScaler()
pipe = Pipeline([("scale", scaler), ("clf", clf)])
{block}
print(hasattr(clf, "coef_"), hasattr(scaler, "mean_"), pipe.steps[1][1] is clf)
print(np.round(clf.coef_, 3).tolist() if hasattr(clf, "coef_") else None)
"""


@pytest.mark.parametrize("block", [
    "with sc.checkpoint('a'):\n    pipe.fit(X, y)",
    "def main():\n    with sc.checkpoint('a'):\n        pipe.fit(X, y)\nmain()",
    "@sc.cached_setup(name='a')\ndef fit(p, X, y):\n    p.fit(X, y)\nfit(pipe, X, y)",
    "with sc.checkpoint('a'):\n    model = pipe.fit(X, y)\nassert model is pipe",
    "@sc.cached_setup(name='a')\ndef fit(p, X, y):\n    return p.fit(X, y)\nassert fit(pipe, X, y) is pipe",
])
def test_a_fitted_pipeline_step_held_under_another_name_is_fitted(project: Project, block: str) -> None:
    pytest.importorskip("sklearn")
    out = check(project, PIPELINE.replace("{block}", block))
    assert out.startswith("True True True\n")


def test_a_step_the_block_replaced_keeps_its_old_state(project: Project) -> None:
    # The block swaps in a new classifier: the old one, held as ``clf``, was never fitted, and a
    # hit must not fit it (a merge by position would).
    pytest.importorskip("sklearn")
    block = "with sc.checkpoint('a'):\n    pipe.steps[1] = ('clf', LogisticRegression(C=0.5))\n    pipe.fit(X, y)"
    out = check(project, PIPELINE.replace("{block}", block) + "print(pipe.steps[1][1].C)\n")
    assert out.startswith("False True False\n") and out.endswith("0.5\n")


GRAPH = """
class Node:
    def __init__(self, name, children=()):
        self.name, self.children, self.seen = name, list(children), 0
leaf = Node("leaf")
mid = Node("mid", [leaf])
root = Node("root", [mid, (leaf, "tag")])
table = {"leaf": leaf, "all": [root, mid]}
{block}
print(leaf.seen, mid.seen, root.seen, table["leaf"] is leaf, root.children[1][0] is leaf)
print(mid.children[0] is leaf, [x is leaf for x in getattr(mid, "extra", [])], len(root.children))
"""


@pytest.mark.parametrize("block", [
    # a walk that mutates every node reached from one input
    "def visit(n):\n    n.seen += 1\n    for c in n.children:\n        visit(c[0] if isinstance(c, tuple) else c)\n"
    "with sc.checkpoint('a'):\n    visit(root)",
    # nodes reached through a dict input, one given a new attribute
    "with sc.checkpoint('a'):\n    for n in table['all']:\n        n.seen = 5\n    table['leaf'].seen = 7\n"
    "    table['all'][1].extra = [table['leaf']]",
    # a new node added that refers to kept ones; a result that holds a kept node
    "with sc.checkpoint('a'):\n    root.children.append(Node('new', [leaf]))\n    leaf.seen = 2\n"
    "    found = {'m': mid}\nprint(found['m'] is mid, root.children[-1].children[0] is leaf)",
])
def test_a_user_object_graph_mutated_by_the_block_keeps_its_identity(project: Project, block: str) -> None:
    out = check(project, GRAPH.replace("{block}", block))
    assert " True True\n" in out


def test_a_checkpoint_bound_with_as_in_a_loop_is_the_current_one(project: Project) -> None:
    check(project, "for i in range(2):\n    with sc.checkpoint('a' if i else 'b') as cp:\n        y = i\n"
          "    print(cp.name, y)\n")


@pytest.mark.parametrize("script", [
    "import collections\nq = collections.deque([1], maxlen=3)\nalias = {'q': q}\n"
    "with sc.checkpoint('a'):\n    q.extend([2, 3, 4])\nprint(q, alias['q'] is q, alias['q'])",
    "import collections\nd = collections.defaultdict(list)\nholder = [d]\n"
    "with sc.checkpoint('a'):\n    d['k'].append(1)\nprint(dict(d), holder[0] is d, dict(holder[0]))",
    "buf = bytearray(b'a')\nviews = [buf]\nwith sc.checkpoint('a'):\n    buf += b'bc'\n    buf.extend(b'd')\n"
    "print(buf, views[0] is buf, views[0])",
    "def main():\n    buf = bytearray(b'a')\n    views = [buf]\n    with sc.checkpoint('a'):\n        buf += b'b'\n"
    "    print(buf, views[0] is buf, views[0])\nmain()",
    "import numpy as np\nparts = {'w': np.zeros(3)}\nw = parts['w']\nholder = {'parts': parts}\n"
    "with sc.checkpoint('a'):\n    holder['parts']['w'] += 1\n    holder['parts']['n'] = 1\nprint(w, parts, parts['w'] is w)",
])
def test_containers_mutated_by_the_block_keep_their_identity(project: Project, script: str) -> None:
    out = check(project, script)
    assert "True" in out


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
