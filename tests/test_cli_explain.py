"""``statecache show NAME --explain``, as a user meets it: real scripts fill a real cache, a
change between two runs makes a second version, and the command (a subprocess) says what
differs, in text and as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import Project, subprocess_env

SCRIPT = """\
import random
import sys

import statecache

n = int(sys.argv[1])
random.seed(n)
with statecache.checkpoint("feat", files=["data.txt"]{options}):
    y = n * 2 + random.random(){extra}
print(y)
"""


def write(project: Project, extra: str = "", options: str = "") -> None:
    project.write("s.py", SCRIPT.format(extra=extra, options=options))


def explain(project: Project, *args: str, name: str = "feat") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "statecache", "show", name, "--explain", *args],
        cwd=project.root, env=subprocess_env(), capture_output=True, text=True, timeout=60,
    )


def explain_json(project: Project) -> dict:
    r = explain(project, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def keys_by_creation(project: Project) -> list[str]:
    """The entries' keys, newest first, by the order the runs made them."""
    return [p.stem for p in sorted(project.entries("feat"), key=lambda p: p.stat().st_ctime_ns,
                                   reverse=True)]


def two_runs(project: Project, first: str, second: str) -> None:
    project.write("data.txt", "1\n")
    r = project.run("s.py", first)
    assert r.computed("feat")
    r = project.run("s.py", second)
    assert r.computed("feat")


def test_a_changed_input_and_seed_are_named(project: Project) -> None:
    write(project)
    two_runs(project, "3", "4")
    newest, older = keys_by_creation(project)

    r = explain(project)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("feat: 2 versions in ")
    headers = [line.split()[0] for line in lines if re.match(r"  [0-9a-f]{8}  ", line)]
    assert headers == [newest[:8], older[:8]]
    assert any(line.startswith(f"{newest[:8]} against {older[:8]}: input 'n' changed")
               for line in lines)
    assert any(line.split()[:3] == ["input", "n", "changed"] for line in lines)
    # the seed above the block changed the random state the block started from
    assert any(line.split()[:3] == ["rng", "random", "changed"] for line in lines)

    data = explain_json(project)
    assert [v["key"] for v in data["versions"]] == [newest, older]
    assert data["versions"][0]["components"]["inputs"]["n"] != data["versions"][1]["components"][
        "inputs"]["n"]
    cmp = data["comparison"]
    assert (cmp["newer"], cmp["older"]) == (newest, older)
    assert cmp["reasons"][0] == "input 'n' changed"  # (sys.argv, read by the script, may follow)
    assert all(r.startswith("input '") and r.endswith("' changed") for r in cmp["reasons"])
    changed = {(d["component"], d["label"], d["change"]) for d in cmp["differences"]}
    assert {("inputs", "n", "changed"), ("rng", "random", "changed")} <= changed
    assert {c for c, _, _ in changed} == {"inputs", "rng"}
    assert all(change == "changed" for _, _, change in changed)


def test_a_code_change_and_its_new_input(project: Project) -> None:
    project.write("data.txt", "1\n")
    write(project)
    project.run("s.py", "3")
    write(project, extra=" + m")
    text = project.root.joinpath("s.py").read_text()
    project.write("s.py", text.replace("random.seed(n)", "random.seed(n)\nm = 5"))
    assert project.run("s.py", "3").computed("feat")

    r = explain(project)
    assert r.returncode == 0, r.stderr
    assert ": code changed" in r.stdout
    assert any(line.split()[:2] == ["code", "changed"] for line in r.stdout.splitlines())
    assert any(line.split()[:3] == ["input", "m", "new"] for line in r.stdout.splitlines())
    # the entries store the block's text: the changed line is shown, numbered as in the file
    assert any(line.split()[:1] == ["+"] and "+ m" in line for line in r.stdout.splitlines()), r.stdout

    cmp = explain_json(project)["comparison"]
    assert cmp["reasons"] == ["code changed"]
    assert {(d["component"], d["label"], d["change"]) for d in cmp["differences"]} == {
        ("code", None, "changed"), ("inputs", "m", "new")}


def test_a_version_string_change(project: Project) -> None:
    project.write("data.txt", "1\n")
    write(project, options=', version="1"')
    project.run("s.py", "3")
    write(project, options=', version="2"')
    assert project.run("s.py", "3").computed("feat")

    r = explain(project)
    assert r.returncode == 0, r.stderr
    assert "version='1' -> version='2'" in r.stdout


