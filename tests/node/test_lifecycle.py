"""A node leaves its host as it found it: after stop(), and after a run that was killed
(SIGKILL, no teardown) once the next node has started and stopped.

Both tests stop the session's node first (one node per host) and start it again after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kube_fixtures import run_busybox_pod

from falconer_e2e import node_host, processes
from falconer_e2e.node import Node

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

pytestmark = pytest.mark.kube

#: sysctl trees compared before and after a node's life (net/ipv4 without per-device
#: folders other than all/default, which follow interfaces that come and go).
SYSCTL_TREES = ("vm", "kernel", "net/ipv4", "net/ipv6/conf/all", "net/ipv6/conf/default",
                "net/netfilter", "net/bridge", "net/core")
#: Values that change on their own.
VOLATILE = ("kernel/ns_last_pid", "kernel/random/", "kernel/pty/nr",
            "net/netfilter/nf_conntrack_count")


def sysctls() -> dict[str, str]:
    """Every readable sysctl under SYSCTL_TREES except VOLATILE ones."""
    found: dict[str, str] = {}
    for tree in SYSCTL_TREES:
        for folder, _dirs, files in os.walk(Path("/proc/sys", tree)):
            relative = os.path.relpath(folder, "/proc/sys")
            if ("/conf/" in relative + "/" and not relative.endswith(("/all", "/default"))
                    and not relative.endswith("/conf")) or "/neigh" in relative:
                continue
            for name in files:
                key = f"{relative}/{name}"
                if key.startswith(VOLATILE):
                    continue
                value = node_host.read_sysctl(key)
                if value is not None:
                    found[key] = value
    return found


def node_traces(node: Node) -> dict[str, object]:
    """What a node leaves on the host while it runs (all empty/False once it is gone)."""
    return {
        "chains": [(cmd, table, chain) for cmd in ("iptables", "ip6tables")
                   for table in node_host.IPTABLES_TABLES
                   for chain in node_host.node_chains(cmd, table)],
        "kubepods cgroups": [str(p) for p in node_host.kubepods_cgroups()],
        "mounts": node_host.mounts_under((str(node.work_dir),
                                          str(node_host.NETNS_DIR / node_host.CNI_NETNS_PREFIX),
                                          "/var/lib/kubelet")),
        "cni netns": sorted(str(p) for p in node_host.NETNS_DIR.glob(
            f"{node_host.CNI_NETNS_PREFIX}*")) if node_host.NETNS_DIR.is_dir() else [],
        "bridge": node_host.link_exists(node.network.bridge),
        "state file": (node_host.STATE_DIR / "state.json").exists(),
        "device-plugins": Path("/var/lib/kubelet/device-plugins").exists(),
    }


def assert_clean(node: Node) -> None:
    traces = node_traces(node)
    assert not any(traces.values()), traces


@pytest.fixture
def stopped_node(kube_node: Node) -> Iterator[Node]:
    """The session's node, stopped for the test and running again after it."""
    kube_node.stop()
    try:
        yield kube_node
    finally:
        if not kube_node.running():
            kube_node.start()


def test_stop_undoes_every_host_change(stopped_node: Node, kube_client: ApiClient,
                                       kube_namespace: str) -> None:
    assert_clean(stopped_node)
    before = sysctls()
    stopped_node.start()
    run_busybox_pod(kube_client, kube_namespace, "sleeper", ["sleep", "3600"])
    # The node did change the host, so the comparison below can fail.
    running = node_traces(stopped_node)
    assert running["chains"] and running["kubepods cgroups"] and running["mounts"]
    assert running["cni netns"] and running["bridge"]
    assert sysctls() != before
    stopped_node.stop()
    assert_clean(stopped_node)
    after = sysctls()
    assert {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
            if before.get(k) != after.get(k)} == {}


#: A node started by another process that is then SIGKILLed: its own control plane,
#: a node, one pod; "ready" once the pod runs.
KILLED_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from falconer_e2e import images
    from falconer_e2e.controlplane import ControlPlane
    from falconer_e2e.node import Node
    sys.path.insert(0, sys.argv[3])
    from kube_fixtures import run_busybox_pod
    cp = ControlPlane(Path(sys.argv[1])).start()
    node = Node(cp, Path(sys.argv[2]), sandbox_image=images.REFS["pause"],
                images=[images.build("pause"), images.build("busybox")]).start()
    with cp.api_client() as api:
        run_busybox_pod(api, "default", "victim", ["sleep", "3600"])
    print("ready", flush=True)
    time.sleep(3600)
""")


def test_start_sweeps_a_killed_run(stopped_node: Node, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    before = sysctls()
    cp_dir, node_dir = tmp_path / "cp", tmp_path / "node"
    support = Path(str(request.config.rootpath)) / "tests" / "support"
    run = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(cp_dir), str(node_dir),
                            str(support)], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        assert run.stdout.readline().strip() == "ready"
        run.send_signal(signal.SIGKILL)  # no atexit, no teardown: its children live on
        run.wait()
        kubelet = int((node_dir / "run" / "kubelet.pid").read_text())
        os.kill(kubelet, 0)
        assert node_host.load() is not None
        assert node_host.kubepods_cgroups()
        assert node_host.mounts_under((str(node_dir),))

        stopped_node.start()  # sweeps the killed run first
        with pytest.raises(ProcessLookupError):
            os.kill(kubelet, 0)
        assert not node_host.mounts_under((str(node_dir),))
        assert node_host.load() is not None  # now the running node's
        stopped_node.stop()
        assert_clean(stopped_node)
        assert not node_host.mounts_under((str(node_dir),))
        after = sysctls()
        assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == set()
    finally:
        run.kill()
        # The killed run's control plane is no node leftover: end it here.
        processes.end_leftovers(cp_dir / "run", str(cp_dir))
