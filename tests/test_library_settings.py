"""Settings a library keeps in one global registry and reads inside itself (issue 11 class 4):
``pd.set_option`` above a block whose ``repr(df)`` depends on it, ``np.set_printoptions``,
``np.seterr``, ``sklearn.set_config``, the decimal context. A block (or a ``cached_setup``)
that uses the library keys on the registry's value (key/libsettings.py): the same setting hits,
another computes what a fresh run does; a block that does not use the library keeps its hit.
Real scripts in subprocesses, compared with ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import pytest
from conftest import Project, Run

CASES = {
    # name -> (the library to skip without, the script; V is the setting), two settings
    "pandas display option": ("pandas", """
import os
import pandas as pd
import statecache as sc
df = pd.DataFrame({"x": range(20)})
pd.set_option("display.max_rows", int(os.environ["V"]))
with sc.checkpoint("a"):
    y = len(repr(df).splitlines())
print("y", y)
""", ("5", "30")),
    "numpy print options": ("numpy", """
import os
import numpy as np
import statecache as sc
arr = np.array([1 / 3, 2 / 3])
np.set_printoptions(precision=int(os.environ["V"]))
with sc.checkpoint("a"):
    y = str(arr)
print("y", y)
""", ("2", "6")),
    "numpy error handling": ("numpy", """
import os
import numpy as np
import statecache as sc
np.seterr(divide=os.environ["V"])
with sc.checkpoint("a"):
    try:
        y = str(np.array([1.0]) / 0)
    except FloatingPointError:
        y = "raised"
print("y", y)
""", ("ignore", "raise")),
    "scikit-learn config": ("sklearn", """
import os
import numpy as np
import sklearn
from sklearn.preprocessing import StandardScaler
import statecache as sc
X = np.arange(6.0).reshape(3, 2)
sklearn.set_config(transform_output=os.environ["V"])
with sc.checkpoint("a"):
    y = type(StandardScaler().fit_transform(X)).__name__
print("y", y)
""", ("default", "pandas")),
    "decimal context": ("decimal", """
import os
from decimal import Decimal, getcontext
import statecache as sc
getcontext().prec = int(os.environ["V"])
with sc.checkpoint("a"):
    y = str(Decimal(1) / Decimal(7))
print("y", y)
""", ("5", "12")),
    "torch default dtype": ("torch", """
import os
import torch
import statecache as sc
torch.set_default_dtype(getattr(torch, os.environ["V"]))
with sc.checkpoint("a"):
    y = str(torch.tensor([1.0]).dtype)
print("y", y)
""", ("float32", "float64")),
    "cached_setup given a frame": ("pandas", """
import os
import pandas as pd
import statecache as sc
pd.set_option("display.max_rows", int(os.environ["V"]))

@sc.cached_setup(name="a")
def show(frame):
    return len(repr(frame).splitlines())

y = show(pd.DataFrame({"x": range(20)}))
print("y", y)
""", ("5", "30")),
}


def y(run: Run) -> str:
    lines = [line for line in run.stdout.splitlines() if line.startswith("y ")]
    assert lines, run.stdout + run.stderr
    return lines[-1]


@pytest.mark.parametrize("case", list(CASES))
def test_a_library_setting_above_the_block_keys_it(project: Project, case: str) -> None:
    library, script, (one, other) = CASES[case]
    pytest.importorskip(library)
    project.write("main.py", script)
    first = project.run("main.py", env={"V": one})
    assert first.computed("a"), first.stderr
    again = project.run("main.py", env={"V": one})
    assert again.hit("a") and y(again) == y(first), again.stderr
    changed = project.run("main.py", env={"V": other})
    fresh = project.run("main.py", env={"V": other, "STATECACHE_DISABLE": "1"})
    assert y(fresh) != y(first), "the setting must change the result for this case to test anything"
    assert changed.computed("a") and y(changed) == y(fresh), changed.stderr
    assert project.run("main.py", env={"V": other}).hit("a")
    back = project.run("main.py", env={"V": one})
    assert back.hit("a") and y(back) == y(first)  # both versions stay cached


def test_a_block_that_does_not_use_the_library_keeps_its_hit(project: Project) -> None:
    pytest.importorskip("pandas")
    project.write("main.py", """
import os
import pandas as pd
import statecache as sc
pd.set_option("display.max_rows", int(os.environ["V"]))
n = 3
with sc.checkpoint("a"):
    y = n * 2
print("y", y)
""")
    assert project.run("main.py", env={"V": "5"}).computed("a")
    run = project.run("main.py", env={"V": "30"})
    assert run.hit("a") and y(run) == "y 6", run.stderr


def test_a_helper_of_a_module_that_imports_the_library_counts_its_settings(project: Project) -> None:
    pytest.importorskip("pandas")
    project.write("report.py", "import pandas as pd\n\n\ndef rows(n):\n"
                  "    return len(repr(pd.DataFrame({'x': range(n)})).splitlines())\n")
    project.write("main.py", """
import os
import pandas as pd
import statecache as sc
from report import rows
pd.set_option("display.max_rows", int(os.environ["V"]))
with sc.checkpoint("a"):
    y = rows(20)
print("y", y)
""")
    first = project.run("main.py", env={"V": "5"})
    assert first.computed("a") and project.run("main.py", env={"V": "5"}).hit("a")
    changed = project.run("main.py", env={"V": "30"})
    fresh = project.run("main.py", env={"V": "30", "STATECACHE_DISABLE": "1"})
    assert y(changed) == y(fresh) != y(first), changed.stderr


def test_the_libraries_the_key_rules_gate_on_are_those_libsettings_reads() -> None:
    # inputs.py imports key.libsettings only once one of SETTINGS_LIBRARIES is loaded
    from statecache.key.inputs import SETTINGS_LIBRARIES
    from statecache.key.libsettings import REGISTRIES

    assert tuple(REGISTRIES) == SETTINGS_LIBRARIES
