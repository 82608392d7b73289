"""Key rules of ``checkpoint``, each proven by running real scripts twice or more against a real
cache directory. A body appends to ``runs.log`` so that the tests can count how often it ran."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import Project, Run, subprocess_env

MARK = "open('runs.log', 'a').write('{name}\\n')"


def runs(project: Project, name: str) -> int:
    log = project.root / "runs.log"
    return log.read_text().split().count(name) if log.exists() else 0


BASIC = """
import statecache as sc
base = 10
with sc.checkpoint("data"):
    open('runs.log', 'a').write('data\\n')
    values = [base * i for i in range(5)]
    total = sum(values)
print("total", total, values)
"""


def test_miss_then_hit_restores_the_assigned_names(project: Project) -> None:
    project.write("script.py", BASIC)
    first = project.run("script.py")
    assert "total 100 [0, 10, 20, 30, 40]" in first.stdout
    assert first.computed("data") and "not cached yet" in first.stderr
    second = project.run("script.py")
    assert "total 100 [0, 10, 20, 30, 40]" in second.stdout
    assert second.hit("data")
    assert runs(project, "data") == 1
    assert len(project.entries("data")) == 1


def test_a_hit_imports_only_what_restoring_needs(project: Project) -> None:
    # The first hit of a process is the figure users feel: the modules that only a computing
    # run needs (file recording, random generators, process effects, the writer, the lock)
    # stay unimported when the entry records no file, no generator and no process change.
    compute_only = ("statecache.key.rng", "statecache._effects", "statecache.key.readers",
                    "statecache.entry.writer", "filelock", "glob", "base64")
    # Judged against what the interpreter had loaded before statecache: site's .pth files may
    # import pathlib, which imports glob on 3.13.
    project.write("script.py", f"""
import sys
before = set(sys.modules)
import statecache as sc
n = 10
with sc.checkpoint("small"):
    small = {{i: i * 7 for i in range(n)}}
print("loaded", sorted(m for m in {compute_only!r} if m in sys.modules and m not in before))
print("small", len(small))
""")
    assert "small 10" in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("small") and "small 10" in second.stdout
    assert "loaded []" in second.stdout


def test_cache_dir_is_private_and_marked(project: Project) -> None:
    project.write("script.py", BASIC)
    project.run("script.py")
    assert (project.cache.stat().st_mode & 0o777) == 0o700
    assert (project.cache / ".gitignore").read_text().strip().endswith("*")
    assert (project.cache / "CACHEDIR.TAG").read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_code_change_reruns_but_comments_and_formatting_do_not(project: Project) -> None:
    project.write("script.py", BASIC)
    project.run("script.py")
    project.write("script.py", BASIC.replace("values = [base * i", "# a comment\n    values = [ base*i").replace("total = sum(values)", "total = sum(values)   # sum"))
    assert project.run("script.py").hit("data")
    project.write("script.py", BASIC.replace("range(5)", "range(6)"))
    changed = project.run("script.py")
    assert "code changed" in changed.stderr
    assert "total 150" in changed.stdout
    assert runs(project, "data") == 2


def test_input_value_change_reruns_and_names_the_input(project: Project) -> None:
    project.write("script.py", BASIC)
    project.run("script.py")
    project.write("script.py", BASIC.replace("base = 10", "base = 11"))
    run = project.run("script.py")
    assert "input 'base' changed" in run.stderr
    assert "total 110" in run.stdout


def test_code_switched_back_and_forth_hits_each_version(project: Project) -> None:
    a = BASIC
    b = BASIC.replace("range(5)", "range(7)")
    project.write("script.py", a)
    project.run("script.py")
    project.write("script.py", b)
    project.run("script.py")
    project.write("script.py", a)
    third = project.run("script.py")
    assert third.hit("data") and "total 100" in third.stdout
    project.write("script.py", b)
    assert project.run("script.py").hit("data")
    assert runs(project, "data") == 2


def test_in_place_mutation_of_a_numpy_input_reruns(project: Project) -> None:
    script = """
    import sys
    import numpy as np
    import statecache as sc
    arr = np.arange(1000, dtype=np.float64)
    if len(sys.argv) > 1:
        arr[500] = -1.0
    with sc.checkpoint("stats"):
        open('runs.log', 'a').write('stats\\n')
        s = float(arr.sum())
    print("sum", s)
    """
    project.write("script.py", script)
    project.run("script.py")
    assert project.run("script.py").hit("stats")
    mutated = project.run("script.py", "mutate")
    assert "input 'arr' changed" in mutated.stderr
    assert "sum 498999.0" in mutated.stdout
    assert runs(project, "stats") == 2


def test_dtype_and_shape_are_part_of_an_array_input(project: Project) -> None:
    script = """
    import sys
    import numpy as np
    import statecache as sc
    arr = np.zeros((2, 3), np.float64) if sys.argv[1] == "a" else np.zeros((2, 6), np.float32)
    with sc.checkpoint("shape"):
        shape = arr.shape
    print("shape", shape)
    """
    project.write("script.py", script)
    assert "shape (2, 3)" in project.run("script.py", "a").stdout
    b = project.run("script.py", "b")
    assert "shape (2, 6)" in b.stdout and not b.hit("shape")


HELPER_SCRIPT = """
import statecache as sc

