"""Process state read where the key does not look (issue 11, classes 2 and 4).

- What a module of the user's reads of the process when it is imported (environment variables,
  the whole environment, the working directory, a data file), when the block (or a helper the
  block calls, or a ``cached_setup``) imports it first: that import runs in the block, where no
  scan of the block sees it (``key.imports.import_time_reads``).
- A library's settings registry (``pd.set_option``, ``np.set_printoptions``, the decimal
  context) reached through a helper that imports the library inside its body, or through a
  container of the library's objects (``key.libsettings``).

One script holds several instances of a class, each in its own checkpoint, so that a few runs
check them all: the first run computes every one, an unchanged rerun hits every one, a change
recomputes every one and prints what a run with caching off prints, and the rerun hits again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Project
from multicase import assert_cases, case_values, fresh_values

# -- what a module the block imports first reads of the process --------------------------------

MODULES = {
    # the block's import: an environment variable read at the top level
    "env_top.py": "import os\nSCALE = int(os.environ.get('S', '1'))\n\n\ndef f():\n    return SCALE * 10\n",
    # a top-level function that the top level calls, reading with getenv
    "env_call.py": "import os\n\n\ndef _scale():\n    return int(os.getenv('S', '1'))\n\n\nSCALE = _scale() + 1\n",
    # membership, imported by a helper of the script
    "env_flag.py": "import os\nFLAG = 'S' in os.environ and os.environ['S'] != '1'\n\n\ndef f():\n    return FLAG\n",
    # the whole environment, iterated
    "env_all.py": "import os\nAPP = sorted(v for k, v in os.environ.items() if k.startswith('APP_'))\n",
    # the working directory, resolved
    "env_cwd.py": "from pathlib import Path\nHERE = Path('.').resolve().name\n",
    # a data file beside the module
    "env_file.py": "import os\nwith open(os.path.join(os.path.dirname(__file__), 'scale.txt')) as f:\n"
                   "    SCALE = int(f.read())\n",
    # reached through a user module that the imported one imports at its top
    "env_outer.py": "import env_inner\nVALUE = env_inner.T * 2\n",
    "env_inner.py": "import os\nT = int(os.environ.get('T', '0'))\n",
    # imported above the block: its values are inputs (its top level ran before the block)
    "env_above.py": "import os\nSCALE = int(os.environ.get('S', '1'))\n\n\ndef f():\n    return SCALE + 100\n",
    # a helper of another module of the user's, called at the top level, reads a computed key
    "env_via.py": "from env_conf import env_int\nBATCH = env_int('S') + 1000\n",
    "env_conf.py": "import os\n\n\ndef env_int(key):\n    return int(os.environ.get(key, '0'))\n",
    # a function that importing does not run reads LATER: no part of what the import reads
    "env_later.py": "import os\nBASE = 3\n\n\ndef later():\n    return os.environ.get('LATER')\n",
}

IMPORTS_SCRIPT = """
import os
import statecache as sc
BLOCKS = %r
import env_above
os.chdir(os.environ['D'])

def helper():
    import env_flag
    return env_flag.f()

@sc.cached_setup(name='setup')
def load():
    import env_outer
    return env_outer.VALUE

with sc.checkpoint('top'):
    import env_top
    top = env_top.f()
with sc.checkpoint('call'):
    from env_call import SCALE
    call = SCALE
with sc.checkpoint('flag'):
    flag = helper()
with sc.checkpoint('all'):
    import env_all
    apps = env_all.APP
with sc.checkpoint('cwd'):
    import env_cwd
    here = env_cwd.HERE
with sc.checkpoint('file'):
    import env_file
    data = env_file.SCALE
with sc.checkpoint('above'):
    above = env_above.f()
with sc.checkpoint('above_again'):
    import env_above
    again = env_above.SCALE
with sc.checkpoint('via'):
    import env_via
    via = env_via.BATCH
with sc.checkpoint('later'):
    import env_later
    base = env_later.BASE
outer = load()
values = [top, call, flag, apps, here, data, above, again, via, base, outer]
for case, value in zip(BLOCKS, values):
    print('y', case, repr(value))
