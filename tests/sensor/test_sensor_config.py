"""`falconer sensor --config`: the FalcoInstance configuration and its hot reload through
a kubelet-style ConfigMap volume (`..data` symlink swap)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from falconer.engine import FALCO_DEFAULT_APPEND_OUTPUT, EngineOptions, parse_append_output
from falconer.sensor import config
from falconer.sensorconfig import HttpOutput
from falconer_e2e import configmap_volume

RULE = """
- rule: {name}
  desc: a test rule
  condition: evt.type = {evt} and {field} startswith {prefix}
  output: "{name} saw %{field}"
  priority: {priority}
"""


def falconer_yaml(files: list[str], min_priority: str = "debug", **extra: object) -> str:
    """falconer.yaml as a hand-written file (the operator's is falconer.sensorconfig.dump's)."""
    return yaml.safe_dump({
        "instance": {"namespace": "security", "name": "default"},
        "rulesFiles": files,
        "engine": {"minPriority": min_priority, "ruleMatching": "first", "selection": []},
        "outputs": {},
        "bufferSizeBytes": 1 << 20,
        **extra,
    }, sort_keys=False)


def swap(volume: Path, files: dict[str, str]) -> None:
    """A kubelet update whose new files carry the OLD mtimes: only content can tell."""
    before = {k: (volume / k).stat().st_mtime for k in files if (volume / k).exists()}
    assert configmap_volume.write(volume, files)
    for key, mtime in before.items():
        os.utime(volume / key, (mtime, mtime))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "falconer", "sensor", *args], text=True,
                          capture_output=True, timeout=120, cwd="/",
                          env=dict(os.environ, PYTHONSAFEPATH="1"))


# -- the configuration file ------------------------------------------------------------


def test_config_names_rules_relative_to_its_folder_and_sets_the_engine(tmp_path):
    cfg = config.parse(falconer_yaml(["a.yaml", "b.yaml"], "warning",
                                     engine={"minPriority": "warning", "ruleMatching": "all",
                                             "selection": [{"action": "disable", "tag": "network"}]},
                                     outputs={"stdout": {"format": "text"}, "http": {"url": "http://x"}}),
                       tmp_path / "falconer.yaml")
    assert cfg.instance == "security/default"
    assert cfg.rules_files == (tmp_path / "a.yaml", tmp_path / "b.yaml")
    assert cfg.engine == EngineOptions("warning", "all", (("disable", "tag", "network"),),
                                       append_output=FALCO_DEFAULT_APPEND_OUTPUT)
    assert (cfg.json_output, cfg.stdout_enabled, cfg.outputs.http) == (False, True, HttpOutput("http://x"))
    assert cfg.buffer_pages == (1 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert cfg.cluster_domain == "cluster.local"


def test_tenant_files_load_in_their_namespace_scope(tmp_path):
    """falcoRules[].tenant puts a file in that namespace's scope (falconer.engine.scope)."""
    (tmp_path / "cluster.yaml").write_text(RULE.format(name="Cluster", evt="openat",
                                                       field="fd.name", prefix="/etc",
                                                       priority="warning"))
    (tmp_path / "tenant.yaml").write_text(RULE.format(name="Mine", evt="openat", field="fd.name",
                                                      prefix="/srv", priority="notice"))
    origins = [{"key": "cluster.yaml", "namespace": "", "name": "c", "generation": 1},
               {"key": "tenant.yaml", "namespace": "team-a", "name": "t", "generation": 2,
                "tenant": "team-a"}]
    (tmp_path / "falconer.yaml").write_text(falconer_yaml(
        ["cluster.yaml", "tenant.yaml"], falcoRules=origins, tenantMaxPriority="error"))
    snap = config.RulesInput(config=tmp_path / "falconer.yaml").read()
    assert [getattr(s, "namespace", None) for s in snap.sources] == ["", "team-a"]
    assert snap.engine.tenant_max_priority == "error"
    assert snap.config is not None and snap.config.falco_rules[1].tenant == "team-a"


def test_cluster_domain_names_the_services(tmp_path):
    cfg = config.parse(falconer_yaml(["a.yaml"], clusterDomain="corp.example"), tmp_path / "falconer.yaml")
    assert cfg.cluster_domain == "corp.example"


