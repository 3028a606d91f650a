"""`python -m falconer` is the `falconer` command."""

from falconer.cli import main

raise SystemExit(main())
