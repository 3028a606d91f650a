"""The typed specs (operator/spec.py) and the CRDs (crds/*.yaml) say the same thing.

Every model field has a CRD property of the same name, type, default, enum and bounds,
and every CRD property is a model field (a property nothing reads would be a stub). Where
the CRD holds a CEL rule, the model checks the same in its constructor. FalcoRule items
are the rule engine's to read: their CRD properties are exactly the keys it knows.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import crd_schema
import pytest

from falconer.engine import collector
from falconer.operator.spec import FalcoInstanceSpec, FalcoRuleSpec, LabelSelector, parse_instance, parse_rule
from falconer.shapes import Bounds, ShapeError, describe, encode

#: CRD keywords of a bound and the Bounds attribute each one is.
BOUND_KEYWORDS = {"minimum": "minimum", "maximum": "maximum", "pattern": "pattern", "minLength": "min_length",
                  "maxLength": "max_length", "maxItems": "max_items"}
SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def spec_schema(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = crd_schema.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def disagreements(tp: Any, node: Mapping[str, Any], where: str, bounds: Bounds = Bounds()) -> list[str]:
    """Where the model type `tp` (with its field's `bounds`) and the CRD schema `node` differ."""
    out = [f"{where}: {kw} is {node.get(kw)!r} in the CRD, {getattr(bounds, attr)!r} in the model"
           for kw, attr in BOUND_KEYWORDS.items() if node.get(kw) != getattr(bounds, attr)]
    args = [a for a in get_args(tp) if a is not type(None)]
    if get_origin(tp) in (Union, types.UnionType) and set(args) == {int, str}:
        return out + ([] if node.get("x-kubernetes-int-or-string") else [f"{where}: not int-or-string in the CRD"])
    if get_origin(tp) in (Union, types.UnionType):
        (tp,) = args
    if tp is Any:
        return out + ([] if node.get("x-kubernetes-preserve-unknown-fields") else [f"{where}: not preserved"])
    if get_origin(tp) is Literal:
        same = node.get("type") == "string" and set(node.get("enum", ())) == set(get_args(tp))
        return out + ([] if same else [f"{where}: enum {node.get('enum')} in the CRD, {get_args(tp)} in the model"])
    if tp in SCALARS:
        return out + ([] if node.get("type") == SCALARS[tp] else [f"{where}: {node.get('type')} vs {tp.__name__}"])
    if get_origin(tp) is tuple:
        if node.get("type") != "array":
            return [*out, f"{where}: not an array in the CRD"]
        return out + disagreements(get_args(tp)[0], node["items"], f"{where}[]", bounds.each or Bounds())
    if get_origin(tp) is dict:
        if tp == dict[str, Any] and "properties" in node:
            return out  # a rules file item: the engine's keys (test_falcorule_items_are_the_engines_keys)
        if node.get("type") != "object" or "additionalProperties" not in node:
            return [*out, f"{where}: not a map in the CRD"]
        return out + disagreements(get_args(tp)[1], node["additionalProperties"], f"{where}.*", bounds.each or Bounds())
    assert dataclasses.is_dataclass(tp), tp
    return out + object_disagreements(tp, node, where)


def object_disagreements(cls: type, node: Mapping[str, Any], where: str) -> list[str]:
    keys, props = describe(cls), node.get("properties") or {}
    out = [f"{where}.{k}: in the model only" for k in keys if k not in props]
    out += [f"{where}.{k}: in the CRD only (nothing reads it)" for k in props if k not in keys]
    required = {k for k, key in keys.items() if key.required}
    if required != set(node.get("required", ())):
        out.append(f"{where}: required {sorted(node.get('required', ()))} in the CRD, {sorted(required)} in the model")
    if node.get("x-kubernetes-validations") and "__post_init__" not in vars(cls):
        out.append(f"{where}: the CRD's CEL rule has no check in {cls.__name__}")
    for k, key in keys.items():
        if k not in props:
            continue
        prop = props[k]
        plain_default = key.default if not dataclasses.is_dataclass(key.type) else None
        nested_default = dataclasses.is_dataclass(key.type) and key.default not in (None, encode(key.type()))
        if prop.get("default") != plain_default or nested_default:
            out.append(f"{where}.{k}: default {prop.get('default')!r} in the CRD, {key.default!r} in the model")
        out += disagreements(key.type, prop, f"{where}.{k}", key.bounds)
    return out


@pytest.mark.parametrize(("kind", "model"), [("FalcoInstance", FalcoInstanceSpec), ("FalcoRule", FalcoRuleSpec)])
def test_model_and_crd_agree(kind: str, model: type) -> None:
    assert object_disagreements(model, spec_schema(kind), "spec") == []


def test_falcorule_items_are_the_engines_keys() -> None:
    item = spec_schema("FalcoRule")["properties"]["items"]["items"]
    engine_keys = (collector._RULE_KEYS | collector._MACRO_KEYS | collector._LIST_KEYS
                   | {"required_engine_version", "required_plugin_versions"})
    assert set(item["properties"]) == engine_keys


def test_the_agreement_check_can_fail() -> None:
    """A changed default, bound, enum or a property nothing reads is found."""
    schema = spec_schema("FalcoInstance")
    props = schema["properties"]
    broken = {**schema, "properties": {
        **props,
        "bufferSizeBytes": {**props["bufferSizeBytes"], "maximum": 1 << 40},
        "ruleMatching": {**props["ruleMatching"], "enum": ["first"]},
        "image": {**props["image"], "default": "other"},
        "unread": {"type": "string"},
    }}
    found = "\n".join(object_disagreements(FalcoInstanceSpec, broken, "spec"))
    for fragment in ("bufferSizeBytes: maximum", "ruleMatching: enum", "image: default", "unread: in the CRD only"):
        assert fragment in found


def test_defaults_live_in_the_model() -> None:
    spec = parse_instance(None)
    assert (spec.image, spec.engine.min_priority, spec.buffer_size_bytes) == (
        "ghcr.io/falconer/falconer:0.1.0", "debug", 8 << 20)
    assert parse_instance({}) == spec and encode(spec)["outputs"]["falcoAlerts"] is True


@pytest.mark.parametrize(("raw", "message"), [
    ({"ruleSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     "spec.ruleSelector.matchExpressions[0].values: operator In for key 'a' needs values"),
    ({"bufferSizeBytes": 1 << 40}, "spec.bufferSizeBytes: must be at most 536870912"),
    ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory: must match"),
    ({"selection": [{"action": "disable"}]}, "spec.selection[0]: a selection action names exactly one"),
    ({"outputs": {"http": {}}}, "spec.outputs.http.url: required"),
    ({"minPriority": "LOUD"}, "spec.minPriority: must match"),
    ({"appendOutput": [{"extra_fields": [["x"]]}]}, "spec.appendOutput: append_output[0].extra_fields[0]"),
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy: expected one of Always, IfNotPresent, Never"),
    ({"nodeSelectr": {}}, "spec.nodeSelectr: unknown key"),
])
def test_what_the_crd_would_refuse_the_model_refuses_by_path(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ShapeError) as info:
        parse_instance(raw)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(("raw", "path"), [
    (None, "spec"), ({}, "spec.items"), ({"items": "x"}, "spec.items"), ({"items": [1]}, "spec.items[0]"),
    ({"items": [], "order": "first"}, "spec.order"),
])
def test_falcorule_shapes(raw: Any, path: str) -> None:
    with pytest.raises(ShapeError) as info:
        parse_rule(raw)
    assert str(info.value).startswith(path + ":")


def test_selector_shape() -> None:
    sel = parse_instance({"ruleSelector": {"matchLabels": {"a": "b"}}}).rule_selector
    assert sel == LabelSelector(match_labels={"a": "b"})