def test_append_output_is_falcos_setting(tmp_path):
    """engine.appendOutput holds falco.yaml's append_output entries; none given means
    Falco's shipped default (suggested_output), an empty list means nothing appended."""
    path = tmp_path / "falconer.yaml"
    extra = [{"match": {"source": "syscall"}, "extra_output": "on %k8s.ns.name"}]
    cfg = config.parse(falconer_yaml(["a.yaml"], engine={"appendOutput": extra}), path)
    assert cfg.engine.append_output == parse_append_output(extra)
    assert config.parse(falconer_yaml(["a.yaml"], engine={"appendOutput": []}), path).engine.append_output == ()
    with pytest.raises(config.ConfigError, match="engine.appendOutput\\[0\\].bogus: unknown key"):
        config.parse(falconer_yaml(["a.yaml"], engine={"appendOutput": [{"bogus": 1}]}), path)
    # What only the engine's own decoder knows is reported at the setting, in its words.
    with pytest.raises(config.ConfigError, match="appendOutput: append_output\\[0\\].extra_fields\\[0\\]"):
        config.parse(falconer_yaml(["a.yaml"], engine={"appendOutput": [{"extra_fields": [[1]]}]}), path)


@pytest.mark.parametrize(("text", "message"), [
    ("rulesFiles: [a.yaml]\nengine: {minPriority: loud}\n", "falconer.yaml:2:23: engine.minPriority: must match"),
    ("rulesFiles: a.yaml\n", "falconer.yaml:1:13: rulesFiles: expected a list, got str 'a.yaml'"),
    ("instance: {name: x}\n", "falconer.yaml:1:1: rulesFiles: required"),
    ("rulesFiles: [a.yaml, 3]\n", "falconer.yaml:1:22: rulesFiles[1]: expected a string, got int 3"),
    ("rulesFiles: [../a.yaml]\n", "rulesFiles[0]: expected a file name in the config's folder"),
    ("rulesFiles: [a.yaml]\nengine: {selection: [{action: drop, rule: x}]}\n",
     "falconer.yaml:2:31: engine.selection[0].action: expected one of enable, disable, got 'drop'"),
    ("rulesFiles: [a.yaml]\nengine: {selection: [{action: drop, rule: x, tag: y}]}\n", "engine.selection[0]"),
    ("rulesFiles: [a.yaml]\nbufferSizeBytes: 100\n", "falconer.yaml:2:18: bufferSizeBytes: must be at least 4096"),
    ("rulesFiles: [a.yaml\nengine: {}\n", "falconer.yaml:2:"),
    ("- just a list\n", "falconer.yaml:1:1: the document: expected a mapping, got a list"),
    ("rulesFiles: [a.yaml]\nclusterDomain: .local.\n", "clusterDomain: must match"),
    ("rulesFiles: [a.yaml]\nclusterDomain: 5\n", "clusterDomain: expected a string, got int 5"),
    ("rulesFiles: [a.yaml]\noutputs: {stdot: {}}\n", "falconer.yaml:2:18: outputs.stdot: unknown key"),
])
def test_bad_config_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, tmp_path / "falconer.yaml")
    assert message in str(info.value) and str(tmp_path / "falconer.yaml") in str(info.value)


