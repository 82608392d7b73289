"""``statecache show NAME --explain``: the key's components of every stored version of a
checkpoint and, for the newest two, what differs between them. Like the status line of a miss,
but in full and after the fact.

The one-line reason comes from the engine's own rule (``key.components.changes`` and
``summary``, the words a miss prints); the component-by-component differences below it are a
plain comparison of the two stored documents, so a component this module does not know (a
newer key schema) is still compared and shown.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .._config import format_size, validate_name
from ..entry.meta import EntryMeta, FileRecord
from ..store.maintenance import EntryFile, scan
from .common import PROG, cache_dir, entry_meta, note_missing, plural, table, when
from .listing import file_state, names_hint

# The parts of the components document shown as tables of labels (dicts); every other part is
# one value. "recorded" and "rng" are not key components: they are what the computing run read
# (data files, random generators), re-checked by a hit.
_LABELLED = {"inputs": "input", "files": "file", "recorded": "read", "rng": "rng"}
_HEX = re.compile(r"[0-9a-f]{17,}")


@dataclass
class Version:
    """One stored entry of the name, with what its key was made of."""

    entry: EntryFile
    meta: EntryMeta
    error: str | None
    parts: dict[str, Any]  # the key's components, plus "recorded" and "rng"
    states: dict[str, str]  # recorded data file (its label) -> unchanged / changed / missing now


@dataclass
class Difference:
    component: str  # "code", "env", "inputs", ...
    change: str  # "changed", "new", "gone"
    label: str | None = None  # the input name or file path, for the labelled components
    old: Any = None
    new: Any = None


@dataclass
class Explained:
    cache_dir: str
    name: str
    versions: list[Version]  # newest first
    reasons: list[str] = field(default_factory=list)  # the engine's words for newest vs previous
    summary: str = ""
    differences: list[Difference] = field(default_factory=list)


def _recorded_label(rec: FileRecord, taken: dict[str, Any]) -> str:
    """A recorded file as the script opened it (its relative path), else its absolute path."""
    label = rec.get("relative") or rec["path"]
    return rec["path"] if label in taken else label


def _version(e: EntryFile) -> Version:
    meta, error = entry_meta(e)
    parts = dict(meta.get("components", {}))
    recorded: dict[str, Any] = {}
    states: dict[str, str] = {}
    for rec in meta.get("files", []):
        label = _recorded_label(rec, recorded)
        recorded[label] = rec.get("digest", rec["kind"])
        states[label] = file_state(rec)
    parts["recorded"] = recorded
    parts["rng"] = {gen: rec["before"] for gen, rec in meta.get("rng", {}).items()}
    return Version(e, meta, error, parts if error is None else {}, states)


def _diff_map(component: str, old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    out = [Difference(component, "new", k, None, v) for k, v in new.items() if k not in old]
    out += [Difference(component, "changed", k, old[k], v)
            for k, v in new.items() if k in old and old[k] != v]
    out += [Difference(component, "gone", k, v, None) for k, v in old.items() if k not in new]
    order = {"changed": 0, "new": 1, "gone": 2}
    return sorted(out, key=lambda d: order[d.change])


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """Every part that differs between two versions' parts, the key's components first."""
    out: list[Difference] = []
    for component in dict.fromkeys([*new, *old]):
        a, b = old.get(component), new.get(component)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff_map(component, a, b)
        else:
            change = "new" if a is None else "gone" if b is None else "changed"
            out.append(Difference(component, change, None, a, b))
    return out


def code_lines(old: EntryMeta, new: EntryMeta) -> list[str] | None:
    """The changed lines of the block, ``-  12 old text`` / ``+  12 new text``, when both entries
    store its text (a ``block_source`` of ``{"first_line", "text"}``); None when one does not."""
    import difflib

    a, b = old.get("block_source"), new.get("block_source")
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    try:
        a_lines, b_lines = a["text"].splitlines(), b["text"].splitlines()
        a_first, b_first = int(a["first_line"]), int(b["first_line"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    out = []
    matcher = difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        out += [f"- {a_first + i:>4} {a_lines[i]}" for i in range(i1, i2)]
        out += [f"+ {b_first + j:>4} {b_lines[j]}" for j in range(j1, j2)]
    return out


def gather_explain(cache: str, name: str) -> Explained:
    """Every readable version of ``name``, newest (by creation) first, and for the newest two
    the reason a miss would have given and every difference."""
    from ..key.components import changes, summary

    versions = [_version(e) for e in scan(cache, [name])[0]]
    versions.sort(key=lambda v: (v.error is None, v.meta.get("created", 0.0)), reverse=True)
    out = Explained(cache, name, versions)
    readable = [v for v in versions if v.error is None]
    if len(readable) >= 2:
        new, old = readable[0].meta.get("components", {}), readable[1].meta.get("components", {})
        out.reasons = changes(old, new)
        out.summary = summary(out.reasons, limit=len(out.reasons) or 1)
        out.differences = differences(readable[1].parts, readable[0].parts)
    return out


# ---------------------------------------------------------------------------------------------
# render


def _short(value: Any) -> str:
    """A digest cut to 12 hex digits; any other value as it is (JSON for non-strings)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:12] + "..." if _HEX.fullmatch(text) else text


