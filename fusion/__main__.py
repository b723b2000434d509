"""``python -m fusion``: the reference command line (see fusion/cli.py)."""
from .cli import main

raise SystemExit(main())
