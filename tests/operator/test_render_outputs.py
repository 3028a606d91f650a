"""The operator renders each ecosystem output of a FalcoInstance: falconer.yaml names
mount paths, never Secret material; the DaemonSet mounts the TLS Secrets read-only and
the file output's host folder; the sensor parses what the operator wrote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from falconer.operator import render
from falconer.operator.ruleyaml import RuleText
from falconer.sensor import config as sensor_config
from falconer.sensor.sinks.file import FileOutput
from falconer.sensor.sinks.grpc import GrpcOutput
from falconer.sensor.sinks.program import ProgramOutput

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


def rendered() -> render.Rendered:
    return render.render_instance(INSTANCE, [RuleText("base", "[]\n")])


def test_config_names_mount_paths_and_no_secret():
    cm = rendered().configmap
    outputs = yaml.safe_load(cm["data"][render.CONFIG_FILE])["outputs"]
    assert outputs["http"] == {"url": OUTPUTS["http"]["url"], "tlsDir": "/etc/falconer-tls/http"}
    assert outputs["grpc"] == {"address": "0.0.0.0:5060", "tlsDir": "/etc/falconer-tls/grpc", "threads": 4}
    assert outputs["file"] == OUTPUTS["file"] and outputs["program"] == OUTPUTS["program"]
    assert "tls" + "Secret" not in json.dumps(cm) and "sidekick-client-tls" not in json.dumps(cm)


def test_sensor_reads_the_rendered_outputs():
    text = rendered().configmap["data"][render.CONFIG_FILE]
    got = sensor_config.parse(text, Path("/etc/falconer/falconer.yaml")).streams
    tls = Path("/etc/falconer-tls/grpc")
    assert got.grpc == GrpcOutput("0.0.0.0:5060", tls / "tls.key", tls / "tls.crt", tls / "ca.crt", 4)
    assert got.file == FileOutput(Path("/var/log/falconer/alerts.json"), keep_alive=True, json_output=True)
    assert got.program == ProgramOutput("logger -t falconer", json_output=False)
    assert got.http is not None and got.http.url == OUTPUTS["http"]["url"]
    assert sensor_config.parse(text, Path("/x")).unsupported_outputs == ()


def test_daemonset_mounts_secrets_read_only_and_the_file_folder():
    ds = rendered().daemonset
    kubernetes_validate.validate(ds, kubernetes_validate.latest_version(), strict=True)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: (m["mountPath"], m.get("readOnly", False)) for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["tls-http"] == ("/etc/falconer-tls/http", True)
    assert mounts["tls-grpc"] == ("/etc/falconer-tls/grpc", True)
    assert mounts["file-output"] == ("/var/log/falconer", False)
    assert volumes["tls-http"]["secret"] == {"secretName": "sidekick-client-tls", "defaultMode": 0o400}
    assert volumes["tls-grpc"]["secret"] == {"secretName": "grpc-server-tls", "defaultMode": 0o400}
    assert volumes["file-output"]["hostPath"] == {"path": "/var/log/falconer", "type": "DirectoryOrCreate"}
    assert container["ports"] == [{"name": "grpc", "containerPort": 5060, "protocol": "TCP"}]


def test_without_outputs_nothing_is_mounted():
    inst = {**INSTANCE, "spec": {"outputs": {"http": {"url": "http://sidekick:2801/"}}}}
    pod = render.render_instance(inst, []).daemonset["spec"]["template"]["spec"]
    assert not {"tls-http", "tls-grpc", "file-output"} & {v["name"] for v in pod["volumes"]}