def scale(x):
    return x * FACTOR

def prepare(n):
    return [scale(i) for i in range(n)]

FACTOR = 2
with sc.checkpoint("prep"):
    open('runs.log', 'a').write('prep\\n')
    out = prepare(4)
print("out", out)
"""


def test_changed_helper_function_in_the_same_file_reruns(project: Project) -> None:
    project.write("script.py", HELPER_SCRIPT)
    project.run("script.py")
    assert project.run("script.py").hit("prep")
    # scale is called only through prepare: the change is found transitively
    project.write("script.py", HELPER_SCRIPT.replace("return x * FACTOR", "return x * FACTOR + 1"))
    run = project.run("script.py")
    assert "out [1, 3, 5, 7]" in run.stdout and not run.hit("prep")
    # a global read by the helper counts by value
    project.write("script.py", HELPER_SCRIPT.replace("FACTOR = 2", "FACTOR = 3"))
    assert "out [0, 3, 6, 9]" in project.run("script.py").stdout
    # a comment in the helper does not count
    project.write("script.py", HELPER_SCRIPT.replace("def scale(x):", "def scale(x):  # doubles"))
    assert project.run("script.py").hit("prep")


def test_changed_helper_in_a_local_module_reruns(project: Project) -> None:
    project.write("helpers/__init__.py", "")
    project.write("helpers/text.py", "def clean(s):\n    return s.strip()\n")
    project.write("helpers/core.py", "from helpers.text import clean\n\ndef load(items):\n    return [clean(s) for s in items]\n")
    project.write(
        "script.py",
        """
        import statecache as sc
        from helpers import core
        with sc.checkpoint("load"):
            open('runs.log', 'a').write('load\\n')
            data = core.load([" a ", " b"])
        print("data", data)
        """,
    )
    assert "data ['a', 'b']" in project.run("script.py").stdout
    assert project.run("script.py").hit("load")
    project.write("helpers/text.py", "def clean(s):\n    return s.strip().upper()\n")
    run = project.run("script.py")
    assert "data ['A', 'B']" in run.stdout and not run.hit("load")


def test_data_file_read_by_the_body_is_rechecked_by_content(project: Project) -> None:
    project.write("data.csv", "1,2,3\n")
    project.write(
        "script.py",
        """
        import statecache as sc
        with sc.checkpoint("read"):
            open('runs.log', 'a').write('read\\n')
            with open("data.csv") as f:
                numbers = [int(x) for x in f.read().split(",")]
        print("numbers", numbers)
        """,
    )
    project.run("script.py")
    assert project.run("script.py").hit("read")
    # same size, same content, new mtime: still a hit
    os.utime(project.root / "data.csv", (1, 1))
    assert project.run("script.py").hit("read")
    # same size, new content
    project.write("data.csv", "4,5,6\n")
    run = project.run("script.py")
    assert "numbers [4, 5, 6]" in run.stdout
    assert "data.csv changed" in run.stderr


def test_files_glob_counts_a_new_matching_file(project: Project) -> None:
    project.write("shards/a.txt", "a")
    project.write(
        "script.py",
        """
        import glob
        import statecache as sc
        with sc.checkpoint("shards", files=["shards/*.txt"]):
            open('runs.log', 'a').write('shards\\n')
            count = 3
        print("count", count)
        """,
    )
    project.run("script.py")
    assert project.run("script.py").hit("shards")
    project.write("shards/b.txt", "b")
    run = project.run("script.py")
    assert not run.hit("shards") and "(new file shards/b.txt)" in run.stderr
    project.write("shards/a.txt", "A")
    assert not project.run("script.py").hit("shards")
    assert runs(project, "shards") == 3


# What a hit restores, each kind under its own checkpoint of one script that the `restored`
# fixture runs twice: locals inside a function and nested blocks, lambdas, local classes and
# closures, instances of classes defined above the block, inputs the body mutates, classes and
# functions the block defines in __main__, a loop that breaks, an empty body, and bodies that
# open with try or share the with statement with another context manager.
RESTORES = """
import dataclasses
import statecache as sc

