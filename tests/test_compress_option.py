"""``compress=`` on the front ends and ``STATECACHE_COMPRESS`` (issue 12 item 2): real scripts
run twice, the entry of each mode as big as ``entry.policy`` says (read with ``statecache ls
--json``, as a user would), and a hit restoring the values the computing run made.

Two arrays of 8 MB each: ``ints`` (values 0..3 in int64, zstd keeps about 8 %, decoding far
slower than a copy: raw under "speed", compressed under "size") and ``floats`` (uniform float32,
zstd saves about 11 %: raw unless "size")."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, Project, subprocess_env

from statecache._errors import ConfigError
from statecache._settings import Options
from statecache.entry.policy import MODES

MB = 1_000_000
ARRAYS = """
import hashlib, os
import numpy as np
import statecache as sc

mode = os.environ.get("MODE") or None  # read outside the blocks: not an input of theirs
rng = np.random.default_rng(7)
with sc.checkpoint("ints", compress=mode):
    ints = rng.integers(0, 4, 1_000_000)
with sc.checkpoint("floats", compress=mode):
    floats = rng.random(2_000_000, dtype=np.float32)
print("ints", hashlib.sha256(ints.tobytes()).hexdigest(), ints.dtype, ints.shape)
print("floats", hashlib.sha256(floats.tobytes()).hexdigest(), floats.dtype, floats.shape)
"""
# the bytes each array holds; a raw entry is a little bigger, a compressed one far smaller
RAW = {"ints": 8 * MB, "floats": 8 * MB}


def sizes_on_disk(project: Project) -> dict[str, int]:
    """Each entry's file size, as ``statecache ls --json`` reports it."""
    out = subprocess.run(
        [sys.executable, "-m", "statecache", "ls", "--json", "--dir", str(project.cache)],
        capture_output=True, text=True, env=subprocess_env(), cwd=REPO, check=True,
    ).stdout
    return {e["name"]: e["size"] for e in json.loads(out)["entries"]}


def compressed(project: Project) -> dict[str, bool]:
    """Which entries are stored compressed: at most 95 % of their raw bytes on disk."""
    return {name: size <= 0.95 * RAW[name] for name, size in sizes_on_disk(project).items()}


def policy_decisions() -> dict[str, dict[str, bool]]:
    """What ``entry.policy`` decides for the script's two arrays, mode by mode (the same arrays,
    judged here by the codec's own sampling: the front ends must hand the mode through)."""
    import numpy as np

    from statecache.entry.codec import worth_compressing

    rng = np.random.default_rng(7)
    arrays = {"ints": rng.integers(0, 4, 1_000_000), "floats": rng.random(2_000_000, dtype=np.float32)}
    return {
        mode: {name: worth_compressing(memoryview(a).cast("B"), mode) for name, a in arrays.items()}
        for mode in MODES
    }


EXPECTED = policy_decisions()


