"""Rendering a FalcoInstance: valid Kubernetes objects, least privilege, stable hashes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from falconer.operator import render
from falconer.operator.ruleyaml import RuleText
from falconer.sensorreport import RulesOrigin

INSTANCE = {
    "apiVersion": "falconer.io/v1alpha1",
    "kind": "FalcoInstance",
    "metadata": {"name": "prod", "namespace": "security", "uid": "0f0e-1"},
    "spec": {
        "ruleSelector": {"matchLabels": {"set": "base"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
        "resources": {"limits": {"memory": "512Mi"}},
        "minPriority": "notice",
        "selection": [{"action": "disable", "tag": "network"}, {"action": "enable", "rule": "Read*"}],
        "outputs": {"grpc": {"port": 5060}},
    },
}
FILES = [RuleText("base", "- macro: m\n  condition: proc.name = x\n"), RuleText("extra", "[]\n")]


def rendered(instance: dict[str, Any] = INSTANCE, files: list[RuleText] = FILES) -> render.Rendered:
    return render.render_instance(instance, files)


@pytest.mark.parametrize("kind", ["ServiceAccount", "ClusterRoleBinding", "Role", "RoleBinding", "ConfigMap",
                                  "DaemonSet"])
def test_objects_are_valid_kubernetes(kind: str) -> None:
    (obj,) = [o for o in rendered().objects() if o["kind"] == kind]
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_namespaced_objects_are_owned_by_the_instance() -> None:
    for obj in rendered().objects():
        if obj["kind"] == "ClusterRoleBinding":
            assert "ownerReferences" not in obj["metadata"]  # cluster-scoped: finalizer deletes it
            continue
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref == {"apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance", "name": "prod",
                       "uid": "0f0e-1", "controller": True, "blockOwnerDeletion": True}
        assert obj["metadata"]["namespace"] == "security"


def test_daemonset_has_exactly_the_sensor_privileges() -> None:
    pod = rendered().daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert pod["hostPID"] is True and "hostNetwork" not in pod
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"],
                                  "add": ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"]}
    mounts = {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]}
    assert mounts == {"/etc/falconer": True, "/host/proc": True, "/sys/kernel/tracing": True,
                      "/sys/kernel/debug": True, "/lib/modules": True, "/usr/src": True, "/tmp": False,
                      "/run/containerd/containerd.sock": True}
    assert container["args"][-2:] == ["--cri-socket", "/run/containerd/containerd.sock"]

    assert pod["serviceAccountName"] == rendered().serviceaccount["metadata"]["name"]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert container["ports"] == [{"name": "grpc", "containerPort": 5060, "protocol": "TCP"}]

def test_no_cri_socket_means_no_mount() -> None:
    inst = {**INSTANCE, "spec": {**INSTANCE["spec"], "criSocket": ""}}
    pod = rendered(inst).daemonset["spec"]["template"]["spec"]
    assert "--cri-socket" not in pod["containers"][0]["args"]
    assert all(v["name"] != "cri-socket" for v in pod["volumes"])


def test_binding_targets_the_sensor_role_and_account() -> None:
    crb = rendered().clusterrolebinding
    assert crb["roleRef"]["name"] == render.SENSOR_CLUSTER_ROLE
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "prod-sensor", "namespace": "security"}]


def test_configmap_holds_config_and_rules_in_order() -> None:
    cm = rendered().configmap
    config = yaml.safe_load(cm["data"]["falconer.yaml"])
    assert config["rulesFiles"] == ["rules-base.yaml", "rules-extra.yaml"]
    assert config["engine"] == {"minPriority": "notice", "ruleMatching": "first",
                                "selection": [["disable", "tag", "network"], ["enable", "rule", "Read*"]],
                                "appendOutput": [{"suggested_output": True}]}
    assert cm["data"]["rules-base.yaml"] == FILES[0].text
    assert cm["metadata"]["annotations"]["falconer.io/rules-hash"] == rendered().rules_hash


def test_rendering_is_deterministic() -> None:
    assert rendered() == rendered()


def test_rule_change_changes_rules_hash_not_pod_template() -> None:
    changed = rendered(files=[RuleText("base", "- macro: m\n  condition: proc.name = y\n"), FILES[1]])
    assert changed.rules_hash != rendered().rules_hash
    assert changed.daemonset == rendered().daemonset


def test_instance_change_rolls_the_daemonset() -> None:
    other = {**INSTANCE, "spec": {**INSTANCE["spec"], "image": "example.org/falconer:2"}}
    ann = "falconer.io/config-hash"
    before = rendered().daemonset["spec"]["template"]["metadata"]["annotations"][ann]
    after = rendered(other).daemonset["spec"]["template"]["metadata"]["annotations"][ann]
    assert before != after


def test_selector_change_does_not_roll_the_daemonset() -> None:
    other = {**INSTANCE, "spec": {**INSTANCE["spec"], "ruleSelector": {}}}
    assert rendered(other).daemonset == rendered().daemonset


def test_defaults_apply_to_a_bare_instance() -> None:
    bare = {"metadata": {"name": "i", "namespace": "n", "uid": "u"}}
    ds = render.render_instance(bare, []).daemonset
    assert ds["spec"]["template"]["spec"]["containers"][0]["image"] == render.SPEC_DEFAULTS["image"]
    assert "nodeSelector" not in ds["spec"]["template"]["spec"]


def test_hostile_text_cannot_break_the_manifest() -> None:
    nasty = RuleText("nasty", '"}\n---\nkind: Secret\n{{ x }} %}')
    cm = render.render_instance(INSTANCE, [nasty]).configmap
    assert cm["data"]["rules-nasty.yaml"] == nasty.text


@pytest.mark.parametrize("text", ["- rule: r\n  output: \"🚨 %fd.name\"\n", "ünïcödé ✓ 中文 \U0001F600"])
def test_any_unicode_survives_rendering(text: str) -> None:
    cm = render.render_instance(INSTANCE, [RuleText("uni", text)]).configmap
    assert cm["data"]["rules-uni.yaml"] == text
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in cm["data"]["rules-uni.yaml"])


@pytest.mark.parametrize("name", ["falconer", "falconer.yaml", "a" * 251, "b" * 253, "x"])
def test_rules_keys_are_valid_and_never_the_config_key(name: str) -> None:
    key = render.rule_file_key(name)
    assert key != render.CONFIG_FILE and len(key) <= render.MAX_KEY
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {key: ""}},
        kubernetes_validate.latest_version(), strict=True)


def test_long_names_keep_distinct_keys() -> None:
    assert render.rule_file_key("a" * 252 + "x") != render.rule_file_key("a" * 252 + "y")


def test_sensor_may_patch_only_its_own_instance_status() -> None:
    r = rendered()
    (rule,) = r.role["rules"]
    assert rule == {"apiGroups": ["falconer.io"], "resources": ["falcoinstances/status"],
                    "resourceNames": ["prod"], "verbs": ["patch"]}
    assert r.rolebinding["roleRef"]["name"] == r.role["metadata"]["name"]
    assert r.rolebinding["subjects"] == [{"kind": "ServiceAccount", "name": "prod-sensor", "namespace": "security"}]


def test_config_names_the_rules_hash_and_each_files_origin() -> None:
    r = render.render_instance(INSTANCE, FILES, {"base": 7})
    config = sensor_config_of(r)
    assert config.rules_hash == r.rules_hash == r.configmap["metadata"]["annotations"]["falconer.io/rules-hash"]
    assert config.falco_rules == (RulesOrigin("rules-base.yaml", "security", "base", 7),
                                  RulesOrigin("rules-extra.yaml", "security", "extra", 0))
    # the generation is part of what the sensors run: a new one is a new rules hash
    assert render.render_instance(INSTANCE, FILES, {"base": 8}).rules_hash != r.rules_hash


def sensor_config_of(r: render.Rendered):  # reads the rendered falconer.yaml as the sensor does
    from pathlib import Path

    from falconer.sensor.config import parse

    return parse(r.configmap["data"][render.CONFIG_FILE], Path("/etc/falconer/falconer.yaml"))
