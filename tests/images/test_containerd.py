"""The images in a real containerd (Debian's, with runc): `ctr images import` takes each
archive under its reference, busybox and pause containers behave, and the sensor image
runs bcc as the FalcoInstance DaemonSet runs it: not privileged, the node's PID
namespace, only `SENSOR_CAPABILITIES`, a read-only root, the host mounts of
`SENSOR_HOST_MOUNTS`; it then prints an alert for `cat /etc/shadow` on the host.

The sensor image is built into the shared cache (`./dev setup` does it: minutes when
cold, seconds after a code change)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import prereq
import pytest
from private_containerd import Containerd

from falconer_e2e import images

pytestmark = pytest.mark.timeout(1800)

#: What `ctr run` grants a container unless told otherwise (containerd 1.6's default
#: spec); the DaemonSet drops all of them (`drop: [ALL]`).
CTR_DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                    "SETPCAP", "NET_BIND_SERVICE", "NET_RAW", "SYS_CHROOT", "MKNOD",
                    "AUDIT_WRITE", "SETFCAP")

RULE = """\
- rule: Shadow read seen from the sensor image
  desc: a process read /etc/shadow
  condition: evt.type in (open, openat, openat2) and fd.name = /etc/shadow and proc.name = cat
  output: "shadow read (command=%proc.cmdline parent=%proc.pexepath)"
  priority: WARNING
