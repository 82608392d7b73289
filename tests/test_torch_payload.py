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
from test_data_files import fresh
from test_in_place import sections

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


CASES = ("views", "dtypes", "training", "edits", "cloudpickle")


def check_hits(project: Project, run_env: dict[str, str], expected: dict[str, str], label: str) -> None:
    """A run under ``run_env`` restores every case and prints what the fresh run printed (every
    case is checked, so one broken case does not hide another)."""
    run = project.run("main.py", env=run_env)
    got = sections(run.stdout)
    broken = [f"{name}: {label} did not hit" for name in CASES if not run.hit(name)]
    broken += [f"{name}: {label} printed {got.get(name)!r}" for name in CASES if got.get(name) != expected[name]]
    assert not broken, "\n".join(broken) + "\n" + run.stderr


# One script, one checkpoint per case, each printing its values under a header: the script is
# run fresh, computed, hit, hit with STATECACHE_MMAP=1 (which also shows that edits made after
# the plain hit did not reach the entries), and hit once more so (edits after a mapped hit).
PAYLOAD = DIGEST + """
import statecache as sc

print("== views")  # non-contiguous views, an offset, another dtype over one storage
torch.manual_seed(0)
with sc.checkpoint("views"):
    base = torch.randn(512, 512)  # 1 MiB
    t = base.T
    every_other = base[::2, 1::3]
    tail = base[100:]
    bits = base.view(torch.int32)
for name, v in [("base", base), ("t", t), ("every_other", every_other), ("tail", tail), ("bits", bits)]:
    print(name, digest(v), v.untyped_storage().data_ptr() == base.untyped_storage().data_ptr())
every_other[0, 0] = 123.0
tail[0, 0] = -5.0
print("written through", base[0, 1].item(), base[100, 0].item(), t[0, 100].item())

print("== dtypes")  # every dtype, in the pickle stream and in a buffer section of its own
names = sorted(n for n in dir(torch) if isinstance(getattr(torch, n), torch.dtype))
names = [n for n in names if not n.startswith("q") and n == str(getattr(torch, n))[6:]]
g = torch.Generator().manual_seed(0)
with sc.checkpoint("dtypes"):
    made = {}
    for n in names:
        dtype = getattr(torch, n)
        for count in (3, 6000):
            raw = torch.randint(0, 256, (count * dtype.itemsize * 4,), dtype=torch.uint8, generator=g)
            made[n, count] = raw.view(dtype).reshape(count, 4)[1:, ::2]  # non-contiguous, offset
    grad = torch.ones(5000, requires_grad=True)
    frozen = torch.nn.Parameter(torch.zeros(5000), requires_grad=False)
    conj = torch.randn(3000, dtype=torch.complex64, generator=g).conj()
    neg = torch.randn(3000, dtype=torch.complex128, generator=g).conj().imag  # the neg bit
    tagged = torch.arange(10)
    tagged.note = "kept"
for (n, count), v in made.items():
    print(n, count, digest(v), v.dtype == getattr(torch, n))
print("grad", digest(grad), grad.is_leaf)
print("frozen", type(frozen).__name__, frozen.requires_grad, digest(frozen))
print("conj", conj.is_conj(), digest(conj), conj[:2].tolist())
print("neg", neg.is_neg(), digest(neg), neg[:2].tolist())
print("tagged", tagged.note, tagged.tolist())

print("== training")  # a module and its optimizer, trained on after the block
torch.manual_seed(0)
X = torch.randn(256, 64)
y = torch.randn(256, 4)
with sc.checkpoint("training"):
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
for _ in range(2):
    opt.zero_grad()
    loss = ((model(X) - y) ** 2).mean()
    loss.backward()
    opt.step()
print("loss", loss.item())
print("weights", digest(model[2].weight.detach()), digest(weights["0.weight"]))
print("adam", {k: digest(v) for k, v in opt.state[model[0].bias].items()})

print("== edits")  # in-place edits after the block (on a hit: of restored, maybe mapped, data)
with sc.checkpoint("edits"):
    big = torch.arange(1 << 20, dtype=torch.float32)
    layer = torch.nn.Linear(256, 256)
    with torch.no_grad():
        layer.weight.fill_(0.25)
print("restored", big[:3].tolist(), big[-1].item(), layer.weight[0, :2].tolist())
big.mul_(-1)
with torch.no_grad():
    layer.weight.add_(1)
print("edited", big[:3].tolist(), layer.weight[0, :2].tolist())

print("== cloudpickle")  # a state plain pickle refuses: its tensors are stored the same way
torch.manual_seed(0)
with sc.checkpoint("cloudpickle"):
    grid = torch.randn(256, 256)
    column = grid[:, 3]
    scale = lambda t: t * 2
print(digest(column), column.untyped_storage().data_ptr() == grid.untyped_storage().data_ptr())
print(digest(scale(grid)))
"""

