"""Resources a block's ``with`` statement shut down and left bound: ``with Pool(4) as pool:``
leaves ``pool`` a terminated pool, ``with ThreadPoolExecutor() as ex:`` a shut-down executor,
``con.close()`` a closed ``sqlite3`` connection.
No pickler saves them (a pool refuses to be pickled), and nothing can be done with them after
the block, so, like a closed file (``_openfiles``), the name is left unbound after a hit
instead of keeping the whole block from being saved."""

from __future__ import annotations

import sys
from typing import Any

_POOL_DONE = ("CLOSE", "TERMINATE")  # multiprocessing.pool's states after close()/terminate()


def spent_resource(value: Any) -> bool:
    """A ``multiprocessing`` pool closed or terminated, a ``concurrent.futures`` executor shut
    down (the state each is in after its ``with`` block), a closed ``sqlite3`` connection."""
    pool = sys.modules.get("multiprocessing.pool")
    if pool is not None and isinstance(value, pool.Pool):
        return getattr(value, "_state", None) in _POOL_DONE
    futures = sys.modules.get("concurrent.futures")
    if futures is not None and isinstance(value, futures.Executor):
        return bool(getattr(value, "_shutdown", False) or getattr(value, "_shutdown_thread", False))
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(value, sqlite3.Connection):
        try:
            value.total_changes  # noqa: B018  (raises once the connection is closed)
        except sqlite3.ProgrammingError:
            return True
    return False
