"""The ``statecache`` command (also ``python -m statecache``): look into a cache directory and
look after it: ``ls``, ``show``, ``clear``, ``gc``, ``verify``, plus subcommands provided by other
modules (``live``).

Exit codes: 0 success, 1 a failed verify or nothing matched for ``show``, 2 bad usage. User
mistakes are one line on stderr, never a traceback.

Adding a subcommand from another module: list it in ``PLUGINS`` below. The module must define
``add_parser(subparsers) -> argparse.ArgumentParser`` (create the parser with
``subparsers.add_parser(NAME, ...)``, add its arguments; ``--dir`` is not added for you) and
``run(args) -> int`` (the exit code). It is imported for its own command, for ``--help`` and
for an unknown command, never for the built-in ones; if it fails to import, its command says so
and the others work.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._config import (
    env_dir,
    env_max_size,
    env_secret,
    format_duration,
    format_size,
    parse_age,
    parse_size,
    validate_name,
)
from .._errors import ConfigError, EntryError, InvalidNameError, StateCacheError, UsageError
from .._version import __version__
from ..store.layout import KEY_RE
from ..store.maintenance import (
    EntryFile,
    is_statecache_dir,
    name_dirs,
    old_versions,
    over_cap,
    pid_alive,
    remove_entry,
    remove_orphan_locks,
    remove_stale_usage_temps,
    scan,
)

PROG = "statecache"
DEFAULT_DIR = ".statecache"
#: Subcommands defined elsewhere: name -> module with ``add_parser(subparsers)`` and ``run(args)``.
PLUGINS = {"live": "statecache.live.loop"}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to get help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def _ago(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    d = now - ts
    if d < 1:
        return "just now"
    if d < 60:
        return f"{int(d)}s ago"
    if d < 3600:
        return f"{int(d // 60)}m ago"
    if d < 86400:
        return f"{int(d // 3600)}h ago"
    return f"{int(d // 86400)}d ago"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    stamp = datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
    return f"{stamp} ({_ago(ts, now)})"


def _table(rows: list[list[str]], right: frozenset[int] | set[int] = frozenset()) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _variables_cell(variables: dict[str, Any], width: int = 32) -> str:
    names = list(variables)
    if not names:
        return "0"
    text = f"{len(names)}: " + ", ".join(names)
    if len(text) > width:
        text = text[: width - 3].rstrip(", ") + "..."
    return text


def _pl(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _short(e: EntryFile) -> str:
    return f"{e.name}/{e.key[:8]}"


# ---------------------------------------------------------------------------------------------
# Reading entries


def _cache_dir(args: argparse.Namespace) -> str:
    d = args.dir if args.dir is not None else (env_dir() or DEFAULT_DIR)
    if "\0" in d:
        raise UsageError("--dir contains a NUL byte")
    return os.path.abspath(os.path.expanduser(d))


def _note_missing(cache_dir: str) -> bool:
    """True (and a note on stderr) when the cache directory does not exist."""
    if os.path.isdir(cache_dir):
        return False
    if os.path.exists(cache_dir):
        raise UsageError(f"{cache_dir} is not a directory")
    print(
        f"{PROG}: no cache directory at {cache_dir} (set --dir or STATECACHE_DIR)", file=sys.stderr
    )
    return True


def _meta(e: EntryFile) -> tuple[dict[str, Any], str | None]:
    """The entry's metadata (header only), or an empty dict and the reason it cannot be read."""
    from ..entry.reader import read_meta

    try:
        meta = read_meta(e.path)
    except EntryError as exc:
        return {}, _reason(e, exc)
    except OSError as exc:
        return {}, exc.strerror or str(exc)
    if not isinstance(meta, dict):
        return {}, "metadata is not a mapping"
    return meta, None


def _reason(e: EntryFile, exc: Exception) -> str:
    """The entry layer's message without the leading ``cache entry PATH:``: the row names it."""
    text = str(exc)
    prefix = f"cache entry {e.path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _variables(meta: dict[str, Any]) -> dict[str, Any]:
    v = meta.get("variables")
    return v if isinstance(v, dict) else {}


