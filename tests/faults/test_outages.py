"""The kill/outage matrix, control plane side: the real operator (its ServiceAccount) and
the real eBPF sensor against a control plane of the matrix's own, with a stream of
actions (FalcoRule edits; file opens that fire the sensor's rule) running throughout.

- kill -9 of the operator mid-reconcile: the supervisor restarts it, it converges, with
  no duplicate or orphaned object and no lost status.
- kube-apiserver stopped OUTAGE_S seconds: the sensor's alerts are queued (bounded),
  then delivered or counted; the operator does not hot-loop (its connection attempts
  while the server is down, counted by a relay in front of the API server).
- etcd restarted: operator and sensor recover without intervention.

The outage lasts `FALCONER_FAULT_OUTAGE_S` seconds (default 45 so the matrix fits CI;
the issue's 5 minutes is `FALCONER_FAULT_OUTAGE_S=300`: the same promise, checked the
same way, since every backoff reaches its 30 s ceiling within the first 35 s).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prereq
import pytest
from fault_matrix import Matrix
from fault_support import (
    INSTANCE,
    RuleStream,
    instance_manifest,
    operator_child,
    operator_kubeconfig,
    wait_converged,
)
from operator_harness import kubectl, service_account_kubeconfig, wait_for
from sensor_kube_live import (
    RULE,
    falcoalert,
    memory_kb,
    open_files,
    settled_count,
    summary_counts,
    write_config,
)
from sensor_process import SensorProcess

from falconer.operator.render import Names
from falconer.sensor import kube as sensor_kube
from falconer_e2e import processes
from falconer_e2e.controlplane import ControlPlane, free_ports
from falconer_e2e.tcp_relay import TcpRelay


pytestmark = pytest.mark.kube

OUTAGE_S = float(os.environ.get("FALCONER_FAULT_OUTAGE_S", "45"))
#: The opens per second that fire the sensor's rule (sensor_kube_live.open_rule).
OPENS_PER_S = 20
#: How long the system may take to converge after a fault.
CONVERGE_S = 90.0
#: The operator's connection attempts per second while the API server is down, at most,
#: measured over the outage's last STEADY_S seconds (its backoffs reach their 30 s cap
#: within the first 35 s; before that, each of its 7 watch streams and every pending
#: write retries after 5, 10 and 20 s).
MAX_ATTEMPTS_PER_S = 1.0
STEADY_S = max(OUTAGE_S - 35.0, OUTAGE_S / 3)


@dataclass
class Rig:
    """One test's namespace with the operator (supervised) and a RuleStream."""

    admin: Path
    api: Any
    namespace: str
    folder: Path
    operator: processes.Child
    supervisor: processes.Supervisor
    stream: RuleStream

    def restarted_once(self) -> bool:
        """Let the supervisor restart what exited (as the all-in-one does each second);
        whether the operator has been restarted once."""
        self.supervisor.check()
        return self.supervisor.restarts("operator") == 1

    def create_instance(self) -> None:
        kubectl(self.admin, "apply", "--server-side", "-f", "-", stdin=json.dumps(instance_manifest(self.namespace)))

    def start_sensor(self, prefix: str, node: str) -> SensorProcess:
        """The sensor as the instance's ServiceAccount (rendered by the operator), its
        rule firing on opens of `prefix*`."""
        prereq.require_ebpf()
        account = Names.for_instance(self.namespace, INSTANCE).serviceaccount
        wait_for(lambda: kubectl(self.admin, "get", "serviceaccount", account, "-n", self.namespace,
                                 check=False).returncode == 0, timeout=30, what="the sensor's ServiceAccount")
        identity = service_account_kubeconfig(self.admin, self.folder / "sensor.kubeconfig", self.namespace,
                                              account)
        config = write_config(self.folder / "cfg", self.namespace, prefix, "h1")
        return SensorProcess("--config", str(config), "--kubeconfig", str(identity), "--node-name", node)

    def alerts_counted(self, node: str) -> int:
        """The FalcoAlert's count for the sensor's rule on `node` (0 before it exists)."""
        found = falcoalert(sensor_kube.Kube(self.api), self.namespace, RULE, node) or {}
        return int((found.get("status") or {}).get("count", 0))

    def settle(self, sensor: SensorProcess, node: str, prefix: str) -> tuple[int, float, dict[str, int]]:
        """After a fault, once the actions are done: stop the RuleStream, wait until the
        FalcoAlert counts every stdout alert of `prefix` and the operator has converged,
        then stop the sensor. (alerts, seconds to converge, the sensor's falcoAlerts
        summary: offered, delivered, dropped, ...); raises Timeout (60 s, CONVERGE_S)."""
        self.stream.stop()
        n = settled_count(sensor, prefix)
        wait_for(lambda: self.alerts_counted(node) == n, timeout=60, what=f"all {n} alerts in the FalcoAlert")
        converge_s = wait_converged(self.api, self.namespace, self.stream.versions, CONVERGE_S)
        return n, converge_s, summary_counts(sensor.stop(), "falcoAlerts")


