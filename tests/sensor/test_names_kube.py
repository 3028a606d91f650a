"""The stable rule's check `fd.sip.name="kubernetes.default.svc.cluster.local"` answered
by the real sensor from the Service watch, with no cluster DNS.

The sensor runs with `--config` (a FalcoInstance's falconer.yaml), `--kubeconfig` (its
own ServiceAccount, bound to the shipped ClusterRole) and `--node-name`. The connection
goes to the `kubernetes` Service's ClusterIP inside a network namespace made for the
test (the address on its loopback, a listener behind it): nothing leaves the host.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import prereq
import pytest
import yaml
from kubernetes import client
from sensor_identity import sensor_identity

INSTANCE = "names"
SERVICE_NAME = "kubernetes.default.svc.cluster.local"
RULES = f"""
- rule: Contact the API server by its Service name
  desc: the stable rule's fd.sip.name check
  condition: evt.type = connect and fd.sip.name = "{SERVICE_NAME}" and proc.cmdline contains fm
  output: "api %proc.cmdline sip=%fd.sip name=%fd.sip.name"
  priority: NOTICE
"""

#: In a new network namespace: loopback up, the ClusterIP on it, listen and connect.
CONNECT = """
import socket, subprocess, sys
ip = sys.argv[1]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", ip + "/32", "dev", "lo"], check=True)
with socket.create_server((ip, 443)) as server:
    socket.create_connection((ip, 443)).close()
"""


@pytest.fixture
def identity(control_plane, kube_namespace, tmp_path) -> Path:
    prereq.require_ebpf()
    return sensor_identity(Path(control_plane.kubeconfig), kube_namespace, INSTANCE, tmp_path)


def write_config(folder: Path, namespace: str) -> Path:
    folder.mkdir()
    (folder / "rules.yaml").write_text(RULES, encoding="utf-8")
    config = {"instance": {"namespace": namespace, "name": INSTANCE}, "rulesFiles": ["rules.yaml"],
              "outputs": {"stdout": {"format": "json"}}}
    (folder / "falconer.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder / "falconer.yaml"


def test_the_sensor_names_the_kubernetes_service_without_cluster_dns(
        start_sensor, identity, kube_client, kube_namespace, tmp_path, marker):
    ip = client.CoreV1Api(kube_client).read_namespaced_service("kubernetes", "default").spec.cluster_ip
    config = write_config(tmp_path / "cfg", kube_namespace)
    sensor = start_sensor("--config", str(config), "--kubeconfig", str(identity),
                          "--node-name", f"names-{marker}")
    assert sensor.wait_stderr("fd.*ip.name: 0 names for the host resolver, 1 under cluster.local")
    deadline = time.monotonic() + 20.0
    # the Service watch's first list runs beside the probe's start: connect until it is in
    while not sensor.matching(marker) and time.monotonic() < deadline:
        subprocess.run(["unshare", "--net", sys.executable, "-c", CONNECT, ip, marker], check=True)
        time.sleep(0.5)
    assert sensor.rules_for(marker) == {"Contact the API server by its Service name"}
    fields = sensor.matching(marker)[0]["output_fields"]
    assert (fields["fd.sip"], fields["fd.sip.name"]) == (ip, SERVICE_NAME)
    out = sensor.stop()
    assert "Service watch: " in out and ", failures 0," in out.split("Service watch: ")[1]