def _num(meta: dict[str, Any], key: str) -> float | None:
    v = meta.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _sorted(entries: list[EntryFile]) -> list[EntryFile]:
    """By name, then most recently used first."""
    return sorted(entries, key=lambda e: (e.name, -e.last_used, e.key))


def _entry_json(e: EntryFile, meta: dict[str, Any], error: str | None) -> dict[str, Any]:
    return {
        "name": e.name,
        "key": e.key,
        "path": e.path,
        "size": e.size,
        "kind": meta.get("kind"),
        "variables": _variables(meta),
        "created": _num(meta, "created"),
        "last_used": e.last_used,
        "compute_seconds": _num(meta, "compute_seconds"),
        "source": meta.get("source"),
        "error": error,
    }


# ---------------------------------------------------------------------------------------------
# ls


def cmd_ls(args: argparse.Namespace) -> int:
    """One row per entry, sorted by name then last use, totals at the bottom."""
    cache_dir = _cache_dir(args)
    missing = _note_missing(cache_dir)
    entries = [] if missing else _sorted(scan(cache_dir)[0])
    rows = [(e, *_meta(e)) for e in entries]
    total = sum(e.size for e in entries)
    names = len({e.name for e in entries})
    if args.json:
        # One entry per line, each through json's C encoder (indent= would use the pure-Python
        # one, several times slower on 10,000 entries); still one JSON document.
        lines = ",\n".join("    " + json.dumps(_entry_json(e, m, err)) for e, m, err in rows)
        totals = json.dumps({"entries": len(entries), "names": names, "size": total})
        print(
            f'{{\n  "cache_dir": {json.dumps(cache_dir)},\n  "entries": ['
            + (f"\n{lines}\n  " if rows else "")
            + f'],\n  "total": {totals}\n}}'
        )
        return 0
    if not entries:
        if not missing:
            print(f"no entries in {cache_dir}")
        return 0
    now = time.time()
    table = [["NAME", "KEY", "SIZE", "VARIABLES", "CREATED", "LAST USED", "COMPUTE"]]
    for e, meta, err in rows:
        if err is not None:
            table.append(
                [
                    e.name,
                    e.key[:8],
                    format_size(e.size),
                    f"unreadable: {err}"[:60],
                    "-",
                    _ago(e.last_used, now),
                    "-",
                ]
            )
            continue
        compute = _num(meta, "compute_seconds")
        table.append(
            [
                e.name,
                e.key[:8],
                format_size(e.size),
                _variables_cell(_variables(meta)),
                _ago(_num(meta, "created"), now),
                _ago(e.last_used, now),
                "-" if compute is None else format_duration(compute),
            ]
        )
    print(_table(table, right={2, 6}))
    print(
        f"{_pl(len(entries), 'entry', 'entries')} ({_pl(names, 'name')}), {format_size(total)} in {cache_dir}"
    )
    return 0


# ---------------------------------------------------------------------------------------------
# show


def _file_state(rec: dict[str, Any]) -> str:
    """unchanged / changed / missing for a recorded data file (or directory listing, or a file
    that was absent), judged as a hit would judge it: stat first, content only if the stat differs."""
    from ..key.files import changed_record

    path = rec.get("path")
    if not isinstance(path, str):
        return "unknown"
    try:
        why = changed_record(rec)
    except (OSError, KeyError, TypeError, ValueError):
        return "unreadable"
    if why is None:
        return "unchanged"
    if rec.get("kind", "file") != "missing" and not os.path.exists(path):
        return "missing"
    return "changed"


def _is_hex_prefix(text: str) -> bool:
    return 0 < len(text) <= 32 and KEY_RE.fullmatch(text.lower().ljust(32, "0")) is not None


def _parse_query(query: str) -> tuple[str | None, str | None]:
    """``NAME``, ``KEYPREFIX`` or ``NAME/KEYPREFIX`` -> (name, key prefix); a bad one is a usage
    error. A bare word that is both a valid name and hex is tried as a name first."""
    if "/" in query:
        name, _, prefix = query.partition("/")
        validate_name(name)
        if not _is_hex_prefix(prefix):
            raise UsageError(f"{query!r}: after the '/' give a key prefix (hex digits)")
        return name, prefix.lower()
    if _is_hex_prefix(query):
        try:
            return validate_name(query), query.lower()
        except InvalidNameError:
            return None, query.lower()
    return validate_name(query), None