@pytest.fixture
def make_rig(fault_plane: ControlPlane, fault_admin: Path, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """A factory: the operator (through `server` when given, e.g. a relay) watching a
    fresh namespace; everything is removed at the end."""
    from kubernetes import client

    rigs: list[Rig] = []

    def make(server: str | None = None) -> Rig:
        namespace = f"fault-{uuid.uuid4().hex[:8]}"
        api = fault_plane.api_client()
        kubectl(fault_admin, "create", "namespace", namespace)
        kubeconfig = operator_kubeconfig(fault_admin, tmp_path / "operator.kubeconfig", server)
        supervisor = processes.Supervisor(lambda _: None, processes.Backoff(first_s=0.5))
        operator = operator_child(kubeconfig, namespace, tmp_path)
        operator.start()
        supervisor.watch(operator)
        rig = Rig(fault_admin, api, namespace, tmp_path, operator, supervisor,
                  RuleStream(client.CustomObjectsApi(api), namespace))
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.stream.stop()
        kubectl(fault_admin, "delete", "falcoinstances", "--all", "-n", rig.namespace, "--wait",
                "--timeout=40s", check=False)
        rig.operator.stop()
        kubectl(fault_admin, "delete", "namespace", rig.namespace, "--wait=false", check=False)
        rig.api.close()


def test_operator_killed_mid_reconcile_converges(make_rig: Callable[..., Rig], matrix: Matrix) -> None:
    rig = make_rig()
    rig.stream.start()
    rig.create_instance()
    names = Names.for_instance(rig.namespace, INSTANCE)
    # Mid-reconcile: the instance's ConfigMap exists and the stream is still adding rules.
    wait_for(lambda: kubectl(rig.admin, "get", "configmap", names.configmap, "-n", rig.namespace,
                             check=False).returncode == 0, timeout=30, interval=0.05, what="the first ConfigMap")
    edits_at_kill = rig.stream.done
    killed = time.monotonic()
    os.kill(rig.operator.pid or 0, signal.SIGKILL)
    wait_for(lambda: rig.restarted_once(), timeout=30, what="the supervisor to restart the operator")
    time.sleep(3)  # the stream goes on across the restart
    rig.stream.stop()
    wait_converged(rig.api, rig.namespace, rig.stream.versions, CONVERGE_S)
    total_s = time.monotonic() - killed
    assert rig.stream.failed == 0
    assert rig.supervisor.restarts("operator") == 1
    matrix.record("kill -9 operator mid-reconcile",
                  "restarted; converges; no duplicate/orphan; no lost status",
                  f"killed after {edits_at_kill} of {rig.stream.done} edits; restarted once; converged "
                  f"{total_s:.1f}s after the kill; 1 of each object, all owned")


@pytest.fixture
def relay(fault_plane: ControlPlane) -> Iterator[TcpRelay]:
    """A relay in front of the API server: its counters are the operator's connections."""
    assert fault_plane.ports is not None
    relay = TcpRelay(("127.0.0.1", free_ports(1)[0]), ("127.0.0.1", fault_plane.ports.apiserver))
    relay.start()
    yield relay
    relay.stop()


def connections(relay: TcpRelay) -> int:
    """Connections the relay accepted so far (relayed or refused by the target)."""
    return relay.counters.relayed + relay.counters.target_failures


def operator_log_lines(rig: Rig) -> int:
    return len(rig.operator.log.read_text(errors="replace").splitlines())


@pytest.mark.timeout(OUTAGE_S + 300)
def test_apiserver_outage_queues_alerts_and_nothing_hot_loops(
        fault_plane: ControlPlane, relay: TcpRelay, make_rig: Callable[..., Rig], matrix: Matrix,
        tmp_path: Path) -> None:
    # `relay` before `make_rig`: the operator's teardown (its finalizer) still needs it.
    rig = make_rig(f"https://127.0.0.1:{relay.listen[1]}")
    rig.create_instance()
    wait_converged(rig.api, rig.namespace, None, CONVERGE_S)
    marker = uuid.uuid4().hex[:10]
    node, prefix = f"outage-{marker}", str(tmp_path / f"o_{marker}_")
    sensor = rig.start_sensor(prefix, node)
    total = int(OPENS_PER_S * (OUTAGE_S + 20))
    opens = threading.Thread(target=open_files, args=(prefix, total, OUTAGE_S + 20))
    opens.start()
    rig.stream.start()
    time.sleep(10)
    before, log_before = connections(relay), operator_log_lines(rig)
    rss_before = memory_kb(sensor.proc.pid, "VmRSS")
    fault_plane.stop_apiserver()
    time.sleep(OUTAGE_S - STEADY_S)
    steady_from = connections(relay)
    time.sleep(STEADY_S)
    attempts, log_lines = connections(relay) - before, operator_log_lines(rig) - log_before
    steady = connections(relay) - steady_from
    rss_kb = memory_kb(sensor.proc.pid, "VmRSS")
    fault_plane.start_apiserver()
    opens.join()
    n, converge_s, counts = rig.settle(sensor, node, prefix)
    assert counts["delivered"] + counts["dropped"] == counts["offered"]
    rate = steady / STEADY_S
    assert rate <= MAX_ATTEMPTS_PER_S, (f"the operator made {steady} connection attempts in the last {STEADY_S:.0f}s "
                                        f"of the outage ({attempts} in all)")
    assert rig.operator.running() and rig.supervisor.restarts("operator") == 0
    matrix.record(f"kube-apiserver stopped {OUTAGE_S:.0f}s",
                  "alerts queued (bounded), delivered or counted; operator does not hot-loop",
                  f"{n} alerts, FalcoAlert count {n}, {counts['dropped']} dropped; sensor RSS {rss_before} -> "
                  f"{rss_kb} kB over the outage; operator: {attempts} connects, {rate:.2f}/s in the last "
                  f"{STEADY_S:.0f}s, {log_lines} log lines; converged {converge_s:.1f}s after")


def test_etcd_restart_is_recovered_without_intervention(
        fault_plane: ControlPlane, make_rig: Callable[..., Rig], matrix: Matrix, tmp_path: Path) -> None:
    rig = make_rig()
    rig.create_instance()
    wait_converged(rig.api, rig.namespace, None, CONVERGE_S)
    marker = uuid.uuid4().hex[:10]
    node, prefix = f"etcd-{marker}", str(tmp_path / f"e_{marker}_")
    sensor = rig.start_sensor(prefix, node)
    opens = threading.Thread(target=open_files, args=(prefix, OPENS_PER_S * 30, 30.0))
    opens.start()
    rig.stream.start()
    time.sleep(5)
    down = time.monotonic()
    fault_plane.stop_component("etcd")
    time.sleep(5)
    fault_plane.start_component("etcd")
    etcd_down_s = time.monotonic() - down
    opens.join()
    n, converge_s, counts = rig.settle(sensor, node, prefix)
    assert counts["dropped"] == 0 and counts["delivered"] == counts["offered"]
    assert rig.operator.running() and rig.supervisor.restarts("operator") == 0
    matrix.record("etcd restarted", "operator and sensor recover without intervention",
                  f"etcd down {etcd_down_s:.1f}s; {n} alerts, FalcoAlert count {n}, 0 dropped; "
                  f"{rig.stream.failed} of {rig.stream.done + rig.stream.failed} edits refused while down; "
                  f"converged {converge_s:.1f}s after; no restart")
