"""`falconer rules to-crd`: wrap a Falco rules file, unchanged, in a FalcoRule manifest.

The items are carried over as parsed (names, conditions, lists, exceptions exactly as
written), so the FalcoRule compiles to the same rules, macros and lists as the file.
Comments do not survive: YAML data has none.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from falconer.operator import ruleyaml
from falconer.operator.api import API_VERSION

#: A Kubernetes object name (DNS-1123 subdomain).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def falcorule_manifest(
    text: str, name: str, namespace: str | None = None, order: int = 0
) -> dict[str, Any]:
    """The FalcoRule object for a rules file's text.

    Raises ValueError for a name Kubernetes would refuse and RulesFileError (with a
    position) for a file that is not a YAML sequence of mappings.
    """
    if len(name) > 253 or not _NAME.match(name):
        raise ValueError(f"invalid FalcoRule name {name!r}: use lowercase letters, digits, '-' and '.'")
    items = ruleyaml.load_items(text)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ruleyaml.RulesFileError(
                f"item {index} is a {type(item).__name__}, not a mapping", *_item_position(text, index)
            )
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {"items": items}
    if order:
        spec = {"order": order, **spec}
    return {"apiVersion": API_VERSION, "kind": "FalcoRule", "metadata": metadata, "spec": spec}


def _item_position(text: str, index: int) -> tuple[int, int]:
    """1-based position of the `index`-th item across the file's documents."""
    seen = 0
    for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if isinstance(doc, yaml.SequenceNode):
            if index - seen < len(doc.value):
                mark = doc.value[index - seen].start_mark
                return mark.line + 1, mark.column + 1
            seen += len(doc.value)
    return 1, 1


def dump_manifest(manifest: dict[str, Any]) -> str:
    """The manifest as YAML, conditions and multi-line strings as readable `|` blocks."""
    head = {k: v for k, v in manifest.items() if k != "spec"}
    spec = manifest["spec"]
    lines = [yaml.safe_dump(head, sort_keys=False).rstrip("\n"), "spec:"]
    if "order" in spec:
        lines.append(f"  order: {int(spec['order'])}")
    body = ruleyaml.dump_items(spec["items"])
    lines.append("  items:" + (" []" if not spec["items"] else ""))
    if spec["items"]:
        lines.extend("    " + line if line else line for line in body.rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n"