def _find(cache_dir: str, query: str) -> tuple[list[EntryFile], list[EntryFile]]:
    """(matches, other versions of the matched name) for a parsed ``show`` query."""
    name, prefix = _parse_query(query)
    if name is not None and (prefix is None or "/" in query):
        by_name = scan(cache_dir, [name])[0]
        if "/" in query:
            return [e for e in by_name if e.key.startswith(prefix or "")], []
        if by_name:
            newest = max(by_name, key=lambda e: e.last_used)
            return [newest], _sorted([e for e in by_name if e is not newest])
        return [], []
    entries = scan(cache_dir)[0]
    if name is not None:  # both a valid name and hex: the name wins when it exists
        by_name = [e for e in entries if e.name == name]
        if by_name:
            newest = max(by_name, key=lambda e: e.last_used)
            return [newest], _sorted([e for e in by_name if e is not newest])
    return [e for e in entries if e.key.startswith(prefix or "")], []


def cmd_show(args: argparse.Namespace) -> int:
    """One entry in full: metadata, variables, recorded files and their state now, source."""
    cache_dir = _cache_dir(args)
    query = args.entry
    _parse_query(query)  # a malformed query is a usage error even without a cache
    if _note_missing(cache_dir):
        return 1
    matches, others = _find(cache_dir, query)
    if not matches:
        names = [n for n, _ in name_dirs(cache_dir)]
        hint = (
            f"; names here: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
            if names
            else ""
        )
        print(f"{PROG}: no entry in {cache_dir} matches {query!r}{hint}", file=sys.stderr)
        return 1
    now = time.time()
    if len(matches) > 1:
        print(
            f"{PROG}: {query!r} matches {len(matches)} entries; give more of the key:",
            file=sys.stderr,
        )
        for e in _sorted(matches):
            print(
                f"  {e.name}/{e.key}  {format_size(e.size)}  last used {_ago(e.last_used, now)}",
                file=sys.stderr,
            )
        return 1
    e = matches[0]
    meta, err = _meta(e)
    raw_files = meta.get("files")
    files: list[Any] = raw_files if isinstance(raw_files, list) else []
    states = [_file_state(f) if isinstance(f, dict) else "unknown" for f in files]
    if args.json:
        out = dict(meta)
        out.update(_entry_json(e, meta, err))
        out["files"] = [
            dict(f, state=s) for f, s in zip(files, states, strict=True) if isinstance(f, dict)
        ]
        out["other_versions"] = [
            {"key": o.key, "size": o.size, "last_used": o.last_used, "path": o.path} for o in others
        ]
        print(json.dumps(out, indent=2, default=str))
        return 0 if err is None else 1
    print(f"{e.name}  {e.key}")
    if err is not None:
        print(f"  unreadable: {err}")
        print(f"  path        {e.path}")
        print(f"  size        {format_size(e.size)}")
        return 1
    raw_source = meta.get("source")
    source: dict[str, Any] = raw_source if isinstance(raw_source, dict) else {}
    src_file, src_line = source.get("file"), source.get("line")
    src = "-" if not src_file else f"{src_file}:{src_line}" if src_line else str(src_file)
    if src_file and not os.path.exists(src_file):
        src += "  (file no longer exists)"
    compute = _num(meta, "compute_seconds")
    state_size = _num(meta, "state_size")
    fields = [
        ("kind", str(meta.get("kind", "-"))),
        ("source", src),
        ("path", e.path),
        (
            "size",
            format_size(e.size)
            + (f" on disk, {format_size(state_size)} of state" if state_size else ""),
        ),
        (
            "created",
            _when(_num(meta, "created"), now)
            + ("" if compute is None else f", computed in {format_duration(compute)}"),
        ),
        ("last used", _when(e.last_used, now)),
        ("python", str(meta.get("python", "-"))),
        ("statecache", f"{meta.get('statecache_version', '-')} (format {meta.get('format', '-')})"),
        ("pickler", str(meta.get("pickler", "-"))),
        ("signed", "yes" if meta.get("signed") else "no"),
    ]
    for label, value in fields:
        print(f"  {label:<11} {value}")
    variables = _variables(meta)
    print(f"variables ({len(variables)})")
    vrows = []
    for vname, info in variables.items():
        info = info if isinstance(info, dict) else {}
        size = info.get("size")
        vrows.append(
            [
                "  " + vname,
                str(info.get("type", "?")),
                format_size(size) if isinstance(size, (int, float)) else "?",
            ]
        )
    if vrows:
        print(_table(vrows, right={2}))
    print(f"files ({len(files)})")
    frows = []
    for f, s in zip(files, states, strict=True):
        if isinstance(f, dict):
            size = f.get("size")
            note = {"missing": " (absent when computed)", "dir": " (directory listing)"}
            frows.append(
                [
                    "  " + s,
                    str(f.get("path")) + note.get(str(f.get("kind")), ""),
                    format_size(size) if isinstance(size, (int, float)) else "",
                ]
            )
    if frows:
        print(_table(frows, right={2}))
    if others:
        print(f"other versions ({len(others)})")
        print(
            _table(
                [
                    ["  " + o.key[:8], format_size(o.size), f"last used {_ago(o.last_used, now)}"]
                    for o in others
                ],
                right={1},
            )
        )
    return 0


