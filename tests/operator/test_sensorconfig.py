"""falconer.yaml's one codec (falconer.sensorconfig): what the operator writes, the
sensor reads back unchanged; what neither would accept is refused with its position."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falconer import sensorconfig
from falconer.operator import render
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import parse_instance
from falconer.sensor import config as sensor_config
from falconer.sensorconfig import (
    AppendOutputEntry,
    AppendOutputMatch,
    ConfigError,
    EngineSettings,
    FalconerConfig,
    GrpcOutput,
    HttpOutput,
    InstanceRef,
    Outputs,
    RateLimit,
    RulesOrigin,
    SelectionAction,
    StdoutOutput,
)
from falconer.shapes import ShapeError

# Any Unicode but surrogates (not encodable) and the controls YAML will not carry.
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
NAME = st.from_regex(r"\A[a-z0-9][-a-z0-9.]{0,30}\Z")
PRIORITIES = st.sampled_from(["emergency", "Alert", "CRITICAL", "error", "warning", "notice", "info",
                              "informational", "debug"])


@st.composite
def selection(draw: st.DrawFn) -> SelectionAction:
    action = draw(st.sampled_from(["enable", "disable"]))
    pattern = draw(TEXT.filter(bool))
    return SelectionAction(action, rule=pattern) if draw(st.booleans()) else SelectionAction(action, tag=pattern)


APPEND = st.builds(
    AppendOutputEntry,
    match=st.none() | st.builds(AppendOutputMatch, source=st.none() | TEXT, rule=st.none() | TEXT,
                                tags=st.none() | st.tuples(TEXT)),
    extra_output=st.none() | TEXT,
    suggested_output=st.none() | st.booleans(),
    extra_fields=st.none() | st.lists(NAME | st.dictionaries(NAME, TEXT, min_size=1, max_size=1),
                                      max_size=3, unique_by=lambda f: f if isinstance(f, str) else next(iter(f)))
    .map(tuple),
)
OUTPUTS = st.builds(
    Outputs,
    stdout=st.builds(StdoutOutput, enabled=st.booleans(), format=st.sampled_from(["text", "json"])),
    kubernetes_events=st.booleans(),
    falco_alerts=st.booleans(),
    http=st.none() | st.builds(HttpOutput, url=st.sampled_from(["http://", "https://"]).flatmap(
        lambda scheme: NAME.map(lambda host: scheme + host))),
    grpc=st.none() | st.builds(GrpcOutput, port=st.none() | st.integers(1, 65535)),
    rate_limit=st.builds(RateLimit, per_second=st.floats(0, 1e6, allow_nan=False), burst=st.integers(1, 10**9)),
)
CONFIGS = st.builds(
    FalconerConfig,
    rules_hash=st.text("0123456789abcdef", max_size=16),
    instance=st.builds(InstanceRef, namespace=NAME, name=NAME),
    rules_files=st.lists(NAME.map(lambda n: f"rules-{n}.yaml"), max_size=5).map(tuple),
    falco_rules=st.lists(st.builds(RulesOrigin, key=NAME, namespace=NAME, name=NAME,
                                   generation=st.integers(0, 2**62)), max_size=3).map(tuple),
    engine=st.builds(EngineSettings, min_priority=PRIORITIES, rule_matching=st.sampled_from(["first", "all"]),
                     selection=st.lists(selection(), max_size=3).map(tuple),
                     append_output=st.lists(APPEND, max_size=3).map(tuple)),
    outputs=OUTPUTS,
    buffer_size_bytes=st.integers(sensorconfig.MIN_BUFFER_BYTES, sensorconfig.MAX_BUFFER_BYTES),
    cluster_domain=st.sampled_from(["cluster.local", "corp.example", "k8s-1.internal"]),
)


@settings(max_examples=150, deadline=None)
@given(CONFIGS)
def test_every_config_round_trips(config: FalconerConfig) -> None:
    assert sensorconfig.load(sensorconfig.dump(config), "falconer.yaml") == config


@settings(max_examples=50, deadline=None)
@given(CONFIGS)
def test_what_the_codec_writes_the_sensor_reads(config: FalconerConfig) -> None:
    read = sensor_config.parse(sensorconfig.dump(config), Path("/etc/falconer/falconer.yaml"))
    assert read.file == config
    assert read.rules_files == tuple(Path("/etc/falconer") / f for f in config.rules_files)
    assert read.engine.selection == tuple(a.triple() for a in config.engine.selection)


def test_the_operators_rendered_configmap_loads_in_the_sensors_reader(tmp_path: Path) -> None:
    """The whole path: a FalcoInstance spec with every setting, rendered by the operator,
    written to disk as kubelet mounts the ConfigMap, read by the sensor's RulesInput."""
    spec = {"minPriority": "Warning", "ruleMatching": "all", "bufferSizeBytes": 1 << 20,
            "selection": [{"action": "disable", "tag": "network"}],
            "appendOutput": [{"match": {"tags": ["k8s"]}, "extra_output": "ns=%k8s.ns.name 🚨"}],
            "outputs": {"stdout": {"format": "text"}, "kubernetesEvents": True, "rateLimit": {"perSecond": 2.5}}}
    instance = {"metadata": {"name": "prod", "namespace": "sec", "uid": "u"}, "spec": spec}
    files = [RuleText("base", "- list: l\n  items: [a]\n"), RuleText("falconer", "[]\n")]
    cm = render.render_instance(instance, parse_instance(spec), files, {"base": 3}).configmap
    for key, text in cm["data"].items():
        (tmp_path / key).write_text(text)
    snap = sensor_config.RulesInput(config=tmp_path / sensorconfig.CONFIG_FILE).read()
    assert snap.config is not None
    got = snap.config
    assert got.instance == "sec/prod" and got.rules_hash == cm["metadata"]["annotations"]["falconer.io/rules-hash"]
    assert [Path(s.name).name for s in snap.sources] == ["rules-base.yaml", "rules-falconer.yaml"]
    assert got.engine.min_priority == "Warning" and got.engine.rule_matching == "all"
    assert got.engine.selection == (("disable", "tag", "network"),)
    assert [a.extra_output for a in got.engine.append_output] == ["ns=%k8s.ns.name 🚨"]
    assert (got.json_output, got.kubernetes_events, got.falco_alerts, got.rate_per_second) == (False, True, True, 2.5)
    assert got.falco_rules == (RulesOrigin("rules-base.yaml", "sec", "base", 3),
                               RulesOrigin("rules-falconer.yaml", "sec", "falconer", 0))


