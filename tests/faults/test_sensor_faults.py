"""The kill/outage matrix, sensor side: the real eBPF sensor as a process (`falconer
sensor --config`, as its FalcoInstance's ServiceAccount, reporting to the matrix's
control plane), with a stream of file opens that fire its rule running throughout.

- kill -9 of the sensor right after a broken rules edit: the restarted sensor runs the
  last good rules (kept in `--state-dir`), reports the gap (a new `startedAt` after the
  last `reportedAt`; its drops) and knows processes that started before it from /proc.
- the rules ConfigMap's files deleted, then corrupted, under a running sensor: the last
  good rules keep running, `lastReloadError` in its status says why.
- disk full where the capture and the alert log are written (a 256 KiB tmpfs): lines
  lost are counted, detection (FalcoAlerts) goes on.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prereq
import pytest
from fault_matrix import Matrix
from operator_harness import wait_for
from sensor_identity import sensor_identity
from sensor_kube_live import (
    INSTANCE,
    RULE,
    falcoalert,
    open_files,
    open_rule,
    settled_count,
    write_config,
)
from sensor_process import SensorProcess

from falconer.sensor import kube as sensor_kube


pytestmark = pytest.mark.kube

#: What the rule of sensor_kube_live also outputs here: process fields that need the
#: process table.
PROCESS_FIELDS = "cmdline=%proc.cmdline parent=%proc.pname"
#: A process that opens the file named by each line of its stdin (started before a
#: sensor restart, so the new sensor knows it only from /proc).
OPENER = "import sys\nfor line in sys.stdin:\n    open(line.strip(), 'w').close()\n"


class Rig:
    """A sensor identity, its config folder and the admin's view of its reports."""

    def __init__(self, admin_kubeconfig: Path, api: Any, namespace: str, folder: Path) -> None:
        prereq.require_ebpf()
        self.namespace = namespace
        self.folder = folder
        self.marker = uuid.uuid4().hex[:10]
        self.node = f"sensor-{self.marker}"
        self.prefix = str(folder / f"f_{self.marker}_")
        self.identity = sensor_identity(admin_kubeconfig, namespace, INSTANCE, folder)
        self.admin = sensor_kube.Kube(api)
        self.config = self.write("h1")

    def write(self, rules_hash: str, rules: str | None = None) -> Path:
        """The sensor's falconer.yaml and rules (replaced as a ConfigMap volume is)."""
        text = rules if rules is not None else open_rule(RULE, self.prefix, PROCESS_FIELDS)
        return write_config(self.folder / "cfg", self.namespace, self.prefix, rules_hash, text)

    def start(self, *extra: str, stdout: Any = None) -> SensorProcess:
        return SensorProcess("--config", str(self.config), "--kubeconfig", str(self.identity),
                             "--node-name", self.node, *extra, stdout=stdout)

    def report(self) -> dict[str, Any]:
        """This node's entry in the instance's status ({} before the first)."""
        path = f"/apis/falconer.io/v1alpha1/namespaces/{self.namespace}/falcoinstances/{INSTANCE}"
        return ((self.admin.get(path).get("status") or {}).get("sensors") or {}).get(self.node) or {}

    def counted(self) -> int:
        """The FalcoAlert's count for the rule on this node (0 before it exists)."""
        found = falcoalert(self.admin, self.namespace, RULE, self.node) or {}
        return int((found.get("status") or {}).get("count", 0))

    def fires(self, sensor: SensorProcess, name: str) -> bool:
        """Whether opening prefix+name now raises the rule's alert on stdout."""
        open_files(self.prefix + name, 1, 0)
        return sensor.rules_for(f"{self.prefix}{name}0", settle_s=0.5) == {RULE}


@pytest.fixture
def rig(fault_admin: Path, fault_namespace: str, fault_plane: Any, tmp_path: Path) -> Iterator[Rig]:
    api = fault_plane.api_client()
    yield Rig(fault_admin, api, fault_namespace, tmp_path)
    api.close()


