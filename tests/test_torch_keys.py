"""torch values as inputs (issue 11 item 9): a tensor, an ``nn.Module`` and an optimizer
count by their contents, so an unchanged rerun hits and a changed weight misses. Real
scripts run twice or more; each value compared with a fresh run under ``STATECACHE_DISABLE=1``.
Skipped where torch is not installed (the ``[torch]`` extra)."""

from __future__ import annotations

import pytest
from conftest import Project, Run

pytest.importorskip("torch", reason="torch is not installed (pip install torch)")

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
with sc.checkpoint("a"):
    y = round(float(model(x).sum() + view.sum()) + opt.param_groups[0]["lr"], 4)
print("y", y)
"""


def value(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


def test_tensors_modules_and_optimizers_hit_when_unchanged_and_miss_when_changed(project: Project) -> None:
    project.write("main.py", SCRIPT.replace("BIAS", "0.5"))
    first = project.run("main.py")
    assert first.computed("a") and value(first) == value(project.run("main.py", env={"STATECACHE_DISABLE": "1"}))
    second = project.run("main.py")
    assert second.hit("a") and value(second) == value(first), second.stderr
    project.write("main.py", SCRIPT.replace("BIAS", "1.5"))
    changed = project.run("main.py")
    assert not changed.hit("a") and value(changed) != value(first)
    assert value(changed) == value(project.run("main.py", env={"STATECACHE_DISABLE": "1"}))
    again = project.run("main.py")
    assert again.hit("a") and value(again) == value(changed), again.stderr