@pytest.mark.parametrize(("change", "path"), [
    ({"buffer_size_bytes": 1 << 40}, "bufferSizeBytes"),
    ({"cluster_domain": ".local."}, "clusterDomain"),
    ({"engine": EngineSettings(min_priority="loud")}, "engine.minPriority"),
    ({"outputs": Outputs(rate_limit=RateLimit(burst=0))}, "outputs.rateLimit.burst"),
])
def test_dump_refuses_what_load_would(change: dict[str, object], path: str) -> None:
    """The writer checks its output with the reader's decoder: the operator cannot render
    a falconer.yaml the sensor rejects."""
    with pytest.raises(ShapeError) as info:
        sensorconfig.dump(dataclasses.replace(FalconerConfig(rules_files=()), **change))
    assert info.value.path[: len(path.split("."))] == tuple(path.split("."))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: SelectionAction("enable"), "exactly one of rule or tag"),
    (lambda: FalconerConfig(rules_files=("../x.yaml",)), "rulesFiles[0]"),
    (lambda: EngineSettings(append_output=(AppendOutputEntry(extra_fields=([1],)),)), "appendOutput"),
])
def test_constructors_check_what_types_cannot_say(make: object, message: str) -> None:
    with pytest.raises(ShapeError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make()  # type: ignore[operator]


def test_errors_name_line_column_and_key_path() -> None:
    text = "rulesFiles: []\noutputs:\n  grpc:\n    port: 70000\n"
    with pytest.raises(ConfigError, match=r"^/etc/f.yaml:4:11: outputs.grpc.port: must be at most 65535, got 70000$"):
        sensorconfig.load(text, "/etc/f.yaml")
