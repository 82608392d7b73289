"""The remote tier over loopback: a remote hit of a big state against a local hit (warm and
cold page cache) and against recomputing it, and what publishing adds to the program.

Two remotes: a real S3 server (moto's ThreadedMotoServer on 127.0.0.1, in this process) and a
directory standing for a shared mount (``file://``). Every figure comes from a fresh ``python``
process running a script with one checkpoint of random float64 weights (incompressible: every
byte travels), as a user meets it:

- recompute: the block's time on a miss, without a remote;
- local hit: the block's time when the entry is in the local cache (warm: in the page cache;
  cold: evicted with ``posix_fadvise(DONTNEED)`` first);
- remote hit: the block's time with an empty local cache: HEAD, the download (its first GET
  brings the metadata, judged before the others start), verification of every checksum and
  the HMAC, load; the shared directory's file is evicted from the page cache first (a mount
  is read cold, like the local cold hit); on S3 also with one GET instead of 4 concurrent ones;
- publish: the block's time on a miss with the remote set (it first looks in the remote and
  takes the lease; the upload runs in the background) against the same miss without it, and how
  long the process then waits at exit for the upload to finish (bounded by the tier's exit
  wait);
- moto alone: boto3's ``get_object`` of the same object, whole and a 1 MB range of it, in this
  process (what the server costs without statecache: moto copies the whole object for every
  ranged GET, so a range of 1 MB costs about what the whole object does).

    python benchmarks/bench_remote.py             # 1 GB, 3 rounds, both remotes
    python benchmarks/bench_remote.py --quick     # 256 MB, 1 round
    python benchmarks/bench_remote.py --gb 2 --rounds 5 --tier dir
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SCRIPT = """
import json, os, time
import numpy as np
import statecache as sc
from statecache._engine import add_tier
from statecache.store.remote import engine_tier

if os.environ.get("STATECACHE_REMOTE"):
    add_tier(engine_tier())
if os.environ.get("BENCH_STREAMS"):  # the concurrent GETs of one S3 download (default 4)
    import statecache.store.s3 as s3
    s3.STREAMS = int(os.environ["BENCH_STREAMS"])
started = time.perf_counter()
with sc.checkpoint("weights"):
    W = np.random.default_rng(0).standard_normal(int(os.environ["N"]))
block = time.perf_counter() - started
print(json.dumps({"block": block, "check": float(W[:1000].sum())}), flush=True)
"""


def start_s3() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true",
    }


def run(project: Path, env: dict[str, str]) -> dict[str, float]:
    """One fresh process; the block's time, and the process's time from start to exit."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("STATECACHE_")}
    full.update(env, PYTHONPATH=str(REPO), STATECACHE_QUIET="1")
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "run.py"], cwd=project, env=full, capture_output=True, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"run.py failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process"] = total
    return result


