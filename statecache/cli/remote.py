"""The shared remote tier on the command line: ``statecache ls --remote``, ``push [NAME...]``,
``pull [NAME...]``, ``gc --remote --older-than 30d`` (and the same as ``statecache remote
ls|push|pull|gc``, the first spelling, kept as an alias).

The remote is ``--remote URL``, else ``STATECACHE_REMOTE`` (``--remote`` alone says "the one
STATECACHE_REMOTE sets"); ``STATECACHE_SECRET`` is required (only signed entries are shared).
Object stores keep no read times, so ``gc`` removes by age since upload (``LastModified``); a
bucket lifecycle rule does the same without anyone running it (see the README).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import Any

from .._config import env_remote, env_secret, format_size, parse_age, remote_url, validate_name
from .._errors import InvalidNameError, StateCacheError, UsageError
from .common import DIR_HELP, PROG, cache_dir, table

REMOTE_HELP = "the remote: a URL (s3://bucket/prefix, file:///mnt/team/statecache); alone: $STATECACHE_REMOTE"
NO_REMOTE = (
    "no remote: give --remote URL or set STATECACHE_REMOTE (e.g. s3://my-team-bucket/statecache "
    "or file:///mnt/team/statecache; see 'Sharing a cache' in the README)"
)
PUSH_HELP = "upload local entries the remote lacks (default: all; needs STATECACHE_SECRET)"
PULL_HELP = "download remote entries the local cache lacks (default: all; needs STATECACHE_SECRET)"


def add_remote_option(p: argparse.ArgumentParser) -> None:
    """``--remote [URL]`` (every command of the remote tier spells it so)."""
    p.add_argument("--remote", metavar="URL", nargs="?", const=True, default=None, help=REMOTE_HELP)


def add_transfer(sub: Any, verb: str) -> argparse.ArgumentParser:
    """``push`` or ``pull`` (top level, and under ``statecache remote``)."""
    what = PUSH_HELP if verb == "push" else PULL_HELP
    p: argparse.ArgumentParser = sub.add_parser(verb, help=what, description=what)
    p.add_argument("names", nargs="*", metavar="NAME", help="checkpoint names (default: all)")
    p.add_argument("--dir", metavar="D", help=DIR_HELP)
    add_remote_option(p)
    p.set_defaults(func=cmd_push if verb == "push" else cmd_pull)
    return p


def add_gc_options(p: argparse.ArgumentParser) -> None:
    """What ``gc --remote`` takes besides ``--remote`` and ``--dry-run``."""
    p.add_argument("--older-than", metavar="AGE",
                   help="with --remote: delete remote entries uploaded more than AGE ago (e.g. 30d)")
    p.add_argument("--key", metavar="PREFIX",
                   help="with --remote: only entries whose key starts with PREFIX")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``statecache remote ls|push|pull|gc`` (the alias of ``ls --remote``, ``push``,
    ``pull`` and ``gc --remote``) with the CLI."""
    p = subparsers.add_parser(
        "remote",
        help="the shared remote cache: ls, push, pull, gc (also: ls --remote, push, pull, gc --remote)",
        description="Look into and look after the remote cache ($STATECACHE_REMOTE).",
    )
    sub = p.add_subparsers(dest="remote_command", metavar="COMMAND")
    ls = sub.add_parser("ls", help="list the remote's entries")
    add_remote_option(ls)
    ls.add_argument("names", nargs="*", metavar="NAME")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_ls_remote)
    add_transfer(sub, "push")
    add_transfer(sub, "pull")
    gc = sub.add_parser("gc", help="delete remote entries uploaded more than AGE ago")
    add_remote_option(gc)
    add_gc_options(gc)
    gc.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    gc.set_defaults(func=cmd_gc_remote)
    return p


def run(args: argparse.Namespace) -> int:
    """``statecache remote`` without a command: say which ones there are."""
    raise UsageError("give a command: statecache remote ls|push|pull|gc "
                     "(also spelled ls --remote, push, pull, gc --remote)")


