"""The all-in-one's supervision (`processes.Supervisor`), with real processes: a part
that exits is restarted with backoff and the restart is said; a part that keeps exiting
ends the run with its name and log; a killed kube-apiserver is reaped and restarted, not
left `<defunct>` while its clients retry.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from fault_matrix import Matrix
from operator_harness import kubectl, wait_for

from falconer_e2e import processes
from falconer_e2e.controlplane import ControlPlane


def test_a_part_that_keeps_exiting_ends_the_run_with_its_log(tmp_path: Path) -> None:
    said: list[str] = []
    child = processes.Child("flaky", ["sh", "-c", "echo boom from flaky; exit 3"], tmp_path / "flaky.log",
                            tmp_path / "flaky.pid")
    backoff = processes.Backoff(first_s=0.1, factor=2.0, cap_s=0.3, max_restarts=3, window_s=60.0)
    supervisor = processes.Supervisor(said.append, backoff)
    child.start()
    supervisor.watch(child)
    started = time.monotonic()
    with pytest.raises(processes.SupervisorGaveUp) as gave_up:
        while time.monotonic() - started < 10:
            supervisor.check()
            time.sleep(0.02)
    message = str(gave_up.value)
    assert "flaky exited with status 3, its 4th exit within 60s; giving up" in message
    assert "boom from flaky" in message, "the reason carries the log's last lines"
    delays = [float(m) for line in said for m in re.findall(r"restarting in ([\d.]+)s", line)]
    assert len(delays) == 3 and sum("flaky restarted" in line for line in said) == 3
    assert supervisor.restarts("flaky") == 3
    child.stop()


def test_backoff_grows_then_resets_after_a_stable_run(tmp_path: Path) -> None:
    clock = [0.0]
    said: list[str] = []
    child = processes.Child("sleeper", ["sleep", "60"], tmp_path / "s.log", tmp_path / "s.pid")
    supervisor = processes.Supervisor(said.append, processes.Backoff(first_s=1, factor=2, cap_s=4, stable_s=30,
                                                                       max_restarts=10, window_s=600),
                                      clock=lambda: clock[0])
    child.start()
    supervisor.watch(child)
    delays = []
    for ran_s in (1, 1, 1, 1, 100):
        clock[0] += ran_s
        os.kill(child.pid or 0, signal.SIGKILL)
        wait_for(lambda: child.exit_code() is not None, timeout=5, what="the kill")
        supervisor.check()
        delays.append(float(re.findall(r"restarting in ([\d.]+)s", said[-1])[0]))
        clock[0] += delays[-1]
        supervisor.check()
        assert child.running()
    child.stop()
    # 1 s after the first quick exit, doubling up to the cap; a run past stable_s resets it.
    assert delays == [1, 2, 4, 4, 1]


def test_a_killed_apiserver_is_reaped_and_restarted(fault_plane: ControlPlane, matrix: Matrix) -> None:
    said: list[str] = []
    supervisor = processes.Supervisor(said.append, processes.Backoff(first_s=0.5))
    for component in fault_plane.components:
        supervisor.watch(component)
    apiserver = next(c for c in fault_plane.components if c.name == "kube-apiserver")
    old_pid = apiserver.pid
    assert old_pid is not None
    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    admin = Path(fault_plane.kubeconfig)

    def ready() -> bool:
        supervisor.check()
        return kubectl(admin, "get", "--raw", "/readyz", check=False).stdout.strip() == "ok"

    wait_for(ready, timeout=90, interval=0.5, what="the API server to be restarted and ready")
    back_s = time.monotonic() - killed
    assert not Path(f"/proc/{old_pid}").exists(), "the killed API server was reaped (no <defunct>)"
    assert apiserver.pid != old_pid and apiserver.running()
    assert any("kube-apiserver exited with status -9" in line for line in said), said
    assert any("kube-apiserver restarted" in line for line in said), said
    matrix.record("kill -9 kube-apiserver (all-in-one supervisor)", "reaped, restarted with backoff, logged",
                  f"ready again {back_s:.1f}s after the kill; 1 restart logged; no <defunct>")
