"""The parity matrix: every key rule through every front end, so that the front ends cannot drift.

For each (rule, front end): run once (computes), again unchanged (hits, and shows what the
computing run showed), apply the rule's change, run again: a change that can change the result
recomputes and shows what a fresh run with ``STATECACHE_DISABLE=1`` shows; a comment-only edit
hits. The programs are rendered from one description by the adapters of ``_frontends``.

One program per front end holds every rule that applies to it, each rule under its own names
(its blocks, variables, files, environment variables and printed lines carry the rule's tag:
``tagged``), and all the changes are made at once: five runs per front end instead of four per
rule. A miss must then be the rule's own: its status line names no other rule's tag, and the
comment-only rules in the same program must still hit. A known hole runs alone, as a strict
xfail (``test_parity_hole``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from _frontends import (
    OUT,
    Block,
    Case,
    LiveFrontEnd,
    NotebookFrontEnd,
    Outcome,
    ScriptFrontEnd,
    child_env,
    make_kernel_spec,
    notebook_cells,
    notebook_with_cells,
    render_cached_setup,
    render_function,
    render_module,
    runs,
)

P = f"print({OUT!r}"  # the start of a print of an OUT line


@dataclass(frozen=True)
class Rule:
    """A key rule: the case before and after the change, and whether the change must miss.
    ``skip`` maps a front end id to why the rule does not apply to it."""

    id: str
    before: Case
    after: Case
    miss: bool = True
    skip: tuple[tuple[str, str], ...] = ()
    reason: str = ""  # what the miss's status line names, the same in every front end
    # front end id (or "*") -> a known stale hole, as a strict xfail: the fix turns it into a
    # failure (XPASS) that asks for the mark to go
    hole: tuple[tuple[str, str], ...] = ()


def simple(body: str, *, defs: str = "", setup: str = "", after: str = "", files: tuple[str, ...] = ()) -> Case:
    """One block ``blk`` that assigns ``result``; ``after`` adds OUT lines to the result's."""
    return Case(
        defs=defs,
        setup=setup,
        blocks=(Block("blk", body, ("result",), files),),
        after=f"{P}, 'result', repr(result))\n" + after,
    )


def edit(case: Case, old: str, new: str) -> Case:
    """The case with ``old`` replaced by ``new`` in its code (exactly once somewhere)."""
    fields = {"defs": case.defs, "setup": case.setup, "after": case.after}
    hits = [k for k, v in fields.items() if old in v]
    blocks = tuple(replace(b, body=b.body.replace(old, new)) for b in case.blocks)
    hits += [b.name for b in case.blocks if old in b.body]
    assert len(hits) == 1, f"{old!r} found in {hits}"
    return replace(
        case,
        blocks=blocks,
        defs=case.defs.replace(old, new),
        setup=case.setup.replace(old, new),
        after=case.after.replace(old, new),
    )


CODE = simple("result = [base * i for i in range(5)]", setup="base = 10")
MUTATION = Case(
    defs="",
    setup="data = [1, 2]\nalias = data",
    blocks=(
        Block("blk", "data.append(3)\nresult = sum(data)", ("result",)),
        Block("down", "total = sum(data) * 2", ("total",)),
    ),
    after=f"{P}, result, total, data, alias, alias is data)",
)
# the helper calls a method of a module imported in another statement: live mode compiles the
# statements one by one, which changes the helper's bytecode but not its source
SAME_FILE = simple("result = helper(4)", defs="import math\n\n\ndef helper(x):\n    return math.floor(x * 10.5)")
MODULE = simple("result = helpers_mod.scale(4)", defs="import helpers_mod")
MODULE = replace(MODULE, files={"helpers_mod.py": "def scale(x):\n    return x * 10\n"})
FROM_MODULE = replace(MODULE, defs="from helpers_mod import scale", blocks=(Block("blk", "result = scale(4)", ("result",)),))
DATA = replace(
    simple("with open('data.txt') as fh:\n    result = sum(map(int, fh.read().split()))"),
    files={"data.txt": "1 2 3\n"},
)
# the block reads the files where statecache cannot see it (a child process): only files= keys them
GLOB_READER = (
    "result = subprocess.run([sys.executable, '-c', "
    "\"import glob; print(sorted(open(p).read().strip() for p in glob.glob('inputs/*.csv')))\"], "
    "capture_output=True, text=True, check=True).stdout.strip()"
)
GLOB = replace(
    simple(GLOB_READER, defs="import subprocess\nimport sys", files=("inputs/*.csv",)),
    files={"inputs/a.csv": "1\n", "inputs/b.csv": "2\n"},
)


