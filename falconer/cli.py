"""The `falconer` command: one argparse tree whose subcommands belong to the components.

Each component keeps its commands in a `commands` module exposing
`register(subparsers)`; a registered parser sets `run=<callable(args) -> int>`.
Command modules import heavy dependencies (bcc, kopf, kubernetes) only inside the
callables, so `falconer validate` starts fast and works where bcc is absent.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from falconer import __version__

#: The modules that contribute subcommands, in the order their help is shown.
COMMAND_MODULES: tuple[str, ...] = (
    "falconer.engine.commands",
    "falconer.operator.commands",
    "falconer.sensor.commands",
    "falconer.ruletest.commands",
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree, assembled from every component's `register`."""
    parser = argparse.ArgumentParser(prog="falconer", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"falconer {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command; its return value is the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0
