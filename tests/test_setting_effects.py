"""Settings a block makes in the process (library registries, the stdlib's, atexit) hold after
a hit as after the computing run (issue 11, class 7). One script holds one checkpoint per
setting and prints every setting after them; it runs computing, hitting and under
``STATECACHE_DISABLE=1``, and each case compares the hit's value with the fresh one's. The
rules themselves (what is recorded, what is refused) are checked in process, cheaply."""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from pathlib import Path

import pytest
from conftest import Project, Run
from test_redteam import HEAD

from statecache import _registries

HAS = {name: importlib.util.find_spec(name) is not None for name in ("pandas", "sklearn", "torch", "polars", "urllib3")}

SCRIPT = HEAD + """
import atexit, decimal, logging, warnings
import numpy as np, pandas as pd, sklearn
try:
    import polars as pl
except ImportError:
    pl = None
with sc.checkpoint('printoptions'):
    np.set_printoptions(precision=3, linewidth=60)
with sc.checkpoint('seterr'):
    np.seterr(divide='raise', over='ignore')
with sc.checkpoint('pandas'):
    pd.set_option('display.precision', 2)
    pd.set_option('display.max_rows', 7)
with sc.checkpoint('sklearn'):
    sklearn.set_config(transform_output='pandas')
with sc.checkpoint('decimal'):
    decimal.getcontext().prec = 6
    decimal.getcontext().traps[decimal.Inexact] = True
with sc.checkpoint('recursion'):
    sys.setrecursionlimit(3210)
with sc.checkpoint('logger-level'):
    logging.getLogger('my.lib').setLevel(logging.ERROR)
with sc.checkpoint('basicconfig'):
    logging.basicConfig(level=logging.INFO, format='%(levelname)s|%(message)s', filename='run.log')
with sc.checkpoint('null-handler'):  # the logging HOWTO's idiom for a library's logger
    logging.getLogger('my.quiet.lib').addHandler(logging.NullHandler())
with sc.checkpoint('first-import'):  # importing urllib3 adds a NullHandler to its logger
    try:
        import urllib3
        version = urllib3.__version__
    except ImportError:
        version = None
with sc.checkpoint('import-torch'):  # torch's import puts filtered handlers on its loggers, atexit from C
    try:
        import torch
        torch_sum = str(torch.tensor([1, 2]).sum().item())
    except ImportError:
        torch_sum = None
with sc.checkpoint('atexit'):
    def goodbye(word):
        print('atexit=', word)
    atexit.register(goodbye, 'ran')
if pl is not None:
    with sc.checkpoint('polars'):
        pl.Config.set_thousands_separator('_')
with sc.checkpoint('unplain'):  # a formatter function: no plain value to record
    np.set_printoptions(formatter={'int': lambda v: f'<{v}>'})
with sc.checkpoint('warnings'):  # last: later blocks would run under it
    warnings.filterwarnings('ignore', message='noisy', category=UserWarning)
    warnings.simplefilter('error', DeprecationWarning)
print('printoptions=', np.get_printoptions()['precision'], np.get_printoptions()['linewidth'])
print('seterr=', sorted(np.geterr().items()))
print('pandas=', pd.get_option('display.precision'), pd.get_option('display.max_rows'))
print('sklearn=', sklearn.get_config()['transform_output'])
print('decimal=', decimal.getcontext().prec, decimal.getcontext().traps[decimal.Inexact])
print('recursion=', sys.getrecursionlimit())
print('logger-level=', logging.getLogger('my.lib').level)
print('import-torch=', torch_sum)
print('null-handler=', [type(h).__name__ for h in logging.getLogger('my.quiet.lib').handlers])
print('first-import=', version, [type(h).__name__ for h in logging.getLogger('urllib3').handlers])
logging.info('after the blocks')
root = logging.getLogger()
print('basicconfig=', root.level, [type(h).__name__ for h in root.handlers],
      [h.formatter._fmt for h in root.handlers])
if pl is not None:
    print('polars=', pl.Config.state(if_set=True).get('set_thousands_separator'))
print('warnings=', [(f[0], f[2].__name__, getattr(f[1], 'pattern', None)) for f in warnings.filters[:2]])
"""

CASES = ["printoptions", "seterr", "pandas", "sklearn", "decimal", "recursion", "logger-level",
         "basicconfig", "null-handler", "atexit", "warnings",
         pytest.param("import-torch", marks=pytest.mark.skipif(not HAS["torch"], reason="torch is not installed")),
         pytest.param("first-import", marks=pytest.mark.skipif(not HAS["urllib3"], reason="urllib3 is not installed")),
         pytest.param("polars", marks=pytest.mark.skipif(not HAS["polars"], reason="polars is not installed"))]


