"""``statecache live SCRIPT [ARGS...]``: the command line of the live loop (a CLI plugin:
``add_parser`` and ``run``), and ``python -m statecache.live``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .snapshots import MAX_SNAPSHOTS

__all__ = ["add_parser", "run", "main"]

_USAGE = "%(prog)s [-h] [--max-snapshots N] SCRIPT [ARGS...]"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``statecache live`` with the CLI."""
    p = subparsers.add_parser(
        "live",
        usage=_USAGE,
        help="run a script, then re-run only what changed on every save",
        description=(
            "Run SCRIPT as __main__; keep paused snapshots after its imports and after each "
            "top-level checkpoint block; on every save of the script or of one of your own "
            "modules it imported, resume from the last snapshot before the change. "
            "Enter re-runs, Ctrl-C stops a run, a second Ctrl-C or 'q' leaves."
        ),
    )
    _arguments(p)
    return p


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-snapshots",
        type=int,
        default=MAX_SNAPSHOTS,
        metavar="N",
        help=f"keep at most N paused snapshots (default {MAX_SNAPSHOTS}, at least 3)",
    )
    p.add_argument(
        "command",
        nargs=argparse.REMAINDER,
        metavar="SCRIPT [ARGS...]",
        help="the Python script to run, and the arguments it gets",
    )


def run(args: argparse.Namespace) -> int:
    """Run the live loop; the exit code of ``statecache live``."""
    if not args.command or args.command[0].startswith("-"):
        from .._errors import UsageError

        raise UsageError("give the script to run: statecache live SCRIPT [ARGS...]")
    from .controller import Controller

    return Controller(args.command[0], list(args.command[1:]), args.max_snapshots).main()


def main(argv: list[str] | None = None, prog: str = "python -m statecache.live") -> int:
    """``python -m statecache.live SCRIPT [ARGS...]``."""
    p = argparse.ArgumentParser(prog=prog, usage=_USAGE)
    _arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except Exception as exc:
        from .._errors import StateCacheError, UsageError

        if isinstance(exc, StateCacheError):
            print(f"statecache: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, UsageError) else 1
        raise
