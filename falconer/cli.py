"""The `falconer` command: one argparse tree whose subcommands belong to the components.

Each component keeps its commands in a `commands` module exposing
`register(subparsers)`; a registered parser sets `run=<callable(args) -> int>`.
Command modules import heavy dependencies (bcc, kopf, kubernetes) only inside the
callables, so `falconer validate` starts fast and works where bcc is absent.
"""

from __future__ import annotations

import argparse
import importlib
import json
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
    version = subparsers.add_parser(
        "version", help="print Falconer's version and the rule engine's version",
        description="Falconer's version and the engine version its rule language implements: "
        "a rules file's required_engine_version is compatible when its major version matches "
        "and it is not newer (Falco's rule).")
    version.add_argument("--json", action="store_true",
                         help="as JSON: {falconer_version, engine_version}")
    version.set_defaults(run=run_version)
    return parser


def versions() -> dict[str, str]:
    """Falconer's version (the package's) and the engine version (falconer.engine.ENGINE_VERSION,
    what `required_engine_version` is compared with)."""
    from falconer.engine import ENGINE_VERSION  # noqa: PLC0415

    return {"falconer_version": __version__, "engine_version": ENGINE_VERSION}


def run_version(args: argparse.Namespace) -> int:
    """Print the versions, as Falco's `--version` lays them out (or JSON)."""
    found = versions()
    if args.json:
        print(json.dumps(found, sort_keys=True))
    else:
        print(f"Falconer version: {found['falconer_version']}")
        print(f"Engine:           {found['engine_version']}")
    return 0


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
