"""Everyday work must not raise alerts.

On the host, from the upstream stable rules: package queries, a git commit, compiling C
and tar/untar run under a driver process with a unique name; any stable-rule alert whose
process or parent belongs to that work fails the test (alerts from unrelated host
activity are ignored).

In pods on a real node of this host, from Falconer's default ruleset: a web server
(busybox httpd) and a database (Redis) serve real requests from a client pod whose
entrypoint is a shell script; any alert from those containers, or from the node's own
processes (runtime, kubelet) meanwhile, fails the test.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prereq
import pytest
import upstream
from kube_fixtures import exec_in_pod, wait_pod_running

from falconer import paths
from falconer.sensor.alerts import DROP_RULE
from falconer_e2e import images

if TYPE_CHECKING:
    from kubernetes.client import ApiClient, V1Pod, V1PodStatus

    from falconer_e2e.node import Node

WORKLOAD = r"""
set -e
cd "$1"
dpkg -l bash coreutils > /dev/null
dpkg -S /bin/ls > /dev/null
apt-cache policy bash > /dev/null
apt-cache show coreutils > /dev/null
git init -q repo
cd repo
git config user.email bench@example.invalid
git config user.name bench
printf 'int main(void) { return 0; }\n' > main.c
git add main.c
git commit -q -m "first commit"
git log --oneline > /dev/null
gcc -O2 -o main main.c
./main
cd ..
tar czf repo.tgz repo
mkdir out
tar xzf repo.tgz -C out
ls -R out > /dev/null
"""

#: Processes the workload runs; an alert naming one of them as process or parent is ours.
#: The driver is a uniquely named bash, so a plain "bash" elsewhere on the host (another
#: test, a developer's shell) is not mistaken for the workload.
WORKLOAD_NAMES = {"dpkg", "dpkg-query", "apt-cache", "git", "gcc", "cc1", "as", "collect2",
                  "ld", "main", "tar", "gzip", "ls", "mkdir", "printf"}


def test_benign_workload_raises_no_stable_alert(start_sensor, tmp_path: Path, marker: str):
    sensor = start_sensor("--rules", str(upstream.STABLE), "--buffer-pages", "4096")
    driver = tmp_path / f"drv_{marker}"[:15]
    driver.symlink_to("/bin/bash")
    script = tmp_path / "workload.sh"
    script.write_text(WORKLOAD)
    before = len(sensor.alerts)
    subprocess.run([str(driver), str(script), str(tmp_path)], check=True, timeout=120,
                   env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path)))
    time.sleep(2.0)
    ours = [a for a in sensor.alerts[before:]
            if a["source"] == "syscall"
            and ({a["output_fields"].get("proc.name"), a["output_fields"].get("proc.pname")}
                 & (WORKLOAD_NAMES | {driver.name}))]
    assert ours == [], ours


# -- the benign workload in pods ------------------------------------------------------------

#: The client pod's entrypoint, a shell script as many images have: it waits for both
#: servers, then drives real requests (HTTP GETs, Redis writes, reads and queries) and
#: prints what came back, so the test can check that every request was served.
CLIENT_SCRIPT = r"""
set -e
for i in $(seq 1 60); do
  wget -q -O /dev/null "http://$WEB:8080/" && redis-cli -h "$DB" PING | grep -q PONG && break
  sleep 0.5
