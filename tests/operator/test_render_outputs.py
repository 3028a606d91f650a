"""The operator renders each ecosystem output of a FalcoInstance: falconer.yaml carries
the outputs as the spec gives them (a TLS Secret by name, never its content); the
DaemonSet mounts each TLS Secret read-only where the sensor reads it and the file
output's host folder; the sensor resolves what the operator wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from falconer.operator import render
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import parse_instance
from falconer.sensor import config as sensor_config
from falconer.sensor.sinks.file import FileSettings
from falconer.sensor.sinks.grpc import GrpcSettings
from falconer.sensor.sinks.outputs import from_config
from falconer.sensor.sinks.program import ProgramSettings
from falconer.sensorconfig import TLS_ROOT

OUTPUTS = {
    "stdout": {"format": "text"},
    "http": {"url": "https://sidekick.security.svc:2801/", "tlsSecret": "sidekick-client-tls"},
    "grpc": {"port": 5060, "tlsSecret": "grpc-server-tls", "threads": 4},
    "file": {"path": "/var/log/falconer/alerts.json", "keepAlive": True},
    "program": {"program": "logger -t falconer", "format": "text"},
}
INSTANCE: dict[str, Any] = {
    "apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance",
    "metadata": {"name": "prod", "namespace": "security", "uid": "0f0e-1"},
    "spec": {"outputs": OUTPUTS},
}


def rendered(instance: dict[str, Any] = INSTANCE) -> render.Rendered:
    return render.render_instance(instance, parse_instance(instance["spec"]), [RuleText("base", "[]\n")])


def test_config_carries_the_outputs_and_no_secret_material():
    cm = rendered().configmap
    outputs = yaml.safe_load(cm["data"][render.CONFIG_FILE])["outputs"]
    for key in ("http", "file", "program"):
        assert {k: v for k, v in outputs[key].items() if k in OUTPUTS[key]} == OUTPUTS[key]
    assert outputs["grpc"] == {**OUTPUTS["grpc"], "bindAddress": "0.0.0.0"}
    assert "BEGIN" not in json.dumps(cm)


def test_sensor_resolves_the_rendered_outputs_to_the_mounts():
    parsed = sensor_config.parse(rendered().configmap["data"][render.CONFIG_FILE], Path("/etc/falconer/x"))
    got = from_config(parsed.outputs, Path(TLS_ROOT))
    tls = Path(TLS_ROOT) / "grpc"
    assert got.grpc == GrpcSettings("0.0.0.0:5060", tls / "tls.key", tls / "tls.crt", tls / "ca.crt", 4)
    assert got.file == FileSettings(Path("/var/log/falconer/alerts.json"), keep_alive=True, json_output=True)
    assert got.program == ProgramSettings("logger -t falconer", json_output=False)
    assert got.http is not None and got.http.url == OUTPUTS["http"]["url"]


def test_daemonset_mounts_secrets_read_only_and_the_file_folder():
    ds = rendered().daemonset
    kubernetes_validate.validate(ds, kubernetes_validate.latest_version(), strict=True)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tls-http"] == (f"{TLS_ROOT}/http", True)
    assert mounts["tls-grpc"] == (f"{TLS_ROOT}/grpc", True)
    assert mounts["file-output"] == ("/var/log/falconer", False)
    assert volumes["tls-http"]["secret"] == {"secretName": "sidekick-client-tls", "defaultMode": 0o400}
    assert volumes["tls-grpc"]["secret"] == {"secretName": "grpc-server-tls", "defaultMode": 0o400}
    assert volumes["file-output"]["hostPath"] == {"path": "/var/log/falconer", "type": "DirectoryOrCreate"}
    assert container["ports"] == [{"name": "grpc", "containerPort": 5060, "protocol": "TCP"}]


def test_without_tls_or_file_nothing_more_is_mounted():
    inst = {**INSTANCE, "spec": {"outputs": {"http": {"url": "http://sidekick:2801/"}}}}
    pod = rendered(inst).daemonset["spec"]["template"]["spec"]
    assert not {"tls-http", "tls-grpc", "file-output"} & {v["name"] for v in pod["volumes"]}
