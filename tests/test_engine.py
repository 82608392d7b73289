"""The engine and its binders in-process: the key rules every front end shares, one life cycle
(lookup, compute, save, hit, restore) against a real cache directory, the null engine, and the
tier interface a second store plugs into. The same rules are run through real scripts and
kernels in test_stale.py, test_notebook.py and the parity matrix."""

from __future__ import annotations

import ast
import os
import shutil
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from statecache._binders import GlobalsBinder, NamespaceBinder
from statecache._engine import Engine, NullEngine, add_tier, open_engine, remove_tier
from statecache._errors import StateCacheError
from statecache._settings import Settings
from statecache.key import components as C
from statecache.key.code import stored_globals
from statecache.key.inputs import function_reads, reads_of


def cell_binder(code: str, namespace: dict[str, Any], ignore: tuple[str, ...] = ()) -> NamespaceBinder:
    tree = ast.parse(textwrap.dedent(code))
    return NamespaceBinder(namespace, reads_of(tree.body), "t", ignore, "test")


def run_cell(code: str, namespace: dict[str, Any]) -> None:
    exec(compile(textwrap.dedent(code), "<cell>", "exec"), namespace)


# --- components ---------------------------------------------------------------------------


def test_the_key_schema_version_is_part_of_every_key() -> None:
    env = C.env_component()
    assert env.endswith(f"/key{C.KEY_SCHEMA_VERSION}")
    parts = C.components("c", "s.py", {"x": "1"}, {})
    assert parts["env"] == env
    assert len(C.key_of(parts)) == C.KEY_LENGTH
    assert C.key_of(parts) == C.key_of(dict(reversed(list(parts.items()))))  # order-free
    assert C.key_of(parts) != C.key_of({**parts, "env": env.replace("/key", "/key9")})


def test_changes_name_what_differs() -> None:
    old = C.components("c", "s.py", {"a": "1", "b": "2"}, {"d/x.csv": "aa"})
    assert C.changes(old, old) == []
    assert C.changes(old, {**old, "code": "d"}) == ["code changed"]
    new = C.components("c", "s.py", {"a": "9", "c": "3"}, {"d/x.csv": "bb", "d/y.csv": "cc"})
    assert C.changes(old, new) == [
        "input 'a' changed", "new input 'c'", "input 'b' gone", "file d/x.csv changed", "new file d/y.csv",
    ]
    assert C.summary(C.changes(old, new)) == "input 'a' changed, new input 'c', input 'b' gone (+2 more)"


def test_version_replaces_the_code_digest_only_when_given() -> None:
    assert C.code_component(b"\x01\x02") == "0102"
    assert C.code_component(lambda: b"\x01", "2") == "version:2"


