"""The all-in-one demo (`./dev run`) end to end: real control plane, real operator, real
eBPF sensor fed by a kubelet-style ConfigMap projection.

One run: wait until it is up, check what kubectl shows, trigger a default rule with a
real syscall, add a rule to the FalcoRule through the API and see the sensor reload it,
then Ctrl-C and check that nothing is left running.
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

from falconer.e2e import binaries
from falconer.e2e.allinone import READY_BANNER

START_TIMEOUT_S = 90.0
NS, RULE, INSTANCE = "falconer", "falconer-rules", "default"


class Demo:
    """`python -m falconer.main_job --work-dir DIR` with its output collected."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconer.main_job", "--work-dir", str(work_dir)],
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
            time.sleep(0.1)
        pytest.fail(f"no {text!r} within {timeout_s:.0f}s; output:\n{self.output()}")

    def kubectl(self, *args: str) -> str:
        """kubectl as the demo's admin; its stdout (fails the test on a non-zero exit)."""
        kubeconfig = self.work_dir / "controlplane" / "admin.kubeconfig"
        done = subprocess.run([str(binaries.locate("kubectl").path), "--kubeconfig", str(kubeconfig),
                               *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout


def child_pids(work_dir: Path) -> dict[str, int]:
    """The demo's children by name, from their pid files (control plane and its own)."""
    files = [*(work_dir / "run").glob("*.pid"), *(work_dir / "controlplane" / "run").glob("*.pid")]
    return {f.stem: int(f.read_text()) for f in files}


def alive(pid: int) -> bool:
    """Whether the process, or anything left in its process group, still runs."""
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return Path(f"/proc/{pid}").exists()


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    problems = missing_server_binaries()
    prereq.require(not problems, "; ".join(problems))
    prereq.require_ebpf()
    d = Demo(tmp_path_factory.mktemp("allinone"))
    yield d
    if d.proc.poll() is None:  # the test failed before its own Ctrl-C
        d.proc.send_signal(signal.SIGINT)
        try:
            d.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            d.proc.kill()


def test_allinone_detects_reloads_and_stops_cleanly(demo: Demo, tmp_path: Path) -> None:
    t0 = time.monotonic()
    demo.wait_for(READY_BANNER, START_TIMEOUT_S)
    started = time.monotonic() - t0

    rule = json.loads(demo.kubectl("get", "falcorule", RULE, "-n", NS, "-o", "json"))
    valid = {c["type"]: c["status"] for c in rule["status"]["conditions"]}
    assert valid["Valid"] == "True", rule["status"]
    listed = demo.kubectl("get", "falcorules,falcoinstances", "-n", NS)
    assert f"falcorule.falconer.io/{RULE}" in listed and f"falcoinstance.falconer.io/{INSTANCE}" in listed

    # A default rule ("Credential file read by a non-login program") on a real open().
    marker = "fm" + uuid.uuid4().hex[:10]
    subprocess.run(["cat", "/etc/shadow", marker], capture_output=True, check=False)
    alert = demo.wait_for(marker, 15)
    assert "Credential file read by a non-login program" in alert and "file=/etc/shadow" in alert

    # Add a rule through the API; the operator re-renders the ConfigMap, the stand-in
    # swaps it into the volume, the sensor reloads it (mkdir was not watched before).
    items = rule["spec"]["items"] + [{
        "rule": "Marked directory made", "desc": "added by the all-in-one test",
        "condition": f"evt.type = mkdir and evt.arg.path contains {marker}",
        "output": "Marked directory made (path=%evt.arg.path)", "priority": "WARNING"}]
    projected = os.readlink(demo.work_dir / "volume" / "..data")
    demo.kubectl("patch", "falcorule", RULE, "-n", NS, "--type", "merge",
                 "-p", json.dumps({"spec": {"items": items}}))
    every = json.loads(demo.kubectl("get", "falcorules", "-n", NS, "-o", "json"))["items"]
    total = sum(r["status"]["counts"]["rules"] for r in every)  # the default files together
    demo.wait_for(f"rules reloaded ({total + 1} rules)", 30)
    assert os.readlink(demo.work_dir / "volume" / "..data") != projected  # kubelet-style swap
    (tmp_path / f"dir-{marker}").mkdir()
    assert "Marked directory made" in demo.wait_for(f"path={tmp_path / f'dir-{marker}'}", 15)

    # The stand-in reports the sensor pod Ready, so the instance counts it.
    deadline = time.monotonic() + 20
    while json.loads(demo.kubectl("get", "falcoinstance", INSTANCE, "-n", NS, "-o", "json")
                     ).get("status", {}).get("numberReady") != 1:
        assert time.monotonic() < deadline, demo.kubectl("get", "pods,ds", "-n", NS, "-o", "wide")
        time.sleep(0.5)

    children = child_pids(demo.work_dir)
    assert set(children) == {"etcd", "kube-apiserver", "kube-controller-manager",
                             "kube-scheduler", "operator", "sensor"}
    t1 = time.monotonic()
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=60) == 0, demo.output()
    stopped = time.monotonic() - t1
    out = demo.output()
    for step in ("sensor stopped", "operator stopped", "control plane stopped"):
        assert step in out
    assert "alerts: " in out                                # the sensor's summary
    assert {name: pid for name, pid in children.items() if alive(pid)} == {}
    assert child_pids(demo.work_dir) == {}
    print(f"started in {started:.1f}s, stopped in {stopped:.1f}s")