# ---------------------------------------------------------------------------------------------
# clear, gc


def _require_statecache_dir(cache_dir: str) -> None:
    if not is_statecache_dir(cache_dir):
        raise UsageError(
            f"{cache_dir} is not a statecache directory (no CACHEDIR.TAG written by statecache); "
            "refusing to delete anything there"
        )


def _delete(
    chosen: list[tuple[EntryFile, str]], dry_run: bool, only_if_unused: bool
) -> tuple[int, int, int]:
    """Delete (or, dry, list) entries with a reason each; returns (count, bytes freed, skipped).
    ``only_if_unused``: the choice rested on last use, so an entry a hit touched since is kept."""
    count = freed = skipped = 0
    for e, why in chosen:
        detail = f"{_short(e):<20} {format_size(e.size):>9}  {why}"
        if dry_run:
            print(f"would remove {detail}")
        else:
            problem = remove_entry(e, only_if_unused=only_if_unused)
            if problem is not None:
                if problem == "in use":
                    problem = "in use by another process"
                print(f"skipped {_short(e)}: {problem}")
                skipped += 1
                continue
            print(f"removed {detail}")
        count += 1
        freed += e.size
    return count, freed, skipped


def _summary(count: int, freed: int, skipped: int, dry_run: bool, extra: str = "") -> None:
    what = _pl(count, "entry", "entries") + extra
    if dry_run:
        print(f"would free {format_size(freed)} ({what}); nothing deleted (dry run)")
    else:
        print(f"freed {format_size(freed)} ({what})" + (f"; {skipped} kept" if skipped else ""))