def evict(cache: Path) -> None:
    """Drop the entry files under ``cache`` (a local tier, or a shared directory) from the page
    cache, so that they are read from the disk."""
    for path in cache.rglob("*.sc"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def fmt(seconds: float) -> str:
    return f"{seconds * 1000:8.0f} ms" if seconds < 10 else f"{seconds:8.1f} s "


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=1.0, help="state size in GB (default 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="256 MB, one round")
    p.add_argument("--tier", choices=("s3", "dir", "both"), default="both",
                   help="the remote: moto S3, a directory (file://), or both (default)")
    p.add_argument("--dir", default=None, help="scratch directory (default: the system temp dir)")
    args = p.parse_args(argv)
    nbytes = int((0.25 if args.quick else args.gb) * (1 << 30))
    rounds = 1 if args.quick else args.rounds
    base = {"N": str(nbytes // 8), "STATECACHE_SECRET": "bench-secret"}
    scratch = Path(tempfile.mkdtemp(prefix="sc-bench-remote-", dir=args.dir))
    try:
        if args.tier in ("dir", "both"):
            shared = scratch / "shared-mount"
            shared.mkdir()
            figures = measure(scratch, nbytes, rounds, base, {"STATECACHE_REMOTE": f"file://{shared}"})
            report(figures, nbytes, rounds, "a directory (file://, a shared mount's stand-in)")
        if args.tier in ("s3", "both"):
            server, endpoint = start_s3()
            try:
                bucket = f"bench-{os.getpid()}"
                s3_client(endpoint).create_bucket(Bucket=bucket)
                remote = {"STATECACHE_REMOTE": f"s3://{bucket}/team", **aws_env(endpoint)}
                figures = measure(scratch, nbytes, rounds, base, remote)
                figures.update(moto_alone(endpoint, bucket))
            finally:
                server.stop()  # type: ignore[attr-defined]
            report(figures, nbytes, rounds, "moto S3 on 127.0.0.1")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                        aws_secret_access_key="bench", region_name="us-east-1")


def moto_alone(endpoint: str, bucket: str) -> dict[str, list[float]]:
    """boto3 against moto, no statecache: the biggest entry object, whole and a 1 MB range."""
    client = s3_client(endpoint)
    objects = client.list_objects_v2(Bucket=bucket, Prefix="team/v1/entries/").get("Contents", [])
    key = max(objects, key=lambda o: o["Size"])["Key"]
    times: dict[str, list[float]] = {"moto_whole": [], "moto_1mb_range": []}
    for _ in range(2):
        started = time.perf_counter()
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
        times["moto_whole"].append(time.perf_counter() - started)
        started = time.perf_counter()
        client.get_object(Bucket=bucket, Key=key, Range="bytes=0-1048575")["Body"].read()
        times["moto_1mb_range"].append(time.perf_counter() - started)
    return times


def measure(scratch: Path, nbytes: int, rounds: int, base: dict[str, str], remote: dict[str, str]) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {k: [] for k in (
        "recompute", "recompute_process", "publish_block", "publish_process",
        "local_warm", "local_cold", "remote_hit", "remote_hit_1_stream")}
    for r in range(rounds):
        local, publisher, fetcher = (scratch / f"{kind}{r}" for kind in ("local", "publisher", "fetcher"))
        for project in (local, publisher, fetcher):
            project.mkdir()
            (project / "run.py").write_text(SCRIPT)
        miss = run(local, base)
        figures["recompute"].append(miss["block"])
        figures["recompute_process"].append(miss["process"])
        published = run(publisher, {**base, **remote})
        figures["publish_block"].append(published["block"])
        figures["publish_process"].append(published["process"])
        ensure_published(publisher / ".statecache", remote, base)
        figures["local_warm"].append(run(local, base)["block"])
        evict(local / ".statecache")
        figures["local_cold"].append(run(local, base)["block"])
        if remote["STATECACHE_REMOTE"].startswith("file://"):  # a shared mount: cold, as the local hit
            evict(Path(remote["STATECACHE_REMOTE"][len("file://"):]))
        hit = run(fetcher, {**base, **remote})
        assert hit["check"] == miss["check"], "the remote hit restored another state"
        figures["remote_hit"].append(hit["block"])
        if remote["STATECACHE_REMOTE"].startswith("s3://"):
            shutil.rmtree(fetcher / ".statecache")
            hit = run(fetcher, {**base, **remote, "BENCH_STREAMS": "1"})
            assert hit["check"] == miss["check"], "the remote hit restored another state"
            figures["remote_hit_1_stream"].append(hit["block"])
        for project in (local, publisher, fetcher):
            shutil.rmtree(project)
    return figures


def ensure_published(cache: Path, remote: dict[str, str], base: dict[str, str]) -> None:
    """Finish an upload that the publisher's exit wait cut short (a slow server), so that the
    remote hit below measures a hit."""
    from statecache.store.maintenance import scan
    from statecache.store.remote import RemoteTier

    os.environ.update({k: v for k, v in remote.items() if k.startswith("AWS_")})  # s3 only
    tier = RemoteTier(remote["STATECACHE_REMOTE"], secret=base["STATECACHE_SECRET"].encode())
    for entry in scan(str(cache))[0]:
        if tier.push(entry.name, entry.key, entry.path):
            print(f"  (the publisher's upload did not finish before its exit wait; pushed {entry.name})")


def report(figures: dict[str, list[float]], nbytes: int, rounds: int, remote: str) -> None:
    med = {k: statistics.median(v) for k, v in figures.items() if v}
    print(f"remote tier: {remote}, {nbytes / (1 << 30):.2f} GB of random float64, median of "
          f"{rounds} round(s), a fresh process per figure")
    rows = [
        ("recompute (miss, no remote)", med["recompute"]),
        ("local hit, warm page cache", med["local_warm"]),
        ("local hit, cold page cache", med["local_cold"]),
        ("remote hit (download, verify, load)", med["remote_hit"]),
        *([("remote hit, one GET instead of 4", med["remote_hit_1_stream"])] if "remote_hit_1_stream" in med else []),
        ("miss with the remote set (block only)", med["publish_block"]),
    ]
    for label, value in rows:
        print(f"  {label:<40} {fmt(value)}")
    print(f"  remote hit / local cold hit            {med['remote_hit'] / med['local_cold']:8.2f}x  (target <= 2x)")
    print(f"  remote hit / local warm hit            {med['remote_hit'] / med['local_warm']:8.2f}x")
    print(f"  recompute / remote hit                 {med['recompute'] / med['remote_hit']:8.2f}x")
    print(f"  miss with remote - miss without        {fmt(med['publish_block'] - med['recompute'])}"
          "  (looking in the remote and taking the lease before computing: s3fs's import and "
          "client, HEAD, LIST, PUT; the upload itself runs in the background)")
    print(f"  exit waited for the upload             {fmt(med['publish_process'] - med['recompute_process'])}"
          "  (the process's extra time to exit: the background upload finishing)")
    if "moto_whole" in med:
        print(f"  moto alone: boto3 get_object, whole    {fmt(med['moto_whole'])}"
              f"  ({nbytes / med['moto_whole'] / (1 << 20):.0f} MB/s; the floor of a remote hit from moto)")
        print(f"  moto alone: a 1 MB range of it         {fmt(med['moto_1mb_range'])}"
              "  (moto copies the whole object for every ranged GET)")


if __name__ == "__main__":
    sys.exit(main())