def main(n):
    offset = 1
    for attempt in range(1):
        if n > 0:
            try:
                with open("runs.log", "a") as log:
                    with sc.checkpoint("inner", ignore=["log"]):
                        log.write("inner\\n")
                        squares = [i * i + offset for i in range(n)]
                        def describe():
                            return f"{len(squares)} squares"
                        class Box:
                            size = n
            finally:
                pass
    return squares, describe(), Box.size

print("result", main(4))

def make():
    class Point:
        def __init__(self, x):
            self.x = x
        def double(self):
            return Point(self.x * 2)
    k = 3
    return Point, (lambda v: v * k)

with sc.checkpoint("funcs"):
    Point, triple = make()
    p = Point(5).double()
    square = lambda v: v * v
print("values", p.x, triple(2), square(4))

@dataclasses.dataclass
class Config:
    lr: float

with sc.checkpoint("cfg"):
    cfg = Config(0.1)
print("isinstance", isinstance(cfg, Config), cfg.lr)

registry = {}
with sc.checkpoint("fill"):
    registry["model"] = "resnet"
    loaded = True
print("registry", registry, loaded)

@dataclasses.dataclass
class Settings:
    lr: float

with sc.checkpoint("defs"):
    class Model:
        def __init__(self, cfg):
            self.cfg = cfg
        def predict(self, x):
            return x * self.cfg.lr
    def build():
        return Model(Settings(0.5))
    model = build()
print("predict", model.predict(4), isinstance(model.cfg, Settings), type(model).__name__)

with sc.checkpoint("loop"):
    found = None
    for i in range(10):
        if i * i > 20:
            found = i
            break
print("found", found)

with sc.checkpoint("empty"):
    pass
print("after empty")

with sc.checkpoint("guarded"):
    try:
        open('runs.log', 'a').write('guarded\\n')
        value = 1
    except BaseException:
        open('runs.log', 'a').write('except\\n')
        raise
    finally:
        open('runs.log', 'a').write('finally\\n')
with sc.checkpoint("opened"), open("runs.log", "a") as log:
    log.write("opened\\n")
    other = 2
print("values", value, other)
"""


@pytest.fixture(scope="module")
def restored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Run, Run]:
    """RESTORES run twice: the project, the computing run, the hitting run."""
    project = Project(tmp_path_factory.mktemp("restores"))
    project.write("script.py", RESTORES)
    return project, project.run("script.py"), project.run("script.py")


def test_locals_are_restored_inside_a_function_and_nested_blocks(restored: tuple[Project, Run, Run]) -> None:
    project, first, second = restored
    expected = "result ([1, 2, 5, 10], '4 squares', 4)"
    assert first.computed("inner") and expected in first.stdout
    assert second.hit("inner") and expected in second.stdout
    assert runs(project, "inner") == 1


def test_lambdas_local_classes_and_closures_survive(restored: tuple[Project, Run, Run]) -> None:
    _, first, second = restored
    assert first.computed("funcs") and "values 10 6 16" in first.stdout
    assert second.hit("funcs") and "values 10 6 16" in second.stdout


def test_instances_of_classes_defined_above_the_block_keep_their_class(restored: tuple[Project, Run, Run]) -> None:
    _, first, second = restored
    assert first.computed("cfg") and "isinstance True 0.1" in first.stdout
    assert second.hit("cfg") and "isinstance True 0.1" in second.stdout


def test_inputs_mutated_by_the_body_are_restored_too(restored: tuple[Project, Run, Run]) -> None:
    _, first, second = restored
    assert first.computed("fill") and "registry {'model': 'resnet'} True" in first.stdout
    assert second.hit("fill") and "registry {'model': 'resnet'} True" in second.stdout


def test_classes_and_functions_defined_by_the_block_in_main_survive(restored: tuple[Project, Run, Run]) -> None:
    _, first, second = restored
    expected = "predict 2.0 True Model"
    assert first.computed("defs") and expected in first.stdout
    assert second.hit("defs") and expected in second.stdout


def test_loops_inside_the_body_may_break(restored: tuple[Project, Run, Run]) -> None:
    _, first, second = restored
    assert "found 5" in first.stdout
    assert second.hit("loop") and "found 5" in second.stdout


def test_an_empty_body_hits_cleanly(restored: tuple[Project, Run, Run]) -> None:
    _, _, second = restored
    assert second.hit("empty") and "after empty" in second.stdout


def test_bodies_that_open_with_try_or_nested_blocks_are_skipped_whole(restored: tuple[Project, Run, Run]) -> None:
    """A body opening with ``try:`` starts with an instruction outside the with's handler; the
    skip must still happen before any of the body runs, its except/finally clauses included."""
    project, first, second = restored
    assert "values 1 2" in first.stdout
    assert second.hit("guarded") and second.hit("opened") and "values 1 2" in second.stdout
    log = (project.root / "runs.log").read_text().split()
    assert log.count("guarded") == 1 and log.count("finally") == 1 and log.count("except") == 0
    assert log.count("opened") == 1


CACHED_SETUP = """
import statecache as sc
vocab = None

