"""Commands of the operator component: `falconer operator`, `falconer rules to-crd` and
`falconer crds`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `operator` and the `rules` group to the command tree, and teach the engine's
    `validate` (registered before) FalcoRule/ClusterFalcoRule manifests."""
    _extend_validate(subparsers.choices["validate"])
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
    op.add_argument("--webhook-listen", metavar="HOST:PORT", default=None,
                    help="serve the validating admission webhook for FalcoRules and "
                    "ClusterFalcoRules here (TLS), e.g. 0.0.0.0:9443")
    op.add_argument("--webhook-url", metavar="URL", default=None,
                    help="with --webhook-listen: where the API server calls it (https://...); the "
                    "operator applies the ValidatingWebhookConfiguration")
    op.add_argument("--webhook-service", metavar="NS/NAME[:PORT]", default=None,
                    help="with --webhook-listen: the Service the API server calls instead of a URL")
    op.add_argument("--webhook-secret", metavar="NS/NAME", default="falconer-system/falconer-webhook-tls",
                    help="the kubernetes.io/tls Secret holding the webhook's certificate (made and "
                    "renewed by the operator unless valid; default falconer-system/falconer-webhook-tls)")
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


def _extend_validate(validate: argparse.ArgumentParser) -> None:
    """`falconer validate` also takes manifests (falconer.operator.validate); files that
    are none go on to the engine's rules-file validation as before."""
    validate.description = (f"{validate.description} Files of Kubernetes objects (multi-document YAML, "
                            "kustomize output, kind List) are manifests: their FalcoRules and "
                            "ClusterFalcoRules are compiled as the operator compiles them, after the "
                            "rules files, and reported with the operator's positions "
                            "(spec.items[i].field:line:column).")
    validate.add_argument("--cluster-namespace", action="append", default=[], metavar="NS",
                          help="manifests: FalcoRules of this namespace are cluster rules (repeatable; "
                               "those without a namespace always are); other namespaces' are tenant rules")
    validate.add_argument("--tenant-max-priority", default="Warning", metavar="PRIORITY",
                          help="manifests: the highest priority of a tenant's rule (default Warning)")
    rules_files_only = validate.get_default("run")

    def run(args: argparse.Namespace) -> int:
        from falconer.operator import validate as manifests

        if args.format != "falco-json" and any(manifests.is_manifest_file(Path(f)) for f in args.files):
            return run_validate_manifests(args)
        return int(rules_files_only(args))
    validate.set_defaults(run=run)


def run_validate_manifests(args: argparse.Namespace) -> int:
    """Manifests (after the plain rules files among the files), compiled and positioned
    as the operator does; exit 1 on errors, 2 on unreadable input."""
    import json

    from falconer.operator import validate as manifests

    paths = [Path(f) for f in args.files]
    try:
        found = [m for p in paths if manifests.is_manifest_file(p) for m in manifests.read_manifests(p)]
        report = manifests.validate(found, [p for p in paths if not manifests.is_manifest_file(p)],
                                    frozenset(args.cluster_namespace), args.tenant_max_priority)
    except ValueError as exc:  # ManifestError, or a bad priority
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(manifests.to_json(report), indent=2))
        return 0 if report.ok else 1
    if report.files is not None:
        for diag in [*report.files.errors, *report.files.warnings]:
            print(diag.human())
    print(f"{'ok' if report.ok else 'FAILED'}: {len(report.manifests)} FalcoRules/ClusterFalcoRules; "
          f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    for severity, found_in in (("error", report.errors), ("warning", report.warnings)):
        for manifest, finding in found_in:
            print(manifests.human(manifest, finding, severity))
    return 0 if report.ok else 1


def run_operator(args: argparse.Namespace) -> int:
    """Run kopf with Falconer's handlers until interrupted."""
    import os

    import kopf

    if args.resync_seconds <= 0:
        print("falconer operator: --resync-seconds must be positive", file=sys.stderr)
        return 2
    os.environ["FALCONER_RESYNC_SECONDS"] = str(args.resync_seconds)
    if args.webhook_listen:
        from falconer.operator.webhookserver import WebhookSettings

        try:
            settings = WebhookSettings.parse(args.webhook_listen, args.webhook_url, args.webhook_service,
                                             args.webhook_secret)
        except ValueError as exc:
            print(f"falconer operator: {exc}", file=sys.stderr)
            return 2
        os.environ[WebhookSettings.ENV] = settings.to_env()
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
