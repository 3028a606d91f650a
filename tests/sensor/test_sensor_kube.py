"""The real sensor on this host reporting to a real API server as its own account:
a storm of alerts in bounded API writes with exact counts and bounded memory, an API
server outage that loses nothing silently, and a broken rules edit shown in status.

The sensor runs with `--config` (a FalcoInstance's falconer.yaml, written here as the
operator renders it), `--kubeconfig` (its ServiceAccount) and `--node-name`. Its events
are host events (no pod enrichment in this test): Events go to the Node, FalcoAlerts to
the instance's namespace.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import prereq
import pytest
from operator_harness import wait_for
from sensor_identity import sensor_identity
from sensor_kube_live import (
    INSTANCE,
    RULE,
    falcoalert,
    memory_kb,
    node_event,
    open_files,
    settled_count,
    summary_counts,
    write_config,
)

from falconer.sensor import kube as sensor_kube
from falconer_e2e.controlplane import ControlPlane


@pytest.fixture
def identity(control_plane: ControlPlane, kube_namespace: str, tmp_path: Path) -> Path:
    prereq.require_ebpf()
    return sensor_identity(Path(control_plane.kubeconfig), kube_namespace, INSTANCE, tmp_path)


def test_storm_of_10000_alerts_in_a_minute(start_sensor, identity, kube_client, kube_namespace, tmp_path, marker):
    node = f"storm-{marker}"
    prefix = str(tmp_path / f"s_{marker}_")
    config = write_config(tmp_path / "cfg", kube_namespace, prefix, "h1")
    born = time.monotonic()
    sensor = start_sensor("--config", str(config), "--kubeconfig", str(identity), "--node-name", node)
    admin = sensor_kube.Kube(kube_client)
    rss_before = memory_kb(sensor.proc.pid, "VmRSS")
    started = time.monotonic()
    open_files(prefix, 10_000, 60.0)
    storm_s = time.monotonic() - started
    n = settled_count(sensor, prefix)
    wait_for(lambda: ((falcoalert(admin, kube_namespace, RULE, node) or {}).get("status") or {}).get("count") == n,
             timeout=30, what=f"the FalcoAlert's count to reach {n}")
    wait_for(lambda: (node_event(admin, node, RULE) or {}).get("count") == n, timeout=30,
             what=f"the Node Event's count to reach {n}")
    peak_kb = memory_kb(sensor.proc.pid, "VmHWM")
    stderr = sensor.stop()
    elapsed = time.monotonic() - born  # the sensor's whole life: its sinks wrote during all of it
    assert storm_s < 62
    kernel_drops = int(re.search(r"^dropped: (\d+)", stderr, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert n == 10_000 or (kernel_drops and n + kernel_drops >= 10_000), (n, kernel_drops)
    events, alerts, status = (summary_counts(stderr, s) for s in ("kubernetesEvents", "falcoAlerts", "status"))
    assert events["dropped"] == alerts["dropped"] == 0
    # The bound: one write per aggregate per flush (at most one a second, plus the last
    # one at shutdown) plus its creation (Events: 1 request, FalcoAlerts: 2, plus one list
    # a minute for the cap), and the status report every 5 s; here one aggregate each,
    # over the sensor's life, with a few requests of slack for flushes woken early.
    bound = {"events": int(elapsed) + 5, "alerts": int(elapsed) + 7 + int(elapsed / 60),
             "status": int(elapsed / 5) + 3}
    print(f"storm: 10,000 alerts in {storm_s:.0f} s, sensor life {elapsed:.0f} s, API requests: Events {events['API_requests']}, FalcoAlerts "
          f"{alerts['API_requests']}, status {status['API_requests']} (bounds {bound}); sensor RSS "
          f"{rss_before} kB before, peak {peak_kb} kB")
    assert events["API_requests"] <= bound["events"]
    assert alerts["API_requests"] <= bound["alerts"]
    assert status["API_requests"] <= bound["status"]
    assert peak_kb - rss_before < 64 * 1024, "the sensor grew by more than 64 MiB"


def test_broken_edit_keeps_rules_and_shows_in_status(start_sensor, identity, kube_client, kube_namespace, tmp_path,
                                                     marker):
    node = f"edit-{marker}"
    prefix = str(tmp_path / f"e_{marker}_")
    folder = tmp_path / "cfg"
    config = write_config(folder, kube_namespace, prefix, "h1")
    sensor = start_sensor("--config", str(config), "--kubeconfig", str(identity), "--node-name", node)
    admin = sensor_kube.Kube(kube_client)
    path = f"/apis/falconer.io/v1alpha1/namespaces/{kube_namespace}/falcoinstances/{INSTANCE}"

    def report() -> dict[str, Any]:
        return ((admin.get(path).get("status") or {}).get("sensors") or {}).get(node) or {}

    got = wait_for(lambda: (r := report()).get("rulesHash") == "h1" and r, what="the first report")
    assert got["falcoRules"] == [{"namespace": kube_namespace, "name": "storm", "generation": 1}]
    write_config(folder, kube_namespace, prefix, "h2", rules="- rule: [broken\n")
    got = wait_for(lambda: (r := report()).get("lastReloadError") and r, timeout=20, what="the reload error")
    assert got["rulesHash"] == "h1", "status must name the rules still running, not the broken ones"
    assert "rules.yaml" in got["lastReloadError"]
    wait_for(lambda: node_event(admin, node, "Falco internal: rules reload failed"), what="the internal alert's Event")
    open_files(prefix, 1, 0)
    assert sensor.rules_for(f"e_{marker}_0") == {RULE}
    write_config(folder, kube_namespace, prefix, "h3")
    got = wait_for(lambda: (r := report()).get("rulesHash") == "h3" and r, timeout=20, what="the fixed rules")
    assert got["lastReloadError"] == "" and got["alerts"]["byRule"].get(RULE) == 1


def test_api_server_outage_of_60_s_loses_nothing_silently(start_sensor, tmp_path, marker):
    prereq.require_ebpf()
    node = f"outage-{marker}"
    namespace = "outage"
    with ControlPlane(tmp_path / "cp") as cp:  # its own: stopping the shared one would disturb others
        admin_client = cp.api_client()
        admin = sensor_kube.Kube(admin_client)
        admin.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        identity = sensor_identity(Path(cp.kubeconfig), namespace, INSTANCE, tmp_path)
        prefix = str(tmp_path / f"o_{marker}_")
        config = write_config(tmp_path / "cfg", namespace, prefix, "h1")
        sensor = start_sensor("--config", str(config), "--kubeconfig", str(identity), "--node-name", node)
        actions = threading.Thread(target=open_files, args=(prefix, 1800, 90.0))
        actions.start()
        time.sleep(10)
        cp.stop_apiserver()
        time.sleep(60)
        cp.start_apiserver()
        actions.join()
        n = settled_count(sensor, prefix)
        assert sensor.wait_stderr("API server unavailable", timeout_s=1)
        assert sensor.wait_stderr("API server reachable again", timeout_s=30)

        def counted() -> tuple[int, int]:
            fa = ((falcoalert(admin, namespace, RULE, node) or {}).get("status") or {}).get("count", 0)
            ev = (node_event(admin, node, RULE) or {}).get("count", 0)
            return fa, ev

        wait_for(lambda: counted() == (n, n), timeout=40, what=f"all {n} alerts in the FalcoAlert and the Event")
        stderr = sensor.stop()
        admin_client.close()
    kernel_drops = int(re.search(r"^dropped: (\d+)", stderr, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert n == 1800 or (kernel_drops and n + kernel_drops >= 1800), (n, kernel_drops)
    print("outage:", n, "alerts;", [line for line in stderr.splitlines() if "sink:" in line or line.startswith("dropped")])
    for sink in ("kubernetesEvents", "falcoAlerts"):
        c = summary_counts(stderr, sink)
        assert c["delivered"] + c["dropped"] == c["offered"] and c["dropped"] == 0
        # Backoff 1, 2, 4, 8, then every 10 s: about 10 attempts in 60 s, never a hot loop.
        assert 3 <= c["failed_attempts"] <= 20
    print("outage:", json.dumps({s: summary_counts(stderr, s) for s in ("kubernetesEvents", "falcoAlerts")}))