@sc.cached_setup
def load(path, n=3):
    global vocab
    open('runs.log', 'a').write('load\\n')
    vocab = {w: i for i, w in enumerate(path.split("/"))}
    return list(range(n))

print("result", load("a/b/c"), sorted(vocab))
print("result2", load("a/b/c", n=2), sorted(vocab))
"""


def test_cached_setup_caches_return_value_and_globals_by_arguments(project: Project) -> None:
    project.write("script.py", CACHED_SETUP)
    first = project.run("script.py")
    assert "result [0, 1, 2] ['a', 'b', 'c']" in first.stdout
    assert "result2 [0, 1] ['a', 'b', 'c']" in first.stdout
    assert runs(project, "load") == 2
    second = project.run("script.py")
    assert "result [0, 1, 2] ['a', 'b', 'c']" in second.stdout
    assert "result2 [0, 1] ['a', 'b', 'c']" in second.stdout
    assert runs(project, "load") == 2
    assert second.hit("load")
    project.write("script.py", CACHED_SETUP.replace("enumerate(path.split", "enumerate(path.upper().split"))
    third = project.run("script.py")
    assert "result [0, 1, 2] ['A', 'B', 'C']" in third.stdout
    assert runs(project, "load") == 4


def test_cached_setup_with_arguments_and_ignore(project: Project) -> None:
    project.write(
        "script.py",
        """
        import sys
        import statecache as sc

        @sc.cached_setup(name="table", ignore=["log"])
        def build(n, log):
            open('runs.log', 'a').write('table\\n')
            log.write("building\\n")
            return {i: i * i for i in range(n)}

        print("table", build(3, log=sys.stdout))
        """,
    )
    assert "table {0: 0, 1: 1, 2: 4}" in project.run("script.py").stdout
    second = project.run("script.py")
    assert second.hit("table") and "building" not in second.stdout
    assert (project.cache / "table").is_dir()


def test_disable_runs_everything_and_writes_nothing(project: Project) -> None:
    project.write("script.py", BASIC)
    project.run("script.py", env={"STATECACHE_DISABLE": "1"})
    project.run("script.py", env={"STATECACHE_DISABLE": "1"})
    assert runs(project, "data") == 2
    assert not project.cache.exists()


def test_refresh_recomputes_all_or_named_checkpoints(project: Project) -> None:
    script = BASIC + """
with sc.checkpoint("other"):
    open('runs.log', 'a').write('other\\n')
    other = 1
