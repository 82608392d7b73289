"""Damage: random byte flips, truncations, zeroed pages, swapped blocks and sections, files of
another format, entries from a newer format version, and a valid entry of another key put in
place of this one. Each trial damages the entry of a real script, runs the script again and
checks what the user gets (each run is a fresh child forked from a warm interpreter, see
``ForkServer``, so that a trial costs milliseconds): the right values (never a wrong one), exit status 0 (never a crash),
and, unless the damage touched only bytes that carry nothing (alignment padding, the unused
signature field of an unsigned entry), a miss with a warning naming the checkpoint and the
entry file.

Default run: 25 trials, half of them on signed entries (``STATECACHE_SECRET`` set);
``STATECACHE_DAMAGE_TRIALS=50`` (the former default) or any count for more.
``pytest -m extended tests/faults/test_damage.py -s``: 1000 trials.
``STATECACHE_FAULT_SEED`` changes the random trials (the seed is printed on failure).
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import random
import shutil
import struct
import textwrap
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Project

from ._layout import Layout, layout_of, only_unchecked
from ._util import STATE_SCRIPT, ForkServer, cli, expected_digest, state_digest, warnings_in

SEED = int(os.environ.get("STATECACHE_FAULT_SEED", "20261128"))
TRIALS = int(os.environ.get("STATECACHE_DAMAGE_TRIALS", "25"))
WORKERS = 2
# the second worker's entries are signed: damage must also be caught with STATECACHE_SECRET set
WORKER_ENV: list[dict[str, str]] = [{}, {"STATECACHE_SECRET": "damage-trials"}]


def _flip(rng: random.Random, data: bytearray, layout: Layout) -> str:
    region = rng.choice([*layout.regions, "anywhere", "anywhere"])
    lo, hi = layout.regions.get(region, (0, layout.size))
    count = rng.choice([1, 1, 1, 2, 3, 8])
    for _ in range(count):
        i = rng.randrange(lo, hi)
        data[i] ^= rng.choice([1 << rng.randrange(8), rng.randrange(1, 256)])
    return f"flip {count} byte(s) in {region}"


def _truncate(rng: random.Random, data: bytearray, layout: Layout) -> str:
    region = rng.choice([*layout.regions, "anywhere"])
    lo, hi = layout.regions.get(region, (0, layout.size))
    at = rng.randrange(lo, hi)
    del data[at:]
    return f"truncate at {at} (in {region})"


def _zero_page(rng: random.Random, data: bytearray, layout: Layout) -> str:
    page = rng.randrange(0, (layout.size + 4095) // 4096)
    data[page * 4096 : (page + 1) * 4096] = bytes(len(data[page * 4096 : (page + 1) * 4096]))
    return f"zero page {page}"


def _swap_blocks(rng: random.Random, data: bytearray, layout: Layout) -> str:
    n = rng.choice([1, 8, 64, 512, 4096])
    a, b = sorted(rng.sample(range(0, layout.size - n, n), 2))
    data[a : a + n], data[b : b + n] = data[b : b + n], data[a : a + n]
    return f"swap {n}-byte blocks at {a} and {b}"


def _swap_sections(rng: random.Random, data: bytearray, layout: Layout) -> str:
    same = collections.defaultdict(list)
    for lo, hi in layout.buffer_sections:
        same[hi - lo].append((lo, hi))
    pairs = [v for v in same.values() if len(v) >= 2]
    if not pairs or rng.random() < 0.3:  # the metadata and the pickle stream change places
        meta, stream = layout.regions["meta"], layout.regions["stream"]
        n = min(meta[1] - meta[0], stream[1] - stream[0])
        a, b = meta[0], stream[0]
        data[a : a + n], data[b : b + n] = data[b : b + n], data[a : a + n]
        return "swap metadata and pickle stream"
    (a0, a1), (b0, _) = rng.sample(rng.choice(pairs), 2)
    n = a1 - a0
    data[a0 : a0 + n], data[b0 : b0 + n] = data[b0 : b0 + n], data[a0 : a0 + n]
    return "swap two buffer sections of the same size"


def _foreign(rng: random.Random, data: bytearray, layout: Layout) -> str:
    kind = rng.choice(["empty", "random", "pickle", "zip", "json", "text", "png", "magic+garbage", "npy"])
    if kind == "empty":
        new = b""
    elif kind == "random":
        new = rng.randbytes(rng.randrange(1, 100_000))
    elif kind == "pickle":
        new = pickle.dumps({"raw1": [1.0, 2.0], "table": {"k0": (0, "000", [0, 0.5])}}, protocol=5)
    elif kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("state.pkl", b"x" * 1000)
        new = buf.getvalue()
    elif kind == "json":
        new = json.dumps({"name": "state", "variables": {"raw1": {}}}).encode()
    elif kind == "text":
        new = b"statecache entry\n" * rng.randrange(1, 500)
    elif kind == "png":
        new = b"\x89PNG\r\n\x1a\n" + rng.randbytes(2000)
    elif kind == "npy":
        new = b"\x93NUMPY\x01\x00" + rng.randbytes(4000)
    else:
        new = bytes(data[:8]) + rng.randbytes(rng.randrange(0, 200_000))
    data[:] = new
    return f"replace with a file of another format ({kind})"


def _newer_version(rng: random.Random, data: bytearray, layout: Layout) -> str:
    import xxhash

    version = rng.choice([2, 3, 100, 2**32 - 1, 0])
    struct.pack_into("<I", data, 8, version)
    # fix the header checksum, as a real entry of that version would have it right
    struct.pack_into("<Q", data, 56, xxhash.xxh3_64_intdigest(bytes(data[:56])))
    return f"entry of format version {version}"


def _append(rng: random.Random, data: bytearray, layout: Layout) -> str:
    n = rng.choice([1, 64, 4096, 100_000])
    data += rng.randbytes(n)
    return f"append {n} bytes"


DAMAGES = [_flip] * 6 + [_truncate] * 3 + [_zero_page] * 2 + [_swap_blocks] * 2 + [
    _swap_sections,
    _foreign,
    _newer_version,
    _append,
    "other_key",
]


def _project(root: Path, env: dict[str, str]) -> tuple[Project, Path, bytes, bytes, str]:
    """A project with the state script run once: (project, entry path, its bytes, the bytes of
    a valid entry of another key, the correct digest)."""
    project = Project(root)
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project, env)
    other = project.run("state.py", env={**env, "N_OBJ": "1999"})  # another key, another state
    assert state_digest(other) not in (None, expected)
    [other_path] = project.entries("state")
    other_bytes = other_path.read_bytes()
    other_path.unlink()
    project.run("state.py", env=env)
    [entry] = project.entries("state")
    return project, entry, entry.read_bytes(), other_bytes, expected


def _trial(server: ForkServer, entry: Path, pristine: bytes, other: bytes, expected: str,
           layout: Layout, seed: int) -> str:
    """One damage trial; returns its outcome ("detected" or "harmless") or raises."""
    rng = random.Random(seed)
    damage = rng.choice(DAMAGES)
    data = bytearray(pristine)
    if damage == "other_key":
        data[:] = other
        what = "a valid entry of another key in place of this one"
    else:
        what = damage(rng, data, layout)
    entry.write_bytes(bytes(data))
    os.chmod(entry, 0o600)
    run = server.run("state.py")
    context = f"seed {seed}: {what}\n--- stderr\n{run.stderr}"
    try:
        assert run.returncode == 0 and "Traceback" not in run.stderr, context
        assert state_digest(run) == expected, "WRONG VALUE: " + context
        if run.hit("state"):
            assert only_unchecked(layout, pristine, bytes(data)), "undetected damage: " + context
            return "harmless"
        warned = warnings_in(run.stderr)
        assert warned and "'state'" in warned[0] and entry.name in warned[0], context
        assert run.computed("state"), context
        return "detected"
    finally:
        entry.write_bytes(pristine)
        os.chmod(entry, 0o600)


def _run_trials(tmp_path: Path, trials: int) -> collections.Counter:
    workers = []
    for w in range(WORKERS):
        root = tmp_path / f"w{w}"
        root.mkdir()
        workers.append(_project(root, WORKER_ENV[w]))

    def work(w: int) -> collections.Counter:
        project, entry, pristine, other, expected = workers[w]
        layout = layout_of(entry)  # the metadata's length varies by a byte or two (timings)
        counts: collections.Counter = collections.Counter()
        with ForkServer(project.root, WORKER_ENV[w]) as server:
            for t in range(w, trials, WORKERS):
                counts[_trial(server, entry, pristine, other, expected, layout, SEED + t)] += 1
        return counts

    with ThreadPoolExecutor(WORKERS) as pool:
        total = sum((f.result() for f in [pool.submit(work, w) for w in range(WORKERS)]), collections.Counter())
    print(
        f"\ndamage trials: {trials} (seed {SEED}), detected (miss + warning): {total['detected']}, "
        f"harmless (only unused bytes touched, values correct): {total['harmless']}, "
        "wrong values: 0, crashes: 0"
    )
    assert sum(total.values()) == trials
    return total


def test_damage_trials(tmp_path: Path) -> None:
    counts = _run_trials(tmp_path, TRIALS)
    assert counts["detected"] >= TRIALS * 4 // 5


@pytest.mark.extended
def test_damage_trials_extended(tmp_path: Path) -> None:
    counts = _run_trials(tmp_path, 1000)
    assert counts["detected"] >= 900


def test_the_trials_cover_every_kind_of_damage() -> None:
    """The trials of the default run draw every kind of damage at least once."""
    drawn = {random.Random(SEED + t).choice(DAMAGES) for t in range(TRIALS)}
    assert set(DAMAGES) <= drawn


def test_entry_file_copied_to_another_key_is_refused(tmp_path: Path) -> None:
    """An entry is only valid at its own key: a (valid, even signed) entry of another version of
    the checkpoint renamed into place must not be loaded in its stead."""
    for secret in ("", "s3cret"):
        root = tmp_path / (secret or "plain")
        root.mkdir()
        project = Project(root)
        project.write("state.py", textwrap.dedent(STATE_SCRIPT))
        env = {"STATECACHE_SECRET": secret} if secret else {}
        expected = expected_digest(project, env)
        project.run("state.py", env={**env, "N_OBJ": "10"})
        [other] = project.entries("state")
        project.run("state.py", env=env)
        [entry] = [p for p in project.entries("state") if p != other]
        shutil.copyfile(other, entry)
        run = project.run("state.py", env=env)
        assert state_digest(run) == expected, run.stderr
        assert not run.hit("state")
        [warning] = warnings_in(run.stderr)
        assert "'state'" in warning and entry.name in warning


@pytest.mark.parametrize(
    "junk",
    ['{"version":1,"scanned":"x","dirs":{"state":"y"}}', '{"version":1,"scanned":0,"dirs":{"state":[1,"2"]}}',
     '{"version":1,"scanned":0,"dirs":{"state":[1,2,3]}}', "[1]", "garbage", ""],
)
def test_damaged_size_index_is_rebuilt_silently(project: Project, junk: str) -> None:
    """The size cap's usage index (a cache-wide file) damaged: saves go on without a warning
    and the index is rebuilt, instead of a warning at every save forever."""
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    env = {"STATECACHE_MAX_SIZE": "1G"}
    project.run("state.py", env=env)
    index = project.cache / ".statecache-usage.json"
    assert index.exists()
    for n in ("1000", "1001"):
        index.write_text(junk)
        run = project.run("state.py", env={**env, "N_OBJ": n})
        assert "saved" in run.stderr and warnings_in(run.stderr) == [], run.stderr
        assert json.loads(index.read_text())["dirs"]["state"][1] > 0


def _rewrite_meta(entry: Path, change) -> None:
    """Give ``entry`` new metadata with valid checksums: valid JSON, wrong types inside. The new
    JSON is padded with spaces to the old length, so the data start stays where it was."""
    import xxhash

    data = bytearray(entry.read_bytes())
    (meta_len,) = struct.unpack_from("<Q", data, 16)
    meta = json.loads(data[64 : 64 + meta_len])
    meta["created"] = 0  # room for the change
    change(meta)
    new = json.dumps(meta, separators=(",", ":")).encode()
    assert len(new) <= meta_len
    new = new.ljust(meta_len)
    data[64 : 64 + meta_len] = new
    struct.pack_into("<Q", data, 24, xxhash.xxh3_64_intdigest(new))
    struct.pack_into("<Q", data, 56, xxhash.xxh3_64_intdigest(bytes(data[:56])))
    entry.write_bytes(bytes(data))


def _set(path: str, value: object):
    def change(meta: dict) -> None:
        *parents, last = path.split(".")
        target = meta
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set("variables", ["raw1"]), "'variables'"),
        (_set("files", {"path": "x"}), "'files'"),
        (_set("source.line", "7"), "'source.line'"),
        (_set("compute_seconds", "fast"), "'compute_seconds'"),
        (_set("pickler", 3), "'pickler'"),
        (_set("rng", []), "'rng'"),
    ],
)
def test_wrong_types_in_valid_metadata_are_a_clean_miss(
    project: Project, change, field: str
) -> None:
    """Metadata that is valid JSON with valid checksums but a wrong type inside (a hand edit,
    another tool): a miss with one warning naming the field, the right values, exit 0."""
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    expected = expected_digest(project)
    project.run("state.py")
    [entry] = project.entries("state")
    _rewrite_meta(entry, change)
    run = project.run("state.py")
    assert state_digest(run) == expected, run.stderr
    assert not run.hit("state") and "Traceback" not in run.stderr
    [warning] = warnings_in(run.stderr)
    assert "'state'" in warning and field in warning, warning
    assert project.run("state.py").hit("state")  # the recomputed entry replaced it


def test_wrong_types_in_valid_metadata_are_reported_by_ls_show_and_verify(
    project: Project,
) -> None:
    project.write("state.py", textwrap.dedent(STATE_SCRIPT))
    project.run("state.py")
    [entry] = project.entries("state")
    _rewrite_meta(entry, _set("variables", "raw1"))
    cache = str(project.cache)
    for args, code in ((["ls"], 0), (["show", "state"], 1), (["verify"], 1)):
        proc = cli(*args, "--dir", cache)
        assert proc.returncode == code and "Traceback" not in proc.stderr, (args, proc.stderr)
        assert "'variables'" in proc.stdout + proc.stderr, (args, proc.stdout)
