"""``python -m statecache``: the same command as the ``statecache`` console script."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