"""
    project.write("script.py", script)
    project.run("script.py")
    project.run("script.py", env={"STATECACHE_REFRESH": "1"})
    assert runs(project, "data") == 2 and runs(project, "other") == 2
    run = project.run("script.py", env={"STATECACHE_REFRESH": "other"})
    assert run.hit("data") and not run.hit("other")
    assert runs(project, "data") == 2 and runs(project, "other") == 3


@pytest.mark.parametrize(
    ("var", "value"),
    [("STATECACHE_DISABLE", "maybe"), ("STATECACHE_REFRESH", "../etc"), ("STATECACHE_QUIET", "loud"), ("STATECACHE_MAX_SIZE", "lots")],
)
def test_garbage_environment_values_get_a_clear_error(project: Project, var: str, value: str) -> None:
    project.write("script.py", BASIC)
    run = project.run("script.py", env={var: value}, check=False)
    assert run.returncode == 1
    assert var in run.stderr and "StateCacheError" in run.stderr or "ConfigError" in run.stderr


def test_quiet_prints_no_status_lines(project: Project) -> None:
    project.write("script.py", BASIC)
    run = project.run("script.py", env={"STATECACHE_QUIET": "1"})
    assert run.status == []


def test_same_name_in_two_files_does_not_collide(project: Project) -> None:
    project.write("one.py", BASIC)
    project.write("two.py", BASIC.replace("base = 10", "base = 10\nbase2 = 1").replace("range(5)", "range(2)"))
    assert "total 100" in project.run("one.py").stdout
    two = project.run("two.py")
    assert "total 10 " in two.stdout and not two.hit("data")
    assert project.run("one.py").hit("data")
    assert project.run("two.py").hit("data")


def test_same_name_twice_in_one_file_is_an_error(project: Project) -> None:
    project.write("script.py", BASIC + BASIC.split("import statecache as sc", 1)[1])
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "also used at line" in run.stderr


@pytest.mark.parametrize("name", ["../escape", "/abs", "", ".hidden", "a/b", "x" * 101, "sp ace"])
def test_bad_names_raise_statecache_error(project: Project, name: str) -> None:
    project.write(
        "script.py",
        f"""
        import statecache as sc
        try:
            with sc.checkpoint({name!r}):
                x = 1
        except sc.StateCacheError as exc:
            print("error:", exc)
        """,
    )
    run = project.run("script.py")
    assert "error: invalid checkpoint name" in run.stdout
    assert not project.cache.exists()


def test_unpicklable_variable_warns_by_name_and_keeps_the_program_going(project: Project) -> None:
    project.write(
        "script.py",
        """
        import statecache as sc
        with sc.checkpoint("locked"):
            open('runs.log', 'a').write('locked\\n')
            guard = (i for i in range(3))
            value = 42
        print("value", value, type(guard).__name__)
        """,
    )
    run = project.run("script.py")
    assert "value 42 generator" in run.stdout
    assert "guard" in run.stderr and "not saved" in run.stderr
    assert project.entries("locked") == []
    project.run("script.py")
    assert runs(project, "locked") == 2


def test_damaged_entry_is_a_miss_with_a_warning(project: Project) -> None:
    project.write("script.py", BASIC)
    project.run("script.py")
    [entry] = project.entries("data")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    run = project.run("script.py")
    assert "total 100" in run.stdout
    assert not run.hit("data") and "StateCacheWarning" in run.stderr
    assert project.run("script.py").hit("data")


def test_unfingerprintable_input_names_it_and_suggests_ignore(project: Project) -> None:
    script = """
    import statecache as sc
    gen = (i for i in range(3))
    with sc.checkpoint("gen"{extra}):
        first = 1
    print("ok", first)
    """
    project.write("script.py", script.format(extra=""))
    project.write("use.py", script.format(extra="").replace("first = 1", "first = next(gen)"))
    run = project.run("use.py", check=False)
    assert run.returncode == 1 and "'gen'" in run.stderr and "ignore=" in run.stderr
    project.write("use.py", script.format(extra=", ignore=['gen']").replace("first = 1", "first = next(gen)"))
    assert "ok 0" in project.run("use.py").stdout


def test_python_c_keys_on_the_program_text(project: Project) -> None:
    code = "import statecache as sc\nwith sc.checkpoint('x'):\n    a = {value}\nprint('a', a)\n"

    def run(value: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", code.format(value=value)], cwd=project.root, env=subprocess_env(), capture_output=True, text=True
        )

    first = run(1)
    assert first.returncode == 0, first.stderr
    assert "a 1" in first.stdout and "computing" in first.stderr
    second = run(1)
    assert "a 1" in second.stdout and "'x' restored" in second.stderr
    changed = run(2)
    assert "a 2" in changed.stdout and "code changed" in changed.stderr


def test_exec_of_a_string_says_the_source_is_missing(project: Project) -> None:
    project.write(
        "script.py",
        """
        import statecache as sc
        exec("with sc.checkpoint('x'):\\n    a = 1\\n")
        """,
    )
    run = project.run("script.py", check=False)
    assert run.returncode == 1
    assert "SourceNotFoundError" in run.stderr and "exec()" in run.stderr


def test_python_dash_m_module(project: Project) -> None:
    project.write("pkg/__init__.py", "")
    project.write("pkg/mod.py", BASIC)
    assert "total 100" in project.run("-m", "pkg.mod").stdout
    assert project.run("-m", "pkg.mod").hit("data")
    assert (project.root / "pkg" / ".statecache" / "data").is_dir()


def test_body_on_the_with_line_is_refused(project: Project) -> None:
    project.write("script.py", "import statecache as sc\nwith sc.checkpoint('x'): a = 1\n")
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "own lines" in run.stderr


def test_exception_in_the_body_saves_nothing(project: Project) -> None:
    project.write(
        "script.py",
        """
        import statecache as sc
        with sc.checkpoint("boom"):
            x = 1
            raise ValueError("bad data")
        """,
    )
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "ValueError: bad data" in run.stderr
    assert project.entries("boom") == []


def test_two_processes_on_a_cold_key_compute_once(project: Project) -> None:
    project.write(
        "script.py",
        """
        import time
        import statecache as sc
        with sc.checkpoint("slow"):
            open('runs.log', 'a').write('slow\\n')
            time.sleep(1.5)
            value = 7
        print("value", value)
        """,
    )
    procs = [
        subprocess.Popen([sys.executable, "script.py"], cwd=project.root, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("value 7" in out for out, _ in outputs)
    assert runs(project, "slow") == 1


def test_checkpoints_work_under_coverage(project: Project) -> None:
    project.write("script.py", BASIC + "after = total + 1\nprint('after', after)\n")
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "coverage", "run", "--data-file", str(project.root / ".cov"), "script.py"],
            cwd=project.root, env=subprocess_env(), capture_output=True, text=True,
        )
        assert proc.returncode == 0, proc.stderr
        assert "after 101" in proc.stdout
    assert "restored" in proc.stderr
    report = subprocess.run(
        [sys.executable, "-m", "coverage", "report", "-m", "--data-file", str(project.root / ".cov"), "--include", "script.py"],
        cwd=project.root, env=subprocess_env(), capture_output=True, text=True,
    ).stdout
    # the lines after the skipped block are still measured
    last_line = len((project.root / "script.py").read_text().splitlines())
    missing = report.strip().splitlines()[-1].split()[-1]
    assert str(last_line) not in missing


def test_ignore_also_covers_globals_read_by_helpers(project: Project) -> None:
    script = """
    import threading
    import statecache as sc
    LOCK = threading.Lock()

    def compute():
        with LOCK:
            return 5

    with sc.checkpoint("locked-helper"{extra}):
        value = compute()
    print("value", value)
    """
    project.write("script.py", script.format(extra=""))
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and "ignore=['LOCK']" in run.stderr
    project.write("script.py", script.format(extra=", ignore=['LOCK']"))
    assert "value 5" in project.run("script.py").stdout
    assert project.run("script.py").hit("locked-helper")


RNG_SCRIPT = """
import os
import random
import numpy as np
import statecache as sc
random.seed(int(os.environ["SEED"]))
np.random.seed(int(os.environ["SEED"]))
with sc.checkpoint("sample"):
    open('runs.log', 'a').write('sample\\n')
    picks = [random.random() for _ in range(3)]
    noise = np.random.rand(3)
