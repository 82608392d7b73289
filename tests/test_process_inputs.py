"""Inputs a block takes from the process outside any file the parent's audit hook sees:
standard input, the files forked workers of the block read, and a project copied with its
cache. Real scripts run in subprocesses against a cache under tmp_path; each case checks the
value after a change against a fresh ``STATECACHE_DISABLE=1`` run and that an unchanged rerun
hits, so a library that never caches cannot pass. The cases of one kind share one script (one
checkpoint per case, ``tests/multicase.py``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Project, Run, subprocess_env
from multicase import assert_cases, case_values

from statecache.key.process import scan
from statecache.key.stdin import reads_stdin

HEAD = "import os, sys, fileinput\nimport statecache as sc\n"


def run_fed(project: Project, stdin: Path | str, env: dict[str, str] | None = None) -> Run:
    """``python script.py < stdin`` for a file, ``echo text | python script.py`` for a str."""
    args = {"cwd": project.root, "env": subprocess_env(**(env or {})), "capture_output": True, "timeout": 120}
    if isinstance(stdin, str):
        proc = subprocess.run([sys.executable, "script.py"], input=stdin.encode(), **args)
    else:
        with open(stdin, "rb") as f:
            proc = subprocess.run([sys.executable, "script.py"], stdin=f, **args)
    run = Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    assert run.returncode == 0, run.stderr
    return run


# -- standard input ---------------------------------------------------------------------------

STDIN_CASES = {  # case -> the block's body; each block starts from the top of standard input
    "input": "v = [input(), input()]",
    "read": "v = sys.stdin.read().split()",
    "readline": "v = sys.stdin.readline().strip()",
    "iterate": "v = [line.strip() for line in sys.stdin]",
    "buffer": "v = sys.stdin.buffer.read().decode().split()",
    "fileinput": "v = [line.strip() for line in fileinput.input()]\n    fileinput.close()",
    "helper": "v = read_all()",
}
STDIN_SCRIPT = HEAD + """
def read_all():
    return sys.stdin.read().split()

""" + "".join(f"""
sys.stdin.seek(0)
with sc.checkpoint({case!r}):
    {body}
print('y', {case!r}, v)
""" for case, body in STDIN_CASES.items()) + """
with sc.checkpoint('unread'):
    v = 5
print('y', 'unread', v)
"""


def test_a_block_reading_a_file_given_as_standard_input(project: Project) -> None:
    cases = list(STDIN_CASES)
    project.write("script.py", STDIN_SCRIPT)
    data = project.write("in.txt", "1\n2 3\n")
    other = project.write("other.txt", "1\n2 3\n")  # the same content under another name
    assert_cases(run_fed(project, data), cases + ["unread"], hit=False)
    assert_cases(run_fed(project, other), cases + ["unread"], hit=True)
    project.write("in.txt", "4\n5\n")
    fresh = case_values(run_fed(project, data, {"STATECACHE_DISABLE": "1"}))
    assert fresh["read"] == "['4', '5']"
    changed = run_fed(project, data)
    assert_cases(changed, cases, hit=False, fresh=fresh)
    assert_cases(changed, ["unread"], hit=True, fresh=fresh)  # a block not reading it still hits
    assert_cases(run_fed(project, data), cases + ["unread"], hit=True, fresh=fresh)


def test_a_block_reading_a_pipe_is_computed_on_every_run(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('piped'):
    v = sys.stdin.read().split()
print('y', 'piped', v)
with sc.checkpoint('unread'):
    w = 5
print('y', 'unread', w)
""")
    run_fed(project, "a b\n")
    second = run_fed(project, "c\n")
    assert case_values(second)["piped"] == "['c']" and second.computed("piped"), second.stderr
    assert second.hit("unread"), second.stderr


