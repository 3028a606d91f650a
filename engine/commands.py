"""`falconer validate` and `falconer replay`: the engine on the command line."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from falconer.engine import MappingEvent


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the engine's subcommands."""
    validate = subparsers.add_parser(
        "validate", help="check rules files or FalcoRule/ClusterFalcoRule manifests",
        description="Load rules files in order as one set and report every error and warning.")
    validate.add_argument("--format", choices=("text", "json", "falco-json"), default="text",
                          help="text (default); json: Falconer's object (counts and "
                               "diagnostics); falco-json: the shape of `falco -V ... -o "
                               "json_output=true`")
    validate.add_argument("--json", action="store_const", const="json", dest="format",
                          help="same as --format json")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(run=run_validate)

    replay = subparsers.add_parser(
        "replay", help="evaluate recorded events (JSON lines) against rules",
        description="Evaluate events from a JSON-lines file against rules and print alerts.")
    replay.add_argument("--rules", nargs="+", required=True, metavar="FILE")
    replay.add_argument("--json", action="store_true", help="print Falco JSON alerts")
    replay.add_argument("--rule-matching", choices=("first", "all"), default="first")
    replay.add_argument("--min-priority", default="debug")
    replay.add_argument("events", metavar="EVENTS.jsonl", nargs="?",
                        help="events file ('-' for stdin); may follow the rules files")
    replay.set_defaults(run=run_replay)


def run_validate(args: argparse.Namespace) -> int:
    """Print counts and diagnostics; exit 1 when there are errors."""
    from falconer.engine import Engine

    if args.format == "falco-json":
        return _validate_falco_json(args.files)
    result = Engine().load(args.files)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        c = result.counts
        status = "ok" if result.ok else "FAILED"
        print(f"{status}: {c['rules']} rules, {c['macros']} macros, {c['lists']} lists; "
              f"{len(result.errors)} errors, {len(result.warnings)} warnings")
        for diag in [*result.errors, *result.warnings]:
            print(diag.human())
    return 0 if result.ok else 1


def _validate_falco_json(files: list[str]) -> int:
    """Falco's `-V` JSON: each file loaded after the ones before it, one result each."""
    from falconer.engine import Engine
    from falconer.engine.falcojson import load_results

    results = [(str(Path(f)), Engine().load(files[:i + 1])) for i, f in enumerate(files)]
    print(json.dumps(load_results(results)))
    return 0 if all(result.ok for _, result in results) else 1


def read_events(stream: TextIO, err: TextIO) -> tuple[list[MappingEvent], int]:
    """The replay reader: the events of a JSON-lines stream (one `{"time", "fields",
    "source"}` object a line) and the number of bad lines, each reported to `err` as
    `name:line: skipped event: reason`."""
    from falconer.engine import MappingEvent

    events: list[MappingEvent] = []
    bad = 0
    for lineno, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            events.append(MappingEvent.from_json(json.loads(line)))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError too
            bad += 1
            print(f"{stream.name}:{lineno}: skipped event: {exc}", file=err)
    return events, bad


def run_replay(args: argparse.Namespace) -> int:
    """Evaluate each event; print alerts as text lines or Falco JSON."""
    from falconer.engine import Engine, EngineOptions

    if args.events is None:
        # `--rules a.yaml b.yaml events.jsonl`: the list option swallowed the events file.
        if len(args.rules) < 2:
            print("error: no events file given", file=sys.stderr)
            return 2
        args.events = args.rules.pop()
    try:
        engine = Engine(EngineOptions(min_priority=args.min_priority,
                                      rule_matching=args.rule_matching))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = engine.load(args.rules)
    for diag in result.errors:
        print(diag.human(), file=sys.stderr)
    if engine.ruleset is None:
        return 1
    try:
        stream = sys.stdin if args.events == "-" else open(args.events, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot read events: {exc}", file=sys.stderr)
        return 1
    with stream:
        events, bad = read_events(stream, sys.stderr)
    hostname = socket.gethostname()
    count = 0
    for event in events:
        for alert in engine.ruleset.evaluate(event):
            count += 1
            if args.json:
                print(json.dumps(alert.to_json(hostname)))
            else:
                print(alert.text_line())
    print(f"{len(events)} events, {count} alerts, {bad} bad lines skipped", file=sys.stderr)
    return 0
