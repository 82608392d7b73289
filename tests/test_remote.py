"""The shared remote tier between "machines" (separate project and cache directories), against
a real S3 server on loopback (moto) and a shared directory: the second machine restores what the
first computed, a cold key is computed once by four processes, a renewed lease keeps waiters
waiting and a killed holder's lease is taken over, a forked child uses the remote too.

``MACHINE`` is a tiny driver with the engine's life cycle (local miss -> ``obtain`` -> compute
under the lease -> save locally -> ``publish``); ``CHECKPOINT`` is the same through real
checkpoints and the engine's second-tier hook.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Project, subprocess_env

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import (  # noqa: E402
    KEY,
    NAME,
    SECRET,
    S3Server,
    finish,
    make_entry,
    publish_now,
    tier_for,
    wait_until,
)

pytest.importorskip("s3fs")
pytest_plugins = ("tests.remote_server",)  # the S3 server, broken endpoints, the `url` remote

MACHINE = r"""
import hashlib, os, sys, time
import numpy as np
from statecache.entry.reader import read_entry
from statecache.entry.writer import write_entry
from statecache.store.remote import Fetched, RemoteTier
from statecache.store.store import Store

NAME, KEY = "features", "ab" * 16
env = os.environ
secret = env["STATECACHE_SECRET"].encode()
store = Store(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".statecache"))
path = store.entry_path(NAME, KEY)
os.makedirs(os.path.dirname(path), exist_ok=True)
tier = RemoteTier(env["URL"], secret=secret, lease_ttl=float(env.get("TTL", "60")),
                  wait_seconds=float(env.get("WAIT", "600")), exit_wait=float(env.get("EXIT_WAIT", "60")))

def wait_for(test):
    while not test():
        time.sleep(0.02)

if "BARRIER" in env:
    open(os.path.join(env["BARRIER"], str(os.getpid())), "w").close()
if os.path.exists(path):
    how = "local"
else:
    got = tier.obtain(NAME, KEY, path)
    if isinstance(got, Fetched):
        how = "remote"
    else:
        how = "computed"
        with open(env["LOG"], "a") as log:
            log.write(f"{os.getpid()}\n")
        if "HOLD" in env:
            open(env["HOLD"], "w").close()
            time.sleep(3600)
        if "BARRIER" in env:
            wait_for(lambda: len(os.listdir(env["BARRIER"])) >= int(env["N"]))
        if "FINISH" in env:
            wait_for(lambda: os.path.exists(env["FINISH"]))
        state = {"X": np.arange(int(env.get("SIZE", "1000000"))) * 3, "where": os.getcwd()}
        write_entry(path, state, {"name": NAME, "key": KEY, "created": time.time()}, secret=secret)
        tier.publish(NAME, KEY, path, lease=got)
