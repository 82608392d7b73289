"""``statecache ls`` and ``statecache show``: what is in the cache. Each command gathers its
data first (no printing), then renders it as a table or as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .._config import format_duration, format_size, validate_name
from .._errors import InvalidNameError, UsageError
from ..entry.meta import EntryMeta, FileRecord
from ..store.layout import is_key
from ..store.maintenance import EntryFile, name_dirs, scan
from .common import (
    PROG,
    ago,
    cache_dir,
    entry_meta,
    note_missing,
    plural,
    sorted_entries,
    table,
    when,
)

Row = tuple[EntryFile, EntryMeta, str | None]  # an entry, its metadata, why it is unreadable


def entry_json(e: EntryFile, meta: EntryMeta, error: str | None) -> dict[str, Any]:
    """One entry as ``ls --json`` and ``show --json`` give it."""
    return {
        "name": e.name,
        "key": e.key,
        "path": e.path,
        "size": e.size,
        "kind": meta.get("kind"),
        "variables": meta.get("variables", {}),
        "created": meta.get("created"),
        "last_used": e.last_used,
        "compute_seconds": meta.get("compute_seconds"),
        "source": meta.get("source"),
        "error": error,
    }


def names_hint(cache: str) -> str:
    """``; names here: a, b, ...`` (or nothing when the cache is empty), for "no such" errors."""
    names = [n for n, _ in name_dirs(cache)]
    if not names:
        return "; the cache is empty"
    return f"; names here: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"


# ---------------------------------------------------------------------------------------------
# ls


@dataclass
class Listing:
    cache_dir: str
    missing: bool
    rows: list[Row]
    unmatched: list[str] = field(default_factory=list)  # names asked for that have no entry


def gather_ls(cache: str, names: list[str], missing: bool) -> Listing:
    for n in names:
        validate_name(n)
    wanted = set(names) if names else None
    entries = [] if missing else sorted_entries(scan(cache, wanted)[0])
    found = {e.name for e in entries}
    unmatched = [n for n in dict.fromkeys(names) if n not in found]
    return Listing(cache, missing, [(e, *entry_meta(e)) for e in entries], unmatched)


def render_ls_json(listing: Listing) -> None:
    # One entry per line, each through json's C encoder (indent= would use the pure-Python
    # one, several times slower on 10,000 entries); still one JSON document.
    rows = listing.rows
    lines = ",\n".join("    " + json.dumps(entry_json(e, m, err)) for e, m, err in rows)
    totals = json.dumps(
        {
            "entries": len(rows),
            "names": len({e.name for e, _, _ in rows}),
            "size": sum(e.size for e, _, _ in rows),
        }
    )
    print(
        f'{{\n  "cache_dir": {json.dumps(listing.cache_dir)},\n  "entries": ['
        + (f"\n{lines}\n  " if rows else "")
        + f'],\n  "total": {totals}\n}}'
    )


def _variables_cell(variables: dict[str, Any], width: int = 32) -> str:
    names = list(variables)
    if not names:
        return "0"
    text = f"{len(names)}: " + ", ".join(names)
    if len(text) > width:
        text = text[: width - 3].rstrip(", ") + "..."
    return text


def _ls_row(e: EntryFile, meta: EntryMeta, err: str | None, now: float) -> list[str]:
    if err is not None:
        return [e.name, e.key[:8], format_size(e.size), f"unreadable: {err}"[:60], "-",
                ago(e.last_used, now), "-"]
    compute = meta.get("compute_seconds")
    return [
        e.name,
        e.key[:8],
        format_size(e.size),
        _variables_cell(meta.get("variables", {})),
        ago(meta.get("created"), now),
        ago(e.last_used, now),
        "-" if compute is None else format_duration(compute),
    ]


def render_ls(listing: Listing) -> None:
    rows = listing.rows
    if not rows:
        if not listing.missing and not listing.unmatched:
            print(f"no entries in {listing.cache_dir}")
        return
    now = time.time()
    cells = [["NAME", "KEY", "SIZE", "VARIABLES", "CREATED", "LAST USED", "COMPUTE"]]
    cells += [_ls_row(e, meta, err, now) for e, meta, err in rows]
    print(table(cells, right={2, 6}))
    names = len({e.name for e, _, _ in rows})
    total = sum(e.size for e, _, _ in rows)
    print(
        f"{plural(len(rows), 'entry', 'entries')} ({plural(names, 'name')}), "
        f"{format_size(total)} in {listing.cache_dir}"
    )


def cmd_ls(args: argparse.Namespace) -> int:
    """One row per entry (only the NAMEs given, if any), sorted by name then last use, totals at
    the bottom. A NAME with no entry is named on stderr, and the exit code is 1. With
    ``--remote``: the remote's entries instead (``cli.remote``)."""
    if getattr(args, "remote", None) is not None:
        from .remote import cmd_ls_remote

        return cmd_ls_remote(args)
    cache = cache_dir(args)
    listing = gather_ls(cache, args.names, note_missing(cache))
    for n in listing.unmatched:
        hint = "" if listing.missing else names_hint(cache)
        print(f"{PROG}: nothing named {n!r} in {cache}{hint}", file=sys.stderr)
    (render_ls_json if args.json else render_ls)(listing)
    return 1 if listing.unmatched else 0


