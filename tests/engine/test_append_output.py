"""`append_output` as falco.yaml configures it: exact text and output_fields keys."""

from __future__ import annotations

import pytest
import yaml

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource
from falconer.engine.appendoutput import (
    AppendOutput, AppendOutputError, ExtraField, parse_append_output,
)

RULES = """\
- rule: Shadow
  desc: d
  condition: evt.type = openat and fd.name = /etc/shadow
  output: "read %fd.name by %proc.name"
  priority: WARNING
  tags: [filesystem, mitre_credential_access]
- rule: Exec
  desc: d
  condition: evt.type = execve
  output: "exec %proc.name"
  priority: NOTICE
  tags: [process]
"""
OPEN = {"evt.type": "openat", "fd.name": "/etc/shadow", "proc.name": "cat", "evt.cpu": 3,
        "container.id": "0123456789ab", "container.name": "web",
        "container.image.repository": "nginx", "container.image.tag": "1.27",
        "k8s.pod.name": "web-0", "k8s.ns.name": "prod"}
EXEC = {"evt.type": "execve", "proc.name": "ls"}


def _alert(config: str, fields: dict[str, object]) -> tuple[str, dict[str, object]]:
    entries = parse_append_output(yaml.safe_load(config)["append_output"])
    engine = Engine(EngineOptions(append_output=entries))
    result = engine.load([RulesSource("r.yaml", RULES)])
    assert result.ok, [d.human() for d in result.errors]
    assert engine.ruleset is not None
    (alert,) = engine.ruleset.evaluate(MappingEvent(fields, time_ns=1_700_000_000_000_000_000))
    doc = alert.to_json("h")
    output_fields = doc["output_fields"]
    assert isinstance(output_fields, dict)
    return alert.output, output_fields


def test_suggested_output_appends_the_container_plugin_fields() -> None:
    text, fields = _alert("append_output: [{suggested_output: true}]", OPEN)
    assert text == ("read /etc/shadow by cat container_id=0123456789ab container_name=web "
                    "container_image_repository=nginx container_image_tag=1.27 "
                    "k8s_pod_name=web-0 k8s_ns_name=prod")
    assert fields == {
        "evt.time": 1_700_000_000_000_000_000, "fd.name": "/etc/shadow", "proc.name": "cat",
        "container.id": "0123456789ab", "container.name": "web",
        "container.image.repository": "nginx", "container.image.tag": "1.27",
        "k8s.pod.name": "web-0", "k8s.ns.name": "prod"}


def test_suggested_output_missing_values_print_na_and_are_null() -> None:
    text, fields = _alert("append_output: [{suggested_output: true}]", EXEC)
    assert text == ("exec ls container_id=<NA> container_name=<NA> "
                    "container_image_repository=<NA> container_image_tag=<NA> "
                    "k8s_pod_name=<NA> k8s_ns_name=<NA>")
    assert fields["container.id"] is None and fields["k8s.ns.name"] is None


def test_extra_output_then_extra_fields_raw_and_formatted() -> None:
    config = """
append_output:
  - match: {source: syscall}
    extra_output: "on CPU %evt.cpu"
    extra_fields:
      - home_directory: "/root %proc.name"
      - container.name
"""
    text, fields = _alert(config, OPEN)
    assert text == "read /etc/shadow by cat on CPU 3"
    assert fields["evt.cpu"] == 3  # a field of extra_output is an output field
    assert fields["home_directory"] == "/root cat"  # formatted: text
    assert fields["container.name"] == "web"  # raw: the field's value, not in the text
    assert "container" not in text


def test_formatted_extra_field_prints_na_and_raw_one_is_null() -> None:
    config = """
append_output:
  - extra_fields: [{img: "%container.image.repository"}, container.id]
"""
    _, fields = _alert(config, EXEC)
    assert fields["img"] == "<NA>"
    assert fields["container.id"] is None


def test_match_by_tags_needs_all_tags_and_by_rule_name() -> None:
    config = """
append_output:
  - match: {tags: [filesystem, mitre_credential_access]}
    extra_output: "(fs)"
  - match: {tags: [filesystem, process]}
    extra_output: "(never)"
  - match: {rule: Exec}
    extra_output: "(exec)"
  - match: {source: k8s_audit}
    extra_output: "(audit)"
"""
    assert _alert(config, OPEN)[0] == "read /etc/shadow by cat (fs)"
    assert _alert(config, EXEC)[0] == "exec ls (exec)"


def test_entries_apply_in_order_each_after_a_blank() -> None:
    config = """
append_output:
  - extra_output: "a=%proc.name"
    suggested_output: true
  - extra_output: "b"
"""
    text, _ = _alert(config, EXEC)
    assert text.startswith("exec ls a=ls container_id=<NA> ")
    assert text.endswith(" k8s_ns_name=<NA> b")


def test_control_characters_in_appended_values_are_escaped_in_text_lines() -> None:
    config = "append_output: [{suggested_output: true}]"
    entries = parse_append_output(yaml.safe_load(config)["append_output"])
    engine = Engine(EngineOptions(append_output=entries))
    engine.load([RulesSource("r.yaml", RULES)])
    assert engine.ruleset is not None
    (alert,) = engine.ruleset.evaluate(MappingEvent({**OPEN, "container.name": "a\nb"}))
    assert "container_name=a\\nb " in alert.text_line()
    assert alert.to_json("h")["output_fields"]["container.name"] == "a\nb"  # type: ignore[index]


def test_bad_field_in_append_output_is_an_output_compile_error() -> None:
    entries = (AppendOutput(extra_output="%proc.nosuch"),)
    result = Engine(EngineOptions(append_output=entries)).load([RulesSource("r.yaml", RULES)])
    # the compile stops at the first error, as in Falco
    assert [(d.code, d.item_name) for d in result.errors] == [("LOAD_ERR_COMPILE_OUTPUT", "Shadow")]
    entries = (AppendOutput(extra_fields=(ExtraField("x", "%nosuch.field", raw=False),)),)
    result = Engine(EngineOptions(append_output=entries)).load([RulesSource("r.yaml", RULES)])
    assert {d.code for d in result.errors} == {"LOAD_ERR_COMPILE_OUTPUT"}


@pytest.mark.parametrize("raw,message", [
    ({"suggested_output": True}, "append_output must be a sequence"),
    (["x"], "append_output[0] must be a mapping"),
    ([{"extra_fields": "a"}], "append_output[0].extra_fields must be a sequence"),
    ([{"extra_fields": ["a", "a"]}], "key 'a' is defined twice"),
    ([{"extra_fields": [{"a": "x", "b": "y"}]}], "one-key mapping"),
    ([{"match": {"tag": ["x"]}}], "match must map source, tags and/or rule"),
    ([{"suggested_output": "yes"}], "suggested_output must be true or false"),
    ([{"extra_outputs": "x"}], "unknown keys ['extra_outputs']"),
])
def test_bad_settings_are_refused_with_the_entry_named(raw: object, message: str) -> None:
    with pytest.raises(AppendOutputError, match=None) as exc:
        parse_append_output(raw)
    assert message in str(exc.value)


def test_parse_keeps_falco_shapes() -> None:
    (entry,) = parse_append_output([{
        "match": {"source": "syscall", "tags": ["a", "b"], "rule": "R"},
        "extra_output": "x", "extra_fields": ["proc.name", {"k": "%fd.name"}],
        "suggested_output": False}])
    assert entry == AppendOutput("syscall", frozenset({"a", "b"}), "R", "x",
                                 (ExtraField("proc.name", "%proc.name", True),
                                  ExtraField("k", "%fd.name", False)), False)