after = (random.random(), float(np.random.rand()))
print("values", picks, noise.tolist(), after)
"""


def test_the_seed_of_a_global_generator_is_an_input_and_its_state_an_output(project: Project) -> None:
    # the seed comes from the environment, not the command line (another command line is
    # another run whatever the generators say)
    project.write("script.py", RNG_SCRIPT)
    first = project.run("script.py", env={"SEED": "0"}).stdout
    second = project.run("script.py", env={"SEED": "0"})
    # the restored run continues the random streams exactly where the computed run left them
    assert second.hit("sample") and second.stdout == first
    reseeded = project.run("script.py", env={"SEED": "1"})
    assert not reseeded.hit("sample") and "random state" in reseeded.stderr
    assert reseeded.stdout != first
    assert runs(project, "sample") == 2


def test_a_block_that_uses_no_randomness_ignores_the_generators(project: Project) -> None:
    project.write(
        "script.py",
        """
        import random
        import statecache as sc
        random.random()  # unseeded: another state on every run
        with sc.checkpoint("plain"):
            x = 1
        print("x", x)
        """,
    )
    project.run("script.py")
    assert project.run("script.py").hit("plain")


@pytest.mark.parametrize(
    ("body", "word"),
    [("return 1", "return"), ("if x: break", "break"), ("yield 1", "yield")],
)
def test_a_body_that_leaves_early_is_refused(project: Project, body: str, word: str) -> None:
    project.write(
        "script.py",
        f"""
        import statecache as sc
        def f():
            for _ in range(1):
                with sc.checkpoint("early"):
                    x = 1
                    {body}
        list(f()) if "{word}" == "yield" else f()
        """,
    )
    run = project.run("script.py", check=False)
    assert run.returncode == 1 and f"contains '{word}'" in run.stderr


def test_a_data_file_rewritten_within_the_same_mtime_tick_is_seen(project: Project) -> None:
    """Same size, same mtime, new content: a stat comparison alone would return stale state."""
    project.write(
        "script.py",
        """
        import os
        import sys
        import statecache as sc
        if len(sys.argv) > 1:
            st = os.stat("data.txt")
            with open("data.txt", "w") as f:
                f.write(sys.argv[1])
            os.utime("data.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
        else:  # written right before it is recorded (not by the test, seconds earlier on a busy machine)
            with open("data.txt", "w") as f:
                f.write("aaa")
        with sc.checkpoint("racy"):
            with open("data.txt") as f:
                text = f.read()
        print("text", text)
        """,
    )
    assert "text aaa" in project.run("script.py").stdout
    run = project.run("script.py", "bbb")
    assert "text bbb" in run.stdout and not run.hit("racy")


def test_command_line_arguments_and_environment_variables_read_by_the_block_count(project: Project) -> None:
    """sys and os count by the Python version only; what the block reads through them counts by value."""
    project.write("a.txt", "alpha")
    project.write("b.txt", "beta")
    project.write(
        "script.py",
        """
        import os
        import sys
        import statecache as sc
        with sc.checkpoint("args"):
            print("reading", sys.argv[1], file=sys.stderr)  # sys.stderr is not data: no input
            with open(sys.argv[1]) as f:
                text = f.read() + os.environ.get("SUFFIX", "")
        print("text", text)
        """,
    )
    assert "text alpha" in project.run("script.py", "a.txt").stdout
    assert project.run("script.py", "a.txt").hit("args")
    other = project.run("script.py", "b.txt")
    assert "text beta" in other.stdout and "input 'sys.argv' changed" in other.stderr
    env = project.run("script.py", "b.txt", env={"SUFFIX": "!"})
    assert "text beta!" in env.stdout and "os.environ['SUFFIX']" in env.stderr
    # other environment variables do not matter
    assert project.run("script.py", "b.txt", env={"SUFFIX": "!", "UNRELATED": "1"}).hit("args")


def test_a_helper_reading_sys_argv_counts_it(project: Project) -> None:
    project.write(
        "script.py",
        """
        import sys
        import statecache as sc

        def pick():
            return sys.argv[1].upper()

        with sc.checkpoint("helper-args"):
            value = pick()
        print("value", value)
        """,
    )
    assert "value A" in project.run("script.py", "a").stdout
    assert project.run("script.py", "a").hit("helper-args")
    other = project.run("script.py", "b")
    assert "value B" in other.stdout and not other.hit("helper-args")


def test_processes_creating_the_cache_directory_at_once_all_use_it(project: Project) -> None:
    """The first save of a project often happens in several processes at once (a sweep)."""
    project.write("script.py", BASIC)
    procs = [
        subprocess.Popen([sys.executable, "script.py"], cwd=project.root, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert all("StateCacheWarning" not in err for _, err in outputs), outputs
    assert runs(project, "data") == 1


def test_a_changed_data_file_is_seen_before_the_entry_is_unpickled(project: Project) -> None:
    """The refusal comes from the metadata: a large entry is not read, and nothing in it runs."""
    project.write(
        "tracked.py",
        """
        class Tracked:
            def __init__(self, text):
                self.text = text
            def __setstate__(self, state):
                open("unpickled.log", "a").write("x\\n")
                self.__dict__.update(state)
        """,
    )
    project.write(
        "script.py",
        """
        import statecache as sc
        from tracked import Tracked
        with sc.checkpoint("tracked"):
            with open("data.txt") as f:
                obj = Tracked(f.read())
        print("text", obj.text)
        """,
    )
    project.write("data.txt", "one")
    project.run("script.py")
    assert project.run("script.py").hit("tracked")
    assert (project.root / "unpickled.log").read_text().count("x") == 1
    project.write("data.txt", "two!")
    run = project.run("script.py")
    assert "text two!" in run.stdout and "data.txt changed" in run.stderr
    assert (project.root / "unpickled.log").read_text().count("x") == 1  # not unpickled again


# --- what a user can ask and control (hit, reason, key; version=, max_age=) -----------------


def test_the_checkpoint_object_says_whether_it_hit_and_why_it_missed(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc
n = int(os.environ["N"])
with sc.checkpoint("a") as cp:
    y = n * 2
print("info", cp.hit, repr(cp.reason), len(cp.key), cp.entry_path and os.path.isfile(cp.entry_path), y)
""")
    assert "info False 'not cached yet' 32 True 2" in project.run("script.py", env={"N": "1"}).stdout
    assert "info True '' 32 True 2" in project.run("script.py", env={"N": "1"}).stdout
    assert "info False \"input 'n' changed\" 32 True 4" in project.run("script.py", env={"N": "2"}).stdout
    off = project.run("script.py", env={"N": "2", "STATECACHE_DISABLE": "1"})
    assert "info False 'caching disabled (STATECACHE_DISABLE)' 0 None 4" in off.stdout