meta, state = read_entry(path, secret=secret)
print(how, hashlib.sha256(state["X"].tobytes()).hexdigest(), state["where"])
"""


# ----------------------------------------------------------------------------- helpers


def machine(root: Path) -> Project:
    project = Project(root)
    project.write("machine.py", MACHINE)
    return project


def remote_env(url: str, server: S3Server | None, **extra: str) -> dict[str, str]:
    env = {"URL": url, "STATECACHE_SECRET": SECRET, **extra}
    if server is not None:
        env.update(server.env())
    return env


def spawn(project: Project, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "machine.py"], cwd=project.root, env=subprocess_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# ----------------------------------------------------------------------------- two machines


def test_a_second_machine_restores_what_the_first_computed(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    one, two = machine(tmp_path / "laptop" / "proj"), machine(tmp_path / "node17" / "clone")
    env = remote_env(remote, server, LOG=str(tmp_path / "computed.log"))
    first = one.run("machine.py", env=env).stdout.split()
    second = two.run("machine.py", env=env).stdout.split()
    assert first[0] == "computed" and second[0] == "remote"
    assert second[1:] == first[1:]  # the same state, made on machine one
    assert (two.cache / NAME / f"{KEY}.sc").read_bytes() == (one.cache / NAME / f"{KEY}.sc").read_bytes()
    assert two.run("machine.py", env=env).stdout.split()[0] == "local"  # now in its own tier
    assert not list(two.cache.glob("*/.*.tmp"))


def test_four_processes_on_two_machines_compute_a_cold_key_once(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    barrier = tmp_path / "started"
    barrier.mkdir()
    log = tmp_path / "computed.log"
    env = remote_env(remote, server, LOG=str(log), BARRIER=str(barrier), N="4", TTL="4")  # polls each 1 s
    projects = [machine(tmp_path / f"m{i}") for i in range(4)]
    procs = [spawn(p, env) for p in projects]
    outs = [finish(p)[0].split() for p in procs]
    assert len(log.read_text().split()) == 1  # the body ran once
    assert sorted(o[0] for o in outs) == ["computed", "remote", "remote", "remote"]
    assert len({tuple(o[1:]) for o in outs}) == 1


def test_a_renewed_lease_keeps_waiters_waiting(s3_server: S3Server, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log, release = tmp_path / "computed.log", tmp_path / "finish"
    env = remote_env(remote, s3_server, LOG=str(log), TTL="1.5")
    holder = spawn(machine(tmp_path / "a"), {**env, "FINISH": str(release)})
    wait_until(log.exists, "the holder starts computing")
    waiter = spawn(machine(tmp_path / "b"), env)
    bucket = remote.split("/")[2]
    client = s3_server.client()
    lease_key = next(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="team/v1/leases/")["Contents"])
    etags: set[str] = set()

    def renewed_past_two_ttls() -> bool:
        etags.add(client.head_object(Bucket=bucket, Key=lease_key)["ETag"])
        return len(etags) >= 7  # 6 renewals, one every ttl/3: two whole TTLs

    assert waiter.stderr is not None
    seen = ""
    while "is being computed by" not in seen:  # the waiter has found the live lease
        line = waiter.stderr.readline()
        assert line, f"the waiter ended without waiting: {seen}"
        seen += line
    wait_until(renewed_past_two_ttls, "the holder renews its lease")
    assert waiter.poll() is None  # still waiting: it did not take a live lease over
    release.touch()
    assert finish(holder)[0].split()[0] == "computed"
    out, err = finish(waiter)
    assert out.split()[0] == "remote"
    assert len(log.read_text().split()) == 1
    assert "stopped renewing" not in seen + err


def test_a_killed_lease_holder_is_taken_over_after_its_ttl(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    log, held = tmp_path / "computed.log", tmp_path / "held"
    env = remote_env(remote, server, LOG=str(log), TTL="1")
    holder = spawn(machine(tmp_path / "a"), {**env, "HOLD": str(held)})
    wait_until(held.exists, "the first process holds the lease")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    out, err = finish(spawn(machine(tmp_path / "b"), env))
    assert out.split()[0] == "computed"
    assert "stopped renewing its lease" in err
    assert len(log.read_text().split()) == 2
    assert machine(tmp_path / "c").run("machine.py", env=env).stdout.split()[0] == "remote"


def test_a_waiter_computes_itself_once_its_wait_runs_out(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A holder alive but slow (its lease renewed): after STATECACHE_REMOTE_WAIT the waiter
    says so and computes the entry itself; nothing waits longer than it was told."""
    remote, server = url
    log, held = tmp_path / "computed.log", tmp_path / "held"
    env = remote_env(remote, server, LOG=str(log), TTL="60")
    holder = spawn(machine(tmp_path / "a"), {**env, "HOLD": str(held)})
    try:
        wait_until(held.exists, "the first process holds the lease")
        out, err = finish(spawn(machine(tmp_path / "b"), {**env, "WAIT": "1"}))
    finally:
        holder.kill()
        holder.wait()
    assert out.split()[0] == "computed" and len(log.read_text().split()) == 2
    assert "is being computed by" in err and "waited 1 s for" in err
    assert "computing it here as well. Raise STATECACHE_REMOTE_WAIT" in err
    assert "stopped renewing" not in err  # a live lease is not taken over


