"""``python -m statecache``: the same command as the ``statecache`` console script."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
