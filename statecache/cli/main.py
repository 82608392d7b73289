"""The ``statecache`` command (also ``python -m statecache``): the parser, the plug-ins, and
the entry point that turns errors into exit codes. The commands live one group per module:
``listing`` (ls, show), ``cleanup`` (clear, gc), ``verify``, ``remote`` (push, pull, and
``ls``/``gc`` with ``--remote``); each gathers its data, then renders it as a table or JSON.

Exit codes: 0 success, 1 a failed verify, no cache to verify, or nothing matched a name given to
``ls``/``show``/``clear``, 2 bad usage. User mistakes are one line on stderr, never a traceback.

Adding a subcommand from another module: list it in ``PLUGINS`` below. The module must define
``add_parser(subparsers) -> argparse.ArgumentParser`` (create the parser with
``subparsers.add_parser(NAME, ...)``, add its arguments; ``--dir`` is not added for you) and
``run(args) -> int`` (the exit code). It is imported for its own command, for ``--help`` and
for an unknown command, never for the built-in ones; if it fails to import, its command says so
and the others work.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._errors import ConfigError, InvalidNameError, StateCacheError, UsageError
from .._version import __version__
from .cleanup import cmd_clear, cmd_gc
from .common import DIR_HELP, PROG
from .listing import cmd_ls, cmd_show
from .remote import add_gc_options, add_remote_option, add_transfer
from .remote import add_parser as add_remote_parser
from .remote import run as run_remote
from .verify import cmd_verify

#: Subcommands defined elsewhere: name -> module with ``add_parser(subparsers)`` and ``run(args)``.
PLUGINS = {"live": "statecache.live.command"}
BUILTIN = ("ls", "show", "clear", "gc", "verify", "push", "pull", "remote")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to get help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


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


def _command(
    sub: Any, name: str, func: Callable[[argparse.Namespace], int], help: str, json: bool = False
) -> argparse.ArgumentParser:
    """A built-in subcommand with the options they all take."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    p.add_argument("--dir", metavar="D", help=DIR_HELP)
    if json:
        p.add_argument("--json", action="store_true", help="machine-readable output (see README)")
    p.set_defaults(func=func)
    return p


def _add_builtins(sub: Any) -> None:
    p = _command(sub, "ls", cmd_ls,
                 "list entries: name, key, size, variables, created, last used, compute time", True)
    p.add_argument("names", nargs="*", metavar="NAME", help="only these checkpoint names")
    add_remote_option(p)
    p = _command(sub, "show", cmd_show,
                 "one entry in full: metadata, variables, recorded files, source", True)
    p.add_argument(
        "entry", metavar="NAME_OR_KEY", help="a checkpoint name, a key prefix, or NAME/KEYPREFIX"
    )
    p.add_argument("--explain", action="store_true",
                   help="every version of the NAME: its key's components, and what differs "
                   "between the newest two")
    p = _command(sub, "clear", cmd_clear,
                 "delete entries (each under its lock; entries in use are skipped)")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="checkpoint names (or NAME/KEYPREFIX) to delete"
    )
    p.add_argument("--all", action="store_true", help="delete every entry")
    p.add_argument("--older-than", metavar="AGE", help="only entries not used for AGE (e.g. 7d)")
    p.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    p = _command(sub, "gc", cmd_gc, "enforce a size cap (least recently used first), prune old "
                 "versions, remove temp files of dead writers; with --remote: delete remote "
                 "entries uploaded more than --older-than ago")
    p.add_argument("--max-size", metavar="SIZE",
                   help="size cap, e.g. 10G (default: $STATECACHE_MAX_SIZE, else none)")
    p.add_argument("--keep-versions", metavar="N", type=int, default=None,
                   help="old versions kept per name besides the most recently used one (default 3)")
    p.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    add_remote_option(p)
    add_gc_options(p)
    _command(sub, "verify", cmd_verify,
             "check every entry's checksums (and signature when STATECACHE_SECRET is set)", True)
    add_transfer(sub, "push")
    add_transfer(sub, "pull")
    add_remote_parser(sub).set_defaults(func=run_remote)  # the first spelling: remote ls|push|pull|gc


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
    _add_builtins(sub)
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