def env_case(read: str) -> Case:
    return replace(simple(f"result = int({read}) * 10", defs="import os"), env={"N": "3"})


ENV_HELPER = replace(
    simple("result = read_n() * 10", defs="import os\n\n\ndef read_n():\n    return int(os.environ['N'])"),
    env={"N": "3"},
)


ARGV = replace(simple("result = [int(a) * 10 for a in sys.argv[1:]]", defs="import sys"), argv=("3",))
RNG = simple(
    "result = round(random.random(), 6)",
    defs="import random",
    setup="random.seed(1)",
    after=f"{P}, 'next draw', round(random.random(), 6))",
)
NP_RNG = simple(
    "result = np.random.randint(0, 10**6, 3).tolist()",
    defs="import numpy as np",
    setup="np.random.seed(1)",
    after=f"{P}, 'next draw', int(np.random.randint(0, 10**6)))",
)
# a Generator object is an input the block mutates (by drawing): other names for it must see
# the advanced state after a hit, as after the computing run (filled in place: _setstate.py)
GENERATOR = simple(
    "result = round(float(rng.random()), 6)",
    defs="import numpy as np",
    setup="rng = np.random.default_rng(1)\nalias = rng",
    after=f"{P}, 'next draws', round(float(rng.random()), 6), round(float(alias.random()), 6))",
)
WRITES = simple(
    "with open('out.txt', 'w') as f:\n    f.write('hello ' + str(base))\nresult = len(str(base))",
    setup="base = 10",
    after=f"{P}, 'out.txt', repr(open('out.txt').read()))",
)
NO_ARGV = (
    ("notebook", "a notebook has no sys.argv of its own"),
    ("notebook-with", "a notebook has no sys.argv of its own"),
)
# live mode runs the module-level form; what it changes is how the script is compiled and run
# (statement by statement, in forks), so the variants of a rule already shown there are left
# to the module front end to keep the matrix fast
SAME_AS_MODULE = (
    ("live-then-python", "a variant of a rule this front end already runs: see the module front end"),
    ("notebook-with", "a variant of a rule this front end already runs: see the notebook front end"),
)
GLOB_IN_CELL_HOLE = (
    (
        "notebook-with",
        "files= of a `with checkpoint` in a cell is relative to the kernel's cell file, not the notebook",
    ),
)

RULES = [
    Rule("code-change", CODE, edit(CODE, "range(5)", "range(15)"), reason="code changed"),
    Rule(
        "comment-only",
        CODE,
        edit(CODE, "result = [base * i for i in range(5)]", "# a comment\n\nresult = [ base*i  for i in range( 5 ) ]  # note"),
        miss=False,
    ),
    Rule("input-value", CODE, edit(CODE, "base = 10", "base = 110"), reason="input 'base' changed"),
    Rule("in-place-mutation", MUTATION, edit(MUTATION, "data = [1, 2]", "data = [1, 20]")),
    Rule("helper-same-file", SAME_FILE, edit(SAME_FILE, "x * 10.5", "x * 110.5")),
    Rule(
        "helper-comment-only",
        SAME_FILE,
        edit(SAME_FILE, "    return math.floor(x * 10.5)", "    # scaled\n\n    return math.floor( x*10.5 )  # note"),
        miss=False,
    ),
    Rule("helper-local-module", MODULE, replace(MODULE, files={"helpers_mod.py": "def scale(x):\n    return x * 110\n"})),
    Rule("helper-local-module-from", FROM_MODULE, replace(FROM_MODULE, files={"helpers_mod.py": "def scale(x):\n    return x * 110\n"}), skip=SAME_AS_MODULE),
    Rule("data-file", DATA, replace(DATA, files={"data.txt": "1 2 3 40\n"}), reason="data.txt changed"),
    Rule("files-glob-edit", GLOB, replace(GLOB, files={"inputs/a.csv": "10\n"}), reason="inputs/a.csv", hole=GLOB_IN_CELL_HOLE),
    Rule("files-glob-new", GLOB, replace(GLOB, files={"inputs/c.csv": "3\n"}), reason="inputs/c.csv", skip=SAME_AS_MODULE),
    Rule("env-item", env_case("os.environ['N']"), replace(env_case("os.environ['N']"), env={"N": "30"})),
    Rule("env-get", env_case("os.environ.get('N')"), replace(env_case("os.environ.get('N')"), env={"N": "30"}), skip=SAME_AS_MODULE),
    Rule("env-getenv", env_case("os.getenv('N')"), replace(env_case("os.getenv('N')"), env={"N": "30"}), skip=SAME_AS_MODULE),
    Rule("env-in-helper", ENV_HELPER, replace(ENV_HELPER, env={"N": "30"})),
    Rule("sys-argv", ARGV, replace(ARGV, argv=("30",)), skip=NO_ARGV, reason="sys.argv"),
    Rule("random-seed", RNG, edit(RNG, "random.seed(1)", "random.seed(12)")),
    Rule("numpy-seed", NP_RNG, edit(NP_RNG, "np.random.seed(1)", "np.random.seed(12)"), skip=SAME_AS_MODULE),
    Rule(
        "numpy-generator-input",
        GENERATOR,
        edit(GENERATOR, "default_rng(1)", "default_rng(12)"),
        skip=SAME_AS_MODULE,
    ),
    Rule("writes-file", WRITES, edit(WRITES, "base = 10", "base = 110")),
]