def test_files_component_counts_content_and_new_matches(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    one = C.files_component(["*.txt"], str(tmp_path))
    (tmp_path / "a.txt").write_text("b")
    assert C.files_component(["*.txt"], str(tmp_path)) != one
    (tmp_path / "b.txt").write_text("b")
    assert set(C.files_component(["*.txt"], str(tmp_path))) == {"a.txt", "b.txt"}
    assert C.files_component(["none/*"], str(tmp_path)) == {"none/*: no match": ""}


# --- the input rules, through a binder ------------------------------------------------------


def test_an_environment_variable_read_with_a_constant_key_is_an_input(monkeypatch: pytest.MonkeyPatch) -> None:
    code = "import os\nn = int(os.environ['N']) + int(os.getenv('M', '0'))\n"
    monkeypatch.setenv("N", "1")
    first = cell_binder(code, {"os": os}).inputs()
    assert "os.environ['N']" in first and "os.environ['M']" in first
    monkeypatch.setenv("N", "2")
    assert cell_binder(code, {"os": os}).inputs() != first
    ignored = cell_binder(code, {"os": os}, ignore=("os.environ['N']",)).inputs()
    assert "os.environ['N']" not in ignored


def test_plain_data_of_installed_modules_and_imports_are_inputs() -> None:
    import sys

    binder = cell_binder("import json\nargs = list(sys.argv)\n", {"sys": sys})
    inputs = binder.inputs()
    assert "sys.argv" in inputs and "import json" in inputs
    assert binder.values["sys.argv"] == sys.argv


def test_a_cell_never_saves_a_file_it_wrote_and_unbinds_deleted_names(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"old": 1, "path": str(tmp_path / "out.txt")}
    code = "with open(path, 'w') as f:\n    f.write('42')\nresult = 42\ndel old\n"
    binder = cell_binder(code, namespace)
    binder.inputs()
    run_cell(code, namespace)
    state, extra = binder.state()
    assert state == {"result": 42}
    assert set(extra["unbound"]) == {"f", "old"}


def test_an_input_mutated_in_place_is_saved_and_restored_into_the_same_object() -> None:
    namespace: dict[str, Any] = {"cfg": {"a": 1}}
    namespace["alias"] = namespace["cfg"]
    code = "cfg['b'] = 2\ntotal = len(cfg)\n"
    binder = cell_binder(code, namespace)
    binder.inputs()
    run_cell(code, namespace)
    state, _ = binder.state()
    assert state == {"total": 2, "cfg": {"a": 1, "b": 2}}

    fresh: dict[str, Any] = {"cfg": {"a": 1}}
    fresh["alias"] = fresh["cfg"]
    other = cell_binder(code, fresh)
    other.inputs()
    other.restore({"total": 2, "cfg": {"a": 1, "b": 2}}, [])
    assert fresh["alias"] is fresh["cfg"] and fresh["alias"] == {"a": 1, "b": 2} and fresh["total"] == 2


def test_cached_setup_reads_come_from_the_function_body(monkeypatch: pytest.MonkeyPatch) -> None:
    def load(registry: dict[str, Any]) -> int:
        registry["n"] = 1
        return int(os.environ["N"])

    monkeypatch.setenv("N", "5")
    binder = GlobalsBinder(load, function_reads(load), stored_globals(load.__code__), "load", (), "test")
    binder.bind_arguments({"registry": {}})
    # os: a global it reads; the command line always counts outside IPython
    assert set(binder.inputs()) == {"registry", "os", "os.environ['N']", "sys.argv[1:]"}
    result = load(binder.arguments["registry"])
    state, _ = binder.collect(result)
    assert state == {"return": 5, "argument registry": {"n": 1}}
    caller: dict[str, Any] = {}
    again = GlobalsBinder(load, function_reads(load), (), "load", (), "test")
    again.bind_arguments({"registry": caller})
    again.restore(state, [])
    assert again.result == 5 and caller == {"n": 1}


# --- one life cycle ---------------------------------------------------------------------------


def engine(tmp_path: Path, name: str = "t", **settings: Any) -> Engine | NullEngine:
    return open_engine("cell", name, Settings(name, cache_dir=tmp_path / "cache", verbose=False, **settings),
                       lambda: (str(tmp_path / "nb.ipynb") + ":1", str(tmp_path / "unused")))


def compute(tmp_path: Path, namespace: dict[str, Any], code: str, **settings: Any) -> Engine | NullEngine:
    """One run of a cached cell: hit (restored into ``namespace``) or compute and save."""
    binder = cell_binder(code, namespace)
    eng = engine(tmp_path, **settings)
    found = eng.lookup(lambda: C.components("code", "nb.ipynb", binder.inputs(), {}))
    if found is not None:
        eng.restore(binder, found)
        return eng
    eng.start()
    run_cell(code, namespace)
    eng.save(binder.state)
    return eng


def test_miss_save_then_hit_restores_into_a_fresh_namespace(tmp_path: Path) -> None:
    code = "y = [x] * 2\n"
    first = compute(tmp_path, {"x": 1}, code)
    assert not first.hit and first.reason == "not cached yet"
    assert first.entry_path is not None and os.path.exists(first.entry_path)
    fresh: dict[str, Any] = {"x": 1}
    second = compute(tmp_path, fresh, code)
    assert second.hit and second.reason == "" and fresh["y"] == [1, 1]
    assert second.key == first.key and second.entry_path == first.entry_path
    third = compute(tmp_path, {"x": 2}, code)
    assert not third.hit and third.reason == "input 'x' changed"


def test_an_entry_older_than_max_age_is_a_miss_expired(tmp_path: Path) -> None:
    first = compute(tmp_path, {"x": 1}, "y = x\n")
    assert first.entry_path is not None
    # a microsecond: the entry, written before this run started, is older than that
    second = compute(tmp_path, {"x": 1}, "y = x\n", max_age=1e-6)
    assert not second.hit and second.reason.startswith("expired"), second.reason
    assert compute(tmp_path, {"x": 1}, "y = x\n", max_age="1h").hit
    with pytest.raises(StateCacheError, match="max_age"):
        Settings("t", max_age="-1d")


def test_caching_off_is_a_null_engine_that_never_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATECACHE_DISABLE", "1")
    eng = engine(tmp_path)
    assert isinstance(eng, NullEngine) and not eng.enabled

    def refuse() -> dict[str, Any]:
        raise AssertionError("a null engine must not compute a key")

    assert eng.lookup(refuse) is None
    eng.start()
    eng.save(lambda: (_ for _ in ()).throw(AssertionError("nor collect state")))
    assert not (tmp_path / "cache").exists()


def test_an_unusable_cache_directory_is_a_null_engine_with_one_warning(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file, not a directory")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first, second = engine(tmp_path, "u1"), engine(tmp_path, "u2")
    assert isinstance(first, NullEngine) and isinstance(second, NullEngine)
    assert len([w for w in seen if "cannot use the cache directory" in str(w.message)]) == 1


class DirectoryTier:
    """A second store that is just another directory: what a remote tier does, locally."""

    def __init__(self, root: Path):
        self.root = root
        self.fetched: list[str] = []
        self.published: list[str] = []
        self.abandoned: list[str] = []

    def fetch(self, name: str, key: str, dest: str, check: Any = None) -> bool:
        source = self.root / name / f"{key}.sc"
        self.fetched.append(key)
        assert callable(check)
        if not source.exists():
            return False
        shutil.copyfile(source, dest + ".part")
        os.replace(dest + ".part", dest)
        return True

    def publish(self, name: str, key: str, path: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, self.root / name / f"{key}.sc")
        self.published.append(key)

    def abandon(self, name: str, key: str) -> None:
        self.abandoned.append(key)


def test_a_tier_is_fed_after_a_save_and_consulted_after_a_local_miss(tmp_path: Path) -> None:
    tier = DirectoryTier(tmp_path / "remote")
    add_tier(tier)
    try:
        first = compute(tmp_path, {"x": 1}, "y = x + 1\n")
        assert tier.fetched == [first.key] and tier.published == [first.key]
        shutil.rmtree(tmp_path / "cache")  # another machine: an empty local cache
        fresh: dict[str, Any] = {"x": 1}
        second = compute(tmp_path, fresh, "y = x + 1\n")
        assert second.hit and fresh["y"] == 2
        assert second.entry_path is not None and os.path.exists(second.entry_path)
    finally:
        remove_tier(tier)


def test_a_tier_is_released_when_nothing_is_saved(tmp_path: Path) -> None:
    tier = DirectoryTier(tmp_path / "remote")
    add_tier(tier)
    try:
        binder = cell_binder("y = x\n", {"x": 1})
        eng = engine(tmp_path)
        assert eng.lookup(lambda: C.components("code", "nb.ipynb", binder.inputs(), {})) is None
        eng.start()
        eng.abort()  # the code raised
        assert tier.fetched == [eng.key] and tier.abandoned == [eng.key] and tier.published == []
        first = compute(tmp_path, {"x": 1}, "y = x\n")
        assert tier.published == [first.key] and tier.abandoned == [eng.key]
    finally:
        remove_tier(tier)


# --- process state read by the code -------------------------------------------------------------


def body_reads(code: str) -> Any:
    return reads_of(ast.parse(textwrap.dedent(code)).body)


def test_environment_reads_by_constant_key_and_whole() -> None:
    reads = body_reads("""
        a = "K1" in os.environ
        b = os.environ.setdefault("K2", "x")
        c = os.environ.pop("K3", None)
        os.environ.update(K4="1")
        os.environ["K5"] = "v"
    """)
    assert set(reads.environ_keys) == {"K1", "K2", "K3", "K5"}
    assert "environ" not in reads.process
    assert "environ" in body_reads("e = dict(os.environ)").process
    assert "environ" in body_reads("e = os.environ[name]").process  # not a constant key


def test_working_directory_reads() -> None:
    for code in ("p = os.getcwd()", "p = Path('x').resolve()", "p = os.path.abspath('x')", "p = Path.cwd()"):
        assert "cwd" in body_reads(code).process, code
    assert "cwd" not in body_reads("p = os.path.join('a', 'b')").process


def test_generators_seeded_before_any_draw() -> None:
    assert body_reads("""
        import random
        random.seed(0)
        np.random.seed(seed)
        torch.manual_seed(0)
        x = random.random()
    """).seeded == ("random", "numpy", "torch")
    assert body_reads("x = random.random()\nrandom.seed(0)").seeded == ()  # a draw comes first
    assert body_reads("helper()\nrandom.seed(0)").seeded == ()  # a call could draw
    assert body_reads("random.seed()").seeded == ()  # seeded from the OS: not fixed
    assert body_reads("random.seed(random.random())").seeded == ()


# --- process changes replayed on a hit -----------------------------------------------------------


def test_process_changes_are_replayed_at_the_same_places(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from statecache import _effects

    monkeypatch.setattr(sys, "path", ["/a", "/b", "/gone"])
    monkeypatch.setattr(sys, "argv", ["s.py", "--n", "3"])
    monkeypatch.setenv("KEEP", "1")
    monkeypatch.setenv("DROP", "1")
    before = _effects.capture()
    sys.path[:] = ["/front", "/a", "/mid", "/b", "/end"]
    del sys.argv[1:]
    os.environ["NEW"] = "x"
    del os.environ["DROP"]
    effects = _effects.difference(before, _effects.capture())
    assert _effects.difference(before, before) == {}
    # another process, where sys.path has one more entry of its own
    sys.path[:] = ["/a", "/b", "/gone", "/other"]
    sys.argv[:] = ["s.py", "--n", "3"]
    os.environ["DROP"] = "1"
    del os.environ["NEW"]
    _effects.replay(effects)
    assert sys.path == ["/front", "/a", "/mid", "/b", "/other", "/end"]
    assert sys.argv == ["s.py"] and os.environ["NEW"] == "x" and "DROP" not in os.environ