EXPECTED_DTYPES = [
    "bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
    "float64", "complex64", "complex128",
    *[n for n in ("float8_e4m3fn", "float8_e5m2", "uint16", "uint32", "uint64") if hasattr(torch, n)],
]  # fmt: skip


def test_tensors_modules_optimizers_and_views_round_trip_plain_and_mapped(project: Project) -> None:
    """Every case computes, then hits with what a fresh run printed: plain, mapped (mmap=True)
    after the plain hit edited its restored tensors in place, and mapped again after a mapped
    hit edited them (copy-on-write: no edit reaches an entry)."""
    project.write("main.py", PAYLOAD)
    expected = sections(fresh(project, "main.py"))
    assert sorted(expected) == sorted(CASES), expected
    computed = project.run("main.py")
    got = sections(computed.stdout)
    for name in CASES:
        assert computed.computed(name), f"{name}: the first run did not compute\n{computed.stderr}"
        assert got.get(name) == expected[name], f"{name}: the computing run printed {got.get(name)!r}"
    check_hits(project, {}, expected, "a plain hit")
    check_hits(project, {"STATECACHE_MMAP": "1"}, expected, "a mapped hit after a plain hit's edits")
    check_hits(project, {"STATECACHE_MMAP": "1"}, expected, "a mapped hit after a mapped hit's edits")

    views = expected["views"]  # views share one storage after a hit, stored once
    assert views.count(" True\n") == 5 and "written through 123.0 -5.0 -5.0" in views, views
    (entry,) = project.entries("views")
    assert entry.stat().st_size < 1.2 * (512 * 512 * 4)  # five tensors, one storage

    dtypes = expected["dtypes"].splitlines()  # every dtype, non-contiguous, grad, conj, attributes
    printed = {line.split()[0] for line in dtypes}
    assert set(EXPECTED_DTYPES) <= printed, printed
    made = [line for line in dtypes if line.split()[0] in printed - {"grad", "frozen", "conj", "neg", "tagged"}]
    assert made and all(line.endswith(" True") for line in made)
    text = expected["dtypes"]
    assert "conj True" in text and "neg True" in text and "tagged kept" in text
    assert "frozen Parameter False" in text

    training = expected["training"]  # a module and its optimizer restore and train on
    assert "same params True" in training and "state_dict shares True" in training, training
    assert "view shares True" in training, training

    edits = expected["edits"]  # in-place edits after a hit do not reach the entry
    assert "restored [0.0, 1.0, 2.0] 1048575.0 [0.25, 0.25]" in edits, edits
    assert "edited [-0.0, -1.0, -2.0] [1.25, 1.25]" in edits, edits

    cloud = expected["cloudpickle"]  # tensors in a state that needs cloudpickle: stored the same
    assert cloud.splitlines()[0].endswith(" True"), cloud
    (entry,) = project.entries("cloudpickle")
    assert entry.stat().st_size < 1.2 * (256 * 256 * 4)
    shown = json.loads(project.run("-m", "statecache", "show", "cloudpickle", "--json").stdout)
    assert shown["pickler"] == "cloudpickle"


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
    expected = fresh(project, "main.py")
    assert project.run("main.py").computed("a")
    hit = project.run("main.py")
    assert hit.hit("a") and hit.stdout == expected, hit.stderr
    assert expected.endswith("False\n")


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
