"""Every field the upstream rules name, in conditions and outputs, is in the registry."""

from __future__ import annotations

import pytest
import upstream
import yaml

from falconer.engine import ast
from falconer.engine.fields import FIELDS, UnknownField, resolve
from falconer.engine.output import compile_output
from falconer.engine.parser import parse_condition


def _fields(node: ast.Expr) -> list[ast.Field]:
    out = [node] if isinstance(node, ast.Field) else []
    for attr in ("children", "args"):
        for child in getattr(node, attr, ()):
            out += _fields(child)
    for attr in ("child", "left", "right"):
        if hasattr(node, attr):
            out += _fields(getattr(node, attr))
    return out


def _items() -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    for path in upstream.upstream_files():
        items += [i for i in yaml.safe_load(path.read_text()) if isinstance(i, dict)]
    return items


def test_every_condition_field_resolves() -> None:
    seen = set()
    for item in _items():
        if isinstance(item.get("condition"), str):
            for f in _fields(parse_condition(str(item["condition"]))):
                resolve(f.name, f.arg)
                seen.add(f.name)
    assert {"proc.aname", "evt.arg.flags", "container.mount.dest", "fd.sip.name"} <= seen


def test_every_output_field_resolves() -> None:
    tokens = 0
    for item in _items():
        if isinstance(item.get("output"), str):
            tokens += len(compile_output(str(item["output"])).tokens)
    assert tokens > 900


@pytest.mark.parametrize("name,arg", [("proc.nope", None), ("proc.aname.x", None),
                                      ("container.mount.dest", None), ("proc.name", "1")])
def test_unknown_fields_and_argument_misuse(name: str, arg: str | None) -> None:
    with pytest.raises(UnknownField):
        resolve(name, arg)


def test_registry_covers_the_common_syscall_classes() -> None:
    prefixes = {name.split(".")[0] for name in FIELDS}
    assert {"evt", "proc", "thread", "user", "group", "fd", "container", "k8s", "fs"} <= prefixes
    assert all(f.type in ("string", "bytes", "number", "port", "bool", "ipaddr", "ipnet", "any")
               for f in FIELDS.values())
