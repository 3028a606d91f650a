"""Commands of the operator component: `falconer operator`, `falconer rules to-crd` and
`falconer crds`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `operator` and the `rules` group to the command tree."""
    op = subparsers.add_parser(
        "operator", help="run the Kubernetes operator (FalcoRule, FalcoInstance)",
        description="Watch FalcoRules and FalcoInstances and render sensors. Uses the in-cluster "
        "identity, or $KUBECONFIG / ~/.kube/config outside a cluster.",
    )
    op.add_argument("-n", "--namespace", action="append", default=[],
                    help="watch only this namespace (repeatable; default: all namespaces)")
    op.add_argument("--liveness", metavar="URL", default=None,
                    help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument("--resync-seconds", type=float, default=60.0, metavar="S",
                    help="reconcile every FalcoInstance this often, repairing drift the watches "
                    "missed (default 60)")
    op.add_argument("-v", "--verbose", action="store_true", help="log every handler run")
    op.set_defaults(run=run_operator)

    rules = subparsers.add_parser("rules", help="convert Falco rules files")
    rules_sub = rules.add_subparsers(dest="rules_command", metavar="COMMAND", required=True)
    to_crd = rules_sub.add_parser(
        "to-crd", help="wrap a Falco rules file, unchanged, in a FalcoRule manifest",
        description="Print a FalcoRule manifest whose spec.items are the file's items.",
    )
    to_crd.add_argument("file", type=Path, help="a Falco rules file (YAML)")
    to_crd.add_argument("--name", required=True, help="the FalcoRule's name")
    to_crd.add_argument("--namespace", default=None, help="the FalcoRule's namespace")
    to_crd.add_argument("--order", type=int, default=0, help="load position among FalcoRules (default 0)")
    to_crd.set_defaults(run=run_to_crd)

    crds = subparsers.add_parser(
        "crds", help="print the CustomResourceDefinitions (for kubectl apply -f -)",
        description="Print the shipped CRDs of group falconer.io as one multi-document YAML.")
    crds.set_defaults(run=run_crds)


def run_operator(args: argparse.Namespace) -> int:
    """Run kopf with Falconer's handlers until interrupted."""
    import os

    import kopf

    if args.resync_seconds <= 0:
        print("falconer operator: --resync-seconds must be positive", file=sys.stderr)
        return 2
    os.environ["FALCONER_RESYNC_SECONDS"] = str(args.resync_seconds)
    from falconer.operator import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness,
    )
    return 0


def run_crds(args: argparse.Namespace) -> int:
    """Print every shipped CRD (package data, falconer.paths.crd_files), `---`-separated."""
    from falconer import paths

    sys.stdout.write("---\n".join(p.read_text(encoding="utf-8") for p in paths.crd_files()))
    return 0


def run_to_crd(args: argparse.Namespace) -> int:
    """Print the manifest; errors name the file and position."""
    from falconer.operator import convert
    from falconer.operator.ruleyaml import RulesFileError

    try:
        text = args.file.read_text(encoding="utf-8")
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        manifest = convert.falcorule_manifest(text, args.name, args.namespace, args.order)
    except RulesFileError as exc:
        print(f"{args.file}:{exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"falconer rules to-crd: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(convert.dump_manifest(manifest))
    return 0
