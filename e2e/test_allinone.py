"""The all-in-one demo (`./dev run`) end to end: real control plane, real node (kubelet,
containerd), the operator, and the eBPF sensor running as the DaemonSet's pod.

One run, as a user would: wait until it is up (it already showed an alert from the demo
pod as a FalcoAlert), check what kubectl shows, kill -9 the operator and the API server
(both are restarted), add a rule to a FalcoRule through the API
and see the sensor pod reload it and fire on a real pod, delete the FalcoInstance and see
its sensor go, then Ctrl-C and check that nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import prereq
import pytest
from kube_fixtures import missing_server_binaries

from falconer_e2e import binaries
from falconer_e2e.allinone import DEMO_APP, DEMO_NAMESPACE, READY_BANNER
from falconer_e2e.node import missing_prerequisites

#: Cold: the node starts and imports the sensor image (about a minute), bcc compiles.
START_TIMEOUT_S = 420.0
NS, INSTANCE = "falconer", "default"


class Demo:
    """`python -m falconer_e2e.main_job --work-dir DIR` with its output collected."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconer_e2e.main_job", "--work-dir", str(work_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/",
            env=dict(os.environ, PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)

    def output(self) -> str:
        """Everything the demo printed so far (for failure messages)."""
        with self._lock:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout_s: float) -> str:
        """The first output line containing `text`; fails with the output so far."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [line for line in self.lines if text in line]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"no {text!r} within {timeout_s:.0f}s; output:\n{self.output()[-6000:]}")

    def kubectl(self, *args: str, check: bool = True) -> str:
        """kubectl as the demo's admin; its stdout (fails the test on a non-zero exit)."""
        kubeconfig = self.work_dir / "controlplane" / "admin.kubeconfig"
        done = subprocess.run([str(binaries.locate("kubectl").path), "--kubeconfig", str(kubeconfig),
                               *args], capture_output=True, text=True, timeout=90, check=check)
        return done.stdout


def child_pids(work_dir: Path) -> dict[str, int]:
    """The demo's children by name, from their pid files (control plane, node, its own).
    Fixed folders only: a recursive glob would walk containerd's snapshots while it
    removes them (FileNotFoundError)."""
    files = [*work_dir.glob("run/*.pid"), *work_dir.glob("controlplane/run/*.pid"),
             *work_dir.glob("node/run/*.pid")]
    return {f.stem: int(f.read_text()) for f in files}


def alive(pid: int) -> bool:
    """Whether the process, or anything left in its process group, still runs."""
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return Path(f"/proc/{pid}").exists()


def wait_until(check: object, what: str, timeout_s: float, demo: Demo) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; output:\n{demo.output()[-4000:]}")
        time.sleep(0.5)


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory, host_free_of_nodes: None) -> Iterator[Demo]:
    problems = missing_server_binaries() + missing_prerequisites()
    prereq.require(not problems, "; ".join(problems))
    prereq.require_ebpf()
    d = Demo(tmp_path_factory.mktemp("allinone"))
    yield d
    if d.proc.poll() is None:  # the test failed before its own Ctrl-C
        d.proc.send_signal(signal.SIGINT)
        try:
            d.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            d.proc.kill()


def test_allinone_detects_reloads_and_stops_cleanly(demo: Demo) -> None:
    t0 = time.monotonic()
    demo.wait_for(READY_BANNER, START_TIMEOUT_S)
    started = time.monotonic() - t0
    out = demo.output()
    assert "Credential file read by a non-login program" in out, out[-4000:]

    # The admin's view: the alert of the demo pod, in its namespace, with pod and workload.
    alerts = json.loads(demo.kubectl("get", "falcoalerts", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
    shadow = [a for a in alerts if a["spec"]["rule"] == "Credential file read by a non-login program"]
    assert shadow, alerts
    assert shadow[0]["spec"]["pod"]["namespace"] == DEMO_NAMESPACE
    assert shadow[0]["spec"]["workload"] == {"kind": "Deployment", "name": DEMO_APP}
    listing = demo.kubectl("get", "falcoalerts", "-A")  # what the admin types: a table with the rule
    assert DEMO_NAMESPACE in listing and "Credential file read by a non-login program" in listing, listing
    events = json.loads(demo.kubectl("get", "events", "-n", DEMO_NAMESPACE, "-o", "json"))["items"]
    assert any(e["source"].get("component") == "falconer-sensor" and e["involvedObject"]["kind"] == "Pod"
               for e in events), [e.get("reason") for e in events]

    # Supervision, tried as a user would: kill -9 the operator and the API server. Each
    # is restarted (and says so); the rule edit below needs both, and the sensor pod's
    # log is followed again after the API server's restart.
    for part in ("operator", "kube-apiserver"):
        os.kill(child_pids(demo.work_dir)[part], signal.SIGKILL)
        demo.wait_for(f"{part} restarted", 60)
    wait_until(lambda: demo.kubectl("get", "--raw", "/readyz", check=False).strip() == "ok",
               "the restarted API server", 90, demo)

    rules = json.loads(demo.kubectl("get", "falcorules", "-n", NS, "-o", "json"))["items"]
    assert rules and all({c["type"]: c["status"] for c in r["status"]["conditions"]}["Valid"] == "True"
                         for r in rules)
    rule = rules[0]
    name = rule["metadata"]["name"]

    # Add a rule through the API: the operator re-renders the ConfigMap, the kubelet
    # updates the sensor pod's volume, the sensor reloads it; a real pod triggers it.
    marker = "fm" + uuid.uuid4().hex[:10]
    items = rule["spec"]["items"] + [{
        "rule": "Marked directory made", "desc": "added by the all-in-one test",
        "condition": f"evt.type = mkdir and evt.arg.path contains {marker}",
        "output": "Marked directory made (path=%evt.arg.path)", "priority": "WARNING"}]
    demo.kubectl("patch", "falcorule", name, "-n", NS, "--type", "merge",
                 "-p", json.dumps({"spec": {"items": items}}))
    demo.wait_for("rules reloaded", 150)
    demo.kubectl("exec", "-n", DEMO_NAMESPACE, f"deploy/{DEMO_APP}", "--",
                 "sh", "-c", f"mkdir /tmp/{marker}; sleep 1")
    assert "Marked directory made" in demo.wait_for(f"path=/tmp/{marker}", 30)

    # Deleting the FalcoInstance stops its sensor (the DaemonSet and its pod go).
    demo.kubectl("delete", "falcoinstance", INSTANCE, "-n", NS, "--wait", "--timeout=60s")
    wait_until(lambda: not demo.kubectl("get", "pods", "-n", NS, "-l", f"falconer.io/instance={INSTANCE}",
                                        "-o", "name").strip(), "the sensor pod to go", 90, demo)

    children = child_pids(demo.work_dir)
    assert {"etcd", "kube-apiserver", "operator", "kubelet", "containerd"} <= set(children), children
    t1 = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=120) == 0, demo.output()[-4000:]
    stopped = time.monotonic() - t1
    out = demo.output()
    for step in ("operator stopped", "node stopped", "control plane stopped"):
        assert step in out
    assert {name: pid for name, pid in children.items() if alive(pid)} == {}
    print(f"started in {started:.1f}s, stopped in {stopped:.1f}s")
