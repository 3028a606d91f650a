"""The README's main job (`./dev run`): what a fresh machine shows first.

Until the sensor and the operator exist, the main job validates Falconer's own default
ruleset; later issues move it to the all-in-one demo.
"""

from __future__ import annotations

import sys

from falconer import paths
from falconer.cli import main as falconer_main


def main(argv: list[str]) -> int:
    """Validate the default rules; extra arguments are passed on to `falconer validate`."""
    files = [str(p) for p in paths.default_rules_files()]
    return falconer_main(["validate", *argv, *files])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
