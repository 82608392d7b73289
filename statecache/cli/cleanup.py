"""``statecache clear`` and ``statecache gc``: deleting entries. Each command gathers first
(chooses, then deletes each entry under its lock, recording what happened; nothing printed),
then renders what it did. Both refuse a directory without statecache's CACHEDIR.TAG."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

from .._config import env_max_size, format_size, parse_age, parse_size
from .._errors import UsageError
from ..store.maintenance import (
    EntryFile,
    TempFile,
    is_statecache_dir,
    old_versions,
    over_cap,
    pid_alive,
    remove_entry,
    remove_orphan_locks,
    remove_stale_usage_temps,
    scan,
)
from .common import PROG, ago, cache_dir, note_missing, plural, short, sorted_entries
from .listing import names_hint, parse_target


@dataclass
class Deletion:
    """What a clear or gc did (or, dry, would do)."""

    dry_run: bool
    removed: list[tuple[EntryFile, str]] = field(default_factory=list)  # (entry, why chosen)
    skipped: list[tuple[EntryFile, str]] = field(default_factory=list)  # (entry, why kept)
    temps: list[TempFile] = field(default_factory=list)  # dead writers' temp files removed

    @property
    def freed(self) -> int:
        return sum(e.size for e, _ in self.removed) + sum(t.size for t in self.temps)


def _require_statecache_dir(cache: str) -> None:
    if not is_statecache_dir(cache):
        raise UsageError(
            f"{cache} is not a statecache directory (no CACHEDIR.TAG written by statecache); "
            "refusing to delete anything there"
        )


def delete(chosen: list[tuple[EntryFile, str]], done: Deletion, only_if_unused: bool) -> None:
    """Delete (unless dry) each chosen entry under its lock, recording the outcome in ``done``.
    ``only_if_unused``: the choice rested on last use, so an entry a hit touched since is kept."""
    for e, why in chosen:
        problem = None if done.dry_run else remove_entry(e, only_if_unused=only_if_unused)
        if problem is None:
            done.removed.append((e, why))
        else:
            done.skipped.append((e, "in use by another process" if problem == "in use" else problem))


def render_deletion(done: Deletion) -> None:
    """One line per entry, the names padded to the longest one, then what was freed."""
    width = max((len(short(e)) for e, _ in done.removed), default=0)
    verb = "would remove" if done.dry_run else "removed"
    for t in done.temps:
        label = f"{t.name}/{os.path.basename(t.path)}"
        print(f"{verb} temp file {label} ({format_size(t.size)}, writer {t.pid} is gone)")
    for e, why in done.removed:
        print(f"{verb} {short(e):<{width}} {format_size(e.size):>9}  {why}")
    for e, problem in done.skipped:
        print(f"skipped {short(e)}: {problem}")
    what = plural(len(done.removed), "entry", "entries")
    if done.temps:
        what += f", {plural(len(done.temps), 'temp file')}"
    if done.dry_run:
        print(f"would free {format_size(done.freed)} ({what}); nothing deleted (dry run)")
    else:
        kept = f"; {len(done.skipped)} kept" if done.skipped else ""
        print(f"freed {format_size(done.freed)} ({what}){kept}")


# ---------------------------------------------------------------------------------------------
# clear


def gather_clear(
    cache: str, targets: list[tuple[str, str]], max_age: float | None, dry_run: bool
) -> tuple[Deletion, list[str]]:
    """Delete the entries of ``targets`` ((name, key prefix); none: every entry) not used for
    ``max_age`` seconds. Returns what was done and the targets that matched nothing."""
    now = time.time()
    names = {n for n, _ in targets} or None
    entries = scan(cache, names)[0]
    unmatched = [
        n + (f"/{p}" if p else "")
        for n, p in dict.fromkeys(targets)
        if not any(e.name == n and e.key.startswith(p) for e in entries)
    ]
    chosen = []
    for e in sorted_entries(entries):
        if targets and not any(e.name == n and e.key.startswith(p) for n, p in targets):
            continue
        if max_age is not None and now - e.last_used <= max_age:
            continue
        chosen.append((e, f"last used {ago(e.last_used, now)}"))
    done = Deletion(dry_run)
    delete(chosen, done, max_age is not None)
    if not dry_run:
        remove_orphan_locks(cache, names)
    return done, unmatched


def cmd_clear(args: argparse.Namespace) -> int:
    """Delete whole entries: by name, all, or not used for a while; each under its lock. A NAME
    that matches nothing is named on stderr (with the names there are), and the exit code is 1."""
    cache = cache_dir(args)
    if not args.names and not args.all and args.older_than is None:
        raise UsageError("say what to clear: one or more NAMEs, --all, or --older-than AGE")
    if args.names and args.all:
        raise UsageError("give NAMEs or --all, not both")
    max_age = None if args.older_than is None else parse_age(args.older_than, "--older-than")
    targets = [parse_target(n) for n in args.names]
    if note_missing(cache):
        return 1 if targets else 0
    _require_statecache_dir(cache)
    done, unmatched = gather_clear(cache, targets, max_age, args.dry_run)
    hint = names_hint(cache) if unmatched else ""
    for label in unmatched:
        print(f"{PROG}: nothing named {label!r} in {cache}{hint}", file=sys.stderr)
    render_deletion(done)
    return 1 if unmatched else 0


# ---------------------------------------------------------------------------------------------
# gc


def _dead_temps(temps: list[TempFile], dry_run: bool) -> list[TempFile]:
    """Writers' temp files whose writer is gone, removed unless dry."""
    gone = []
    for t in temps:
        if pid_alive(t.pid):
            continue
        if not dry_run:
            try:
                os.unlink(t.path)
            except FileNotFoundError:
                continue
        gone.append(t)
    return gone


