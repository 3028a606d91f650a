"""Tenant scopes (falconer.engine.scope): isolation, the scope guard, the priority
ceiling, and a matrix of attempts by a tenant to weaken, shadow or escape the cluster's
rules, each refused with a positioned diagnostic."""

from __future__ import annotations

import pytest
from tenant_attacks import ATTACKS, CLUSTER, TENANT_OK, Attack

from falconer.engine.diagnostics import LoadResult
from falconer.engine.engine import Engine, EngineOptions, RulesSource
from falconer.engine.events import MappingEvent

def _load(tenants: dict[str, str], options: EngineOptions | None = None,
          cluster: str = CLUSTER) -> tuple[Engine, LoadResult]:
    engine = Engine(options)
    sources = [RulesSource("cluster.yaml", cluster)]
    sources += [RulesSource(f"{ns}/rules.yaml", text, ns) for ns, text in tenants.items()]
    return engine, engine.load(sources)


def _exec(name: str, ns: str | None, pname: str = "containerd-shim") -> MappingEvent:
    fields: dict[str, object] = {"evt.type": "execve", "proc.name": name, "proc.pname": pname,
                                 "evt.num": 7}
    if ns is not None:
        fields["k8s.ns.name"] = ns
    return MappingEvent(fields)


def _fired(engine: Engine, event: MappingEvent) -> list[tuple[str, str]]:
    assert engine.ruleset is not None
    return [(a.namespace, a.rule) for a in engine.ruleset.evaluate(event)]


def test_tenant_uses_cluster_lists_and_macros_and_fires_only_in_its_namespace() -> None:
    engine, result = _load({"team-a": TENANT_OK})
    assert result.ok, result.errors
    assert result.counts == {"rules": 2, "macros": 4, "lists": 2}
    assert _fired(engine, _exec("curl", "team-a")) == [("team-a", "Tool run")]
    assert _fired(engine, _exec("curl", "team-b")) == []
    assert _fired(engine, _exec("curl", None)) == []          # host events: no namespace
    # the cluster rule fires everywhere, the host included
    for ns in ("team-a", "team-b", None):
        assert _fired(engine, _exec("bash", ns)) == [("", "Shell in container")]


def test_guard_is_added_to_the_tree_not_trusted_to_the_text() -> None:
    escape = TENANT_OK.replace("condition: my_tool_run",
                               "condition: my_tool_run or k8s.ns.name = team-b")
    engine, result = _load({"team-a": escape})
    assert result.ok, result.errors
    assert _fired(engine, _exec("vi", "team-b")) == []
    assert _fired(engine, _exec("curl", "team-a")) == [("team-a", "Tool run")]
    assert engine.ruleset is not None
    rule = next(r for r in engine.ruleset.rules if r.namespace == "team-a")
    assert "k8s.ns.name" in rule.fields


def test_two_tenants_may_use_the_same_names_without_seeing_each_other() -> None:
    b_text = TENANT_OK.replace("[curl, wget]", "[nc]").replace("Notice", "Informational")
    engine, result = _load({"team-a": TENANT_OK, "team-b": b_text})
    assert result.ok, result.errors
    assert _fired(engine, _exec("curl", "team-a")) == [("team-a", "Tool run")]
    assert _fired(engine, _exec("curl", "team-b")) == []
    assert _fired(engine, _exec("nc", "team-b")) == [("team-b", "Tool run")]
    assert _fired(engine, _exec("nc", "team-a")) == []


def test_disabling_a_tenant_rule_does_not_disable_another_tenants_namesake() -> None:
    a_text = TENANT_OK + "- rule: Tool run\n  enabled: false\n  override: {enabled: replace}\n"
    engine, result = _load({"team-a": a_text, "team-b": TENANT_OK})
    assert result.ok, result.errors
    assert _fired(engine, _exec("curl", "team-a")) == []
    assert _fired(engine, _exec("curl", "team-b")) == [("team-b", "Tool run")]


