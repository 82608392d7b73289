"""The stat stamp of a file: the one rule of "has this file changed since" that every cache of
a file's reading (data-file records, the read log, module sources) compares."""

from __future__ import annotations

import os


def stat_stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What a stat says about a file's content: size, mtime, ctime and inode. A same-size edit
    whose mtime was put back (``touch -r``, ``cp -p``, unpacking an archive) still moves the
    ctime, and a file replaced by another one has another inode."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
