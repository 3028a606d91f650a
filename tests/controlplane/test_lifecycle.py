"""Starting and stopping a control plane never leaves a process behind, even when the
Python process that started it died without cleaning up."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import prereq
import pytest

from falconer_e2e.controlplane import ControlPlane, ControlPlaneError
from kube_fixtures import missing_server_binaries

pytestmark = pytest.mark.kube


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def recorded_pids(work_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in sorted((work_dir / "run").glob("*.pid"))]


@pytest.fixture
def binaries_present() -> None:
    problems = missing_server_binaries()
    prereq.require(not problems, "; ".join(problems))


@pytest.mark.usefixtures("binaries_present")
def test_a_crashed_owner_leaves_nothing_the_next_start_does_not_end(tmp_path: Path) -> None:
    """An owner killed without atexit (os._exit) leaves its components running; the next
    start on the same work dir ends them, reuses the PKI, and its stop ends everything."""
    work = tmp_path / "cp"
    script = textwrap.dedent(f"""
        import os
        from falconer_e2e.controlplane import ControlPlane
        ControlPlane({str(work)!r}).start()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=180,
                   env={**os.environ, "PYTHONSAFEPATH": "1"})
    orphans = recorded_pids(work)
    assert len(orphans) == 4 and all(alive(pid) for pid in orphans)
    ca_before = (work / "pki" / "ca.crt").read_bytes()

    cp = ControlPlane(work)
    with cp:
        assert not any(alive(pid) for pid in orphans)
        assert (work / "pki" / "ca.crt").read_bytes() == ca_before
        running = recorded_pids(work)
        assert len(running) == 4 and all(alive(pid) for pid in running)
    assert not any(alive(pid) for pid in running)
    assert recorded_pids(work) == []


@pytest.mark.usefixtures("binaries_present")
def test_a_component_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    """An API server port already taken makes start() fail fast, quoting the API
    server's log, and stop the etcd it had already started."""
    blocker = ControlPlane(tmp_path / "first")
    with blocker:
        assert blocker.ports is not None
        cp = ControlPlane(tmp_path / "second", api_port=blocker.ports.apiserver)
        with pytest.raises(ControlPlaneError, match="kube-apiserver exited") as failed:
            cp.start()
        assert "address already in use" in str(failed.value)
        assert recorded_pids(tmp_path / "second") == []
