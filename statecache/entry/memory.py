"""Where restored buffers live: new memory that a reader fills, or slices of the entry file's
copy-on-write map. Nothing here reads a file or knows the entry format.

Most of a restore's time on a warm machine is the first touch of new memory (the kernel
zeroes every page it hands out), so the page size matters more than the copy: big buffers
come from numpy's allocator, which asks for huge pages from 4 MiB on, and the many small
buffers of one entry (a RandomForest's 200 sub-MiB node arrays) share one private anonymous
map that asks for huge pages too, instead of 4 KiB pages each. Huge pages were never the
slower choice (192 MiB touched in a fresh process, 5 rounds, orders varied): 31 ms of system
time against 160-176 ms with MADV_NOHUGEPAGE once the VM backs the memory, and 155-178 ms
either way on memory it had just handed back to its host (which page size pays that is
chance: whichever process touches such memory first).
"""

from __future__ import annotations

import sys
from typing import Any

from .format import align

ARENA_MAX = 4 << 20  # buffers below this share an arena (numpy gives huge pages from 4 MiB)
ARENA_MIN = 2 << 20  # an arena smaller than one huge page gains nothing over plain memory


def fresh(n: int) -> Any:
    """Uninitialised writable memory for one buffer. numpy's allocator skips the zero-fill that
    ``bytearray(n)`` pays and asks for huge pages for big buffers, whenever numpy is already
    loaded (it is not imported for small buffers alone). ValueError or OverflowError for a
    size no allocator accepts."""
    np = sys.modules.get("numpy")
    if np is not None or n >= (1 << 20):
        if np is None:
            try:
                import numpy as np
            except ImportError:
                np = None
        if np is not None:
            return np.empty(n, dtype=np.uint8)
    return bytearray(n)


def arena(sizes: list[int]) -> list[memoryview] | None:
    """Writable memory for buffers of these ``sizes``: slices (64-byte aligned) of one
    private anonymous map that asks for huge pages. A RandomForest's 200 buffers (40 MB)
    then take about 1k page faults instead of 10k, and were read in 48-65 ms instead of
    110-190 ms (fresh processes, load 17). The map lives as long as any of its slices.
    Private, so a forked child's writes (``branch()``) stay its own. None where such a map
    cannot be made (no MAP_ANONYMOUS, out of address space): then use ``fresh``."""
    import mmap

    private, anonymous = getattr(mmap, "MAP_PRIVATE", None), getattr(mmap, "MAP_ANONYMOUS", None)
    total = sum(align(n) for n in sizes)
    if private is None or anonymous is None or not total:
        return None
    try:
        m = mmap.mmap(-1, total, flags=private | anonymous)
    except (OSError, ValueError, OverflowError):
        return None
    huge = getattr(mmap, "MADV_HUGEPAGE", None)
    if huge is not None:
        try:
            m.madvise(huge)
        except OSError:  # a kernel without transparent huge pages: 4 KiB pages then
            pass
    view = memoryview(m)
    pieces, pos = [], 0
    for n in sizes:
        pieces.append(view[pos : pos + n])
        pos += align(n)
    return pieces


def file_map(fd: int, size: int) -> memoryview:
    """The whole file mapped copy-on-write, or an empty view where mapping is refused (some
    network file systems), in which case buffers are read as usual."""
    import mmap

    try:
        return memoryview(mmap.mmap(fd, size, access=mmap.ACCESS_COPY))
    except (OSError, ValueError):
        return memoryview(b"")