"""

STARTUP_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def imported(containerd: Containerd) -> dict[str, str]:
    """Every image imported; name -> reference."""
    for name in images.RECIPES:
        containerd.ctr("images", "import", str(images.build(name)), timeout=600)
    return dict(images.REFS)


def test_import_names_every_image_by_its_reference(containerd: Containerd,
                                                   imported: dict[str, str]) -> None:
    listed = containerd.ctr("images", "ls", "-q").stdout.split()
    assert set(imported.values()) <= set(listed)


def test_busybox_container_runs_a_shell(containerd: Containerd, imported: dict[str, str]) -> None:
    done = containerd.run(imported["busybox"], f"bb-{uuid.uuid4().hex[:8]}", "sh", "-c",
                          "echo ok; cat /etc/shadow >/dev/null && id -u && ls /tmp")
    assert (done.returncode, done.stdout) == (0, "ok\n0\n"), done.stderr


def test_pause_container_exits_0_on_sigterm(containerd: Containerd,
                                            imported: dict[str, str]) -> None:
    name = f"pause-{uuid.uuid4().hex[:8]}"
    run = subprocess.Popen(containerd.run_argv(imported["pause"], name),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while name not in containerd.ctr("task", "ls", "-q").stdout.split():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.2)
        time.sleep(0.5)
        assert run.poll() is None, "pause keeps running"
        containerd.ctr("task", "kill", "-s", "SIGTERM", name)
        assert run.wait(timeout=30) == 0
    finally:
        if run.poll() is None:
            containerd.ctr("task", "kill", "-s", "SIGKILL", name, check=False)
            run.wait(timeout=30)


@pytest.mark.parametrize("argv", [
    ("falconer", "--help"),
    ("python3", "-c", "import bcc, kopf, kubernetes, yaml, jinja2, cryptography"),
], ids=["falconer-help", "import-bcc"])
def test_sensor_image_runs(containerd: Containerd, imported: dict[str, str],
                           argv: tuple[str, ...]) -> None:
    done = containerd.run(imported["sensor"], f"sensor-{uuid.uuid4().hex[:8]}", *argv)
    assert done.returncode == 0, done.stderr
    if argv[0] == "falconer":
        assert "sensor" in done.stdout and "operator" in done.stdout


def daemonset_options(rules: Path, leave_out: str = "") -> tuple[str, ...]:
    """`ctr run` options equal to the DaemonSet's pod: host PID namespace and network,
    all default capabilities dropped and `SENSOR_CAPABILITIES` added, read-only root
    with a tmpfs /tmp, the host mounts (but `leave_out`, a container path), the env,
    and `rules` as the read-only /etc/falconer."""
    options = ["--with-ns", f"pid:/proc/{os.getpid()}/ns/pid", "--net-host", "--read-only",
               "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev",
               "--mount", f"type=bind,src={rules},dst=/etc/falconer,options=rbind:ro"]
    for cap in CTR_DEFAULT_CAPS:
        options += ["--cap-drop", f"CAP_{cap}"]
    for cap in images.SENSOR_CAPABILITIES:
        options += ["--cap-add", f"CAP_{cap}"]
    for mount in images.SENSOR_HOST_MOUNTS:
        if mount.container_path != leave_out:
            options += ["--mount", f"type=bind,src={mount.host_path},"
                                   f"dst={mount.container_path},options=rbind:ro"]
    for key, value in images.SENSOR_POD_ENV.items():
        options += ["--env", f"{key}={value}"]
    return tuple(options)


class SensorContainer:
    """`falconer sensor --json` in a container; alerts and stderr gathered by threads."""

    def __init__(self, containerd: Containerd, ref: str, options: tuple[str, ...]) -> None:
        self.containerd = containerd
        self.name = f"sensor-{uuid.uuid4().hex[:8]}"
        self.proc = subprocess.Popen(
            containerd.run_argv(ref, self.name, "falconer", "sensor", "--json", "--rules",
                                "/etc/falconer/rules.yaml", options=options),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.alerts: list[dict[str, object]] = []
        self.stderr: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.alerts.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "watching" in line:
                self.ready.set()
        self.ready.set()

    def stop(self) -> int:
        """SIGTERM the sensor; its exit status."""
        if self.proc.poll() is None:
            self.containerd.ctr("task", "kill", "-s", "SIGTERM", self.name, check=False)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.containerd.ctr("task", "kill", "-s", "SIGKILL", self.name, check=False)
        return self.proc.wait(timeout=30)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    (tmp_path / "rules.yaml").write_text(RULE)
    return tmp_path


@pytest.fixture
def sensor(containerd: Containerd, imported: dict[str, str], rules_dir: Path
           ) -> Iterator[SensorContainer]:
    prereq.require_ebpf()
    running = SensorContainer(containerd, imported["sensor"], daemonset_options(rules_dir))
    try:
        yield running
    finally:
        running.stop()


def test_sensor_container_alerts_on_a_host_shadow_read(sensor: SensorContainer) -> None:
    assert sensor.ready.wait(STARTUP_TIMEOUT_S) and sensor.proc.poll() is None, sensor.stderr
    marker = f"/nonexistent-{uuid.uuid4().hex}"
    subprocess.run(["cat", "/etc/shadow", marker], capture_output=True, check=False)
    deadline = time.monotonic() + 20
    while not (ours := [a for a in sensor.alerts if marker in str(a["output"])]):
        assert time.monotonic() < deadline, (sensor.alerts, sensor.stderr)
        time.sleep(0.1)
    assert ours[0]["rule"] == "Shadow read seen from the sensor image"
    # The parent (this test's Python) started before the sensor: its executable comes
    # from the host's /proc, readable only with SYS_PTRACE.
    assert f"parent={os.path.realpath('/proc/self/exe')}" in str(ours[0]["output"])
    assert sensor.stop() == 0
    assert any("alerts: 1" in line for line in sensor.stderr)


@pytest.mark.parametrize(("leave_out", "message"), [
    ("/sys/kernel/tracing", "tracefs is not mounted"),
    ("/lib/modules", "kernel headers missing"),
    ("/usr/src", "kernel headers missing"),
    ("/host/proc", "/host/proc"),
])
def test_sensor_container_needs_each_host_mount(containerd: Containerd,
                                                imported: dict[str, str], rules_dir: Path,
                                                leave_out: str, message: str) -> None:
    prereq.require_ebpf()
    done = containerd.run(imported["sensor"], f"sensor-{uuid.uuid4().hex[:8]}", "falconer",
                          "sensor", "--rules", "/etc/falconer/rules.yaml",
                          options=daemonset_options(rules_dir, leave_out=leave_out))
    assert done.returncode != 0
    assert message in done.stderr
