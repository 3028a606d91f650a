"""`falconer test SUITE.yaml...`: run declarative rule tests against a real sensor."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `test` subcommand."""
    p = subparsers.add_parser(
        "test", help="run declarative rule tests for real (root, eBPF)",
        description="Run each test of the suites against one eBPF sensor started for the "
        "run; print a pass/fail table; exit 1 on any failure or error.")
    p.add_argument("suites", nargs="+", type=Path, metavar="SUITE",
                   help="suite files (YAML lists of tests)")
    p.add_argument("--rules", nargs="+", type=Path, metavar="FILE",
                   help="rules files under test, in load order (default: Falconer's rules)")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument("--kubeconfig", type=Path, metavar="FILE",
                   help="a cluster with a node on this host, for tests with a pod context")
    p.add_argument("--namespace", default="default", metavar="NS",
                   help="the namespace of the test pods (default: default)")
    p.add_argument("--kubectl", default="kubectl", metavar="PATH",
                   help="the kubectl to use (default: kubectl on PATH)")
    p.add_argument("--buffer-pages", type=int, default=None, metavar="N",
                   help="the sensor's ring buffer size in pages (default 16384: 64 MiB)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 when every test passed; 1 on any failure or error; 2 when nothing could run."""
    from falconer import paths  # noqa: PLC0415
    from falconer.ruletest import pods, report, runner, suite  # noqa: PLC0415

    try:
        tests = suite.load(args.suites)
    except suite.SuiteError as exc:
        print(f"falconer test: {exc}", file=sys.stderr)
        return 2
    rules = list(args.rules or paths.default_rules_files())
    cluster = (pods.Cluster(args.kubeconfig.absolute(), args.namespace, args.kubectl)
               if args.kubeconfig is not None else None)
    r = runner.Runner(rules, buffer_pages=args.buffer_pages or runner.DEFAULT_BUFFER_PAGES,
                      cluster=cluster)
    results: list[runner.Result] = []
    try:
        with r.session() as sensor:
            for result in r.run(tests, sensor):
                results.append(result)
                report.progress(sys.stderr, len(results), len(tests), result)
    except runner.RunError as exc:
        print(f"falconer test: {exc}", file=sys.stderr)
        return 2
    losses = [line for line in r.summary.splitlines() if line.startswith("dropped:")]
    print("sensor: " + (losses[0] if losses else "no summary"), file=sys.stderr)
    throttled = re.search(r"drop alerts throttled (\d+)", r.summary)
    if throttled and int(throttled.group(1)):
        print(f"falconer test: the sensor throttled {throttled.group(1)} of its drop reports: "
              "a near miss that passed while events were lost may not be proven",
              file=sys.stderr)
    retried = sum(1 for x in results if x.attempts > 1)
    if retried:
        print(f"falconer test: {retried} tests needed more than one attempt", file=sys.stderr)
    report.table(sys.stdout, results)
    if args.junit is not None:
        report.junit(args.junit, results)
    return 0 if all(x.status == "pass" for x in results) else 1