def values(run: Run) -> dict[str, str]:
    return {k: v.strip() for k, v in (line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Run, Run, Run]:
    if not (HAS["pandas"] and HAS["sklearn"]):
        pytest.skip("pandas and scikit-learn are in the [dev] extra")
    project = Project(tmp_path_factory.mktemp("settings"))
    project.write("script.py", SCRIPT)
    computed = project.run("script.py")
    hit = project.run("script.py")
    fresh = project.run("script.py", env={"STATECACHE_DISABLE": "1"})
    return project, computed, hit, fresh


@pytest.mark.parametrize("case", CASES)
def test_a_setting_made_in_a_block_holds_after_its_hit(runs: tuple[Project, Run, Run, Run], case: str) -> None:
    _, computed, hit, fresh = runs
    assert computed.computed(case) and hit.hit(case), hit.stderr
    want = values(fresh)[case]
    assert values(computed)[case] == want
    assert values(hit)[case] == want, f"{case}: {values(hit)[case]} after a hit, {want} fresh"


def test_a_log_file_the_block_configured_gets_the_lines_logged_after_a_hit(
        runs: tuple[Project, Run, Run, Run]) -> None:
    project, _, _, _ = runs
    log = Path(project.root, "run.log").read_text()
    assert log.count("INFO|after the blocks") == 3, log  # computing, hit and fresh runs


def test_a_setting_that_cannot_be_recorded_is_never_a_silent_difference(runs: tuple[Project, Run, Run, Run]) -> None:
    _, computed, hit, _ = runs
    assert "np.set_printoptions(formatter=...)" in computed.stderr
    assert "Move it above the block" in computed.stderr
    assert "the state is not saved" in computed.stderr
    assert not hit.hit("unplain") and hit.computed("unplain"), hit.stderr  # never a hit that differs


# -- the rules, in process --------------------------------------------------------------------


def test_a_setting_that_cannot_be_recorded_plainly_is_named() -> None:
    np = pytest.importorskip("numpy")
    before = _registries.capture()
    old = np.get_printoptions()
    try:
        np.set_printoptions(formatter={"float": lambda x: f"{x:.1f}"}, precision=4)
        after = _registries.capture()
    finally:
        np.set_printoptions(**old)
    changes, unplain = _registries.difference(before, after)
    assert unplain == ["np.set_printoptions(formatter=...)"]
    assert changes["numpy"] == {"print.precision": 4}


def test_unchanged_settings_record_nothing_and_a_reset_is_recorded() -> None:
    before = _registries.capture()
    assert _registries.difference(before, _registries.capture()) == ({}, [])
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + 7)
    middle = _registries.capture()
    sys.setrecursionlimit(old)
    assert _registries.difference(middle, _registries.capture())[0] == {"sys": {"recursionlimit": old}}


def test_recorded_warnings_and_logging_apply_to_another_process_state() -> None:
    with warnings.catch_warnings():
        logger = logging.getLogger("statecache.test.effects")
        before = _registries.capture()
        warnings.filterwarnings("error", message="boom", category=RuntimeWarning, module="mymod")
        handler = logging.StreamHandler(sys.stderr)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        changes, unplain = _registries.difference(before, _registries.capture())
        assert unplain == []
        assert changes["warnings"] == {"added": [["error", "boom", "builtins:RuntimeWarning", "mymod", 0]]}
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        warnings.resetwarnings()
        warnings.simplefilter("ignore", ImportWarning)  # this process's own (``-W``): kept
        _registries.apply(changes)
        action, message, category, module, _ = warnings.filters[0]
        assert (action, message.pattern, category, module.pattern) == ("error", "boom", RuntimeWarning, "mymod")
        assert warnings.filters[1][0] == "ignore" and warnings.filters[1][2] is ImportWarning
        assert logger.level == logging.DEBUG
        assert [type(h) for h in logger.handlers] == [logging.StreamHandler]
        assert logger.handlers[0].stream is sys.stderr
        logger.removeHandler(logger.handlers[0])
        logger.setLevel(logging.NOTSET)


def test_an_atexit_function_of_the_block_is_recorded_by_value() -> None:
    import base64
    import pickle

    mark = _registries.atexit_mark()
    scale = 2
    sys.modules["atexit"].register(lambda x: x * scale, 21)  # a closure: pickled by value
    recorded, unplain = _registries.atexit_since(mark)
    assert unplain == [] and len(recorded) == 1
    func, args, kwargs = pickle.loads(base64.b64decode(recorded[0]))
    assert func(*args, **kwargs) == 42


def test_an_atexit_function_a_library_registers_in_the_block_is_not_recorded() -> None:
    """A library's registration (joblib's cleanup of its workers' folders) is the computing
    process's own: a hit in another process must not run it. The user's, beside it, is kept."""
    import os
    import sysconfig

    mark = _registries.atexit_mark()
    atexit_module = sys.modules["atexit"]
    for where in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]):
        code = compile("atexit.register(print, 'cleanup of the computing run')",
                       os.path.join(where, "library_module.py"), "exec")
        exec(code, {"atexit": atexit_module})
    atexit_module.register(print, "the user's")
    recorded, unplain = _registries.atexit_since(mark)
    atexit_module.unregister(print)  # every registration of it
    assert unplain == [] and len(recorded) == 1


def test_torch_settings_are_recorded_and_set_back() -> None:
    torch = pytest.importorskip("torch")
    before = _registries.capture()
    old = (torch.get_default_dtype(), torch.get_num_threads())
    try:
        torch.set_default_dtype(torch.float64)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        changes, unplain = _registries.difference(before, _registries.capture())
    finally:
        torch.set_default_dtype(old[0])
        torch.set_num_threads(old[1])
        torch.use_deterministic_algorithms(False)
    assert unplain == [] and set(changes["torch"]) >= {"default_dtype", "deterministic"}
    try:
        _registries.apply(changes)
        assert torch.get_default_dtype() is torch.float64 and torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.set_default_dtype(old[0])
        torch.set_num_threads(old[1])
        torch.use_deterministic_algorithms(False)
