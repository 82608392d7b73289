"""The files a polars ``LazyFrame``'s plan scans, read when the plan runs or its schema resolves.

A plan made above a block (``lazy = pl.scan_csv(...)``) reads its files in the block, from
Rust, when a method or a function runs it (``readernames.LAZY_METHODS``, ``PLAN_FUNCTIONS``);
``key.readers`` wraps those to tell the recorder what ``scanned`` names.
"""

from __future__ import annotations

from typing import Any

#: where a plan function takes its list of frames, when not first
_FRAMES_KEYWORD = "lazy_frames"


def scanned(frame: Any) -> list[Any]:
    """The sources the plan of the ``LazyFrame`` ``frame`` scans: from its description (no data
    is copied), or, when that shortens a list of sources, from its JSON form."""
    import re

    plan = frame._ldf.describe_plan()
    scans = re.findall(r"SCAN \[(.*)\]$", plan, flags=re.MULTILINE)
    if not any(re.search(r", \.\.\. \d+ other sources?$", scan) for scan in scans):
        return [scan for scan in scans if scan]
    import json
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the JSON form is deprecated; it is the one that names every file
        tree = json.loads(frame.serialize(format="json"))
    return list(_scanned_paths(tree))


def scanned_by_all(*args: Any, **kwargs: Any) -> list[Any]:
    """The sources the plans of every frame given to ``pl.collect_all`` (or its kin) scan."""
    frames = args[0] if args else kwargs.get(_FRAMES_KEYWORD, ())
    found: list[Any] = []
    for frame in frames if isinstance(frames, (list, tuple)) else ():
        if hasattr(frame, "_ldf"):
            found += scanned(frame)
    return found


def _scanned_paths(tree: Any) -> Any:
    """The paths under every ``{"Paths": [{"inner": path}, ...]}`` of a serialised plan."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            paths = node.get("Paths")
            if isinstance(paths, list):
                yield from (p["inner"] if isinstance(p, dict) else p for p in paths)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
