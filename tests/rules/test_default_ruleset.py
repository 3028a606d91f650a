"""The default ruleset's contract, checked statically (no kernel needed).

It loads cleanly, has at least 40 rules, each described, MITRE-tagged and printing the
analyst's fields, uses only fields the sensor answers, keeps its override points empty,
and every rule has a firing test and a near miss in the suites CI runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from falconer import paths
from falconer.engine import Engine
from falconer.ruletest import suite
from falconer.sensor.event import FIELDS

SUITES = sorted((paths.RULES_DIR / "tests").glob("*.yaml"))
POD_SUITES = sorted((paths.RULES_DIR / "tests" / "pods").glob("*.yaml"))
#: Field classes a rule may name; a token like `proc.name` inside a condition or output.
_FIELD = re.compile(r"(?<![\w/.\-%])%?((?:evt|proc|fd|user|group|container|k8s|thread)"
                    r"\.[a-z_.]*[a-z_])")
#: Fields the cluster-sensor enrichment answers from the pod's metadata (PodMeta), <NA>
#: on the host; every default output prints them so an analyst sees the workload.
ENRICHMENT_FIELDS = {"container.image.repository", "k8s.pod.name", "k8s.ns.name"}
ANALYST_FIELDS = ("user.name", "container.id", "container.image.repository", "k8s.pod.name",
                  "k8s.ns.name")
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")


def _items() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for path in paths.default_rules_files():
        out += yaml.safe_load(path.read_text(encoding="utf-8"))
    return out


RULES = [i for i in _items() if "rule" in i]


def test_loads_cleanly_with_forty_rules_or_more() -> None:
    engine = Engine()
    result = engine.load(paths.default_rules_files())
    assert result.errors == [] and result.warnings == []
    assert engine.ruleset is not None
    assert len(engine.ruleset.rules) >= 40


def test_files_split_by_maturity_in_load_order() -> None:
    names = [p.name for p in paths.default_rules_files()]
    assert names == ["falconer_rules.yaml", "falconer_rules_incubating.yaml"]


@pytest.mark.parametrize("path", paths.default_rules_files(), ids=lambda p: p.name)
def test_each_file_loads_on_its_own(path: Path) -> None:
    # The operator validates every FalcoRule (one file each) alone.
    result = Engine().load([path])
    assert result.errors == [] and result.warnings == []


def test_shared_building_blocks_agree_word_for_word() -> None:
    defined: dict[tuple[str, str], list[object]] = {}
    for path in paths.default_rules_files():
        for item in yaml.safe_load(path.read_text(encoding="utf-8")):
            for kind in ("list", "macro"):
                if kind in item:
                    defined.setdefault((kind, item[kind]), []).append(
                        item.get("items", item.get("condition")))
    repeated = {k: v for k, v in defined.items() if len(v) > 1}
    assert repeated, "the incubating file repeats the stable file's building blocks"
    for key, versions in repeated.items():
        assert all(v == versions[0] for v in versions), key


@pytest.mark.parametrize("rule", RULES, ids=[str(r["rule"]) for r in RULES])
def test_rule_is_documented_and_mitre_tagged(rule: dict[str, object]) -> None:
    assert len(str(rule["desc"]).split()) >= 10
    assert rule["priority"] in suite.PRIORITIES
    tags = [str(t) for t in rule["tags"]]  # type: ignore[attr-defined]
    assert any(t.startswith("mitre_") for t in tags), tags
    assert any(_TECHNIQUE.match(t) for t in tags), tags
    output = str(rule["output"])
    for field in ANALYST_FIELDS:
        assert f"%{field}" in output, field
    assert "%proc.name" in output or "%proc.cmdline" in output


@pytest.mark.parametrize("rule", RULES, ids=[str(r["rule"]) for r in RULES])
def test_rule_uses_only_fields_the_sensor_answers(rule: dict[str, object]) -> None:
    used = set(_FIELD.findall(f"{rule['condition']} {rule['output']}"))
    unknown = {f for f in used
               if f not in FIELDS and not f.startswith("evt.arg.") and f not in ENRICHMENT_FIELDS}
    assert unknown == set()


def test_macros_use_only_fields_the_sensor_answers() -> None:
    for item in _items():
        if "macro" in item:
            used = set(_FIELD.findall(str(item["condition"])))
            assert {f for f in used if f not in FIELDS} == set(), item["macro"]


def test_override_points_are_empty() -> None:
    for item in _items():
        name = str(item.get("list") or item.get("macro") or "")
        if name.startswith("user_known_"):
            assert item.get("items", []) == [] or item.get("condition") == "(never_true)", name
    used = " ".join(str(r["condition"]) for r in RULES)
    for item in _items():
        name = str(item.get("list") or item.get("macro") or "")
        if name.startswith("user_known_"):
            assert name in used, f"{name} is not used by any rule"


def test_every_rule_has_a_firing_test_and_a_near_miss() -> None:
    assert suite.coverage([str(r["rule"]) for r in RULES], suite.load(SUITES)) == {}


#: Rules about containers only (tagged `container`, not `host`) that the pod suites cannot
#: prove, and why; their host-suite cases run in a container cgroup of the runner's own.
NOT_IN_PODS = {
    "Container contacted a cloud metadata endpoint":
        "a pod's connection to 169.254.169.254 would leave this host; the host suite "
        "gives the address to a network namespace of its own",
}


def test_every_container_rule_is_proven_in_a_pod() -> None:
    container_rules = [str(r["rule"]) for r in RULES
                       if "container" in r["tags"] and "host" not in r["tags"]]  # type: ignore[operator]
    assert set(NOT_IN_PODS) <= set(container_rules)
    wanted = [r for r in container_rules if r not in NOT_IN_PODS]
    pods = suite.load(POD_SUITES)
    tested = {t.rule for t in pods}
    others = sorted(r for r in tested if r is not None and r not in wanted)
    assert suite.coverage(wanted + others, pods) == {}
    assert {str(r["rule"]) for r in RULES} >= tested - {None}


def test_host_suites_need_no_cluster() -> None:
    # Pod contexts live in rules/tests/pods/ (they need a cluster with a node here).
    assert [t.name for t in suite.load(SUITES) if t.context.pod is not None] == []
    pods = suite.load(POD_SUITES)
    assert pods and all(t.context.pod is not None for t in pods)


def test_rule_text_is_falconers_own() -> None:
    """No condition or output is copied from Falco's shipped rules."""
    anchors = Path(paths.ROOT.parent / "shared" / "anchors" / "falco-rules")
    if not anchors.is_dir():
        pytest.skip("Falco's rules files are not on this machine")
    theirs: set[str] = set()
    for path in anchors.glob("*.yaml"):
        for item in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            if isinstance(item, dict):
                for key in ("condition", "output", "desc"):
                    if key in item:
                        theirs.add(" ".join(str(item[key]).split()))
    ours = {" ".join(str(i[k]).split()) for i in _items() for k in ("condition", "output", "desc")
            if k in i}
    assert ours & theirs <= {"(evt.num = 0)", "(never_true)"}  # the override convention
