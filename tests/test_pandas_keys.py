"""pandas objects key by what defines their value, not by the caches they fill as they are read
(issue 11 class 11). Reads added above a block (``print``, ``.loc``, ``.values``,
``.index.is_unique``, ``groupby``) must not change its key; a block that only reads a frame must
not save it as mutated (which rebinds it on a hit); a real in-place mutation still misses. Real
scripts run twice or more; every value is compared with a fresh run under STATECACHE_DISABLE=1."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import Project, subprocess_env
from multicase import assert_cases, case_values, fresh_values, status
from test_data_files import fresh, value

pytest.importorskip("pandas")

# a frame of many kinds at once: a DatetimeIndex (its frequency and resolution are inferred
# lazily), int and float columns in separate blocks (.values consolidates them), Arrow-backed
# strings where pyarrow is installed, a categorical and a nullable integer column
MAKE = """
import os
import numpy as np
import pandas as pd
import statecache as sc

def make():
    index = pd.date_range("2024-01-01", periods=6, freq="D", name="day")
    df = pd.DataFrame({"a": np.arange(6), "s": list("xyzxyz")}, index=index)
    df["b"] = np.linspace(0.0, 1.0, 6)
    df["c"] = pd.Categorical(list("uvuvuv"))
    df["n"] = pd.array([1, None, 3, 4, None, 6], dtype="Int64")
    return df

df = make()
alias = df
"""

READS = {
    "print": "print(df, file=open(os.devnull, 'w')); repr(df['s'])",
    "loc": "df.loc['2024-01-03', 'a']; df.loc[df.index[2]]",
    "values": "df.values; df['b'].to_numpy()",
    "is_unique": "df.index.is_unique; df.columns.is_unique; df.index.is_monotonic_increasing",
    "groupby": "df.groupby('s')['a'].sum(); df.groupby('c', observed=True).size()",
    "freq": "df.index.inferred_type; df.index.get_loc(df.index[1]); df.index[1] in df.index",
}

# the block reads the frame in the same cache-filling ways, and assigns only y
BLOCK = """
with sc.checkpoint("a"):
    first = df.loc[df.index[0]]
    y = [int(df.groupby("s")["a"].sum().loc["x"]), float(df.values[:, 0].sum()), bool(df.index.is_unique), str(first["s"])]
print("y", y, "same object:", alias is df, "frame:", df.to_json())
"""


# a series, printed and indexed above its block (the section every frames script begins with)
SERIES = """
s = pd.Series([3, 1, 2, 3], index=pd.Index(list("abcd"), name="k"), name="v")
{reads}
with sc.checkpoint("series"):
    y = [int(s.loc["b"]), bool(s.index.is_unique), int(s.value_counts().loc[3])]
