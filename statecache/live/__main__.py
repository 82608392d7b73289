"""``python -m statecache.live SCRIPT [ARGS...]``: the same loop as ``statecache live``."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