def test_a_block_reading_a_pipe_is_not_saved_and_says_why(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('piped'):
    v = input()
print('y', 'piped', v)
""")
    run = run_fed(project, "a\n")
    assert "'piped'" in run.stderr and "not saved" in run.stderr and "above the block" in run.stderr
    assert not project.entries("piped")


def test_a_hit_leaves_standard_input_where_the_block_did(project: Project) -> None:
    project.write("script.py", HEAD + """
with sc.checkpoint('header'):
    v = sys.stdin.readline().strip()
print('y', 'header', v)
with sc.checkpoint('rest'):
    v = sys.stdin.read().split()
print('y', 'rest', v)
print('y', 'after', sys.stdin.read())
""")
    data = project.write("in.txt", "h\n1 2\n")
    fresh = case_values(run_fed(project, data, {"STATECACHE_DISABLE": "1"}))
    assert fresh["rest"] == "['1', '2']"
    assert_cases(run_fed(project, data), ["header", "rest", "after"][:2], hit=False, fresh=fresh)
    assert_cases(run_fed(project, data), ["header", "rest"], hit=True, fresh=fresh)
    assert case_values(run_fed(project, data)) == fresh


READS = ["input()", "sys.stdin.read()", "sys.__stdin__.readline()", "for x in sys.stdin: pass",
         "from sys import stdin\nstdin.read()", "for x in stdin: pass", "sys.stdin.buffer.read()",
         "fileinput.input()", "fileinput.FileInput()", "fileinput.input(sys.argv[1:])", "fileinput.input(['-'])",
         "fileinput.input(files=names)", "open(0).read()", "os.read(0, 10)",
         "open('/dev/stdin').read()", "json.load(sys.stdin)", "pd.read_csv(sys.stdin)"]
NOT_READS = ["proc.stdin.write(b'x')", "subprocess.run(cmd, stdin=stdin)", "fileinput.input(['a.txt'])",
             "fileinput.input(files=('a.txt', 'b.txt'))", "fileinput.input('a.txt')", "open('0')", "os.read(fd, 10)", "inputs = 3", "x.input()"]


@pytest.mark.parametrize("code", READS)
def test_code_reading_standard_input_is_found(code: str) -> None:
    assert "stdin" in scan([ast.parse(code)])[1]


@pytest.mark.parametrize("code", NOT_READS)
def test_code_not_reading_standard_input_is_not(code: str) -> None:
    tree = ast.parse(code)
    assert not any(reads_stdin(node) for node in ast.walk(tree))
    assert "stdin" not in scan([tree])[1]


# -- files read by the block's worker processes -------------------------------------------------

WORKER_SCRIPT = HEAD + """
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

def load(path):
    with open(path) as f:
        return f.read().strip()

def load_in_grandchild(path, queue):
    pid = os.fork()  # a worker's own child
    if pid == 0:
        queue.put(load(path))
        queue.close()
        queue.join_thread()  # sent before the exit that skips the feeder thread
        os._exit(0)
    os.waitpid(pid, 0)

if __name__ == "__main__":
    fork = mp.get_context("fork")
    early = fork.Pool(1)  # made before the block, used in it
    with sc.checkpoint("pool"):
        with fork.Pool(2) as pool:
            v = pool.map(load, ["d1.txt", "d2.txt"])
        del pool
    print("y", "pool", v)
    with sc.checkpoint("early-pool", ignore=["early"]):
        v = early.map(load, ["d1.txt", "d2.txt"])
    print("y", "early-pool", v)
    early.close()
    with sc.checkpoint("executor"):
        with ProcessPoolExecutor(2, mp_context=fork) as ex:
            v = list(ex.map(load, ["d1.txt", "d2.txt"]))
        del ex
    print("y", "executor", v)
    with sc.checkpoint("grandchild"):
        queue = fork.Queue()
        worker = fork.Process(target=load_in_grandchild, args=("d2.txt", queue))
        worker.start()
        v = queue.get()
        worker.join()
        del queue, worker
    print("y", "grandchild", v)
    with sc.checkpoint("branch"):
        with sc.branch() as run:
            run.keep(text=load("d2.txt"))
        v = run.kept["text"]
        del run
    print("y", "branch", v)
    with sc.checkpoint("other-file"):
        with fork.Pool(1) as pool:
            v = pool.map(load, ["d1.txt"])
        del pool
    print("y", "other-file", v)
"""
WORKER_CASES = ["pool", "early-pool", "executor", "grandchild", "branch"]


def test_files_read_by_forked_workers_of_the_block(project: Project) -> None:
    project.write("script.py", WORKER_SCRIPT)
    project.write("d1.txt", "a")
    project.write("d2.txt", "b")
    everything = [*WORKER_CASES, "other-file"]
    assert_cases(project.run("script.py"), everything, hit=False)
    assert_cases(project.run("script.py"), everything, hit=True)
    project.write("d2.txt", "bbb")  # read only by the workers, never by the parent
    fresh = case_values(project.run("script.py", env={"STATECACHE_DISABLE": "1"}))
    changed = project.run("script.py")
    assert_cases(changed, WORKER_CASES, hit=False, fresh=fresh)
    assert_cases(changed, ["other-file"], hit=True, fresh=fresh)  # its workers read d1 only
    assert_cases(project.run("script.py"), everything, hit=True, fresh=fresh)


UNSEEN_SCRIPT = HEAD + """
import multiprocessing as mp
import subprocess

def load(path):
    with open(path) as f:
        return f.read().strip()

if __name__ == "__main__":
    with sc.checkpoint("spawned"):
        with mp.get_context("spawn").Pool(1) as pool:
            v = pool.map(load, ["d1.txt"])
        del pool
    print("y", "spawned", v)
    with sc.checkpoint("program"):
        v = subprocess.run([sys.executable, "-c", "print(7)"], capture_output=True, text=True).stdout.strip()
    print("y", "program", v)
"""


def test_workers_and_programs_whose_reads_are_not_seen_are_named(project: Project) -> None:
    project.write("script.py", UNSEEN_SCRIPT)
    project.write("d1.txt", "a")
    run = project.run("script.py")
    assert "'spawned'" in run.stderr and "not saved" in run.stderr and not project.entries("spawned")
    assert "'program'" in run.stderr and "python" in run.stderr and "files=" in run.stderr
    project.write("d1.txt", "z")
    again = project.run("script.py")
    assert case_values(again)["spawned"] == "['z']" and again.computed("spawned")
    assert again.hit("program")  # a program is named, the state is saved


# -- a project copied with its cache ------------------------------------------------------------

COPY_SCRIPT = HEAD + """
from dataclasses import dataclass
from pathlib import Path
HERE = Path(__file__).resolve().parent

@dataclass
class Config:
    out: Path

def shown(value):
    text = str(value)
    return text.replace(str(HERE), '<here>') if str(HERE) in text else text

with sc.checkpoint('path'):
    v = HERE / 'runs'
print('y', 'path', shown(v))
with sc.checkpoint('text'):
    v = os.path.join(str(HERE), 'runs')
print('y', 'text', shown(v))
with sc.checkpoint('dict'):
    v = {'out': HERE / 'runs', 'n': 3}
print('y', 'dict', shown(v))
with sc.checkpoint('dataclass'):
    v = Config(HERE / 'runs')
print('y', 'dataclass', shown(v))
with sc.checkpoint('listing'):
    v = sorted(HERE.glob('*.txt'))
print('y', 'listing', shown(v))
with sc.checkpoint('relative'):
    v = Path('runs') / 'a'
print('y', 'relative', shown(v))
with sc.checkpoint('plain'):
    v = [1, 'runs', {'a': 2}]
print('y', 'plain', shown(v))
"""
ROOT_BOUND = ["path", "text", "dict", "dataclass", "listing"]
ROOT_FREE = ["relative", "plain"]


def test_state_holding_the_project_folder_misses_in_a_copy(tmp_path: Path) -> None:
    import shutil

    one = Project(tmp_path / "exp1")
    one.write("pyproject.toml", "[project]\nname = 'exp'\n")
    one.write("script.py", COPY_SCRIPT)
    one.write("d.txt", "1")
    assert_cases(one.run("script.py"), ROOT_BOUND + ROOT_FREE, hit=False)
    assert_cases(one.run("script.py"), ROOT_BOUND + ROOT_FREE, hit=True)
    shutil.copytree(one.root, tmp_path / "exp2")
    two = Project(tmp_path / "exp2")
    fresh = case_values(two.run("script.py", env={"STATECACHE_DISABLE": "1"}))
    assert fresh["path"] == "<here>/runs"
    copied = two.run("script.py")
    assert_cases(copied, ROOT_BOUND, hit=False, fresh=fresh)
    assert "held paths in" in copied.stderr, copied.stderr
    assert_cases(copied, ROOT_FREE, hit=True, fresh=fresh)  # the copy shares what names no folder
    assert_cases(two.run("script.py"), ROOT_BOUND + ROOT_FREE, hit=True, fresh=fresh)


def test_the_values_that_name_the_project_folder(tmp_path: Path) -> None:
    from dataclasses import dataclass

    import numpy as np

    from statecache.key.rootpaths import MAX_VALUES, moved_root, root_record

    @dataclass
    class Config:
        out: object

    class Holder:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    root = str(tmp_path / "exp1")
    inside = [root, root + "/runs", Path(root) / "runs", (root + "/x").encode(), {"k": [Path(root)]},
              {Path(root) / "key": 1}, Config(Path(root)), {1, f"--out={root}/a"}, (None, [root + "/b"])]
    outside = [root + "2/runs", str(tmp_path), "runs", Path("runs"), 3, None, np.array([root + "/a"]),
               Holder(Holder(root + "/deep")), list(range(MAX_VALUES)) + [root + "/late"], print]
    state = {f"in{i}": v for i, v in enumerate(inside)} | {f"out{i}": v for i, v in enumerate(outside)}
    record = root_record(state, root)
    assert record["root_paths"]["names"] == [f"in{i}" for i in range(len(inside))]
    assert root_record({"v": 1, "w": "text"}, root) == {}
    assert moved_root(record, root) is None
    assert moved_root(record, str(tmp_path / "exp2")) is not None
    assert moved_root({}, str(tmp_path / "exp2")) is None


# -- a memo filled above the block by worker threads ---------------------------------------------

THREAD_MEMOS = """
import codecs, functools, threading
from concurrent.futures import ThreadPoolExecutor

POOL = ThreadPoolExecutor(2)  # made at import, shared by every memo

@functools.lru_cache(maxsize=None)
def by_shared_pool():
    return sum(POOL.map(lambda p: int(open(p).read()), ['p1.txt', 'p2.txt']))

@functools.lru_cache(maxsize=None)
def by_thread():
    out = []
    worker = threading.Thread(target=lambda: out.append(int(open('t.txt').read())))
    worker.start()
    worker.join()
    return out[0]

@functools.lru_cache(maxsize=None)
def by_codecs():
    with codecs.open('c.txt', encoding='utf-8') as f:
        return int(f.read())
"""
THREAD_CASES = ["by_shared_pool", "by_thread", "by_codecs"]


def test_a_memo_filled_by_worker_threads_above_the_block(project: Project) -> None:
    project.write("memos.py", THREAD_MEMOS)
    project.write("script.py", HEAD + "import memos\n" + "warm = memos.by_shared_pool(), memos.by_thread(), memos.by_codecs()\n"
                  + "".join(f"with sc.checkpoint({case!r}, ignore=['POOL']):\n    v = memos.{case}()\nprint('y', {case!r}, v)\n"
                            for case in THREAD_CASES) + "memos.POOL.shutdown()\n")
    for name in ("p1", "p2", "t", "c"):
        project.write(f"{name}.txt", "1")
    assert_cases(project.run("script.py"), THREAD_CASES, hit=False)
    assert_cases(project.run("script.py"), THREAD_CASES, hit=True)
    for name in ("p2", "t", "c"):
        project.write(f"{name}.txt", "7")
    fresh = case_values(project.run("script.py", env={"STATECACHE_DISABLE": "1"}))
    assert_cases(project.run("script.py"), THREAD_CASES, hit=False, fresh=fresh)
    assert_cases(project.run("script.py"), THREAD_CASES, hit=True, fresh=fresh)
