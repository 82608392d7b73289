"""torch values and files as inputs (issue 11 item 9): a tensor, an ``nn.Module`` and an optimizer
count by their contents, so an unchanged rerun hits and a changed weight misses; a tensor read
from a file by compiled code (``torch.from_file``, safetensors' ``load_file`` where installed)
counts by the file; a block seeding torch's generator itself hits. One script, a checkpoint
per case, every change made at once, each miss asserted by name; each value compared with a
fresh run under ``STATECACHE_DISABLE=1``.
Skipped where torch is not installed (the ``[torch]`` extra)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import Project
from multicase import assert_cases, case_values, fresh_values

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch)")

SCRIPT = """
import torch
import statecache as sc
torch.manual_seed(0)
x = torch.arange(6.0).reshape(2, 3)
view = x.T  # a view of the same storage
model = torch.nn.Linear(3, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
with torch.no_grad():
    model.bias.fill_(BIAS)
with sc.checkpoint("values"):
    y = round(float(model(x).sum() + view.sum()) + opt.param_groups[0]["lr"], 4)
print("y values", y)
# torch.from_file reads from C++: key/readers.py wraps it (torch.UntypedStorage.from_file,
# inherited from compiled code, is wrapped on the class: tests/test_reads_held.py)
with sc.checkpoint("from_file"):
    y = torch.from_file("d.bin", size=3, dtype=torch.uint8).tolist()
print("y from_file", y)
# a block seeding its own generator hits (what it leaves drawn from is restored): the bias edit
# above does not reach it
with sc.checkpoint("seeded"):
    torch.manual_seed(0)
    z = float(torch.rand(1))
print("y seeded", z, "next", float(torch.rand(1)))
"""
SAFETENSORS = """
from safetensors.torch import load_file
with sc.checkpoint("safetensors"):
    w = load_file("w.safetensors")["w"].tolist()
print("y safetensors", w)
"""


def test_tensors_modules_optimizers_and_tensor_files_hit_when_unchanged_and_miss_when_changed(project: Project) -> None:
    st = None
    if importlib.util.find_spec("safetensors") is not None:
        import safetensors.torch as st
    script = SCRIPT + (SAFETENSORS if st is not None else "")
    cases = ["values", "from_file"] + (["safetensors"] if st is not None else [])
    project.write("main.py", script.replace("BIAS", "0.5"))
    (project.root / "d.bin").write_bytes(b"abc")
    if st is not None:
        st.save_file({"w": torch.tensor([1, 2])}, str(project.root / "w.safetensors"))
    first = project.run("main.py")
    assert_cases(first, [*cases, "seeded"], hit=False, fresh=fresh_values(project, "main.py"))
    assert_cases(project.run("main.py"), [*cases, "seeded"], hit=True, fresh=case_values(first))
    project.write("main.py", script.replace("BIAS", "1.5"))
    (project.root / "d.bin").write_bytes(b"xyz")
    if st is not None:
        st.save_file({"w": torch.tensor([3, 4])}, str(project.root / "w.safetensors"))
    changed = project.run("main.py")
    expected = fresh_values(project, "main.py")
    assert_cases(changed, cases, hit=False, fresh=expected)
    assert_cases(changed, ["seeded"], hit=True, fresh=expected)
    assert expected["seeded"] == case_values(first)["seeded"], expected
    for case in cases:
        assert expected[case] != case_values(first)[case], f"{case}: the change must change the result to test anything"
    assert expected["from_file"] == "[120, 121, 122]" and expected.get("safetensors", "[3, 4]") == "[3, 4]", expected
    assert_cases(project.run("main.py"), [*cases, "seeded"], hit=True, fresh=expected)