print("y series", y, s.to_json())
"""
SERIES_READS = "print(s, file=open(os.devnull, 'w')); s.loc['c']; s.index.is_unique; s.index.get_loc('d'); s.values"


def script(reads: str = "", mutate: str = "") -> str:
    return MAKE + reads + "\n" + mutate + "\n" + BLOCK


def frames_script(cases: dict[str, tuple[str, str]], series: str = "") -> str:
    """One frame per case, ``df_<case>`` made as MAKE makes ``df``, with the case's reads and
    mutation above its own copy of BLOCK, checkpoint ``<case>``, printing ``y <case> ...``;
    then SERIES with ``series`` above its block (checkpoint ``series``)."""
    parts = [MAKE.replace("df = make()\nalias = df\n", ""), SERIES.format(reads=series)]
    for case, (reads, mutate) in cases.items():
        ident = re.sub(r"\W", "_", case)
        section = "df = make()\nalias = df\n" + reads + "\n" + mutate + "\n" + BLOCK
        section = section.replace('sc.checkpoint("a")', f"sc.checkpoint({case!r})").replace('print("y", y,', f'print("y {case}", y,')
        parts.append(re.sub(r"(?<!['\"])\b(df|alias|first|y|helper)\b(?!['\"])", rf"\1_{ident}", section))
    return "\n".join(parts)


def saved_variables(project: Project) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "statecache", "show", "a", "--json"],
        cwd=project.root, env=subprocess_env(), capture_output=True, text=True, check=True,
    )
    variables = json.loads(proc.stdout)["variables"]
    return sorted(v["name"] if isinstance(v, dict) and "name" in v else v for v in variables)


def test_reads_added_above_the_block_still_hit(project: Project) -> None:
    """Each kind of read on its own frame, and all of them at once on another, and a series
    printed and indexed: every block hits, twice, with what a fresh run prints, and its frame
    is still the same object."""
    cases = {name: READS[name] for name in sorted(READS)} | {"all": "\n".join(READS.values())}
    project.write("script.py", frames_script({case: ("", "") for case in cases}))
    assert_cases(project.run("script.py"), [*cases, "series"], hit=False)
    project.write("script.py", frames_script({case: (reads, "") for case, reads in cases.items()}, SERIES_READS))
    fresh = fresh_values(project)
    for _ in range(2):
        hit = project.run("script.py")
        assert_cases(hit, [*cases, "series"], hit=True, fresh=fresh)
        for case in cases:
            assert "same object: True" in case_values(hit)[case], f"{case}: {case_values(hit)[case]}"


def test_a_block_that_only_reads_the_frame_does_not_save_it(project: Project) -> None:
    project.write("script.py", script())
    run = project.run("script.py")
    assert run.computed("a")
    assert saved_variables(project) == ["first", "y"]
    hit = project.run("script.py")
    assert hit.hit("a") and "same object: True" in value(hit) and value(hit) == fresh(project)


# in-place mutations made above the block, through a helper (the block's input changes)
MUTATIONS = {
    "iloc": "def helper(d):\n    d.iloc[0, 0] = 9\nhelper(df)",
    "new column": "def helper(d):\n    d['e'] = d['a'] * 2\nhelper(df)",
    "string cell": "def helper(d):\n    d.loc[d.index[0], 's'] = 'y'\nhelper(df)",
    "index name": "df.index.name = 'date'",
    "dtype": "df['a'] = df['a'].astype('int32')",
    "sort": "df.sort_values('b', ascending=False, inplace=True)",
    "categories": "df['c'] = df['c'].cat.rename_categories(['U', 'V'])",
    "attrs": "df.attrs['unit'] = 'cm'",
    "nullable": "df.loc[df.index[1], 'n'] = 2",
}


def test_an_in_place_mutation_above_the_block_misses(project: Project) -> None:
    """Each mutation on its own frame, and one of a series (read above its block as well):
    every block misses for its own input's change, agrees with a fresh run, and the next run
    hits."""
    cases = {name.replace(" ", "-"): MUTATIONS[name] for name in sorted(MUTATIONS)}
    project.write("script.py", frames_script({case: (READS["print"], "") for case in cases}, SERIES_READS))
    assert_cases(project.run("script.py"), [*cases, "series"], hit=False)
    mutated = {case: (READS["print"], mutation) for case, mutation in cases.items()}
    project.write("script.py", frames_script(mutated, SERIES_READS + "\ns.iloc[1] = 5"))
    fresh = fresh_values(project)
    run = project.run("script.py")
    assert_cases(run, [*cases, "series"], hit=False, fresh=fresh)
    for case in cases:
        frame = "df_" + re.sub(r"\W", "_", case)
        assert f"input '{frame}' changed" in status(run, case), f"{case}: {status(run, case)}"
    assert "input 's' changed" in status(run, "series"), status(run, "series")
    assert_cases(project.run("script.py"), [*cases, "series"], hit=True, fresh=case_values(run))


def test_a_mutation_inside_the_block_is_saved_and_put_back_in_place(project: Project) -> None:
    mutating = script().replace(
        'with sc.checkpoint("a"):\n',
        'def scale(d):\n    d.iloc[0, 0] = 9\n    d["e"] = d["b"] * 2\n\nwith sc.checkpoint("a"):\n    scale(df)\n',
    )
    project.write("script.py", mutating)
    run = project.run("script.py")
    assert run.computed("a") and value(run) == fresh(project)
    assert "df" in saved_variables(project)
    hit = project.run("script.py")
    assert hit.hit("a") and value(hit) == value(run), hit.stderr
    assert "same object: True" in value(hit)


def test_pandas_fingerprints_ignore_caches_and_see_values() -> None:
    """In-process: each cache-filling read leaves the fingerprint alone, a pickle round trip
    (a restore) keeps it, and every change of value, label, dtype or order moves it."""
    import pickle

    import numpy as np
    import pandas as pd

    from statecache.key.values import Fingerprinter

    def fp(obj: object) -> str:
        return Fingerprinter().value(obj, "df").hex()

    def make() -> pd.DataFrame:
        namespace: dict[str, object] = {}
        exec(MAKE.replace("import statecache as sc\n", ""), namespace)
        return namespace["make"]()  # type: ignore[operator,no-any-return]

    base = fp(make())
    for code in READS.values():
        df = make()
        exec(code, {"df": df, "os": __import__("os")})
        assert fp(df) == base, code
    assert fp(pickle.loads(pickle.dumps(make(), protocol=5))) == base
    changes = [
        lambda d: d.iloc.__setitem__((0, 0), 9),
        lambda d: d.index.rename("other", inplace=True),
        lambda d: d.__setitem__("a", d["a"].astype("int32")),
        lambda d: d.__setitem__("s", d["s"].str.upper()),
        lambda d: d.attrs.__setitem__("k", 1),
        lambda d: d.__setitem__("c", d["c"].cat.reorder_categories(["v", "u"])),
        lambda d: d.rename(columns={"b": "B"}, inplace=True),
        lambda d: d.sort_index(ascending=False, inplace=True),
    ]
    prints = set()
    for change in changes:
        df = make()
        change(df)
        prints.add(fp(df))
    assert base not in prints and len(prints) == len(changes)
    # a frame and its columns with another index: not equal, nor to the bare arrays
    assert fp(make().reset_index(drop=True)) != base
    assert fp(pd.Series(np.arange(3))) != fp(pd.Index(np.arange(3))) != fp(np.arange(3))


def test_other_pandas_arrays_key_by_value_and_survive_a_round_trip() -> None:
    """Intervals, sparse, Arrow-typed and timezone-aware data: a restore keeps the fingerprint,
    another value, closedness, type or timezone moves it."""
    import pickle

    import pandas as pd

    from statecache.key.values import Fingerprinter

    def fp(obj: object) -> str:
        return Fingerprinter().value(obj, "x").hex()

    pairs = [
        (pd.interval_range(0, 3), pd.interval_range(0, 3, closed="left")),
        (pd.Series(pd.arrays.SparseArray([0, 1, 0])), pd.Series(pd.arrays.SparseArray([0, 2, 0]))),
        (pd.Series(pd.to_datetime(["2020", "2021"]).tz_localize("UTC")),
         pd.Series(pd.to_datetime(["2020", "2021"]).tz_localize("Europe/Berlin"))),
        (pd.period_range("2020", periods=3, freq="M"), pd.period_range("2020", periods=3, freq="Q")),
        (pd.Series([1, 2], dtype="Int64"), pd.Series([1, 2], dtype="Int32")),
        (pd.date_range("2020", periods=3, freq="D"), pd.DatetimeIndex(["2020-01-01", "2020-01-02", "2020-01-03"])),
    ]
    for one, other in pairs:
        assert fp(one) == fp(pickle.loads(pickle.dumps(one, protocol=5))), one
        assert fp(one) != fp(other), (one, other)