# ---------------------------------------------------------------------------------------------
# show


def file_state(rec: FileRecord) -> str:
    """unchanged / changed / missing for a recorded data file (or directory listing, or a file
    that was absent), judged as a hit would judge it: stat first, content only if the stat differs."""
    from ..key.files import changed_record

    try:
        why = changed_record(dict(rec))
    except (OSError, KeyError, TypeError, ValueError):
        return "unreadable"
    if why is None:
        return "unchanged"
    if rec.get("kind", "file") != "missing" and not os.path.exists(rec["path"]):
        return "missing"
    return "changed"


def _is_hex_prefix(text: str) -> bool:
    return 0 < len(text) <= 32 and is_key(text.lower().ljust(32, "0"))


def parse_target(query: str) -> tuple[str, str]:
    """``NAME`` or ``NAME/KEYPREFIX`` -> (name, key prefix or ""); a bad one is a usage error."""
    name, _, prefix = query.partition("/")
    validate_name(name)
    if "/" in query and not _is_hex_prefix(prefix):
        raise UsageError(f"{query!r}: after the '/' give a key prefix (hex digits)")
    return name, prefix.lower()


def parse_query(query: str) -> tuple[str | None, str | None]:
    """``NAME``, ``KEYPREFIX`` or ``NAME/KEYPREFIX`` -> (name, key prefix); a bad one is a usage
    error. A bare word that is both a valid name and hex is tried as a name first."""
    if "/" in query:
        return parse_target(query)
    if _is_hex_prefix(query):
        try:
            return validate_name(query), query.lower()
        except InvalidNameError:
            return None, query.lower()
    return validate_name(query), None


def _newest_first(by_name: list[EntryFile]) -> tuple[list[EntryFile], list[EntryFile]]:
    if not by_name:
        return [], []
    newest = max(by_name, key=lambda e: e.last_used)
    return [newest], sorted_entries([e for e in by_name if e is not newest])


def find(cache: str, query: str) -> tuple[list[EntryFile], list[EntryFile]]:
    """(matches, other versions of the matched name) for a ``show`` query."""
    name, prefix = parse_query(query)
    if name is not None and (prefix is None or "/" in query):
        by_name = scan(cache, [name])[0]
        if "/" in query:
            return [e for e in by_name if e.key.startswith(prefix or "")], []
        return _newest_first(by_name)
    entries = scan(cache)[0]
    if name is not None:  # both a valid name and hex: the name wins when it exists
        by_name = [e for e in entries if e.name == name]
        if by_name:
            return _newest_first(by_name)
    return [e for e in entries if e.key.startswith(prefix or "")], []


@dataclass
class Shown:
    entry: EntryFile
    meta: EntryMeta
    error: str | None
    files: list[tuple[FileRecord, str]]  # each recorded file and its state now
    others: list[EntryFile]


