"""The sensor's side of the field contract: `ANSWERED_FIELDS` names what
`SensorEvent.get` answers, and every `container.*` / `k8s.*` field the three upstream
Falco rules files use is among them.

The walk reads the files as YAML and parses every macro and rule condition (with the
engine's own parser), every rule output and every exception's fields, so a field that
only a disabled rule or an unused macro uses still counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import upstream
import yaml

from falconer.engine import ast, fields
from falconer.engine.output import compile_output
from falconer.engine.parser import parse_condition
from falconer.sensor.event import ANSWERED_FIELDS

#: Fields of the syscall source the upstream files use that the sensor does not answer
#: yet (the probe issue closes these): nothing may join this list.
NOT_ANSWERED_YET = frozenset({
    "proc.exe_ino.ctime", "proc.exe_ino.ctime_duration_proc_start",
    "proc.exe_ino.mtime",                                         # stable
    "evt.buffer", "proc.is_vpgid_leader",                         # sandbox
})


def _walk(node: object) -> Iterator[ast.Field]:
    """Every Field node under an AST node (transformer arguments included)."""
    if isinstance(node, ast.Field):
        yield node
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            yield from _walk(getattr(node, f.name))
    elif isinstance(node, (tuple, list)):
        for child in node:
            yield from _walk(child)


def used_fields() -> dict[str, set[str]]:
    """field name -> the upstream files that use it."""
    used: dict[str, set[str]] = {}
    for path in upstream.upstream_files():
        names: set[str] = set()
        for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("condition"), str):
                names |= {f.name for f in _walk(parse_condition(item["condition"]))}
            if isinstance(item.get("output"), str):
                names |= {t.info.name for t in compile_output(item["output"]).tokens}
            for ex in item.get("exceptions") or []:
                ex_fields = ex.get("fields") if isinstance(ex, dict) else None
                names |= set([ex_fields] if isinstance(ex_fields, str) else ex_fields or [])
        for name in names:
            used.setdefault(name, set()).add(path.name)
    return used


def _base(name: str) -> str:
    """The registry name a used field resolves to (`evt.arg.flags` -> `evt.arg`)."""
    if name in fields.FIELDS:
        return name
    return next((p for p in fields.DOTTED_ARG_FIELDS if name.startswith(p + ".")), name)


def test_every_answered_field_is_one_the_engine_knows():
    unknown = {n for n in ANSWERED_FIELDS if n not in fields.FIELDS}
    assert unknown == set()


def test_the_upstream_files_container_and_k8s_fields_are_all_answered():
    used = used_fields()
    assert "container.image.repository" in used and "k8s.ns.name" in used   # the walk works
    unanswered = {n for n in used if _base(n) not in ANSWERED_FIELDS}
    pod_fields = {n for n in unanswered if n.startswith(("container.", "k8s.", "k8smeta."))}
    assert pod_fields == set(), {n: sorted(used[n]) for n in pod_fields}


def test_what_stays_unanswered_is_only_what_the_probe_issue_owns():
    used = used_fields()
    unanswered = {n for n in used if _base(n) not in ANSWERED_FIELDS}
    assert unanswered <= NOT_ANSWERED_YET, sorted(unanswered - NOT_ANSWERED_YET)
