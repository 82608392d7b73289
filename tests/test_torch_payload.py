"""torch state as a payload (issue 12 item 1, issue 11 class 8): tensors, Parameters, modules and
optimizers saved by a checkpoint come back equal to a fresh run's, views sharing their storage
again (stored once), every dtype torch has, mapped copy-on-write under ``mmap=True``. Real
scripts run twice or more in subprocesses; each output is compared with a run under
``STATECACHE_DISABLE=1``. Skipped where torch is not installed (the ``[torch]`` extra)."""

from __future__ import annotations

import json
import os
import sys

import pytest
from conftest import Project
from test_stale import fresh

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'statecache[torch]')")

DIGEST = """
import hashlib
import torch

def digest(t):
    # a tensor's value: dtype, geometry and the bytes of its storage (works for every dtype,
    # also those with no arithmetic on the CPU)
    s = t.untyped_storage()
    raw = torch.empty(0, dtype=torch.uint8).set_(s, 0, (s.nbytes(),), (1,))
    geometry = (str(t.dtype), tuple(t.shape), t.stride(), t.storage_offset(), t.requires_grad)
    return f"{geometry} {hashlib.sha256(raw.numpy().tobytes()).hexdigest()[:16]}"
"""


def check_hits(project: Project, script: str = "main.py", env: dict[str, str] | None = None) -> str:
    """Compute, then hit: both print what a run with nothing cached prints. Returns it."""
    expected = fresh(project, script)
    first = project.run(script, env=env)
    assert first.computed("a") and first.stdout == expected, first.stderr
    second = project.run(script, env=env)
    assert second.hit("a"), second.stderr
    assert second.stdout == expected, second.stderr
    return expected


VIEWS = DIGEST + """
import statecache as sc
torch.manual_seed(0)
with sc.checkpoint("a"):
    base = torch.randn(512, 512)  # 1 MiB
    t = base.T  # non-contiguous
    every_other = base[::2, 1::3]  # non-contiguous, with an offset
    tail = base[100:]
    bits = base.view(torch.int32)  # another dtype over the same storage
for name, v in [("base", base), ("t", t), ("every_other", every_other), ("tail", tail), ("bits", bits)]:
    print(name, digest(v), v.untyped_storage().data_ptr() == base.untyped_storage().data_ptr())
every_other[0, 0] = 123.0
tail[0, 0] = -5.0
print("written through", base[0, 1].item(), base[100, 0].item(), t[0, 100].item())
"""


def test_views_share_one_storage_after_a_hit_and_it_is_stored_once(project: Project) -> None:
    project.write("main.py", VIEWS)
    out = check_hits(project)
    assert out.count(" True\n") == 5 and "written through 123.0 -5.0 -5.0" in out
    (entry,) = project.entries("a")
    assert entry.stat().st_size < 1.2 * (512 * 512 * 4)  # five tensors, one storage
    assert project.run("main.py", env={"STATECACHE_MMAP": "1"}).stdout == out


DTYPES = DIGEST + """
import statecache as sc
names = sorted(n for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype))
names = [n for n in names if not n.startswith("q") and n == str(getattr(torch, n))[6:]]
g = torch.Generator().manual_seed(0)
with sc.checkpoint("a"):
    made = {}
    for n in names:
        dtype = getattr(torch, n)
        for count in (3, 6000):  # in the pickle stream, and a buffer section of its own
            raw = torch.randint(0, 256, (count * dtype.itemsize * 4,), dtype=torch.uint8, generator=g)
            made[n, count] = raw.view(dtype).reshape(count, 4)[1:, ::2]  # non-contiguous, offset
    grad = torch.ones(5000, requires_grad=True)
    frozen = torch.nn.Parameter(torch.zeros(5000), requires_grad=False)
    conj = torch.randn(3000, dtype=torch.complex64, generator=g).conj()
    neg = torch.randn(3000, dtype=torch.complex128, generator=g).conj().imag  # the neg bit
    tagged = torch.arange(10)
    tagged.note = "kept"
for (n, count), t in made.items():
    print(n, count, digest(t), t.dtype == getattr(torch, n))
print("grad", digest(grad), grad.is_leaf)
print("frozen", type(frozen).__name__, frozen.requires_grad, digest(frozen))
print("conj", conj.is_conj(), digest(conj), conj[:2].tolist())
print("neg", neg.is_neg(), digest(neg), neg[:2].tolist())
print("tagged", tagged.note, tagged.tolist())
"""