def test_cache_info_of_a_cached_setup_function(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc

@sc.cached_setup
def load(n):
    return n * 2

print("before", load.cache_info().reason)
load(int(os.environ["N"]))
info = load.cache_info()
print("info", info.hit, repr(info.reason), len(info.key), info.entry_path.endswith(".sc"))
""")
    first = project.run("script.py", env={"N": "1"}).stdout
    assert "before not called yet" in first and "info False 'not cached yet' 32 True" in first
    assert "info True '' 32 True" in project.run("script.py", env={"N": "1"}).stdout
    assert "info False \"input 'n' changed\"" in project.run("script.py", env={"N": "2"}).stdout


VERSIONED = """
import statecache as sc
import helpers
with sc.checkpoint("a", version="1"):
    print("computing")  # a log line
    y = helpers.f(3)
print("y", y)

@sc.cached_setup(version="1")
def load():
    print("loading")
    return helpers.f(4)
print("z", load())
"""


def test_version_keeps_the_cache_across_edits_of_the_block_but_not_of_helpers(project: Project) -> None:
    project.write("helpers.py", "def f(x):\n    return x * 10\n")
    project.write("script.py", VERSIONED)
    project.run("script.py")
    edited = VERSIONED.replace('print("computing")', 'print("computing", 1)').replace(
        'print("loading")', 'print("loading", 1)')
    project.write("script.py", edited)
    second = project.run("script.py")
    assert second.hit("a") and second.hit("load") and "y 30" in second.stdout and "z 40" in second.stdout
    project.write("helpers.py", "def f(x):\n    return x * 100\n")
    third = project.run("script.py")
    assert "y 300" in third.stdout and "z 400" in third.stdout, "a helper's edit still counts"
    project.write("script.py", edited.replace('version="1"', 'version="2"'))
    fourth = project.run("script.py")
    assert fourth.computed("a") and fourth.computed("load") and "code changed" in fourth.stderr


def test_max_age_makes_an_older_entry_a_miss(project: Project) -> None:
    project.write("script.py", """
import os
import statecache as sc
with sc.checkpoint("a", max_age=os.environ["AGE"]):
    y = 1
""")
    project.run("script.py", env={"AGE": "1d"})
    assert project.run("script.py", env={"AGE": "1d"}).hit("a")
    # the entry was created by an earlier process: it is older than a millisecond
    expired = project.run("script.py", env={"AGE": "0.001s"})
    assert expired.computed("a") and "(expired (older than max_age=" in expired.stderr, expired.stderr
    assert project.run("script.py", env={"AGE": "1d"}).hit("a"), "the recomputed entry is young again"
    bad = project.run("script.py", env={"AGE": "soon"}, check=False)
    assert bad.returncode == 1 and "invalid max_age 'soon'" in bad.stderr


def test_a_checkpoint_that_is_never_entered_or_used_as_a_decorator(project: Project) -> None:
    project.write("script.py", """
import statecache as sc
sc.checkpoint("forgotten")
try:
    @sc.checkpoint("deco")
    def f():
        return 1
except sc.StateCacheError as exc:
    print("error:", exc)
""")
    run = project.run("script.py")
    assert "checkpoint 'forgotten' was created but never entered" in run.stderr
    assert "@statecache.cached_setup(name='deco')" in run.stdout


def test_cached_setup_messages_suggest_what_works(project: Project) -> None:
    project.write("script.py", """
import threading
import statecache as sc

@sc.cached_setup
def load(lock, n):
    return n

try:
    load(threading.Lock(), 1)
except sc.StateCacheError as exc:
    print("error:", exc)

@sc.cached_setup(ignore=["lock"])
def load2(lock, n):
    return n

print("ignored", load2(threading.Lock(), 1))

@sc.cached_setup
def gen():
    return (i for i in range(3))

print("gen", list(gen()))
""")
    run = project.run("script.py")
    assert "ignore=['lock']" in run.stdout and "ignored 1" in run.stdout
    assert "gen [0, 1, 2]" in run.stdout
    assert "was not saved" in run.stderr and "del return" not in run.stderr


def test_settings_that_python_would_read_as_true_are_refused(project: Project) -> None:
    project.write("script.py", """
import sys
import statecache as sc
option = sys.argv[1]
value = {"mmap": "no", "verbose": "false", "max_size": -1, "max_age": "0s"}[option]
try:
    with sc.checkpoint("a", **{option: value}):
        y = 1
except sc.StateCacheError as exc:
    print("error:", exc)
""")
    assert "mmap=False (a bool, not the string 'no'" in project.run("script.py", "mmap").stdout
    assert "verbose=False (a bool" in project.run("script.py", "verbose").stdout
    assert "a size cap must be above 0" in project.run("script.py", "max_size").stdout
    assert "max_age must be positive" in project.run("script.py", "max_age").stdout
    assert not project.entries("a")


def test_remote_argument_shares_entries_between_cache_directories(project: Project, tmp_path) -> None:
    # remote= works like STATECACHE_REMOTE for one checkpoint: a second project directory
    # (its own empty local cache) restores what the first computed, from the shared tier.
    shared = tmp_path / "shared"
    shared.mkdir()
    script = f"""
import statecache as sc
with sc.checkpoint("a", remote={str(shared)!r}):
    y = sum(range(10))
print("y", y)
"""
    project.write("one/script.py", script)
    project.write("two/script.py", script)
    env = {"STATECACHE_SECRET": "team secret"}
    first = project.run("one/script.py", env=env)
    assert "y 45" in first.stdout and first.computed("a")
    second = project.run("two/script.py", env=env)
    assert "y 45" in second.stdout and second.hit("a"), second.stderr
    assert any(p.is_file() for p in shared.rglob("*"))