def test_buffer_pages_round_down_to_a_power_of_two():
    page = os.sysconf("SC_PAGE_SIZE")
    assert [config.buffer_pages(n) for n in (4096, 3 * page, 8 << 20)] == [1, 2, (8 << 20) // page]


def test_snapshot_digest_follows_content_through_a_symlink_swap(tmp_path):
    volume = tmp_path / "vol"
    data = {"falconer.yaml": falconer_yaml(["r.yaml"]), "r.yaml": "- list: a\n  items: [x]\n"}
    configmap_volume.write(volume, data)
    rules = config.RulesInput(config=volume / "falconer.yaml")
    first = rules.read()
    assert not configmap_volume.write(volume, data)      # same data: kubelet does nothing
    assert rules.read().digest == first.digest
    swap(volume, {**data, "r.yaml": "- list: a\n  items: [y]\n"})
    second = rules.read()
    assert second.digest != first.digest
    assert [s.text for s in second.sources] == ["- list: a\n  items: [y]\n"]
    assert sorted(p.name for p in volume.iterdir() if not p.name.startswith("..")) == [
        "falconer.yaml", "r.yaml"]
    assert len([p for p in volume.iterdir() if p.is_dir() and not p.is_symlink()]) == 1


def test_config_and_rules_are_exclusive():
    r = run_cli("--config", "/x.yaml", "--rules", "/y.yaml")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
    r = run_cli("--config", "/x.yaml", "-o", "priority=error")
    assert r.returncode == 2 and "-o cannot be combined with --config" in r.stderr


def test_missing_or_bad_config_stops_the_start(tmp_path):
    r = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and f"{tmp_path / 'nope.yaml'}: does not exist" in r.stderr
    (tmp_path / "falconer.yaml").write_text(falconer_yaml(["gone.yaml"]))
    r = run_cli("--config", str(tmp_path / "falconer.yaml"))
    assert r.returncode == 2 and "LOAD_ERR_FILE_READ" in r.stderr and "gone.yaml" in r.stderr


# -- a running sensor ----------------------------------------------------------------


def test_config_volume_hot_reload(start_sensor, tmp_path, marker):
    volume = tmp_path / "etc-falconer"
    opened = RULE.format(name="Opened marked file", evt="openat", field="fd.name",
                         prefix=tmp_path / "a_", priority="WARNING")
    quiet = RULE.format(name="Quiet open", evt="openat", field="fd.name",
                        prefix=tmp_path / "a_", priority="INFO")
    configmap_volume.write(volume, {
        "falconer.yaml": falconer_yaml(["quiet.yaml", "opened.yaml"], min_priority="warning"),
        "quiet.yaml": quiet, "opened.yaml": opened})
    sensor = start_sensor("--config", str(volume / "falconer.yaml"))
    assert sensor.wait_stderr("instance security/default")
    (tmp_path / f"a_{marker}").write_text("x")
    # minPriority from the config: the INFO rule is loaded, not enabled.
    assert sensor.rules_for(f"a_{marker}") == {"Opened marked file"}

    # mkdir is needed neither by the first rules nor by the state tracker: it reaches
    # user space only if the reload also updated the kernel-side syscall filter.
    made = RULE.format(name="Made marked dir", evt="mkdir", field="evt.arg.path",
                       prefix=tmp_path / "b_", priority="NOTICE")
    good = {"falconer.yaml": falconer_yaml(["made.yaml"], min_priority="notice"), "made.yaml": made}
    swap(volume, good)
    assert sensor.wait_stderr("rules reloaded (1 rules)")
    (tmp_path / f"b_{marker}").mkdir()
    assert sensor.rules_for(f"b_{marker}") == {"Made marked dir"}

    swap(volume, {**good, "falconer.yaml": "rulesFiles: [made.yaml\n"})
    assert sensor.wait_stderr("reload failed, keeping the previous rules")
    swap(volume, {"made.yaml": made})                      # the config key disappeared
    assert sensor.wait_stderr("falconer.yaml: does not exist")
    swap(volume, {**good, "made.yaml": "- rule: [broken\n"})
    assert sensor.wait_stderr("LOAD_ERR_YAML_PARSE")
    (tmp_path / f"b_{marker}2").mkdir()
    assert sensor.rules_for(f"b_{marker}2") == {"Made marked dir"}
    problems = sum("reload failed" in line for line in sensor.stderr)
    assert problems == 3, sensor.stderr                     # each said once, not every second
    swap(volume, good)                                      # what runs already: no reload
    assert sensor.wait_stderr("the rules input is back to the running rules")
    assert sum("rules reloaded" in line for line in sensor.stderr) == 1


def test_no_rules_is_a_sensor_running_with_none(start_sensor, tmp_path, marker):
    """What the operator renders when an instance selects no FalcoRule (rulesFiles: []):
    the sensor starts, says so, and takes rules as soon as the config names some."""
    volume = tmp_path / "etc-falconer"
    configmap_volume.write(volume, {"falconer.yaml": falconer_yaml([])})
    sensor = start_sensor("--config", str(volume / "falconer.yaml"))
    assert sensor.wait_stderr("falconer sensor: no rules")
    opened = RULE.format(name="Opened marked file", evt="openat", field="fd.name",
                         prefix=tmp_path / "n_", priority="WARNING")
    swap(volume, {"falconer.yaml": falconer_yaml(["opened.yaml"]), "opened.yaml": opened})
    assert sensor.wait_stderr("rules reloaded (1 rules)")
    (tmp_path / f"n_{marker}").write_text("x")
    assert sensor.rules_for(f"n_{marker}") == {"Opened marked file"}
