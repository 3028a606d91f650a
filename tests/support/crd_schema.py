"""Validate objects offline against Falconer's CRD schemas (as the API server would).

The CRDs' openAPIV3Schema is turned into JSON Schema: Kubernetes' int-or-string and
preserve-unknown-fields markers become their JSON Schema meaning, and objects with
declared properties refuse unknown keys (kubectl's default strict field validation).
CEL rules (`x-kubernetes-validations`) are left to the tests against a real API server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from falconer.paths import CRDS_DIR


def crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition for `kind` from crds/."""
    for path in sorted(Path(CRDS_DIR).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise KeyError(kind)


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and "additionalProperties" not in node and not node.get(
        "x-kubernetes-preserve-unknown-fields"
    ):
        out["additionalProperties"] = False
    return out


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of the kind's served version."""
    version = crd(kind)["spec"]["versions"][0]
    body = _to_json_schema(version["schema"]["openAPIV3Schema"])
    body["properties"]["metadata"] = {"type": "object"}
    return body


def errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of `obj`, each as `path: message` (empty when valid)."""
    validator = jsonschema.Draft7Validator(schema(obj["kind"]))
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]