def cmd_clear(args: argparse.Namespace) -> int:
    """Delete whole entries: by name, all, or not used for a while; each under its lock."""
    cache_dir = _cache_dir(args)
    if not args.names and not args.all and args.older_than is None:
        raise UsageError("say what to clear: one or more NAMEs, --all, or --older-than AGE")
    if args.names and args.all:
        raise UsageError("give NAMEs or --all, not both")
    max_age = None if args.older_than is None else parse_age(args.older_than, "--older-than")
    targets: list[tuple[str, str]] = []  # (name, key prefix)
    for n in args.names:
        name, _, prefix = n.partition("/")
        validate_name(name)
        if "/" in n and not _is_hex_prefix(prefix):
            raise UsageError(f"{n!r}: after the '/' give a key prefix (hex digits)")
        targets.append((name, prefix.lower()))
    if _note_missing(cache_dir):
        return 0
    _require_statecache_dir(cache_dir)
    now = time.time()
    entries = scan(cache_dir, None if not targets else {t[0] for t in targets})[0]
    chosen = []
    for t in targets:
        if not any(e.name == t[0] and e.key.startswith(t[1]) for e in entries):
            label = t[0] + (f"/{t[1]}" if t[1] else "")
            print(f"{PROG}: nothing named {label!r} in {cache_dir}", file=sys.stderr)
    for e in _sorted(entries):
        if targets and not any(e.name == n and e.key.startswith(p) for n, p in targets):
            continue
        age = now - e.last_used
        if max_age is not None and age <= max_age:
            continue
        chosen.append((e, f"last used {_ago(e.last_used, now)}"))
    count, freed, skipped = _delete(chosen, args.dry_run, max_age is not None)
    if not args.dry_run:
        remove_orphan_locks(cache_dir, None if not targets else {t[0] for t in targets})
    _summary(count, freed, skipped, args.dry_run)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove dead writers' temp files, old versions beyond --keep-versions, then least recently
    used entries until the cache fits --max-size."""
    cache_dir = _cache_dir(args)
    max_size = env_max_size() if args.max_size is None else parse_size(args.max_size, "--max-size")
    if args.keep_versions < 0:
        raise UsageError("--keep-versions must be 0 or more")
    if _note_missing(cache_dir):
        return 0
    _require_statecache_dir(cache_dir)
    now = time.time()
    entries, temps = scan(cache_dir)
    temp_count = temp_bytes = 0
    for t in temps:
        if pid_alive(t.pid):
            continue
        label = f"{t.name}/{os.path.basename(t.path)}"
        if args.dry_run:
            print(f"would remove temp file {label} ({format_size(t.size)}, writer {t.pid} is gone)")
        else:
            try:
                os.unlink(t.path)
            except FileNotFoundError:
                continue
            print(f"removed temp file {label} ({format_size(t.size)}, writer {t.pid} is gone)")
        temp_count += 1
        temp_bytes += t.size
    chosen: list[tuple[EntryFile, str]] = []
    old = old_versions(entries, args.keep_versions)
    chosen += [(e, f"old version, last used {_ago(e.last_used, now)}") for e in _sorted(old)]
    gone = {e.path for e in old}
    rest = [e for e in entries if e.path not in gone]
    if max_size is not None:
        for e in over_cap(rest, max_size):
            chosen.append((e, f"over {format_size(max_size)}, last used {_ago(e.last_used, now)}"))
    count, freed, skipped = _delete(chosen, args.dry_run, True)
    if not args.dry_run:
        remove_orphan_locks(cache_dir)
        remove_stale_usage_temps(cache_dir)
    extra = f", {_pl(temp_count, 'temp file')}" if temp_count else ""
    _summary(count, freed + temp_bytes, skipped, args.dry_run, extra)
    left = sum(e.size for e in entries) - (0 if args.dry_run else freed)
    cap = f" (cap {format_size(max_size)})" if max_size is not None else ""
    print(f"cache {'is' if args.dry_run else 'now'} {format_size(left)}{cap}")
    return 0


# ---------------------------------------------------------------------------------------------
# verify


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every entry's checksums (and signature with STATECACHE_SECRET); exit 1 if any is bad."""
    from ..entry.reader import verify_entry

    cache_dir = _cache_dir(args)
    missing = _note_missing(cache_dir)
    secret = env_secret()
    entries = [] if missing else _sorted(scan(cache_dir)[0])
    results: list[tuple[EntryFile, str | None]] = []
    for e in entries:
        try:
            verify_entry(e.path, secret=secret)
            results.append((e, None))
        except EntryError as exc:
            results.append((e, _reason(e, exc)))
        except OSError as exc:
            results.append((e, f"cannot read: {exc.strerror or exc}"))
    bad = [(e, err) for e, err in results if err is not None]
    if args.json:
        print(
            json.dumps(
                {
                    "cache_dir": cache_dir,
                    "signed_check": secret is not None,
                    "checked": len(results),
                    "bad": len(bad),
                    "entries": [
                        {
                            "name": e.name,
                            "key": e.key,
                            "path": e.path,
                            "ok": err is None,
                            "error": err,
                        }
                        for e, err in results
                    ],
                },
                indent=2,
            )
        )
        return 1 if bad else 0
    for e, err in bad:
        print(f"BAD {_short(e)}: {err}")
    total = format_size(sum(e.size for e in entries))
    what = "checksums and signatures" if secret is not None else "checksums"
    if bad:
        how = (
            f"{PROG} clear " + " ".join(f"{e.name}/{e.key[:8]}" for e, _ in bad)
            if len(bad) <= 10
            else f"{PROG} clear NAME/KEY (as listed above)"
        )
        print(
            f"{len(bad)} of {_pl(len(results), 'entry', 'entries')} failed ({what}); "
            f"remove them with: {how}"
        )
        return 1
    print(f"{_pl(len(results), 'entry', 'entries')} ({total}) verified: {what} good")
    return 0