"""

BLOCKS = ["top", "call", "flag", "all", "cwd", "file", "above", "above_again", "via", "later", "setup"]


def test_what_a_module_the_block_imports_first_reads_of_the_process_is_in_the_key(project: Project) -> None:
    for name, text in MODULES.items():
        project.write(name, text)
    project.write("scale.txt", "4")
    (project.root / "one").mkdir()
    (project.root / "two").mkdir()
    project.write("script.py", IMPORTS_SCRIPT % BLOCKS)
    before = {"S": "1", "T": "2", "APP_X": "a", "D": "one", "LATER": "x"}
    first = project.run("script.py", env=before)
    assert_cases(first, BLOCKS, hit=False, fresh=fresh_values(project, "script.py", before))
    # what importing env_later runs does not read LATER: changing it keeps every hit but those
    # of the blocks whose modules read the whole environment (env_all, env_conf's computed key)
    again = project.run("script.py", env={**before, "LATER": "y"})
    whole = ["all", "via"]
    assert_cases(again, [b for b in BLOCKS if b not in whole], hit=True, fresh=case_values(first))
    assert_cases(again, whole, hit=False, fresh=case_values(first))
    after = {"S": "5", "T": "3", "APP_X": "b", "D": "two", "LATER": "x"}
    project.write("scale.txt", "7")
    fresh = fresh_values(project, "script.py", after)
    changes = [b for b in BLOCKS if b != "later"]
    for case in changes:
        assert fresh[case] != case_values(first)[case], f"{case}: the change must change the result to test anything"
    changed = project.run("script.py", env=after)
    assert_cases(changed, changes, hit=False, fresh=fresh)
    assert_cases(changed, ["later"], hit=True, fresh=fresh)
    assert_cases(project.run("script.py", env=after), BLOCKS, hit=True, fresh=case_values(changed))


def test_import_time_reads_are_what_importing_runs(tmp_path: Path) -> None:
    from statecache.key.imports import code_reads, import_time_reads

    module = tmp_path / "m.py"
    module.write_text(
        "import os\nfrom pathlib import Path\nA = os.environ['A']\n\n\ndef _b():\n    return os.getenv('B')\n\n\n"
        "def _c():\n    return _b()\n\n\nC = _c()\n\n\ndef unused():\n    return os.environ.get('U'), os.getcwd()\n\n\n"
        "class K:\n    D = os.environ.get('D')\n\n    def m(self):\n        return os.environ['M']\n\n\n"
        "class Used:\n    def m(self):\n        return os.environ['USED']\n\n\nU = Used().m()\n")
    assert code_reads(str(module))[:2] == (("A", "D", "B", "USED"), ())
    assert code_reads(str(module), frozenset({"unused"}))[:2] == (("U",), ("cwd",))
    module.write_text("import os\nHERE = os.getcwd()\nENV = dict(os.environ)\n")  # the stat changes
    assert code_reads(str(module))[:2] == ((), ("cwd", "environ"))
    module.write_text("def f(:\n")
    assert code_reads(str(module)) == ((), (), ())
    # through the user's modules that the import uses: a function taken by name, a module used
    # as a namespace; not a function of theirs that the import does not reach
    files = {name: str(tmp_path / f"{name}.py") for name in ("top", "config", "util", "other")}
    (tmp_path / "top.py").write_text("from config import env_int\nimport other\nN = env_int('N')\nM = other.get()\n")
    (tmp_path / "config.py").write_text(
        "from util import raw\n\n\ndef env_int(k):\n    return int(raw(k))\n\n\n"
        "def unrelated():\n    import os\n    return os.environ['UNRELATED']\n")
    (tmp_path / "util.py").write_text("import os\n\n\ndef raw(k):\n    return os.environ[k]\n")
    (tmp_path / "other.py").write_text("import os\n\n\ndef get():\n    return os.getenv('O')\n")
    assert import_time_reads("top", files) == (("O",), ("environ",))


# -- library settings reached through a helper's import or a container -------------------------

SETTINGS_ABOVE = """
import os
from decimal import Decimal, getcontext
import numpy as np
import pandas as pd
import statecache as sc
import helpers
V = int(os.environ['V'])
pd.set_option('display.precision', V)
np.set_printoptions(precision=V)
getcontext().prec = V
"""

IMPORTED_SETTINGS = SETTINGS_ABOVE + """
rows = [{'x': 1.123456789}]
frame = pd.DataFrame({'x': [1.123456789]})
with sc.checkpoint('pandas_inside'):
    a = helpers.table(rows)