done
for i in $(seq 1 20); do wget -q -O - "http://$WEB:8080/index.html" > /tmp/page; done
echo "page: $(cat /tmp/page)"
seq 1 200 | sed 's/.*/SET key:& value:&/' | redis-cli -h "$DB" > /dev/null
for i in $(seq 1 20); do redis-cli -h "$DB" INCR visits > /dev/null; done
redis-cli -h "$DB" LPUSH recent a b c > /dev/null
echo "dbsize: $(redis-cli -h "$DB" DBSIZE)"
echo "visits: $(redis-cli -h "$DB" GET visits)"
echo "key:42: $(redis-cli -h "$DB" GET key:42)"
echo "recent: $(redis-cli -h "$DB" LRANGE recent 0 -1 | tr '\n' ' ')"
echo "keys: $(redis-cli -h "$DB" --scan --pattern 'key:1??' | wc -l)"
"""

#: Processes of the node itself (this host's containerd, shims, runc, kubelet, the pods'
#: pause): with one node per host, their alerts during the workload are the workload's.
NODE_PROCESSES = {"containerd", "containerd-shim", "runc", "runc:[0:PARENT]", "runc:[1:CHILD]",
                  "runc:[2:INIT]", "kubelet", "kube-proxy", "pause", "iptables", "ip6tables"}


def _create_pod(api: ApiClient, namespace: str, name: str, command: list[str],
                env: dict[str, str] | None = None) -> None:
    """Create pod `name` of the workload image running `command` (not waiting)."""
    from kubernetes import client

    client.CoreV1Api(api).create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app.kubernetes.io/name": name}),
        spec=client.V1PodSpec(
            restart_policy="Never", termination_grace_period_seconds=0,
            containers=[client.V1Container(
                name="main", image=images.REFS["workload"], image_pull_policy="Never",
                command=command,
                env=[client.V1EnvVar(name=k, value=v) for k, v in (env or {}).items()])])))


def _finished(api: ApiClient, namespace: str, name: str, timeout: float) -> tuple[V1Pod, str]:
    """Pod `name` and its log once it has ended (or when `timeout` s have passed)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    deadline = time.monotonic() + timeout
    while True:
        pod = core.read_namespaced_pod(name, namespace)
        if _status(pod).phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            return pod, core.read_namespaced_pod_log(name, namespace, container="main")
        time.sleep(0.5)


def _status(pod: V1Pod) -> V1PodStatus:
    """The pod's status (the API server always sets one on a read)."""
    assert pod.status is not None, pod
    return pod.status


def _container_id(pod: V1Pod) -> str:
    """The pod's container id as the rules print it (12 hex digits)."""
    statuses = _status(pod).container_statuses
    assert statuses, pod
    return str(statuses[0].container_id).rpartition("://")[2][:12]


@pytest.mark.ebpf
@pytest.mark.kube
@pytest.mark.timeout(600)
def test_database_and_web_server_in_pods_raise_no_default_alert(
        start_sensor, control_plane, kube_client: ApiClient, kube_node: Node,
        kube_namespace: str) -> None:
    prereq.require_ebpf()
    kube_node.import_image(images.build("workload"))
    sensor = start_sensor("--rules", *map(str, paths.default_rules_files()),
                          "--buffer-pages", "4096")
    before = len(sensor.alerts)
    servers = {"web": ["httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
               "db": ["redis-server", "--bind", "0.0.0.0", "--port", "6379",
                      "--protected-mode", "no", "--save", "", "--appendonly", "no"]}
    for name, command in servers.items():
        _create_pod(kube_client, kube_namespace, name, command)
    web, db = (wait_pod_running(kube_client, kube_namespace, name) for name in servers)
    _create_pod(kube_client, kube_namespace, "client", ["sh", "-c", CLIENT_SCRIPT],
                env={"WEB": str(_status(web).pod_ip), "DB": str(_status(db).pod_ip)})
    client_pod, log = _finished(kube_client, kube_namespace, "client", timeout=180)
    assert _status(client_pod).phase == "Succeeded", log
    # Every request was served: the page, 200 keys plus the counter and the list.
    assert "page: <html><body>falconer benign workload</body></html>" in log, log
    assert "dbsize: 202" in log and "visits: 20" in log and "key:42: value:42" in log, log
    assert "recent: c b a" in log and "keys: 100" in log, log
    time.sleep(3.0)  # the sensor's last reads, and its loss report (once a second)
    window = sensor.alerts[before:]
    assert [a for a in window if a["rule"] == DROP_RULE] == [], "events lost: not proven"
    ours = {_container_id(p) for p in (web, db, client_pod)}
    noisy = [a for a in window if a["source"] == "syscall" and (
        a["output_fields"].get("container.id") in ours
        or {a["output_fields"].get("proc.name"), a["output_fields"].get("proc.pname")}
        & NODE_PROCESSES)]
    assert noisy == [], "\n".join(a["output"] for a in noisy)
    # The control: the same sensor does see the database's container.
    exec_in_pod(Path(control_plane.kubeconfig), kube_namespace, "db", ["cat", "/etc/shadow"])
    assert _wait_alert(sensor.alerts, "Credential file read by a non-login program",
                       _container_id(db), timeout=15.0)


def _wait_alert(alerts: list[dict[str, Any]], rule: str, container_id: str,
                timeout: float) -> bool:
    """Whether `rule` fires for the container (in `alerts`, a list a sensor's reader
    appends to) within `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(a["rule"] == rule and a["output_fields"].get("container.id") == container_id
               for a in list(alerts)):
            return True
        time.sleep(0.2)
    return False