def gather_gc(
    cache: str, max_size: int | None, keep_versions: int, dry_run: bool
) -> tuple[Deletion, int]:
    """Dead writers' temp files, old versions beyond ``keep_versions``, then least recently used
    entries until the cache fits ``max_size``. Returns what was done and the size left."""
    now = time.time()
    entries, temps = scan(cache)
    done = Deletion(dry_run, temps=_dead_temps(temps, dry_run))
    old = old_versions(entries, keep_versions)
    chosen = [(e, f"old version, last used {ago(e.last_used, now)}") for e in sorted_entries(old)]
    gone = {e.path for e in old}
    rest = [e for e in entries if e.path not in gone]
    if max_size is not None:
        chosen += [
            (e, f"over {format_size(max_size)}, last used {ago(e.last_used, now)}")
            for e in over_cap(rest, max_size)
        ]
    delete(chosen, done, True)
    if not dry_run:
        remove_orphan_locks(cache)
        remove_stale_usage_temps(cache)
    left = sum(e.size for e in entries) - (0 if dry_run else sum(e.size for e, _ in done.removed))
    return done, left


def _given(args: argparse.Namespace, *options: str) -> str:
    """The ``options`` (``--max-size``, ...) given on the command line, joined for a message."""
    return " and ".join(o for o in options if getattr(args, o[2:].replace("-", "_"), None) is not None)


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove dead writers' temp files, old versions beyond --keep-versions, then least recently
    used entries until the cache fits --max-size. With ``--remote``: the remote's entries
    uploaded more than --older-than ago instead (``cli.remote``)."""
    if getattr(args, "remote", None) is not None:
        if local := _given(args, "--max-size", "--keep-versions"):
            raise UsageError(f"gc --remote does not take {local} (options of the local cache): "
                             "it removes remote entries by --older-than")
        from .remote import cmd_gc_remote

        return cmd_gc_remote(args)
    if remote := _given(args, "--older-than", "--key"):
        raise UsageError(f"gc {remote}: only with --remote (gc --remote --older-than 30d); "
                         "for the local cache: statecache clear --older-than AGE")
    if args.keep_versions is None:
        args.keep_versions = 3
    cache = cache_dir(args)
    max_size = env_max_size() if args.max_size is None else parse_size(args.max_size, "--max-size")
    if args.keep_versions < 0:
        raise UsageError("--keep-versions must be 0 or more")
    if note_missing(cache):
        return 0
    _require_statecache_dir(cache)
    done, left = gather_gc(cache, max_size, args.keep_versions, args.dry_run)
    render_deletion(done)
    cap = f" (cap {format_size(max_size)})" if max_size is not None else ""
    print(f"cache {'is' if args.dry_run else 'now'} {format_size(left)}{cap}")
    return 0
