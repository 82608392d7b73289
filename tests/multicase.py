"""One script run, many cases: each case is its own checkpoint, named for the case, and prints
one line ``y <case> <value>``. A test then asserts per case (hit or computed, value against a
fresh ``STATECACHE_DISABLE=1`` run) and names the case in every failure message. This keeps the
real-subprocess, run-twice standard while paying for one interpreter start per run, not per case."""

from __future__ import annotations

from conftest import Project, Run


def case_values(run: Run) -> dict[str, str]:
    """Each case's last printed value, by case name."""
    out: dict[str, str] = {}
    for line in run.stdout.splitlines():
        if line.startswith("y "):
            case, _, rest = line[2:].partition(" ")
            out[case] = rest
    return out


def fresh_values(project: Project, script: str = "script.py", env: dict[str, str] | None = None) -> dict[str, str]:
    """What every case prints when nothing is cached."""
    return case_values(project.run(script, env={**(env or {}), "STATECACHE_DISABLE": "1"}))


def status(run: Run, case: str) -> str:
    """The status lines about one checkpoint, for failure messages and reasons."""
    return "\n".join(line for line in run.status if f"'{case}'" in line) or run.stderr


def assert_cases(run: Run, cases: list[str], *, hit: bool, fresh: dict[str, str] | None = None) -> None:
    """Every case hit (or computed and did not hit), and printed what a fresh run prints."""
    values = case_values(run)
    for case in cases:
        if hit:
            assert run.hit(case), f"{case}: expected a hit\n{status(run, case)}"
        else:
            assert run.computed(case) and not run.hit(case), f"{case}: expected a miss\n{status(run, case)}"
        assert case in values, f"{case}: printed nothing\n{run.stdout}{run.stderr}"
        if fresh is not None:
            assert values[case] == fresh.get(case), f"{case}: {values[case]!r} != fresh {fresh.get(case)!r}"