def test_the_modes_differ_on_these_arrays() -> None:
    """Without this, the tests below could pass with the mode lost on its way to the writer."""
    assert EXPECTED["size"] == {"ints": True, "floats": True}  # zstd saves 92 % and 11 %
    assert EXPECTED["speed"]["floats"] is False and EXPECTED["auto"]["floats"] is False
    assert EXPECTED["speed"]["ints"] is False  # decoding runs far slower than a memory copy
    assert EXPECTED["auto"] != EXPECTED["size"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_stores_as_the_policy_says_and_a_hit_restores_the_same_values(
    project: Project, mode: str
) -> None:
    project.write("script.py", ARRAYS)
    fresh = project.run("script.py", env={"STATECACHE_DISABLE": "1"}).stdout
    first = project.run("script.py", env={"MODE": mode})
    assert first.computed("ints") and first.computed("floats")
    assert compressed(project) == EXPECTED[mode]
    second = project.run("script.py", env={"MODE": mode})
    assert second.hit("ints") and second.hit("floats"), second.stderr
    assert first.stdout == second.stdout == fresh


def test_left_out_it_is_auto(project: Project) -> None:
    project.write("script.py", ARRAYS)
    project.run("script.py")
    assert compressed(project) == EXPECTED["auto"]


def test_the_environment_sets_the_mode_and_an_argument_wins(project: Project, tmp_path) -> None:
    project.write("script.py", ARRAYS)
    project.run("script.py", env={"STATECACHE_COMPRESS": " Size "})  # case and spaces ignored
    assert compressed(project) == EXPECTED["size"]
    other = Project(tmp_path / "other")
    other.write("script.py", ARRAYS)
    run = other.run("script.py", env={"STATECACHE_COMPRESS": "size", "MODE": "speed"})
    assert "StateCacheWarning" not in run.stderr
    assert compressed(other) == EXPECTED["speed"]


def test_garbage_in_the_environment_warns_once_and_uses_auto(project: Project) -> None:
    project.write("script.py", ARRAYS)
    fresh = project.run("script.py", env={"STATECACHE_DISABLE": "1"}).stdout
    run = project.run("script.py", env={"STATECACHE_COMPRESS": "fastest"})
    warnings = [line for line in run.stderr.splitlines() if "STATECACHE_COMPRESS" in line]
    assert len(warnings) == 1, run.stderr  # two saves, one warning
    assert "STATECACHE_COMPRESS='fastest'" in warnings[0]
    assert all(mode in warnings[0] for mode in MODES) and "using auto" in warnings[0]
    assert run.stdout == fresh
    assert compressed(project) == EXPECTED["auto"]
    again = project.run("script.py", env={"STATECACHE_COMPRESS": "fastest"})
    assert again.hit("ints") and again.stdout == fresh


def test_another_mode_restores_the_entry_saved_under_the_first(project: Project) -> None:
    """The mode says how an entry is stored, not what it holds: not part of the key."""
    project.write("script.py", ARRAYS)
    first = project.run("script.py", env={"MODE": "speed"})
    second = project.run("script.py", env={"MODE": "size"})
    assert second.hit("ints") and second.hit("floats") and second.stdout == first.stdout
    assert compressed(project) == EXPECTED["speed"]


def test_cached_setup_takes_compress_too(project: Project) -> None:
    project.write("script.py", """
import hashlib, sys
import numpy as np
import statecache as sc

@sc.cached_setup(compress="speed")
def ints(n):
    return np.random.default_rng(7).integers(0, 4, n)

print(hashlib.sha256(ints(1_000_000).tobytes()).hexdigest())
""")
    first = project.run("script.py")
    assert compressed(project) == {"ints": False}
    second = project.run("script.py")
    assert second.hit("ints") and second.stdout == first.stdout


def ipython(project: Project, code: str, check: bool = True):  # type: ignore[no-untyped-def]
    return project.run("-m", "IPython", "--no-banner", "--colors=nocolor", "--ext", "statecache",
                       "-c", code, check=check)


@pytest.mark.parametrize("mode", ["speed", "size"])
def test_a_checkpoint_cell_takes_compress(project: Project, mode: str) -> None:
    code = (
        "import numpy as np\n"
        f"get_ipython().run_cell_magic('checkpoint', 'ints --compress {mode}', "
        "'ints = np.random.default_rng(7).integers(0, 4, 1_000_000)\\nprint(int(ints.sum()))\\n')\n"
    )
    first = ipython(project, code)
    assert first.computed("ints")
    assert compressed(project) == {"ints": mode == "size"}
    second = ipython(project, code)
    assert second.hit("ints") and second.stdout == first.stdout


def test_a_checkpoint_cell_refuses_an_unknown_mode(project: Project) -> None:
    run = ipython(project, "get_ipython().run_cell_magic('checkpoint', 'a --compress fast', 'x = 1\\n')",
                  check=False)
    assert "compress must be one of 'auto', 'speed', 'size', not 'fast'" in run.stdout + run.stderr
    assert "Usage: %%checkpoint" in run.stdout + run.stderr
    assert not project.cache.exists() or not project.entries("a")


# --- in process: the option is checked where it is given ----------------------------------------


@pytest.mark.parametrize("value", ["fast", "SIZE", "", 3, True])
def test_options_refuse_an_unknown_mode_naming_it(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        Options("checkpoint 'a'", compress=value)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("checkpoint 'a': ") and repr(value) in message
    assert all(repr(mode) in message for mode in MODES)


@pytest.mark.parametrize("mode", MODES)
def test_options_take_each_mode_over_the_environment(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATECACHE_COMPRESS", "size" if mode != "size" else "speed")
    assert Options("t", compress=mode).settings("t").compress == mode
    monkeypatch.setenv("STATECACHE_COMPRESS", mode.upper())
    assert Options("t").settings("t").compress == mode
    monkeypatch.delenv("STATECACHE_COMPRESS")
    assert Options("t").settings("t").compress == "auto"