def test_a_forked_child_uses_the_remote_too(s3_server: S3Server, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    publish_dir = tmp_path / "publisher"
    p = Project(tmp_path / "forker")
    p.write(
        "fork.py",
        f"""
        import os, sys
        from statecache.store.remote import RemoteTier
        tier = RemoteTier({remote!r}, secret=b"{SECRET}")
        assert tier.fetch("{NAME}", "{KEY}", "parent/{NAME}/{KEY}.sc") is not None
        pid = os.fork()
        if pid == 0:
            got = tier.fetch("{NAME}", "{KEY}", "child/{NAME}/{KEY}.sc")
            os._exit(0 if got is not None else 3)
        print("child exit", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """,
    )
    env = {**s3_server.env(), "STATECACHE_SECRET": SECRET}
    for k, v in env.items():
        os.environ.setdefault(k, v)
    path = make_entry(publish_dir)
    publish_now(tier_for(remote), path)
    run = p.run("fork.py", env=env)
    assert run.stdout.strip() == "child exit 0", run.stderr
    assert (p.root / "child" / NAME / f"{KEY}.sc").read_bytes() == path.read_bytes()


# ----------------------------------------------------------------------------- real checkpoints

CHECKPOINT = r"""
import os, time
import numpy as np
import statecache as sc
from statecache._engine import add_tier
from statecache.store.remote import engine_tier

add_tier(engine_tier())  # the engine's second-tier hook, fed from STATECACHE_REMOTE
if "BARRIER" in os.environ:
    open(os.path.join(os.environ["BARRIER"], os.environ["IDX"]), "w").close()
with sc.checkpoint("features"):
    with open(os.environ["LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")
    if "BARRIER" in os.environ:  # compute only once every process is looking for the entry
        while not all(os.path.exists(os.path.join(os.environ["BARRIER"], str(i))) for i in range(4)):
            time.sleep(0.02)
    X = np.arange(1_000_000) * 7
print("sum", int(X.sum()))
"""


def clone(root: Path) -> Project:
    project = Project(root)
    project.write("run.py", CHECKPOINT)
    return project


def checkpoint_env(remote: str, server: S3Server | None, log: Path, **extra: str) -> dict[str, str]:
    env = {"STATECACHE_REMOTE": remote, "STATECACHE_SECRET": SECRET, "LOG": str(log), **extra}
    if server is not None:
        env.update(server.env())
    return env


def test_checkpoints_in_two_clones_share_through_the_remote(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    log = tmp_path / "computed.log"
    env = checkpoint_env(remote, server, log)
    one, two = clone(tmp_path / "alice" / "project"), clone(tmp_path / "bob" / "work" / "project")
    first = one.run("run.py", env=env)
    second = two.run("run.py", env=env)
    assert first.computed("features") and not second.computed("features")
    assert second.hit("features") and any("restored" in line and f"from {remote}" in line for line in second.status)
    assert first.stdout == second.stdout
    assert len(log.read_text().split()) == 1
    assert two.entries("features")[0].read_bytes() == one.entries("features")[0].read_bytes()


def test_four_checkpoint_processes_on_two_machines_run_the_body_once(s3_server: S3Server, tmp_path: Path) -> None:
    remote = f"s3://{s3_server.new_bucket()}/team"
    log, barrier = tmp_path / "computed.log", tmp_path / "started"
    barrier.mkdir()
    machines = [clone(tmp_path / "m1" / "project"), clone(tmp_path / "m2" / "project")]
    procs = [
        subprocess.Popen(
            [sys.executable, "run.py"], cwd=machines[i % 2].root,
            env=subprocess_env(**checkpoint_env(
                remote, s3_server, log, BARRIER=str(barrier), IDX=str(i), STATECACHE_REMOTE_LEASE="4s"
            )),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(4)
    ]
    outs = [finish(p) for p in procs]
    assert len(log.read_text().split()) == 1, "\n".join(err for _, err in outs)  # one body ran
    assert len({out for out, _ in outs}) == 1
    assert sum("'features' computing" in err for _, err in outs) == 1




DATA_CHECKPOINT = r"""
import statecache as sc
from statecache._engine import add_tier
from statecache.store.remote import engine_tier

add_tier(engine_tier())
with sc.checkpoint("load"):
    with open("data.txt") as f:
        rows = f.read().split()
print("rows", rows)
"""


def test_a_remote_entry_whose_data_file_differs_here_is_not_restored(url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Same code, other data.txt in the second clone: the remote entry must not be its state."""
    remote, server = url
    env = checkpoint_env(remote, server, tmp_path / "unused.log")
    one, two = Project(tmp_path / "alice" / "project"), Project(tmp_path / "bob" / "project")
    for project, data in ((one, "1 2 3\n"), (two, "4 5\n")):
        project.write("run.py", DATA_CHECKPOINT)
        project.write("data.txt", data)
    assert one.run("run.py", env=env).stdout == "rows ['1', '2', '3']\n"
    fresh = two.run("run.py", env={**env, "STATECACHE_DISABLE": "1"}).stdout
    assert fresh == "rows ['4', '5']\n"
    for _ in range(2):  # the remote's entry refused, then this clone's own entry
        assert two.run("run.py", env=env).stdout == fresh
    assert one.run("run.py", env=env).stdout == "rows ['1', '2', '3']\n"