# ---------------------------------------------------------------------------------------------
# The parser


def _plugin(subparsers: Any, name: str, module_name: str) -> None:
    """Register a subcommand defined in another module; if that module is absent, leave it out;
    if it fails to import, the subcommand reports the failure when used."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return
        failure: Exception = exc
    except Exception as exc:  # a broken plug-in must not break ls/show/...
        failure = exc
    else:
        p = module.add_parser(subparsers)
        p.set_defaults(func=module.run)
        return

    def broken(args: argparse.Namespace) -> int:
        raise StateCacheError(f"the '{name}' command is unavailable: {failure}")

    p = subparsers.add_parser(name, help=f"(unavailable: {failure})", prefix_chars="-")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=broken)


BUILTIN = ("ls", "show", "clear", "gc", "verify")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``argv`` naming a built-in command, plug-ins are not imported
    (``statecache ls`` does not pay for importing ``live``)."""
    parser = _Parser(
        prog=PROG,
        description="Look into and look after a statecache cache directory.",
        epilog="Sizes: bytes or K, M, G, T (powers of 1024, e.g. 1.5G). Ages: 30s, 15m, 12h, 7d. "
        "Exit codes: 0 success, 1 failed verify or nothing matched, 2 bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    dir_help = "cache directory (default: $STATECACHE_DIR, else ./.statecache)"

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help: str, json_flag: bool = False
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--dir", metavar="D", help=dir_help)
        if json_flag:
            p.add_argument(
                "--json", action="store_true", help="machine-readable output (see README)"
            )
        p.set_defaults(func=func)
        return p

    add(
        "ls",
        cmd_ls,
        "list entries: name, key, size, variables, created, last used, compute time",
        True,
    )
    p = add(
        "show", cmd_show, "one entry in full: metadata, variables, recorded files, source", True
    )
    p.add_argument(
        "entry", metavar="NAME_OR_KEY", help="a checkpoint name, a key prefix, or NAME/KEYPREFIX"
    )
    p = add("clear", cmd_clear, "delete entries (each under its lock; entries in use are skipped)")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="checkpoint names (or NAME/KEYPREFIX) to delete"
    )
    p.add_argument("--all", action="store_true", help="delete every entry")
    p.add_argument("--older-than", metavar="AGE", help="only entries not used for AGE (e.g. 7d)")
    p.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    p = add(
        "gc",
        cmd_gc,
        "enforce a size cap (least recently used first), prune old versions, "
        "remove temp files of dead writers",
    )
    p.add_argument(
        "--max-size",
        metavar="SIZE",
        help="size cap, e.g. 10G (default: $STATECACHE_MAX_SIZE, else none)",
    )
    p.add_argument(
        "--keep-versions",
        metavar="N",
        type=int,
        default=3,
        help="old versions kept per name besides the most recently used one (default 3)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    add(
        "verify",
        cmd_verify,
        "check every entry's checksums (and signature when STATECACHE_SECRET is set)",
        True,
    )
    first = next((a for a in (argv or ()) if not a.startswith("-")), None)
    if argv is None or first not in BUILTIN:
        for name, module_name in PLUGINS.items():
            _plugin(sub, name, module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statecache`` console script and ``python -m statecache``."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (UsageError, ConfigError, InvalidNameError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except StateCacheError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(f"{PROG}: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # `statecache ls | head`: the reader left; stay quiet (also at interpreter exit)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
