"""A private containerd for the image tests (fixture `containerd`, registered by
tests/images/conftest.py): Debian's containerd with its own root, state,
socket and runc root under a scratch folder, the CRI plugin off (`ctr` only), so it never
meets the node harness's containerd. Skips on a developer machine without containerd,
fails in CI (prereq.require)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import prereq
import pytest

from falconer_e2e import node_host
from falconer_e2e.processes import Child

#: The containerd namespace images are imported into (the one the kubelet's CRI uses).
NAMESPACE = "k8s.io"
READY_TIMEOUT_S = 30.0

CONFIG = """\
version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{work}/containerd.sock"
[ttrpc]
  address = "{work}/containerd.sock.ttrpc"
[debug]
  address = "{work}/debug.sock"
"""


class Containerd:
    """One running containerd and `ctr` calls against it."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.socket = work / "containerd.sock"
        (work / "config.toml").write_text(CONFIG.format(work=work))
        self.child = Child("containerd", ["containerd", "--config", str(work / "config.toml")],
                           work / "containerd.log", work / "containerd.pid")

    def start(self) -> None:
        """Start containerd; wait until `ctr version` reaches it."""
        self.child.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.ctr("version", check=False, timeout=10).returncode != 0:
            if not self.child.running() or time.monotonic() > deadline:
                raise RuntimeError("containerd did not start:\n" + self.child.log_tail())
            time.sleep(0.2)

    def ctr(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        """`ctr -a <socket> -n k8s.io ARGS`; with `check`, a failure raises with its output."""
        done = subprocess.run(["ctr", "-a", str(self.socket), "-n", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}")
        return done

    def run_argv(self, ref: str, name: str, *argv: str, options: tuple[str, ...] = ()
                 ) -> list[str]:
        """The `ctr run --rm` command line for a container `name` of image `ref`."""
        return ["ctr", "-a", str(self.socket), "-n", NAMESPACE, "run", "--rm",
                "--runc-root", str(self.work / "runc"), *options, ref, name, *argv]

    def run(self, ref: str, name: str, *argv: str, options: tuple[str, ...] = (),
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a container to its end; its exit status is the result's returncode."""
        return subprocess.run(self.run_argv(ref, name, *argv, options=options),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def stop(self) -> None:
        """Kill what still runs, remove containers, stop containerd."""
        if self.child.running():
            for task in self.ctr("task", "ls", "-q", check=False).stdout.split():
                self.ctr("task", "kill", "-s", "SIGKILL", task, check=False)
                self.ctr("task", "delete", "--force", task, check=False)
            for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
                self.ctr("containers", "rm", container, check=False)
        self.child.stop()


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """A private containerd for the session (its scratch folder is short: the socket path
    must fit a unix socket's 108 bytes)."""
    missing = [tool for tool in ("containerd", "ctr", "runc") if shutil.which(tool) is None]
    prereq.require(not missing, f"missing {', '.join(missing)}: run ./dev setup (40-node.sh)")
    work = Path(tempfile.mkdtemp(prefix="falconer-ctrd-", dir="/tmp"))
    daemon = Containerd(work)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        problems = node_host.unmount_under((str(work),))
        assert not problems, problems
        shutil.rmtree(work, ignore_errors=True)