FRONT_ENDS = ["module", "function", "cached_setup", "notebook", "notebook-with", "live-then-python"]
KERNEL = "statecache-parity"


@pytest.fixture(scope="module")
def kernel_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return make_kernel_spec(tmp_path_factory.mktemp("kernels"), KERNEL)


def make_front_end(ident: str, kernel_dirs: Callable[[], list[str]]) -> ScriptFrontEnd | NotebookFrontEnd:
    if ident == "module":
        return ScriptFrontEnd(ident, render_module)
    if ident == "function":
        return ScriptFrontEnd(ident, render_function)
    if ident == "cached_setup":
        return ScriptFrontEnd(ident, render_cached_setup)
    if ident in ("notebook", "notebook-with"):
        pytest.importorskip("nbclient")
        pytest.importorskip("ipykernel")
        cells = notebook_cells if ident == "notebook" else notebook_with_cells
        return NotebookFrontEnd(kernel_dirs(), KERNEL, ident, cells)
    pytest.importorskip("pexpect")
    pytest.importorskip("watchfiles")
    if not hasattr(os, "fork"):
        pytest.skip("live mode needs fork")
    return LiveFrontEnd()


@pytest.fixture
def front(request: pytest.FixtureRequest) -> Iterator[ScriptFrontEnd | NotebookFrontEnd]:
    fe = make_front_end(request.param, lambda: request.getfixturevalue("kernel_dirs"))
    try:
        yield fe
    finally:
        fe.close()


# the names a rule's program defines (variables, helpers, modules, files, directories, an
# environment variable): ``tagged`` gives each its rule's tag, so rules share one program
NAMES = ("result", "base", "data", "alias", "total", "helper", "helpers_mod", "scale", "rng", "read_n", "inputs", "out", "N")
NAMES_RE = re.compile(r"\b(" + "|".join(NAMES) + r")\b")


def tag_of(rule: Rule) -> str:
    return rule.id.replace("-", "_")


def tagged(case: Case, tag: str) -> Case:
    """The case with every name of ``NAMES`` suffixed by ``_<tag>``, its blocks named for the tag
    and its printed lines starting ``OUT <tag>``: rules tagged apart share nothing."""

    def sub(text: str) -> str:
        return NAMES_RE.sub(lambda m: f"{m.group(1)}_{tag}", text).replace(f"print({OUT!r}", f"print('{OUT}{tag}'")

    blocks = tuple(
        Block(tag if b.name == "blk" else f"{tag}_{b.name}", sub(b.body), b.assigns and tuple(map(sub, b.assigns)), tuple(map(sub, b.files)))
        for b in case.blocks
    )
    return Case(
        defs=sub(case.defs),
        setup=sub(case.setup),
        blocks=blocks,
        after=sub(case.after),
        files={sub(k): sub(v) for k, v in case.files.items()},
        env={sub(k): v for k, v in case.env.items()},
        argv=case.argv,
    )