def stream(rig: Rig, name: str, count: int, seconds: float) -> threading.Thread:
    """Opens of prefix+name<n>, paced over `seconds`, on a thread (started)."""
    thread = threading.Thread(target=open_files, args=(rig.prefix + name, count, seconds), daemon=True)
    thread.start()
    return thread


def test_sensor_killed_restarts_on_the_last_good_rules_and_reports_the_gap(rig: Rig, matrix: Matrix) -> None:
    state = ("--state-dir", str(rig.folder / "state"))
    sensor = rig.start(*state)
    first = wait_for(lambda: (r := rig.report()).get("rulesHash") == "h1" and r, what="the first report")
    opener = subprocess.Popen([sys.executable, "-c", OPENER, f"opener-{rig.marker}"], stdin=subprocess.PIPE,
                              text=True)
    try:
        actions = stream(rig, "stream", 600, 30.0)
        time.sleep(3)
        # A broken edit (the running sensor keeps h1), then the kill: the restarted
        # sensor finds only the broken rules on disk.
        rig.write("h2", "- rule: [broken\n")
        wait_for(lambda: rig.report().get("lastReloadError"), timeout=20, what="the broken edit in status")
        sensor.proc.kill()
        sensor.proc.wait()
        killed_at = time.monotonic()
        seen_before = len(sensor.matching(rig.prefix + "stream"))
        time.sleep(2.5)  # the gap: nobody watches
        sensor = rig.start(*state)
        gap_s = time.monotonic() - killed_at
        second = wait_for(lambda: (r := rig.report()).get("startedAt", "") > first["startedAt"] and r,
                          timeout=30, what="the restarted sensor's report")
        assert opener.stdin is not None
        opener.stdin.write(f"{rig.prefix}opener\n")
        opener.stdin.flush()
        (alert,) = wait_for(lambda: sensor.matching(f"{rig.prefix}opener"), what="the opener's alert")
        actions.join()
        seen_after = settled_count(sensor, rig.prefix + "stream")
    finally:
        opener.kill()
        opener.wait()
    wait_for(lambda: rig.counted() >= seen_after + 1, timeout=30, what="the restarted sensor's alerts counted")
    rig.write("h3")
    fixed = wait_for(lambda: (r := rig.report()).get("rulesHash") == "h3" and r, timeout=20, what="the fixed rules")
    sensor.stop()
    # What the killed sensor had counted but not yet written (at most its last second's
    # aggregate) went with it; everything else is in the FalcoAlert's count.
    unwritten = seen_before + seen_after + 1 - rig.counted()
    # The restarted sensor runs the last good rules (h1), says why not the given ones,
    # and when it started: the node was not watched from its last report until then.
    assert second["rulesHash"] == "h1" and "rules.yaml" in second["lastReloadError"], second
    assert second["startedAt"] > first["reportedAt"] and "kernel" in second["drops"]
    assert fixed["lastReloadError"] == ""
    # The opener started before the restart: its command line and parent come from /proc.
    assert f"opener-{rig.marker}" in alert["output"] and "parent=<NA>" not in alert["output"], alert["output"]
    assert 0 <= unwritten <= 40, f"{unwritten} alerts of the killed sensor are not in the FalcoAlert"
    missed = 600 - seen_before - seen_after
    matrix.record("kill -9 sensor (broken rules on disk)",
                  "restart runs the last good rules, reports the gap (startedAt, drops), /proc re-seed",
                  f"restarted {gap_s:.1f}s later on h1 (kept in --state-dir; given rules broken, in "
                  f"lastReloadError); startedAt {second['startedAt']} > last report {first['reportedAt']}; "
                  f"{missed} of 600 opens in the gap unseen, {unwritten} counted but unwritten at the kill; "
                  "pre-restart process named from /proc")


