"""Shared pieces of the fault-injection tests: a state whose correctness is checked by digest,
helpers to find leftovers, to run as another user, to mount a tiny file system."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from conftest import REPO, Project, Run, subprocess_env

# One state with every kind of storage: two incompressible arrays of the same size (raw buffer
# sections), a compressible one (zstd chunks), many small objects (the pickle stream) and a lambda
# (so cloudpickle writes it). The script prints a digest of what it ends up with: a wrong value
# anywhere changes it.
STATE_SCRIPT = """
import hashlib
import os

import numpy as np

import statecache as sc

N_RAW = int(os.environ.get("N_RAW", "40000"))
N_INT = int(os.environ.get("N_INT", "40000"))
N_OBJ = int(os.environ.get("N_OBJ", "2000"))

with sc.checkpoint("state"):
    rng = np.random.default_rng(12345)
    raw1 = rng.standard_normal(N_RAW)
    raw2 = rng.standard_normal(N_RAW)
    ints = np.arange(N_INT, dtype=np.int64) % 1000
    table = {f"k{i}": (i, str(i) * 3, [i, i + 0.5]) for i in range(N_OBJ)}
    square = lambda x: x * x

h = hashlib.sha256()
for arr in (raw1, raw2, ints):
    h.update(str((arr.dtype, arr.shape)).encode())
    h.update(arr.tobytes())
h.update(repr(sorted(table.items())).encode())
h.update(repr(square(7)).encode())
print("STATE", h.hexdigest(), flush=True)
"""


def state_digest(run: Run) -> str | None:
    for line in run.stdout.splitlines():
        if line.startswith("STATE "):
            return line.split()[1]
    return None


def expected_digest(project: Project, env: dict[str, str] | None = None) -> str:
    """The digest of the state computed without any cache."""
    run = project.run("state.py", env={**(env or {}), "STATECACHE_DISABLE": "1"})
    digest = state_digest(run)
    assert digest is not None, run.stderr
    return digest


def temp_files(cache: Path) -> list[Path]:
    """Writers' temporary files anywhere in the cache directory."""
    return sorted(p for p in cache.rglob(".*.tmp")) if cache.exists() else []


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "StateCacheWarning" in line]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statecache", *args],
        capture_output=True,
        text=True,
        env=subprocess_env(**(env or {})),
        cwd=REPO,
        timeout=300,
    )


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOBODY = 65534


def drop_capabilities() -> None:  # a preexec_fn
    """Empty the capability bounding set: the program exec'd next runs as uid 0 but with no
    capabilities, so file permission bits bind it as they bind any user (root otherwise
    ignores them). Same uid: the files the test made stay "owned by you"."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in range(64):
        libc.prctl(pr_capbset_drop, cap, 0, 0, 0)  # EINVAL past the last capability: ignored


def run_unprivileged(project_dir: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run ``python args`` so that permission bits apply: as ourselves, or, when we are root,
    with every capability dropped."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=project_dir,
        env=subprocess_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=drop_capabilities if IS_ROOT else None,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@contextlib.contextmanager
def tiny_tmpfs(size: str = "1m", options: str = "") -> Iterator[Path | None]:
    """A small tmpfs mounted for the test, or None where mounting is not permitted."""
    path = Path(tempfile.mkdtemp(prefix="statecache-tmpfs-"))
    opts = f"size={size}" + (f",{options}" if options else "")
    mounted = False
    try:
        if IS_ROOT:
            proc = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
            )
            mounted = proc.returncode == 0
        if mounted and "ro" not in options.split(","):
            path.chmod(0o777)
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)
        with contextlib.suppress(OSError):
            path.rmdir()


# A fork server: one interpreter that has imported numpy and statecache forks a fresh child per
# run, which executes the script as ``python script.py`` would (``runpy`` as ``__main__``, its own
# stdout/stderr files, its own environment). A run then costs a fork instead of an interpreter
# start and a numpy import, so that hundreds of trials stay cheap. Nothing in the server touches
# a cache: every child starts with statecache's per-process state empty.
_SERVER = r"""
import json, os, runpy, sys, traceback
import numpy, statecache  # noqa: F401 - imported once, inherited by every child

for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for k, v in req["env"].items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            out = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.dup2(err, 2)
            if req.get("prelude"):  # e.g. fault injection, set up before the script runs
                with open(req["prelude"]) as f:
                    exec(compile(f.read(), req["prelude"], "exec"), {"__name__": "prelude"})
            sys.argv = [req["script"]]
            try:
                runpy.run_path(req["script"], run_name="__main__")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    print(json.dumps({"rc": rc}), flush=True)
"""


class ForkServer:
    """Runs scripts of one project directory in forked children of a warm interpreter."""

    def __init__(self, root: Path, env: dict[str, str] | None = None):
        import itertools

        self.root = root
        self.proc = subprocess.Popen(
            # one-threaded BLAS: the server forks, and a fork copies only the calling thread
            [sys.executable, "-c", _SERVER], cwd=root,
            env=subprocess_env(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **(env or {})),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.ids = itertools.count()

    def start(self, script: str, env: dict[str, str | None] | None = None,
              prelude: Path | None = None) -> tuple[int, Path, Path]:
        """Start a run; returns (pid, stdout file, stderr file). Finish it with ``wait``.
        ``prelude``: a Python file the child executes first (fault injection)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        n = next(self.ids)
        out, err = self.root / f".run{n}.out", self.root / f".run{n}.err"
        req = {"script": script, "env": env or {}, "out": str(out), "err": str(err),
               "prelude": str(prelude) if prelude else None}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        pid = json.loads(self.proc.stdout.readline())["pid"]
        return pid, out, err

    def wait(self, out: Path, err: Path) -> Run:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        rc = json.loads(line)["rc"]
        run = Run(rc, out.read_text(), err.read_text())
        out.unlink()
        err.unlink()
        return run

    def run(self, script: str, env: dict[str, str | None] | None = None,
            prelude: Path | None = None) -> Run:
        _, out, err = self.start(script, env, prelude)
        return self.wait(out, err)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
