"""The CLI's former entry point for ``statecache live``, kept until ``cli.main.PLUGINS`` names
``statecache.live.command``; also ``python -m statecache.live.loop`` (now ``python -m
statecache.live``)."""

from __future__ import annotations

import sys

from .command import add_parser, main, run

__all__ = ["add_parser", "run", "main"]

if __name__ == "__main__":
    sys.exit(main(prog="python -m statecache.live.loop"))
