"""The shared remote tier against a real S3 server on loopback (moto), a shared directory and
fsspec's memory store: two "machines" (separate project and cache directories) share entries,
compute a cold key once, survive a killed lease holder, refuse damaged or foreign entries, and
never hang or block exit on a broken remote.

Before the engine calls the tier, ``MACHINE`` is a tiny driver with the engine's life cycle
(local miss -> ``obtain`` -> compute under the lease -> save locally -> ``publish``).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from statecache._errors import ConfigError, StateCacheWarning
from tests.conftest import Project, subprocess_env

pytest.register_assert_rewrite("tests.remote_server")
from tests.remote_server import BrokenEndpoint, S3Server  # noqa: E402

pytest.importorskip("s3fs")
pytest_plugins = ("tests.remote_server",)  # the S3 server and broken-endpoint fixtures

SECRET = "team-secret"
NAME, KEY = "features", "ab" * 16

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


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out, err


def wait_until(test, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(20_000):  # a guard against a hang, not a limit the behaviour is held to
        if test():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture(params=["s3", "dir"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, S3Server | None]:
    """The remote in both forms a team uses: an S3 bucket, a directory on a shared mount."""
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")
        return f"s3://{server.new_bucket()}/team", server
    shared = tmp_path / "shared-mount"
    shared.mkdir()
    return f"file://{shared}", None


def make_entry(directory: Path, secret: bytes = SECRET.encode(), n: int = 300_000, noise: bool = False) -> Path:
    import numpy as np

    from statecache.entry.writer import write_entry

    path = directory / NAME / f"{KEY}.sc"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random(n) if noise else np.arange(n)
    write_entry(str(path), {"X": data}, {"name": NAME, "key": KEY, "created": time.time()}, secret=secret)
    return path


def tier_for(url: str, secret: str = SECRET, **kw):  # type: ignore[no-untyped-def]
    from statecache.store.remote import RemoteTier

    return RemoteTier(url, secret=secret.encode(), **kw)


def publish_now(tier, path: Path) -> None:  # type: ignore[no-untyped-def]
    upload = tier.publish(NAME, KEY, str(path))
    upload.thread.join()
    assert upload.error is None and upload.created


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
    assert second.hit("features") and any("fetched" in line and remote in line for line in second.status)
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


# ----------------------------------------------------------------------------- refusals


def test_a_remote_without_a_secret_is_refused_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache.store.remote import RemoteTier, remote_from_env

    with pytest.raises(ConfigError, match="needs STATECACHE_SECRET: .*loading a pickle runs code"):
        RemoteTier("memory://team", secret=None)
    monkeypatch.setenv("STATECACHE_REMOTE", "memory://team-nosecret")
    monkeypatch.delenv("STATECACHE_SECRET", raising=False)
    with pytest.warns(StateCacheWarning, match="needs STATECACHE_SECRET"):
        assert remote_from_env() is None


def test_bad_remote_settings_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from statecache._config import env_remote, env_remote_wait

    monkeypatch.setenv("STATECACHE_REMOTE", "relative/dir")
    with pytest.raises(ConfigError, match="STATECACHE_REMOTE"):
        env_remote()
    monkeypatch.setenv("STATECACHE_REMOTE_WAIT", "soon")
    with pytest.raises(ConfigError, match="STATECACHE_REMOTE_WAIT"):
        env_remote_wait()
    monkeypatch.setenv("STATECACHE_REMOTE_WAIT", "90s")
    assert env_remote_wait() == 90


def corrupt(remote: str, server: S3Server | None, object_path: str, change) -> None:  # type: ignore[no-untyped-def]
    if server is None:
        target = Path(remote[len("file://") :]) / object_path
        data = change(target.read_bytes())
        target.unlink()  # objects are create-only: an attacker replaces the file
        target.write_bytes(data)
        return
    bucket, prefix = remote[len("s3://") :].split("/", 1)
    client = server.client()
    key = f"{prefix}/{object_path}"
    data = change(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    client.put_object(Bucket=bucket, Key=key, Body=data)


def flip_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


@pytest.mark.parametrize(
    "change, says",
    [
        (flip_middle, "checksum mismatch"),
        (lambda d: d[: len(d) // 2], "truncated|ends early|runs past"),
        (lambda d: os.urandom(len(d)), "not a statecache entry"),
    ],
    ids=["flipped-byte", "truncated", "garbage"],
)
def test_a_damaged_remote_entry_is_a_miss_with_a_warning(url, tmp_path: Path, change, says: str, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    tier = tier_for(remote)
    publish_now(tier, make_entry(tmp_path / "one"))
    corrupt(remote, server, tier.entry_object(NAME, KEY), change)
    local = tmp_path / "two" / NAME / f"{KEY}.sc"
    with pytest.warns(StateCacheWarning, match=f"ignoring the remote entry .*({says})"):
        assert tier_for(remote).fetch(NAME, KEY, str(local)) is None
    assert not local.parent.exists() or not list(local.parent.iterdir())  # no file, no temp


def test_an_entry_signed_with_another_secret_is_a_clean_miss(url, tmp_path: Path, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    publish_now(tier_for(remote, "the-other-team"), make_entry(tmp_path / "one", b"the-other-team"))
    local = tmp_path / "two" / NAME / f"{KEY}.sc"
    with pytest.warns(StateCacheWarning, match="signed with another secret .*yours is"):
        assert tier_for(remote).fetch(NAME, KEY, str(local)) is None
    assert not local.exists()


def test_an_entry_re_signed_into_our_name_fails_its_signature(url, tmp_path: Path, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    ours = tier_for(remote)
    theirs = make_entry(tmp_path / "attacker", b"attacker-secret")
    publish_now(ours, make_entry(tmp_path / "one"))
    corrupt(remote, server, ours.entry_object(NAME, KEY), lambda _d: theirs.read_bytes())
    with pytest.warns(StateCacheWarning, match="wrong signature"):
        assert ours.fetch(NAME, KEY, str(tmp_path / "two" / NAME / f"{KEY}.sc")) is None


def test_the_check_sees_the_metadata_before_the_download(url, tmp_path: Path, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, _server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    tier = tier_for(remote)
    publish_now(tier, make_entry(tmp_path / "one", n=5_000_000))
    seen: list[dict] = []
    local = tmp_path / "two" / NAME / f"{KEY}.sc"

    def refuse(meta) -> bool:  # type: ignore[no-untyped-def]
        seen.append(dict(meta))
        # at this point only the header and metadata have arrived: the rest is a hole
        (tmp,) = list(local.parent.glob(".*.tmp"))
        assert os.stat(tmp).st_blocks * 512 < meta["state_size"] // 4
        return False

    assert tier.fetch(NAME, KEY, str(local), check=refuse) is None
    assert [m["name"] for m in seen] == [NAME] and not list(local.parent.iterdir())
    assert tier.fetch(NAME, KEY, str(local), check=lambda meta: True) is not None


def test_the_memory_store_round_trips(tmp_path: Path) -> None:
    tier = tier_for(f"memory://sc-test-{os.getpid()}-{time.time_ns()}")
    path = make_entry(tmp_path / "one")
    publish_now(tier, path)
    again = tier.publish(NAME, KEY, str(path))
    again.thread.join()
    assert again.error is None and not again.created  # someone published first: fine
    got = tier.fetch(NAME, KEY, str(tmp_path / "two" / NAME / f"{KEY}.sc"))
    assert got is not None and Path(got.path).read_bytes() == path.read_bytes()


def test_a_duplicate_s3_publish_leaves_no_multipart_upload(s3_env: S3Server, tmp_path: Path) -> None:
    from statecache.store import objects

    bucket = s3_env.new_bucket()
    tier = tier_for(f"s3://{bucket}/team")
    path = make_entry(tmp_path / "one", n=5_000_000, noise=True)  # 40 MB: a multipart upload
    assert path.stat().st_size > 2 * objects.PIECE
    store = tier.store()
    with open(path, "rb") as f:
        assert store.upload_create(tier.entry_object(NAME, KEY), f.fileno(), path.stat().st_size, lambda n: None)
        # a second writer that raced past the existence check is refused at completion
        assert not store.upload_create(tier.entry_object(NAME, KEY), f.fileno(), path.stat().st_size, lambda n: None)
    assert not s3_env.client().list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_a_damaged_remote_entry_is_computed_here_without_waiting(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    said: list[str] = []
    tier = tier_for(f"file://{shared}", status=said.append)
    publish_now(tier, make_entry(tmp_path / "one"))
    corrupt(f"file://{shared}", None, tier.entry_object(NAME, KEY), flip_middle)
    with pytest.warns(StateCacheWarning, match="ignoring the remote entry"):
        lease = tier.obtain(NAME, KEY, str(tmp_path / "two" / NAME / f"{KEY}.sc"))
    assert getattr(lease, "held", False) and said == []  # computed at once, no wait announced
    lease.release()  # type: ignore[union-attr]
    assert not (shared / tier.lease_object(NAME, KEY)).exists()


def test_an_abandoned_lease_is_taken_over_at_once(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    lease_file = shared / tier_for(f"file://{shared}").lease_object(NAME, KEY)
    lease_file.parent.mkdir(parents=True)
    lease_file.write_bytes(b"\x00garbage")
    old = time.time() - 3600
    os.utime(lease_file, (old, old))
    tier = tier_for(f"file://{shared}", lease_ttl=60)
    with pytest.warns(StateCacheWarning, match="an unknown process .*stopped renewing its lease"):
        lease = tier.obtain(NAME, KEY, str(tmp_path / "local" / NAME / f"{KEY}.sc"))
    assert getattr(lease, "held", False)
    assert json.loads(lease_file.read_bytes())["pid"] == os.getpid()
    lease.release()  # type: ignore[union-attr]


def test_the_engine_hooks_lease_publish_and_abandon(tmp_path: Path) -> None:
    from statecache.store.remote import EngineTier

    shared = tmp_path / "shared"
    shared.mkdir()
    hooks = EngineTier(tier_for(f"file://{shared}", status=lambda _text: None))
    lease_file = shared / hooks.remote.lease_object(NAME, KEY)
    local = tmp_path / "one" / NAME / f"{KEY}.sc"
    assert hooks.fetch(NAME, KEY, str(local)) is False and lease_file.exists()  # compute: leased
    hooks.abandon(NAME, KEY)  # the body raised
    assert not lease_file.exists()
    assert hooks.fetch(NAME, KEY, str(local)) is False and lease_file.exists()
    make_entry(tmp_path / "one")
    hooks.publish(NAME, KEY, str(local))
    from statecache.store.upload import wait_for_uploads

    assert wait_for_uploads(limit=600) == []
    assert (shared / hooks.remote.entry_object(NAME, KEY)).exists() and not lease_file.exists()
    other = tmp_path / "two" / NAME / f"{KEY}.sc"
    assert hooks.fetch(NAME, KEY, str(other)) is True and other.read_bytes() == local.read_bytes()


# ----------------------------------------------------------------------------- faults


def closed_port() -> int:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_a_remote_that_is_down_is_a_warning_then_local(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{closed_port()}")
    tier = tier_for("s3://nowhere-bucket/team", timeout=2)
    local = str(tmp_path / "two" / NAME / f"{KEY}.sc")
    with pytest.warns(StateCacheWarning, match="remote cache s3://nowhere-bucket/team failed .*check the network"):
        lease = tier.obtain(NAME, KEY, local)
    assert not getattr(lease, "held", True)  # compute locally, without waiting
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tier.publish(NAME, KEY, str(make_entry(tmp_path / "one"))) is None  # known down


@pytest.mark.parametrize("mode", ["stall", "garbage"])
def test_a_stalled_or_garbled_remote_is_a_warning_not_a_hang(s3_env: S3Server, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = BrokenEndpoint(mode)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", bad.endpoint)
        tier = tier_for(f"s3://{s3_env.new_bucket()}/team", timeout=1)
        with pytest.warns(StateCacheWarning, match="failed while fetching 'features'"):
            assert tier.fetch(NAME, KEY, str(tmp_path / NAME / f"{KEY}.sc")) is None
        assert bad.connections >= 1
    finally:
        bad.close()


def test_refused_credentials_are_a_warning_naming_them(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    refusing = BrokenEndpoint("forbidden")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", refusing.endpoint)
        tier = tier_for("s3://some-bucket/team", timeout=2)
        with pytest.warns(StateCacheWarning, match="access refused .*check the AWS credentials"):
            assert tier.fetch(NAME, KEY, str(tmp_path / NAME / f"{KEY}.sc")) is None
        assert refusing.connections >= 1
    finally:
        refusing.close()


def test_missing_credentials_are_a_warning_naming_them(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    tier = tier_for(f"s3://{s3_env.new_bucket()}/team", timeout=2)
    with pytest.warns(StateCacheWarning, match="(?i)credentials"):
        assert tier.fetch(NAME, KEY, str(tmp_path / NAME / f"{KEY}.sc")) is None


def test_an_upload_in_progress_does_not_block_exit_past_its_limit(s3_server: S3Server, stalled_endpoint: BrokenEndpoint, tmp_path: Path) -> None:
    p = Project(tmp_path / "slow")
    entry = make_entry(tmp_path / "one")
    go = tmp_path / "go"
    p.write(
        "publish.py",
        f"""
        import os, time
        from statecache.store.remote import RemoteTier
        tier = RemoteTier("s3://{s3_server.new_bucket()}/team", secret=b"{SECRET}", exit_wait=1)
        assert tier.publish("{NAME}", "{KEY}", {str(entry)!r}) is not None
        while not os.path.exists({str(go)!r}):  # the test says when the upload is on the wire
            time.sleep(0.01)
        print("program done")
        """,
    )
    proc = subprocess.Popen(
        [sys.executable, "publish.py"], cwd=p.root, env=subprocess_env(**s3_server.env(stalled_endpoint.endpoint)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_until(lambda: stalled_endpoint.received > 0, "the upload's first request reaches the (stalled) remote")
    go.touch()
    out, err = finish(proc)
    assert out == "program done\n"
    assert "did not finish in 1 s and was abandoned" in err
    wait_until(lambda: stalled_endpoint.closed_by_client >= 1, "the exiting process drops its connection")


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    from statecache.cli import main as _cli

    monkeypatch.setitem(_cli.PLUGINS, "remote", "statecache.cli.remote")
    monkeypatch.setenv("STATECACHE_SECRET", SECRET)

    def run(*argv: str) -> tuple[int, str, str]:
        code = _cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_push_ls_pull(url, tmp_path: Path, cli, s3_server: S3Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    remote, _server = url
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    one, two = tmp_path / "one", tmp_path / "two"
    path = make_entry(one)
    code, out, _ = cli("remote", "push", "--dir", str(one), "--remote", remote)
    assert code == 0 and "pushed features/" in out
    assert "0 of 1" in cli("remote", "push", "--dir", str(one), "--remote", remote)[1]  # already there
    code, out, _ = cli("remote", "ls", "--json", "--remote", remote)
    listed = json.loads(out)["entries"]
    assert [(e["name"], e["key"], e["yours"]) for e in listed] == [(NAME, KEY, True)]
    code, out, _ = cli("remote", "pull", "--dir", str(two), "--remote", remote)
    assert code == 0 and "1 of 1" in out
    assert (two / NAME / f"{KEY}.sc").read_bytes() == path.read_bytes()


def test_cli_gc_removes_by_upload_age(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = f"file://{shared}"
    tier = tier_for(remote)
    publish_now(tier, make_entry(tmp_path / "one"))
    obj = shared / tier.entry_object(NAME, KEY)
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--remote", remote)
    assert code == 0 and obj.exists() and "0 entries" in out
    old = time.time() - 31 * 86400
    os.utime(obj, (old, old))
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--dry-run", "--remote", remote)
    assert "would remove features/" in out and obj.exists()
    code, out, _ = cli("remote", "gc", "--older-than", "30d", "--remote", remote)
    assert code == 0 and not obj.exists()


def test_cli_without_a_remote_is_a_usage_error(cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("STATECACHE_REMOTE", raising=False)
    code, _, err = cli("remote", "ls")
    assert code == 2 and "give --remote URL or set STATECACHE_REMOTE" in err


def test_key_ids_name_the_secret_without_revealing_it() -> None:
    from statecache.store.remote import key_id

    assert key_id(b"a") != key_id(b"b") and len(key_id(b"a")) == 16
    assert hashlib.sha256(b"a").hexdigest()[:16] != key_id(b"a")