# ------------------------------------------------------------------------------ the remote


def open_tier(args: argparse.Namespace) -> Any:
    """The remote of ``args.remote`` (a URL; True or None: ``STATECACHE_REMOTE``), with a NAME
    that ``--remote`` took for its value given back to the names (a name is never a URL nor
    an absolute path, so ``ls --remote features`` lists 'features' on STATECACHE_REMOTE)."""
    given = getattr(args, "remote", None)
    if isinstance(given, str):
        url = remote_url(given)
        if url is None and _is_name(given) and hasattr(args, "names"):
            args.names = [given, *args.names]
        elif url is None:
            raise UsageError(
                f"--remote {given!r} is not understood: give a URL such as s3://bucket/prefix or "
                "file:///mnt/team/statecache (an absolute path is a shared mount)")
    else:
        url = None
    url = url or env_remote()
    if not url:
        raise UsageError(NO_REMOTE)
    for n in getattr(args, "names", None) or ():
        validate_name(n)
    from ..store.remote import RemoteTier

    return RemoteTier(url, secret=env_secret())  # ConfigError without a secret: it says why


def _is_name(text: str) -> bool:
    try:
        validate_name(text)
    except InvalidNameError:
        return False
    return True


def _remote_command(command: Any) -> Any:
    """Run ``command(tier, args)``; a remote that fails is an error naming it (exit 1)."""

    def cmd(args: argparse.Namespace) -> int:
        tier = open_tier(args)
        from ..store.objects import RemoteError

        try:
            return int(command(tier, args))
        except RemoteError as exc:
            advice = f"; {exc.advice}" if exc.advice else ""
            raise StateCacheError(f"the remote cache {tier.url}: {exc}{advice}") from None

    cmd.__doc__ = command.__doc__
    return cmd


# ------------------------------------------------------------------------------ the commands


def _ls(tier: Any, args: argparse.Namespace) -> int:
    """The remote's entries (of the NAMEs given, if any); exit 1 when a NAME has none."""
    entries = sorted(tier.entries(args.names or None), key=lambda e: (e.name, -e.last_modified))
    found = {e.name for e in entries}
    unmatched = [n for n in dict.fromkeys(args.names or ()) if n not in found]
    for n in unmatched:
        print(f"{PROG}: nothing named {n!r} in {tier.url}", file=sys.stderr)
    if args.json:
        print(json.dumps({"remote": tier.url, "key_id": tier.key_id, "entries": [
            {"name": e.name, "key": e.key, "key_id": e.key_id, "size": e.size,
             "uploaded": e.last_modified, "yours": e.key_id == tier.key_id} for e in entries
        ]}, indent=2))
    elif entries:
        rows = [["NAME", "KEY", "SIZE", "UPLOADED", "SIGNED WITH"]]
        for e in entries:
            when = datetime.datetime.fromtimestamp(e.last_modified).strftime("%Y-%m-%d %H:%M")
            rows.append([e.name, e.key[:12], format_size(e.size), when,
                         "your secret" if e.key_id == tier.key_id else f"another secret ({e.key_id})"])
        print(table(rows, right={2}))
        print(f"{len(entries)} entries, {format_size(sum(e.size for e in entries))} in {tier.url}")
    elif not unmatched:
        print(f"no entries in {tier.url}")
    return 1 if unmatched else 0


def _push(tier: Any, args: argparse.Namespace) -> int:
    """Upload each local entry (of the NAMEs given) that the remote lacks, create-only."""
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
    """Download each remote entry signed with this secret that the local cache lacks."""
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
    """Delete remote entries uploaded more than --older-than ago (by the server's clock)."""
    if args.older_than is None:
        raise UsageError("gc --remote needs --older-than AGE (e.g. 30d): object stores keep no "
                         "read times, so remote entries go by the age of their upload")
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


cmd_ls_remote = _remote_command(_ls)
cmd_push = _remote_command(_push)
cmd_pull = _remote_command(_pull)
cmd_gc_remote = _remote_command(_gc)
