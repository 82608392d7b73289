"""Resources a block's ``with`` shut down and left bound (a terminated ``Pool``, a shut-down
executor, a closed sqlite connection) do not keep the block from being saved: the name is
unbound after a hit, as a closed file's is (``_spent``, ``_openfiles``)."""

from __future__ import annotations

from conftest import Project

SCRIPT = """
import multiprocessing as mp, sqlite3
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
import statecache as sc
if __name__ == '__main__':
    with sc.checkpoint('pool'):
        with mp.get_context('fork').Pool(2) as pool:
            y = sum(pool.map(abs, [-1, -2]))
    print('pool', y, 'pool' in globals())
    with sc.checkpoint('closed-pool'):
        live = mp.get_context('fork').Pool(1)
        y = live.apply(abs, (-5,))
        live.close()
        live.join()
    print('closed-pool', y, 'live' in globals())
    with sc.checkpoint('threads'):
        with ThreadPoolExecutor(2) as ex:
            y = sum(ex.map(abs, [-3, -4]))
    print('threads', y, 'ex' in globals())
    with sc.checkpoint('processes'):
        with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as pex:
            y = sum(pex.map(abs, [-1, -6]))
    print('processes', y, 'pex' in globals())
    with sc.checkpoint('sqlite'):
        con = sqlite3.connect(':memory:')
        y = con.execute('select 40 + 2').fetchone()[0]
        con.close()
    print('sqlite', y, 'con' in globals())
    with sc.checkpoint('running-threads'):  # not spent: still refused, with the fix named
        running = ThreadPoolExecutor(1)
        y = running.submit(abs, -9).result()
    running.shutdown()
    print('running-threads', y)
"""

CASES = ["pool", "closed-pool", "threads", "processes", "sqlite"]


def printed(run_stdout: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in run_stdout.splitlines() if line.split()}


def test_a_resource_the_block_shut_down_does_not_keep_it_from_being_saved(project: Project) -> None:
    project.write("script.py", SCRIPT)
    fresh = printed(project.run("script.py", env={"STATECACHE_DISABLE": "1"}).stdout)
    computed = project.run("script.py")
    assert "running-threads" in computed.stderr and "was not saved" in computed.stderr, computed.stderr
    hit = project.run("script.py")
    again = project.run("script.py")
    for case in CASES:
        assert computed.computed(case), computed.stderr
        assert hit.hit(case) and again.hit(case), f"{case}: {hit.stderr}"
        assert printed(computed.stdout)[case] == fresh[case] == [fresh[case][0], "True"]
        assert printed(hit.stdout)[case] == [fresh[case][0], "False"], f"{case}: the spent resource is unbound after a hit"
    assert not hit.hit("running-threads") and printed(hit.stdout)["running-threads"] == fresh["running-threads"]