EXPECTED_DTYPES = [
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
    "float64", "complex64", "complex128",
    *[n for n in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64") if hasattr(torch, n)],
]  # fmt: skip


def test_every_dtype_non_contiguous_with_grad_conj_and_attributes_round_trips(project: Project) -> None:
    project.write("main.py", DTYPES)
    out = check_hits(project)
    printed = {line.split()[0] for line in out.splitlines()}
    assert set(EXPECTED_DTYPES) <= printed
    made = [line for line in out.splitlines() if line.split()[0] in printed - {"grad", "frozen", "conj", "neg", "tagged"}]
    assert made and all(line.endswith(" True") for line in made)
    assert "conj True" in out and "neg True" in out and "tagged kept" in out
    assert "frozen Parameter False" in out
    assert project.run("main.py", env={"STATECACHE_MMAP": "1"}).stdout == out


TRAINING = DIGEST + """
import statecache as sc
torch.manual_seed(0)
X = torch.randn(256, 64)
y = torch.randn(256, 4)
with sc.checkpoint("a"):
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        opt.step()
    weights = model.state_dict()
    rows = model[0].weight[:4]  # a view of a Parameter
print("same params", opt.param_groups[0]["params"][0] is model[0].weight)
print("state_dict shares", weights["0.weight"].data_ptr() == model[0].weight.data_ptr())
print("view shares", rows.data_ptr() == model[0].weight.data_ptr())
print("saved loss", loss.item())
for _ in range(2):  # training goes on from the restored state as from the computed one
    opt.zero_grad()
    loss = ((model(X) - y) ** 2).mean()
    loss.backward()
    opt.step()
print("loss", loss.item())
print("weights", digest(model[2].weight.detach()), digest(weights["0.weight"]))
print("adam", {k: digest(v) for k, v in opt.state[model[0].bias].items()})
"""


def test_a_module_and_its_optimizer_restore_and_train_on_like_the_computed_ones(project: Project) -> None:
    project.write("main.py", TRAINING)
    out = check_hits(project)
    assert "same params True" in out and "state_dict shares True" in out and "view shares True" in out
    assert project.run("main.py", env={"STATECACHE_MMAP": "1"}).stdout == out


MMAP_EDITS = """
import torch
import statecache as sc
torch.manual_seed(0)
with sc.checkpoint("a"):
    big = torch.arange(1 << 20, dtype=torch.float32)
    model = torch.nn.Linear(256, 256)
    with torch.no_grad():
        model.weight.fill_(0.25)
print("restored", big[:3].tolist(), big[-1].item(), model.weight[0, :2].tolist())
big.mul_(-1)  # in place, after the hit
with torch.no_grad():
    model.weight.add_(1)
print("edited", big[:3].tolist(), model.weight[0, :2].tolist())
"""


@pytest.mark.parametrize("mmap", ["1", "0"])
def test_in_place_edits_after_a_hit_do_not_reach_the_entry(project: Project, mmap: str) -> None:
    project.write("main.py", MMAP_EDITS)
    env = {"STATECACHE_MMAP": mmap}
    out = check_hits(project, env=env)
    assert "restored [0.0, 1.0, 2.0] 1048575.0 [0.25, 0.25]" in out
    assert "edited [-0.0, -1.0, -2.0] [1.25, 1.25]" in out
    again = project.run("main.py", env=env)
    assert again.hit("a") and again.stdout == out, again.stderr


def test_mmap_restores_tensors_as_maps_of_the_entry_file(tmp_path) -> None:
    if not os.path.exists("/proc/self/maps"):
        pytest.skip("needs /proc/self/maps (Linux) to see where memory comes from")
    from statecache.entry.reader import read_entry
    from statecache.entry.writer import write_entry

    path = str(tmp_path / "e.sc")
    weights = {"w": torch.randn(1024, 1024), "b": torch.randn(8192)}  # both out of the stream
    write_entry(path, {"sd": weights}, {"name": "a", "key": "0" * 32})
    _, state = read_entry(path, mmap=True)
    for name, t in state["sd"].items():
        assert torch.equal(t, weights[name])
        assert mapping_of(t.data_ptr()) == os.path.realpath(path)
    state["sd"]["w"].zero_()
    _, again = read_entry(path)
    assert torch.equal(again["sd"]["w"], weights["w"])


def mapping_of(address: int) -> str:
    """The file mapped at ``address`` in this process ('' for anonymous memory)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if start <= address < end:
                return fields[5].strip() if len(fields) > 5 else ""
    return ""


CUDA = """
import pickle, sys, warnings
import torch
from statecache.entry import tensors
from statecache.entry.reader import read_entry
from statecache.entry.writer import write_entry

class OnCuda:
    # What the writer records for a CUDA storage: its bytes (copied to the host) and the device
    # string. No GPU here, so the record is made from a CPU storage with the device put in.
    def __init__(self, storage):
        self.storage = storage
    def __reduce__(self):
        rebuild, (data, _device) = tensors.TensorReducer(torch).storage(self.storage)
        return rebuild, (data, "cuda:0")

x = torch.arange(20000, dtype=torch.float32)
class Tensor:
    # what the writer records for a tensor on that storage
    def __init__(self, storage):
        self.storage = storage
    def __reduce__(self):
        return tensors.rebuild_tensor, (self.storage, 10, (5, 4), (1, 5), "float32", True, None, None)
first = OnCuda(x.untyped_storage())
state = {"t": Tensor(first), "view": Tensor(first), "u": Tensor(OnCuda(x.clone().untyped_storage()))}
write_entry(sys.argv[1], state, {"name": "a", "key": "0" * 32})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _, state = read_entry(sys.argv[1])
t = state["t"]
print("device", t.device, t.requires_grad, state["view"].data_ptr() == t.data_ptr(), state["u"].device)
print("equal", torch.equal(t.detach(), x.as_strided((5, 4), (1, 5), 10)))
print("warnings", [str(w.message) for w in caught])
"""


def test_cuda_tensors_come_back_on_the_cpu_with_a_warning_without_a_gpu(project: Project, tmp_path) -> None:
    project.write("saved_on_gpu.py", CUDA)
    run = project.run("saved_on_gpu.py", str(tmp_path / "e.sc"))
    assert "equal True" in run.stdout, run.stdout + run.stderr
    if torch.cuda.is_available():
        assert "device cuda:0 True True cuda:0" in run.stdout
    else:
        assert "device cpu True True cpu" in run.stdout
        (warning,) = [line for line in run.stdout.splitlines() if line.startswith("warnings")]
        assert "saved on cuda:0 are restored on the CPU" in warning and "no CUDA device" in warning
        assert warning.count("cuda:0") == 1  # once, not once per storage


def test_an_unknown_dtype_or_a_geometry_past_the_storage_is_a_damaged_entry(tmp_path) -> None:
    from statecache._errors import EntryError
    from statecache.entry import tensors
    from statecache.entry.reader import read_entry
    from statecache.entry.writer import write_entry

    storage = torch.zeros(100).untyped_storage()

    class Record:
        def __init__(self, *args):
            self.args = args

        def __reduce__(self):
            return tensors.rebuild_tensor, (storage, *self.args, False, None, None)

    for args in [(0, (10,), (1,), "float99"), (0, (101,), (1,), "float32"), (90, (20,), (1,), "float32")]:
        path = tmp_path / f"{args[3]}-{args[0]}.sc"
        write_entry(path, {"t": Record(*args)}, {"name": "a", "key": "0" * 32})
        with pytest.raises(EntryError, match="cannot restore variable 't'"):
            read_entry(path)


def test_a_state_without_tensors_does_not_import_torch(project: Project) -> None:
    project.write("main.py", """
import sys
import numpy as np
import statecache as sc
with sc.checkpoint("a"):
    x = np.arange(100000)
    d = {"k": [1, 2.0, "s"]}
print(int(x.sum()), d, "torch" in sys.modules)
""")
    out = check_hits(project)
    assert out.endswith("False\n")


def test_the_writer_loads_no_torch_of_its_own(tmp_path) -> None:
    # in this process torch is loaded (importorskip); what the reducer decides from is
    # sys.modules alone, checked here without it
    from statecache.entry.tensors import tensor_reducer

    saved = sys.modules.pop("torch")
    try:
        assert tensor_reducer() is None
    finally:
        sys.modules["torch"] = saved
    assert tensor_reducer() is not None


def test_tensors_in_a_state_that_needs_cloudpickle_are_stored_the_same_way(project: Project) -> None:
    project.write("main.py", DIGEST + """
import statecache as sc
torch.manual_seed(0)
with sc.checkpoint("a"):
    base = torch.randn(256, 256)
    view = base[:, 3]
    scale = lambda t: t * 2  # plain pickle refuses it: cloudpickle saves the state
print(digest(view), view.untyped_storage().data_ptr() == base.untyped_storage().data_ptr())
print(digest(scale(base)))
""")
    out = check_hits(project)
    assert out.splitlines()[0].endswith(" True")
    (entry,) = project.entries("a")
    assert entry.stat().st_size < 1.2 * (256 * 256 * 4)
    shown = json.loads(project.run("-m", "statecache", "show", "a", "--json").stdout)
    assert shown["pickler"] == "cloudpickle"