def test_tenant_rules_come_after_cluster_rules_with_rule_matching_first() -> None:
    catch_all = TENANT_OK.replace("condition: my_tool_run", "condition: spawned_process")
    engine, result = _load({"team-a": catch_all}, EngineOptions(rule_matching="first"))
    assert result.ok, result.errors
    assert _fired(engine, _exec("bash", "team-a")) == [("", "Shell in container")]
    assert _fired(engine, _exec("ls", "team-a")) == [("team-a", "Tool run")]


def test_the_ceiling_is_an_option() -> None:
    loud = TENANT_OK.replace("Notice", "Critical")
    assert _load({"team-a": loud}, EngineOptions(tenant_max_priority="critical"))[1].ok
    with pytest.raises(ValueError, match="ceiling"):
        Engine(EngineOptions(tenant_max_priority="loud"))


def test_invalid_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="namespace"):
        _load({"Team_A": TENANT_OK})


def test_a_broken_tenant_keeps_the_previous_ruleset_and_others_are_still_reported() -> None:
    engine, result = _load({"team-a": TENANT_OK})
    assert result.ok
    before = engine.ruleset
    broken_a = TENANT_OK.replace("my_tool_run\n  output", "my_tool_run and\n  output")
    result = engine.load([RulesSource("cluster.yaml", CLUSTER),
                          RulesSource("a.yaml", broken_a, "team-a"),
                          RulesSource("b.yaml", "- rule: Shell in container\n  enabled: false\n",
                                      "team-b")])
    assert [(d.file, d.code) for d in result.errors] == [
        ("a.yaml", "LOAD_ERR_COMPILE_CONDITION"), ("b.yaml", "LOAD_ERR_VALIDATE")]
    assert engine.ruleset is before


# -- the attack matrix (tests/support/tenant_attacks.py) -----------------------------------


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_attack_is_refused_at_the_item(attack: Attack) -> None:
    engine, result = _load({"team-a": attack.text})
    assert engine.ruleset is None
    assert len(result.errors) == 1, result.errors
    err = result.errors[0]
    assert (err.code, err.file, err.line, err.column) == \
        ("LOAD_ERR_VALIDATE", "team-a/rules.yaml", attack.line, attack.column), err.human()
    assert attack.message in err.message
    assert err.item_index >= 0


def test_a_tenant_cannot_use_or_touch_another_tenants_items() -> None:
    uses = "- rule: B\n  desc: x\n  condition: my_tool_run\n  output: x\n  priority: Notice\n"
    result = _load({"team-a": TENANT_OK, "team-b": uses})[1]
    assert [(e.file, e.line, e.message) for e in result.errors] == [
        ("team-b/rules.yaml", 3, "Undefined macro 'my_tool_run' used in filter.")]
    touches = "- rule: Tool run\n  enabled: false\n  override: {enabled: replace}\n"
    result = _load({"team-a": TENANT_OK, "team-b": touches})[1]
    assert [(e.file, e.line) for e in result.errors] == [("team-b/rules.yaml", 1)]
    assert "no rule by that name already exists" in result.errors[0].message


def test_cluster_macros_keep_their_meaning_in_a_tenant() -> None:
    # the cluster macro names `extra_shells` as a bare value; a tenant list of that name
    # must not be substituted into it
    cluster = CLUSTER + "- macro: odd_shell\n  condition: proc.name in (extra_shells)\n"
    tenant = ("- list: extra_shells\n  items: [curl]\n"
              "- rule: Odd\n  desc: x\n  condition: spawned_process and odd_shell\n"
              "  output: x\n  priority: Notice\n")
    engine, result = _load({"team-a": tenant}, cluster=cluster)
    assert result.ok, result.errors
    assert _fired(engine, _exec("curl", "team-a")) == []
    assert _fired(engine, _exec("extra_shells", "team-a")) == [("team-a", "Odd")]
