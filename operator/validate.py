"""`falconer validate` for FalcoRule and ClusterFalcoRule manifests, as the operator
compiles them (operator/tenancy.py): a CI or GitOps pipeline checks a change before
Argo CD or Flux applies it, and reads the same positions the operator writes in status.

A manifest file is YAML whose documents are objects (multi-document, as `kustomize
build` writes it; `kind: List` is unwrapped); only FalcoRules and ClusterFalcoRules are
checked, other kinds are skipped. They load as one instance would load them all:
ClusterFalcoRules, FalcoRules without a namespace and FalcoRules of a cluster-wide
namespace (`--cluster-namespace`) in the cluster scope, after the plain rules files given
with them; every other namespace's FalcoRules as that tenant's rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from falconer.engine import Engine
from falconer.engine.diagnostics import LoadResult
from falconer.operator import rules
from falconer.operator.api import GROUP
from falconer.operator.ruleyaml import RuleText
from falconer.operator.tenancy import CLUSTER_FALCO_RULE, FALCO_RULE, RuleRef, Tenancy, compile_in_order, load_order

KINDS = frozenset({FALCO_RULE, CLUSTER_FALCO_RULE})


class ManifestError(ValueError):
    """A manifest file that is not YAML objects (message says where)."""


@dataclass(frozen=True)
class Manifest:
    """One FalcoRule or ClusterFalcoRule document: its file and 1-based first line."""

    file: str
    line: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Report:
    """What a validation found: the findings by manifest, and the plain rules files' load."""

    manifests: tuple[Manifest, ...]
    errors: tuple[tuple[Manifest, rules.Finding], ...]
    warnings: tuple[tuple[Manifest, rules.Finding], ...]
    files: LoadResult | None

    @property
    def ok(self) -> bool:
        """No errors in the manifests or the rules files."""
        return not self.errors and (self.files is None or self.files.ok)


def is_manifest_file(path: Path) -> bool:
    """Whether the file's first YAML document is an object with `apiVersion` and `kind`
    (a Falco rules file is a sequence); unreadable or broken files are not."""
    try:
        with path.open(encoding="utf-8") as stream:
            first = next(iter(yaml.safe_load_all(stream)), None)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(first, dict) and "apiVersion" in first and "kind" in first


def read_manifests(path: Path) -> list[Manifest]:
    """The file's FalcoRules and ClusterFalcoRules, with the line each starts at."""
    try:
        text = path.read_text(encoding="utf-8")
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from exc
    found: list[Manifest] = []
    for node in nodes:
        if node is None:
            continue
        doc = yaml.safe_load(yaml.serialize(node))
        if not isinstance(doc, dict):
            raise ManifestError(f"{path}:{node.start_mark.line + 1}: expected an object, got {type(doc).__name__}")
        found += [Manifest(str(path), node.start_mark.line + 1, obj) for obj in _objects(doc)]
    return found


def _objects(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The document's FalcoRules and ClusterFalcoRules (a List's items included)."""
    if doc.get("kind") == "List":
        for item in doc.get("items") or ():
            if isinstance(item, dict):
                yield from _objects(item)
    elif doc.get("kind") in KINDS and str(doc.get("apiVersion", "")).startswith(f"{GROUP}/"):
        yield doc


def validate(manifests: Sequence[Manifest], rules_files: Sequence[Path], cluster_namespaces: frozenset[str],
             tenant_max_priority: str) -> Report:
    """Compile the manifests as one instance would load them, after the rules files."""
    files: LoadResult | None = None
    before: list[RuleText] = []
    if rules_files:
        files = Engine().load(rules_files)
        before = [RuleText(str(p), p.read_text(encoding="utf-8")) for p in rules_files] if files.ok else []
    tenancy = Tenancy("", True, cluster_namespaces | {""}, tenant_max_priority)
    by_ref = {RuleRef.of(m.body): m for m in manifests}
    loaded = compile_in_order(load_order(tenancy, None, [m.body for m in manifests]), "",
                              rules.engine_options(tenant_max_priority=tenant_max_priority), before=before)
    errors = tuple((by_ref[done.candidate.ref], f) for done in loaded for f in done.compiled.errors)
    warnings = tuple((by_ref[done.candidate.ref], f) for done in loaded for f in done.compiled.warnings)
    return Report(tuple(manifests), errors, warnings, files)


def human(manifest: Manifest, finding: rules.Finding, severity: str) -> str:
    """`file:line: <severity> <falcorule> <path>:<line>:<col>: <code>: <message>` (the
    document's first line; the position inside the field as in the operator's status)."""
    return f"{manifest.file}:{manifest.line}: {severity} {finding.text()}"


def to_json(report: Report) -> dict[str, Any]:
    """The `--json` object: counts, then each finding as the operator's instance status
    entry plus the manifest file and line."""
    def entries(found: tuple[tuple[Manifest, rules.Finding], ...]) -> list[dict[str, Any]]:
        return [{"file": m.file, "documentLine": m.line, **f.to_status(with_rule=True),
                 **({"item": f.to_status()["item"]} if "item" in f.to_status() else {})} for m, f in found]
    return {"manifests": len(report.manifests), "errors": entries(report.errors),
            "warnings": entries(report.warnings),
            "rulesFiles": report.files.to_dict() if report.files is not None else None}