def merged(rules: list[Rule], side: str) -> Case:
    """One program holding the ``before`` (or ``after``) case of every rule, each tagged apart."""
    cases = [tagged(getattr(rule, side), tag_of(rule)) for rule in rules]
    assert sum(bool(c.argv) for c in cases) <= 1, "one rule at most may own sys.argv"
    return Case(
        defs="\n\n\n".join(c.defs.strip("\n") for c in cases if c.defs.strip()),
        setup="\n".join(c.setup.strip("\n") for c in cases if c.setup.strip()),
        blocks=tuple(b for c in cases for b in c.blocks),
        after="".join(c.after.rstrip("\n") + "\n" for c in cases),
        files={k: v for c in cases for k, v in c.files.items()},
        env={k: v for c in cases for k, v in c.env.items()},
        argv=tuple(a for c in cases for a in c.argv),
    )


def hole_of(rule: Rule, front_id: str) -> str:
    return dict(rule.hole).get(front_id) or dict(rule.hole).get("*") or ""


def out_of(outcome: Outcome, tag: str) -> list[str]:
    """The lines one rule printed in a merged program."""
    return [line for line in outcome.out if line.split()[1:2] == [tag]]


def listed(root: Path) -> list[dict[str, Any]]:
    """``statecache ls --json`` on the project's cache: the entries as the CLI reads them."""
    proc = subprocess.run(
        [sys.executable, "-m", "statecache", "ls", "--json", "--dir", str(root / ".statecache")],
        cwd=root,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    entries: list[dict[str, Any]] = json.loads(proc.stdout)["entries"]
    return entries


def source_file(front: ScriptFrontEnd | NotebookFrontEnd, root: Path) -> str:
    return str(root / ("analysis.ipynb" if front.id.startswith("notebook") else "script.py"))


def unchanged_rerun(rules: list[Rule], first: Outcome, second: Outcome, root: Path) -> list[str]:
    """What is wrong with the unchanged rerun: every block hits and shows what the first run showed."""
    problems = []
    for rule in rules:
        tag = tag_of(rule)
        for block in tagged(rule.before, tag).blocks:
            if not first.computed(block.name):
                problems.append(f"{rule.id}: the first run did not compute {block.name!r}")
            if not second.hit(block.name) or runs(root, block.name) != 1:
                problems.append(f"{rule.id}: the unchanged rerun of {block.name!r} did not hit")
        if not out_of(first, tag):
            problems.append(f"{rule.id}: printed nothing")
        if out_of(second, tag) != out_of(first, tag):
            problems.append(f"{rule.id}: a hit showed what the computing run did not: {out_of(second, tag)} != {out_of(first, tag)}")
    return problems


def changed_rerun(rules: list[Rule], first: Outcome, third: Outcome, fresh: Outcome, root: Path) -> list[str]:
    """What is wrong with the run after every rule's change: each shows what a fresh run shows,
    a rule that must miss recomputes for its own change (its status line names no other rule),
    and a comment-only edit hits."""
    tags = [tag_of(rule) for rule in rules]
    problems = []
    for rule, tag in zip(rules, tags, strict=True):
        if out_of(third, tag) != out_of(fresh, tag):
            problems.append(f"{rule.id}: stale after the change: {out_of(third, tag)} != fresh {out_of(fresh, tag)}")
        if not rule.miss:
            if not third.hit(tag) or runs(root, tag) != 1:
                problems.append(f"{rule.id}: a comment-only edit recomputed")
            continue
        if out_of(fresh, tag) == out_of(first, tag):
            problems.append(f"{rule.id}: the change must change the result (else the rule proves nothing)")
        if not third.computed(tag) or runs(root, tag) != 2:
            problems.append(f"{rule.id}: the change did not recompute {tag!r}")
        why = [line for line in third.status if f"'{tag}' computing" in line]
        reason = tagged(replace(rule.before, defs=rule.reason), tag).defs
        if not all(reason in line for line in why):
            problems.append(f"{rule.id}: the miss does not say {reason!r}: {why}")
        others = [t for t in tags if t != tag and any(re.search(rf"\b{t}\b", line) for line in why)]
        if others:
            problems.append(f"{rule.id}: missed for another rule's change ({others}): {why}")
    return problems


def programs(front_id: str) -> dict[str, list[Rule]]:
    """The rules that apply to a front end (a known hole aside), by the program that holds them:
    one for all, but a rule that changes the arguments has its own, since ``sys.argv[1:]`` is an
    input of every block."""
    rules = [r for r in RULES if not dict(r.skip).get(front_id) and not hole_of(r, front_id)]
    out = {"rules": [r for r in rules if not r.before.argv and not r.after.argv]}
    out.update({r.id: [r] for r in rules if r.before.argv or r.after.argv})
    return out


MATRIX = [(front, program) for front in FRONT_ENDS for program in programs(front)]


@pytest.mark.parametrize(
    ("front", "program"),
    [pytest.param(front, program, id=f"{front}-{program}") for front, program in MATRIX],
    indirect=["front"],
)
def test_parity(front: ScriptFrontEnd | NotebookFrontEnd, program: str, tmp_path: Path) -> None:
    """Every rule of one program computes, hits unchanged, and after all the changes at once each
    recomputes or hits as it must and shows what a fresh run shows. The entries read back through
    the CLI (one metadata schema: the block's variable, its source file), and two versions of a
    block's code coexist."""
    rules = programs(front.id)[program]
    before, after = merged(rules, "before"), merged(rules, "after")
    code_tag = tag_of(rules[0])
    root = tmp_path / "project"
    root.mkdir()
    front.write(root, before)

    first = front.first(root, before)
    second = front.again(root, before)
    problems = unchanged_rerun(rules, first, second, root)
    assert not problems, "\n".join(problems) + "\n" + second.text
    entries = {e["name"]: e for e in listed(root)}
    assert sorted(entries) == sorted(b.name for b in before.blocks), sorted(entries)
    entry = entries[code_tag]
    assert entry["error"] is None and f"result_{code_tag}" in entry["variables"], entry
    if code_tag == tag_of(RULES[0]):
        assert entry["variables"][f"result_{code_tag}"]["type"] == "list", entry
    if front.id != "notebook-with":  # the known hole: test_a_with_checkpoint_cell_entry_names_its_notebook
        assert entry["source"]["file"] == source_file(front, root), entry

    front.write(root, after)
    third = front.again(root, after)
    fresh = front.fresh(root, after)
    problems = changed_rerun(rules, first, third, fresh, root)
    assert not problems, "\n".join(problems) + "\n" + third.text
    assert [e["name"] for e in listed(root)].count(code_tag) == 2
    front.write(root, before)
    assert front.again(root, before).hit(code_tag), "switching the code back must hit its version"


HOLES = [(rule, front) for rule in RULES for front in FRONT_ENDS if hole_of(rule, front) and not dict(rule.skip).get(front)]


@pytest.mark.parametrize(
    ("rule", "front"),
    [pytest.param(rule, front, id=f"{rule.id}-{front}") for rule, front in HOLES],
    indirect=["front"],
)
def test_parity_hole(
    rule: Rule, front: ScriptFrontEnd | NotebookFrontEnd, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A known stale hole, alone in its program, as a strict xfail: the fix turns it into a
    failure (XPASS) that asks for the mark to go, and the rule then joins ``test_parity``."""
    request.applymarker(pytest.mark.xfail(strict=True, reason=hole_of(rule, front.id)))
    root = tmp_path / "project"
    root.mkdir()
    front.write(root, rule.before)

    first = front.first(root, rule.before)
    assert first.computed("blk"), first.text
    second = front.again(root, rule.before)
    for block in rule.before.blocks:
        assert second.hit(block.name), f"unchanged rerun of {block.name!r} did not hit\n{second.text}"
        assert runs(root, block.name) == 1
    assert first.out, first.text
    assert second.out == first.out, "a hit showed what the computing run did not"

    front.write(root, rule.after)
    third = front.again(root, rule.after)
    fresh = front.fresh(root, rule.after)
    assert third.out == fresh.out, f"after the change ({rule.id}) the run shows a stale result\n{third.text}"
    assert fresh.out != first.out, "the change must change the result (else the rule proves nothing)"
    assert third.computed("blk"), third.text
    assert runs(root, "blk") == 2
    why = [line for line in third.status if "'blk' computing" in line]
    assert all(rule.reason in line for line in why), f"the miss does not say {rule.reason!r}: {why}"


@pytest.mark.xfail(
    strict=True, reason="a `with checkpoint` in a cell records the kernel's cell file as its source, not the notebook"
)
@pytest.mark.parametrize("front", ["notebook-with"], indirect=True)
def test_a_with_checkpoint_cell_entry_names_its_notebook(front: NotebookFrontEnd, tmp_path: Path) -> None:
    """The CLI names the notebook as the source of an entry saved by ``with checkpoint`` in a cell."""
    root = tmp_path / "project"
    root.mkdir()
    front.write(root, RULES[0].before)
    front.first(root, RULES[0].before)
    [entry] = listed(root)
    assert entry["source"]["file"] == str(root / "analysis.ipynb"), entry
