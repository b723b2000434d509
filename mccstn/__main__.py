"""``python -m mccstn``: the stylisation command line (see :mod:`mccstn.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