def test_rules_files_deleted_or_corrupted_keep_the_last_good_rules(rig: Rig, matrix: Matrix) -> None:
    sensor = rig.start()
    wait_for(lambda: rig.report().get("rulesHash") == "h1", what="the first report")
    actions = stream(rig, "stream", 400, 25.0)
    folder = rig.folder / "cfg"
    for name in ("falconer.yaml", "rules.yaml"):
        (folder / name).unlink()
    deleted = wait_for(lambda: (r := rig.report()).get("lastReloadError") and r, timeout=20,
                       what="the deleted config in status")
    fired_deleted = rig.fires(sensor, "probe-deleted")
    (folder / "falconer.yaml").write_text("rulesHash: [unclosed\n")
    corrupted = wait_for(lambda: (r := rig.report()).get("lastReloadError", "") != deleted["lastReloadError"] and r,
                         timeout=20, what="the corrupted config in status")
    fired_corrupted = rig.fires(sensor, "probe-corrupted")
    rig.write("h2")
    fixed = wait_for(lambda: (r := rig.report()).get("rulesHash") == "h2" and r, timeout=20, what="the fixed rules")
    actions.join()
    n = settled_count(sensor, rig.prefix + "stream")
    sensor.stop()
    assert fired_deleted and fired_corrupted, "the last good rules kept running"
    assert deleted["rulesHash"] == corrupted["rulesHash"] == "h1", "status names the rules still running"
    assert "does not exist" in deleted["lastReloadError"] and "falconer.yaml" in corrupted["lastReloadError"]
    assert fixed["lastReloadError"] == ""
    assert n == 400, f"{n} of 400 opens alerted across deletion, corruption and repair"
    matrix.record("rules ConfigMap files deleted, then corrupted", "last good rules kept, reason in status",
                  f"rules h1 kept firing ({n}/400 stream alerts); lastReloadError "
                  f"'{_short(deleted['lastReloadError'], rig)}', then '{_short(corrupted['lastReloadError'], rig)}'")


def _short(reason: str, rig: Rig) -> str:
    """A reload error for the table: without the test's folder, cut to 50 characters."""
    return reason.replace(str(rig.folder) + "/", "")[:50]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (a file system of the test's own), filled up later by the test."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    prereq.require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Write into `folder` until its file system is full (the capture may have filled
    it already)."""
    try:
        with (folder / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass


def test_disk_full_is_counted_and_detection_goes_on(rig: Rig, full_disk: Path, matrix: Matrix) -> None:
    with (full_disk / "alerts.log").open("w") as log:
        sensor = rig.start("--capture", str(full_disk / "capture.jsonl"), stdout=log)
    wait_for(lambda: rig.report().get("rulesHash") == "h1", what="the first report")
    fill(full_disk)
    stream(rig, "stream", 300, 10.0).join()
    wait_for(lambda: rig.counted() == 300, timeout=40, what="300 alerts in the FalcoAlert with the disk full")
    stderr = sensor.stop()
    report = wait_for(lambda: (r := rig.report()).get("drops", {}).get("capture") and r, timeout=20,
                      what="the capture's losses in status")
    unwritten = int(re.search(r"^alerts not written \(stdout failed\): (\d+)", stderr, re.M).group(1))  # type: ignore[union-attr]
    lost = int(re.search(r"^capture: \d+ events written, (\d+) lost", stderr, re.M).group(1))  # type: ignore[union-attr]
    assert unwritten >= 1 and lost >= 1, stderr
    assert "capture lines lost (counted)" in stderr and "alert not written to stdout" in stderr
    assert report["drops"]["capture"] == lost
    for line in (full_disk / "capture.jsonl").read_text().splitlines():
        assert line.endswith("}"), "the capture holds whole lines only"
    matrix.record("disk full (capture + alert log on a full tmpfs)", "losses counted, detection continues",
                  f"300/300 alerts in the FalcoAlert; stdout lines lost {unwritten}, capture lines lost {lost} "
                  "(status drops.capture)")
