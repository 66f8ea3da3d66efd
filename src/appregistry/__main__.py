"""``python -m appregistry``: the command line."""

from .cli import main

raise SystemExit(main())
