"""``statecache remote ls|push|pull|gc``: look into and look after the shared remote tier.

A CLI plug-in (``add_parser(subparsers)`` and ``run(args)``). The remote is ``--remote URL``,
else ``STATECACHE_REMOTE``; ``STATECACHE_SECRET`` is required (only signed entries are shared).
Object stores keep no read times, so ``gc`` removes by age since upload (``LastModified``);
a bucket lifecycle rule does the same without anyone running it (see the README).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from typing import Any

from .._config import env_remote, env_secret, format_size, parse_age, validate_name
from .._errors import StateCacheError, UsageError
from .common import DIR_HELP, cache_dir

_REMOTE_HELP = "remote URL (default: $STATECACHE_REMOTE)"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``statecache remote`` with the CLI."""
    p = subparsers.add_parser(
        "remote",
        help="the shared remote cache: ls, push, pull, gc",
        description="Look into and look after the remote cache ($STATECACHE_REMOTE).",
    )
    sub = p.add_subparsers(dest="remote_command", metavar="COMMAND")
    ls = sub.add_parser("ls", help="list the remote's entries")
    ls.add_argument("--remote", metavar="URL", help=_REMOTE_HELP)
    ls.add_argument("names", nargs="*", metavar="NAME")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    for verb, what in (("push", "upload local entries the remote lacks"),
                       ("pull", "download remote entries the local cache lacks")):
        q = sub.add_parser(verb, help=what, description=what)
        q.add_argument("names", nargs="*", metavar="NAME", help="checkpoint names (default: all)")
        q.add_argument("--dir", metavar="D", help=DIR_HELP)
        q.add_argument("--remote", metavar="URL", help=_REMOTE_HELP)
    gc = sub.add_parser("gc", help="delete remote entries uploaded more than AGE ago")
    gc.add_argument("--remote", metavar="URL", help=_REMOTE_HELP)
    gc.add_argument("--older-than", metavar="AGE", required=True, help="e.g. 30d")
    gc.add_argument("--key", metavar="PREFIX", help="only entries whose key starts with PREFIX")
    gc.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    return p


def run(args: argparse.Namespace) -> int:
    """Run one ``statecache remote`` command; its exit code."""
    command = getattr(args, "remote_command", None)
    if command is None:
        raise UsageError("give a command: statecache remote ls|push|pull|gc")
    for n in getattr(args, "names", None) or ():
        validate_name(n)
    tier = _tier(args)
    from ..store.objects import RemoteError

    try:
        return int(_COMMANDS[command](tier, args))
    except RemoteError as exc:
        raise StateCacheError(f"the remote cache {tier.url}: {exc}") from None


def _tier(args: argparse.Namespace) -> Any:
    from ..store.remote import RemoteTier

    url = args.remote or env_remote()
    if not url:
        raise UsageError("no remote: give --remote URL or set STATECACHE_REMOTE")
    return RemoteTier(url, secret=env_secret())


def _ls(tier: Any, args: argparse.Namespace) -> int:
    entries = sorted(tier.entries(args.names or None), key=lambda e: (e.name, -e.last_modified))
    if args.json:
        print(json.dumps({"remote": tier.url, "key_id": tier.key_id, "entries": [
            {"name": e.name, "key": e.key, "key_id": e.key_id, "size": e.size,
             "uploaded": e.last_modified, "yours": e.key_id == tier.key_id} for e in entries
        ]}, indent=2))
        return 0
    if not entries:
        print(f"no entries in {tier.url}")
        return 0
    rows = [["NAME", "KEY", "SIZE", "UPLOADED", "SIGNED WITH"]]
    for e in entries:
        when = datetime.datetime.fromtimestamp(e.last_modified).strftime("%Y-%m-%d %H:%M")
        rows.append([e.name, e.key[:12], format_size(e.size), when,
                     "your secret" if e.key_id == tier.key_id else f"another secret ({e.key_id})"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"{len(entries)} entries, {format_size(sum(e.size for e in entries))} in {tier.url}")
    return 0


def _push(tier: Any, args: argparse.Namespace) -> int:
    from ..store.maintenance import scan

    entries = scan(cache_dir(args), args.names or None)[0]
    pushed = 0
    for e in entries:
        if tier.push(e.name, e.key, e.path):
            pushed += 1
            print(f"pushed {e.name}/{e.key[:12]} ({format_size(e.size)})")
    print(f"{pushed} of {len(entries)} local entries pushed to {tier.url}")
    return 0


def _pull(tier: Any, args: argparse.Namespace) -> int:
    from ..store.store import Store

    store = Store(cache_dir(args))
    mine = [e for e in tier.entries(args.names or None) if e.key_id == tier.key_id]
    pulled = 0
    for e in mine:
        path = store.entry_path(e.name, e.key)
        if os.path.exists(path):
            continue
        if tier.fetch(e.name, e.key, path) is not None:
            pulled += 1
            print(f"pulled {e.name}/{e.key[:12]} ({format_size(e.size)})")
    print(f"{pulled} of {len(mine)} remote entries pulled into {store.root}")
    return 0


def _gc(tier: Any, args: argparse.Namespace) -> int:
    age = parse_age(args.older_than, "--older-than")
    old = [e for e in tier.entries() if e.age >= age and e.key.startswith(args.key or "")]
    for e in old:
        print(f"{'would remove' if args.dry_run else 'removed'} {e.name}/{e.key[:12]} ({format_size(e.size)})")
        if not args.dry_run:
            tier.remove(e.path)
    if not args.dry_run and not args.key:
        for lease in tier.leases():  # leases of computations long gone
            if lease.server_now - lease.last_modified >= max(age, 24 * 3600):
                tier.remove(lease.path)
        tier.abort_stale_uploads(max(age, 24 * 3600))
    print(f"{len(old)} entries, {format_size(sum(e.size for e in old))} "
          f"{'would be ' if args.dry_run else ''}removed from {tier.url}")
    return 0


_COMMANDS = {"ls": _ls, "push": _push, "pull": _pull, "gc": _gc}
