"""``statecache verify``: check every entry's checksums (and signature with
``STATECACHE_SECRET``) without unpickling anything. Gathers the results, then renders them."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from .._config import env_secret, format_size
from .._errors import EntryError
from ..store.maintenance import EntryFile, scan
from .common import PROG, cache_dir, missing_note, plural, reason, short, sorted_entries


@dataclass
class Verified:
    cache_dir: str
    signed_check: bool
    results: list[tuple[EntryFile, str | None]]  # (entry, what is wrong with it or None)

    @property
    def bad(self) -> list[tuple[EntryFile, str]]:
        return [(e, err) for e, err in self.results if err is not None]


def gather_verify(cache: str, secret: bytes | None) -> Verified:
    from ..entry.reader import verify_entry

    results: list[tuple[EntryFile, str | None]] = []
    for e in sorted_entries(scan(cache)[0]):
        try:
            verify_entry(e.path, secret=secret)
            results.append((e, None))
        except EntryError as exc:
            results.append((e, reason(e, exc)))
        except OSError as exc:
            results.append((e, f"cannot read: {exc.strerror or exc}"))
    return Verified(cache, secret is not None, results)


def render_verify_json(v: Verified) -> None:
    entries = [
        {"name": e.name, "key": e.key, "path": e.path, "ok": err is None, "error": err}
        for e, err in v.results
    ]
    out = {"cache_dir": v.cache_dir, "signed_check": v.signed_check, "checked": len(v.results),
           "bad": len(v.bad), "entries": entries}
    print(json.dumps(out, indent=2))


def render_verify(v: Verified) -> None:
    bad = v.bad
    for e, err in bad:
        print(f"BAD {short(e)}: {err}")
    total = format_size(sum(e.size for e, _ in v.results))
    what = "checksums and signatures" if v.signed_check else "checksums"
    count = plural(len(v.results), "entry", "entries")
    if not bad:
        print(f"{count} ({total}) verified: {what} good")
        return
    how = (
        f"{PROG} clear " + " ".join(short(e) for e, _ in bad)
        if len(bad) <= 10
        else f"{PROG} clear NAME/KEY (as listed above)"
    )
    print(f"{len(bad)} of {count} failed ({what}); remove them with: {how}")


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 1 if any entry is bad, or if there is no cache directory to verify."""
    cache = cache_dir(args)
    note = missing_note(cache)
    if note is not None:
        print(note, file=sys.stderr)
        if args.json:
            out = {"cache_dir": cache, "signed_check": env_secret() is not None, "checked": 0,
                   "bad": 0, "entries": [], "error": "no cache directory"}
            print(json.dumps(out, indent=2))
        return 1
    verified = gather_verify(cache, env_secret())
    (render_verify_json if args.json else render_verify)(verified)
    return 1 if verified.bad else 0