def gather_show(cache: str, query: str) -> list[EntryFile] | Shown:
    """The entry in full, or every match (none, or more than one) when it is not one entry."""
    matches, others = find(cache, query)
    if len(matches) != 1:
        return matches
    e = matches[0]
    meta, err = entry_meta(e)
    files = [(f, file_state(f)) for f in meta.get("files", [])]
    return Shown(e, meta, err, files, others)


def render_show_json(shown: Shown) -> None:
    out: dict[str, Any] = dict(shown.meta)
    out.update(entry_json(shown.entry, shown.meta, shown.error))
    out["files"] = [dict(f, state=s) for f, s in shown.files]
    out["other_versions"] = [
        {"key": o.key, "size": o.size, "last_used": o.last_used, "path": o.path}
        for o in shown.others
    ]
    print(json.dumps(out, indent=2, default=str))


def _fields(shown: Shown, now: float) -> list[tuple[str, str]]:
    e, meta = shown.entry, shown.meta
    source = meta.get("source")
    src = "-" if source is None else f"{source['file']}:{source['line']}"
    if source is not None and not os.path.exists(source["file"]):
        src += "  (file no longer exists)"
    compute = meta.get("compute_seconds")
    state_size = meta.get("state_size")
    return [
        ("kind", str(meta.get("kind", "-"))),
        ("source", src),
        ("path", e.path),
        ("size", format_size(e.size)
         + (f" on disk, {format_size(state_size)} of state" if state_size else "")),
        ("created", when(meta.get("created"), now)
         + ("" if compute is None else f", computed in {format_duration(compute)}")),
        ("last used", when(e.last_used, now)),
        ("python", str(meta.get("python", "-"))),
        ("statecache", f"{meta.get('statecache_version', '-')} (format {meta.get('format', '-')})"),
        ("pickler", str(meta.get("pickler", "-"))),
        ("signed", "yes" if meta.get("signed") else "no"),
    ]


def render_show(shown: Shown) -> None:
    e, meta = shown.entry, shown.meta
    now = time.time()
    print(f"{e.name}  {e.key}")
    if shown.error is not None:
        print(f"  unreadable: {shown.error}")
        print(f"  path        {e.path}")
        print(f"  size        {format_size(e.size)}")
        return
    for label, value in _fields(shown, now):
        print(f"  {label:<11} {value}")
    variables = meta.get("variables", {})
    print(f"variables ({len(variables)})")
    vrows = [["  " + n, v["type"], format_size(v["size"])] for n, v in variables.items()]
    if vrows:
        print(table(vrows, right={2}))
    print(f"files ({len(shown.files)})")
    note = {"missing": " (absent when computed)", "dir": " (directory listing)", "output": " (written by the block)"}
    frows = [
        ["  " + s, f["path"] + note.get(f["kind"], ""),
         format_size(f["size"]) if "size" in f else ""]
        for f, s in shown.files
    ]
    if frows:
        print(table(frows, right={2}))
    if shown.others:
        print(f"other versions ({len(shown.others)})")
        rows = [["  " + o.key[:8], format_size(o.size), f"last used {ago(o.last_used, now)}"]
                for o in shown.others]
        print(table(rows, right={1}))


def _render_matches(cache: str, query: str, matches: list[EntryFile]) -> None:
    if not matches:
        print(f"{PROG}: no entry in {cache} matches {query!r}{names_hint(cache)}", file=sys.stderr)
        return
    now = time.time()
    print(f"{PROG}: {query!r} matches {len(matches)} entries; give more of the key:",
          file=sys.stderr)
    for e in sorted_entries(matches):
        print(f"  {e.name}/{e.key}  {format_size(e.size)}  last used {ago(e.last_used, now)}",
              file=sys.stderr)


def cmd_show(args: argparse.Namespace) -> int:
    """One entry in full: metadata, variables, recorded files and their state now, source."""
    if getattr(args, "explain", False):
        from .explain import cmd_explain

        return cmd_explain(args)
    cache = cache_dir(args)
    parse_query(args.entry)  # a malformed query is a usage error even without a cache
    if note_missing(cache):
        return 1
    shown = gather_show(cache, args.entry)
    if not isinstance(shown, Shown):
        _render_matches(cache, args.entry, shown)
        return 1
    (render_show_json if args.json else render_show)(shown)
    return 0 if shown.error is None else 1