with sc.checkpoint('numpy_inside'):
    b = helpers.show([1.123456789])
with sc.checkpoint('through_module'):
    c = helpers.via_module(rows)
with sc.checkpoint('frame_to_numpy'):
    d = str(frame.to_numpy())
for case, value in zip(['pandas_inside', 'numpy_inside', 'through_module', 'frame_to_numpy'], [a, b, c, d]):
    print('y', case, repr(value))
"""

CONTAINED_SETTINGS = SETTINGS_ABOVE + """
frames = {'a': pd.DataFrame({'x': [1.123456789]})}
rows = [{'x': 1.123456789}]
arrays = [np.array([1.123456789])]
class Box:
    def __init__(self, value):
        self.value = value
boxed = (Box(Decimal(1)),)
with sc.checkpoint('dict_of_frames'):
    a = repr(frames['a'])
with sc.checkpoint('list_of_arrays'):
    b = str(arrays[0])
with sc.checkpoint('decimal_in_object'):
    c = str(boxed[0].value / 7)
with sc.checkpoint('helper_of_a_helper'):
    d = helpers.report(rows)
for case, value in zip(['dict_of_frames', 'list_of_arrays', 'decimal_in_object', 'helper_of_a_helper'], [a, b, c, d]):
    print('y', case, repr(value))
"""

HELPERS = """
import fmt_top


def report(rows):
    return fmt_top.table(rows)


def table(rows):
    import pandas as pd
    return repr(pd.DataFrame(rows))


def show(values):
    import numpy
    return str(numpy.array(values))


def via_module(rows):
    import frames_of
    return frames_of.make(rows)
"""

FRAMES_OF = "import pandas\n\n\ndef make(rows):\n    return repr(pandas.DataFrame(rows))\n"
FMT_TOP = "import pandas as pd\n\n\ndef table(rows):\n    return repr(pd.DataFrame(rows))\n"


def check_settings(project: Project, script: str, blocks: list[str]) -> None:
    project.write("helpers.py", HELPERS)
    project.write("frames_of.py", FRAMES_OF)
    project.write("fmt_top.py", FMT_TOP)
    project.write("script.py", script)
    first = project.run("script.py", env={"V": "2"})
    assert_cases(first, blocks, hit=False)
    assert_cases(project.run("script.py", env={"V": "2"}), blocks, hit=True, fresh=case_values(first))
    fresh = fresh_values(project, "script.py", {"V": "5"})
    for case in blocks:
        assert fresh[case] != case_values(first)[case], f"{case}: the setting must change the result to test anything"
    changed = project.run("script.py", env={"V": "5"})
    assert_cases(changed, blocks, hit=False, fresh=fresh)
    assert_cases(project.run("script.py", env={"V": "5"}), blocks, hit=True, fresh=fresh)


def test_a_library_setting_reached_through_an_import_in_a_helper_is_in_the_key(project: Project) -> None:
    pytest.importorskip("pandas")
    check_settings(project, IMPORTED_SETTINGS, ["pandas_inside", "numpy_inside", "through_module", "frame_to_numpy"])


def test_a_library_setting_reached_through_a_container_or_a_helpers_helper_is_in_the_key(project: Project) -> None:
    pytest.importorskip("pandas")
    check_settings(project, CONTAINED_SETTINGS,
                   ["dict_of_frames", "list_of_arrays", "decimal_in_object", "helper_of_a_helper"])


def test_settings_at_their_defaults_count_as_none() -> None:
    # whether a library is loaded yet (a hit skips the block that imported it) cannot change a
    # key: a library at its defaults counts nothing, as one not loaded does
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    import decimal

    from statecache.key.libsettings import settings_of

    assert settings_of(["pandas", "decimal", "os"]) == {}
    with pd.option_context("display.precision", 3), np.printoptions(precision=2), decimal.localcontext() as ctx:
        ctx.prec = 5
        assert settings_of(["pandas", "decimal"]) == {
            "pandas options": {"display.precision": "3"},
            "numpy print options and error handling": {"print": {"precision": "2"}, "err": {}},  # pandas is built on it
            "decimal context": {"prec": "5"},
        }
    assert settings_of(["pandas"]) == {}