def test_a_changed_data_file(project: Project) -> None:
    write(project)
    project.write("data.txt", "1\n")
    project.run("s.py", "3")
    project.write("data.txt", "2\n")
    assert project.run("s.py", "3").computed("feat")

    r = explain(project)
    assert r.returncode == 0, r.stderr
    assert ": file data.txt changed" in r.stdout
    assert any(line.split()[:3] == ["file", "data.txt", "changed"] for line in r.stdout.splitlines())
    cmp = explain_json(project)["comparison"]
    assert cmp["reasons"] == ["file data.txt changed"]
    assert [(d["component"], d["label"], d["change"]) for d in cmp["differences"]] == [
        ("files", "data.txt", "changed")]


def test_one_version_has_nothing_to_compare(project: Project) -> None:
    write(project)
    project.write("data.txt", "1\n")
    project.run("s.py", "3")
    r = explain(project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("feat: 1 version in ")
    assert "nothing to compare" in r.stdout
    data = explain_json(project)
    assert data["comparison"] is None
    assert len(data["versions"]) == 1
    assert data["versions"][0]["components"]["files"] == {"data.txt": data["versions"][0][
        "components"]["files"]["data.txt"]}


def test_an_unknown_name_exits_1_and_lists_the_names(project: Project) -> None:
    write(project)
    project.write("data.txt", "1\n")
    project.run("s.py", "3")
    r = explain(project, name="nosuch")
    assert r.returncode == 1
    assert "nothing named 'nosuch'" in r.stderr and "names here: feat" in r.stderr
    assert r.stdout == ""


def test_no_cache_exits_1(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "statecache", "show", "feat", "--explain", "--dir",
         str(tmp_path / "none")], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "no cache directory" in r.stderr


def test_a_damaged_version_is_listed_and_the_readable_ones_compared(project: Project) -> None:
    write(project)
    project.write("data.txt", "1\n")
    for n in ("3", "4", "5"):
        project.run("s.py", n)
    newest, middle, oldest = keys_by_creation(project)
    path = project.cache / "feat" / f"{middle}.sc"
    data = bytearray(path.read_bytes())
    data[:8] = b"NOTSTATE"  # not an entry any more: its metadata cannot be read
    path.write_bytes(bytes(data))

    r = explain(project)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("feat: 3 versions in ")
    assert "unreadable:" in r.stdout
    assert f"{newest[:8]} against {oldest[:8]}: input 'n' changed" in r.stdout  # not {middle}
    out = json.loads(explain(project, "--json").stdout)
    assert [v["key"] for v in out["versions"]] == [newest, oldest, middle]
    assert out["versions"][2]["error"] and out["versions"][2]["components"] is None


def test_a_cached_setup_function_is_explained_too(project: Project) -> None:
    project.write("f.py", """\
        import sys

        import statecache

        @statecache.cached_setup
        def load(n):
            return list(range(n))

        print(len(load(int(sys.argv[1]))))
        """)
    project.run("f.py", "3")
    assert project.run("f.py", "4").computed("load")
    r = explain(project, name="load")
    assert r.returncode == 0, r.stderr
    assert "(cached_setup)" in r.stdout
    assert any(line.split()[:3] == ["input", "n", "changed"] for line in r.stdout.splitlines()), r.stdout


def test_changed_lines_when_entries_store_the_block_text(tmp_path: Path) -> None:
    """The engine does not store the block's text yet; when an entry has it (``block_source``),
    the code difference lists the changed lines with their numbers in the file."""
    from statecache.entry.writer import write_entry
    from statecache.store.store import Store

    store = Store(str(tmp_path / ".statecache"))
    body = ["with statecache.checkpoint('feat'):", "    x = 1", "    y = np.tanh(x)", "    z = 3"]
    os.makedirs(store.name_dir("feat"))
    for i, (created, edit) in enumerate([(1.0, "np.tanh"), (2.0, "np.sin")]):
        key = f"{i + 1:032x}"
        text = "\n".join(body).replace("np.tanh", edit)
        write_entry(store.entry_path("feat", key), {"x": 1}, {
            "name": "feat", "key": key, "kind": "checkpoint",
            "source": {"file": str(tmp_path / "s.py"), "line": 7}, "created": created,
            "components": {"code": f"{i:032x}", "source": "s.py", "inputs": {}, "files": {},
                           "env": "e"},
            "files": [], "block_source": {"first_line": 7, "text": text},
        })
    r = subprocess.run(
        [sys.executable, "-m", "statecache", "show", "feat", "--explain", "--dir",
         str(store.root)], env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [line.strip() for line in r.stdout.splitlines()]
    assert "-    9     y = np.tanh(x)" in lines
    assert "+    9     y = np.sin(x)" in lines
    assert "z = 3" not in r.stdout and "not known" not in r.stdout