def _component_rows(v: Version) -> list[list[str]]:
    rows = []
    for component, value in v.parts.items():
        if not (component in _LABELLED and isinstance(value, dict)):
            rows.append(["    " + component, "", _short(value)])
            continue
        for label, fp in value.items():
            state = v.states.get(label, "") if component == "recorded" else ""
            rows.append(["    " + _LABELLED[component], label,
                         _short(fp) + (f"  ({state} now)" if state else "")])
    return rows


def _render_version(v: Version, now: float) -> None:
    e, meta = v.entry, v.meta
    print(f"  {e.key[:8]}  {format_size(e.size)}, created {when(meta.get('created'), now)}")
    if v.error is not None:
        print(f"    unreadable: {v.error}")
        return
    source = meta.get("source")
    if source is not None:
        print(f"    at {source['file']}:{source['line']} ({meta.get('kind', '-')})")
    rows = _component_rows(v)
    if rows:
        print(table(rows))


def _difference_row(d: Difference) -> list[str]:
    word = _LABELLED.get(d.component, d.component)
    what = f"{word} {d.label}" if d.label is not None else word
    if d.component == "code":
        return ["  " + what, d.change, f"{_code(d.old)} -> {_code(d.new)}"]
    return ["  " + what, d.change, f"{_short(d.old)} -> {_short(d.new)}"]


def _code(value: Any) -> str:
    """The code component as a user wrote it: ``version='2'``, or the digest of the AST."""
    if isinstance(value, str) and value.startswith("version:"):
        return f"version={value[8:]!r}"
    return f"AST {_short(value)}"


def render_explain(ex: Explained) -> None:
    now = time.time()
    readable = [v for v in ex.versions if v.error is None]
    print(f"{ex.name}: {plural(len(ex.versions), 'version')} in {ex.cache_dir}, newest first")
    for v in ex.versions:
        _render_version(v, now)
    if len(readable) < 2:
        print("only one readable version: nothing to compare")
        return
    newer, older = readable[0].entry.key[:8], readable[1].entry.key[:8]
    print(f"{newer} against {older}: {ex.summary}")
    if ex.differences:
        print(table([_difference_row(d) for d in ex.differences]))
    if any(d.component == "code" for d in ex.differences):
        lines = code_lines(readable[1].meta, readable[0].meta)
        if lines is None:
            print("  (entries do not store the block's text: which lines changed is not known)")
        for line in lines or ():
            print("    " + line)


def explain_json(ex: Explained) -> dict[str, Any]:
    readable = [v for v in ex.versions if v.error is None]
    comparison = None
    if len(readable) >= 2:
        comparison = {
            "newer": readable[0].entry.key,
            "older": readable[1].entry.key,
            "reasons": ex.reasons,
            "summary": ex.summary,
            "differences": [d.__dict__ for d in ex.differences],
            "code_lines": code_lines(readable[1].meta, readable[0].meta),
        }
    versions = [
        {
            "key": v.entry.key, "path": v.entry.path, "size": v.entry.size,
            "created": v.meta.get("created"), "last_used": v.entry.last_used,
            "kind": v.meta.get("kind"), "source": v.meta.get("source"),
            "components": v.meta.get("components"),
            "recorded_files": [
                {"path": rec["path"], "digest": rec.get("digest"), "state": file_state(rec)}
                for rec in v.meta.get("files", [])
            ],
            "rng": v.parts.get("rng", {}), "error": v.error,
        }
        for v in ex.versions
    ]
    return {"cache_dir": ex.cache_dir, "name": ex.name, "versions": versions,
            "comparison": comparison}


def cmd_explain(args: argparse.Namespace) -> int:
    """``show NAME --explain``: exit 1 when the name has no entry (or no cache is there)."""
    name = args.entry
    if "/" in name:
        name = name.partition("/")[0]  # every version of the name is explained
    validate_name(name)
    cache = cache_dir(args)
    if note_missing(cache):
        return 1
    ex = gather_explain(cache, name)
    if not ex.versions:
        print(f"{PROG}: nothing named {name!r} in {cache}{names_hint(cache)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(explain_json(ex), indent=2, default=str))
    else:
        render_explain(ex)
    return 0
