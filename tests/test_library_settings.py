"""Settings a library keeps in one global registry and reads inside itself (issue 11 class 4):
``pd.set_option`` above a block whose ``repr(df)`` depends on it, ``np.set_printoptions``,
``np.seterr``, ``sklearn.set_config``, the decimal context. A block (or a ``cached_setup``)
that uses the library keys on the registry's value (key/libsettings.py): the same setting hits,
another computes what a fresh run does; a block that does not use the library keeps its hit.
Real scripts in subprocesses, compared with ``STATECACHE_DISABLE=1``."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import Project
from multicase import assert_cases, case_values, fresh_values

# name -> (the library to skip without, its imports, the case: V is its setting, read from the
# environment; what puts the setting back after the block, so that the next case's block sees
# only its own setting changed; the two settings)
CASES = {
    "pandas-display": ("pandas", "import pandas as pd", """
df = pd.DataFrame({"x": range(20)})
pd.set_option("display.max_rows", int(V))
with sc.checkpoint("pandas-display"):
    y = len(repr(df).splitlines())
""", 'pd.reset_option("display.max_rows")', ("5", "30")),
    "numpy-print": ("numpy", "import numpy as np", """
arr = np.array([1 / 3, 2 / 3])
np.set_printoptions(precision=int(V))
with sc.checkpoint("numpy-print"):
    y = str(arr)
""", "np.set_printoptions(precision=8)", ("2", "6")),
    "numpy-errors": ("numpy", "import numpy as np", """
np.seterr(divide=V)
with sc.checkpoint("numpy-errors"):
    try:
        y = str(np.array([1.0]) / 0)
    except FloatingPointError:
        y = "raised"
""", 'np.seterr(divide="warn")', ("ignore", "raise")),
    "sklearn-config": ("sklearn", "import numpy as np\nimport sklearn\nfrom sklearn.preprocessing import StandardScaler", """
X = np.arange(6.0).reshape(3, 2)
sklearn.set_config(transform_output=V)
with sc.checkpoint("sklearn-config"):
    y = type(StandardScaler().fit_transform(X)).__name__
""", 'sklearn.set_config(transform_output="default")', ("default", "pandas")),
    "decimal-context": ("decimal", "from decimal import Decimal, getcontext", """
getcontext().prec = int(V)
with sc.checkpoint("decimal-context"):
    y = str(Decimal(1) / Decimal(7))
""", "getcontext().prec = 28", ("5", "12")),
    "torch-dtype": ("torch", "import torch", """
torch.set_default_dtype(getattr(torch, V))
with sc.checkpoint("torch-dtype"):
    y = str(torch.tensor([1.0]).dtype)
""", "torch.set_default_dtype(torch.float32)", ("float32", "float64")),
    "cached-setup-frame": ("pandas", "import pandas as pd", """
pd.set_option("display.max_rows", int(V))

@sc.cached_setup(name="cached-setup-frame")
def show(frame):
    return len(repr(frame).splitlines())

y = show(pd.DataFrame({"x": range(20)}))
""", 'pd.reset_option("display.max_rows")', ("5", "30")),
    "helper-module": ("pandas", "import pandas as pd\nfrom report import rows", """
pd.set_option("display.max_rows", int(V))
with sc.checkpoint("helper-module"):
    y = rows(20)
""", 'pd.reset_option("display.max_rows")', ("5", "30")),
}
REPORT = "import pandas as pd\n\n\ndef rows(n):\n    return len(repr(pd.DataFrame({'x': range(n)})).splitlines())\n"
# a block that does not use the library, right after the pandas setting: it keeps its hit
UNUSED = """
n = 3
with sc.checkpoint("no-library"):
    y = n * 2
"""


# the cases by the heavy library their script imports: one script per group, so no script
# pays for a library its cases do not use
GROUPS = {
    "light": ["pandas-display", "numpy-print", "numpy-errors", "decimal-context", "cached-setup-frame", "helper-module"],
    "sklearn": ["sklearn-config"],
    "torch": ["torch-dtype"],
}
assert sorted(sum(GROUPS.values(), [])) == sorted(CASES)


def available(group: str) -> list[str]:
    return [case for case in GROUPS[group] if importlib.util.find_spec(CASES[case][0]) is not None]


def settings_script(cases: list[str]) -> str:
    """One section per case, each its own checkpoint named for it, printing ``y <case> <y>``."""
    imports = dict.fromkeys(["import os", "import statecache as sc"] + "\n".join(CASES[c][1] for c in cases).splitlines())
    parts = ["\n".join(imports)]
    for case in cases:
        _, _, body, reset, _ = CASES[case]
        parts.append(body.replace("V)", f"os.environ[{var(case)!r}])") + f"print('y {case}', y)\n")
        if case == "pandas-display":
            parts.append(UNUSED + "print('y no-library', y)\n")
        parts.append(reset)
    return "\n".join(parts) + "\n"


def var(case: str) -> str:
    return "V_" + case.replace("-", "_")


def settings(cases: list[str], which: int) -> dict[str, str]:
    return {var(case): CASES[case][4][which] for case in cases}


@pytest.mark.parametrize("group", list(GROUPS))
def test_a_library_setting_above_the_block_keys_it(project: Project, group: str) -> None:
    """Every case of a group in one script; the other setting of each changes at once, and
    the resets after each block keep each block's view of the settings its own."""
    cases = available(group)
    if not cases:
        pytest.skip("none of the libraries is installed")
    project.write("report.py", REPORT)
    project.write("main.py", settings_script(cases))
    one, other = settings(cases, 0), settings(cases, 1)
    unused = ["no-library"] if "pandas-display" in cases else []
    first = project.run("main.py", env=one)
    assert_cases(first, cases + unused, hit=False)
    assert_cases(project.run("main.py", env=one), cases + unused, hit=True, fresh=case_values(first))
    fresh = fresh_values(project, "main.py", other)
    for case in cases:
        assert fresh[case] != case_values(first)[case], f"{case}: the setting must change the result to test anything"
    changed = project.run("main.py", env=other)
    assert_cases(changed, cases, hit=False, fresh=fresh)
    assert_cases(changed, unused, hit=True, fresh={"no-library": "6"})
    assert_cases(project.run("main.py", env=other), cases + unused, hit=True, fresh=case_values(changed))
    assert_cases(project.run("main.py", env=one), cases + unused, hit=True, fresh=case_values(first))  # both stay cached


def test_the_libraries_the_key_rules_gate_on_are_those_libsettings_reads() -> None:
    # inputs.py imports key.libsettings only once one of SETTINGS_LIBRARIES is loaded
    from statecache.key.inputs import SETTINGS_LIBRARIES
    from statecache.key.libsettings import REGISTRIES

    assert tuple(REGISTRIES) == SETTINGS_LIBRARIES
