"""What a node changes on its host, recorded before it starts and undone after it stops.

A kubelet, kube-proxy, containerd and the CNI plugins change machine-wide state that
outlives them (measured on this machine, see /work/shared/notes/kubelet.md):

- sysctls: the kubelet's kernel tunables (vm.overcommit_memory=1, vm.panic_on_oom=0,
  kernel.panic=10, kernel.panic_on_oops=1, kernel.keys.root_max*), the CNI bridge
  plugin's IP forwarding, kube-proxy's route_localnet and conntrack limits;
- iptables chains KUBE-* (kubelet, kube-proxy) and CNI-* (portmap) in every table, with
  jumps to them from the built-in chains, for IPv4 and IPv6;
- cgroups `/kubepods/...` in every hierarchy, with the pods' processes in them;
- mounts: the kubelet's root dir bind-mounted onto itself, volumes, the pods' rootfs
  and shm, network namespaces pinned at /run/netns/cni-<uuid>;
- a bridge and veth pairs, CNI result caches in /var/lib/cni, and folders the kubelet
  and containerd create at fixed paths (/var/lib/kubelet/device-plugins,
  /var/log/containers, /run/containerd).

Several of these (the kubepods cgroups, the KUBE-* chains, /var/lib/kubelet) are
machine-wide, so only one node may run on a host at a time: `HostLock` serialises them.
The sweep therefore treats every `/kubepods` process, KUBE-*/CNI-* chain and
/run/netns/cni-* namespace as the node's: do not run another kubelet or CNI runtime on a
host where Falconer's node runs (a plain containerd, e.g. for image tests, is fine: the
node keeps its containerd and runc state in its own work dir).
`HostState` is written to STATE_DIR before anything changes, so the next start can
`sweep` what a killed run left behind; a clean stop sweeps and then `forget`s it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from falconer_e2e import node_config

#: Machine-wide bookkeeping; /run is a tmpfs, so a reboot (which resets all of the
#: above anyway) forgets it too.
STATE_DIR = Path("/run/falconer/node")

#: The sysctls a node changes (names as paths under /proc/sys).
SYSCTLS = (
    # kubelet: setupKernelTunables (pkg/kubelet/cm/container_manager_linux.go)
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
    # CNI bridge plugin with isGateway: enables forwarding
    "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding",
    # kube-proxy: localhost NodePorts and conntrack sizing/timeouts
    "net/ipv4/conf/all/route_localnet", "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)

#: Folders a node creates at fixed paths; those absent before start are removed after.
FIXED_PATHS = (
    "/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd",
    "/var/lib/cni", "/usr/libexec/kubernetes", "/etc/kubernetes",
)

#: Shared folders: only entries a node made are removed, the folder only when empty.
NETNS_DIR = Path("/run/netns")
CNI_NETNS_PREFIX = "cni-"

#: containerd 1.6's shim sockets: <dir>/sha256("<grpc address>/<namespace>/<id>"), one per
#: pod sandbox (containerd's runtime/v2/shim SocketAddress).
SHIM_SOCKET_DIR = Path("/run/containerd/s")
CRI_NAMESPACE = "k8s.io"

#: iptables chain prefixes a node's parts create (kubelet/kube-proxy, CNI portmap).
CHAIN_PREFIXES = ("KUBE-", "CNI-")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")

#: The top cgroup of the pods in every hierarchy (the kubelet's default cgroupRoot "/").
KUBEPODS = "kubepods"
CGROUP_ROOT = Path("/sys/fs/cgroup")

#: How long swept processes get to disappear, and cgroups to become removable.
SWEEP_WAIT_SECONDS = 10.0


class HostBusy(RuntimeError):
    """Another node holds this host (the message names its pid and work dir)."""


@dataclass(frozen=True)
class HostState:
    """What the host looked like before a node started, and what the node is called.

    `sysctls` maps SYSCTLS names to their values before start (absent ones are left out);
    `absent_paths` lists the FIXED_PATHS and NETNS_DIR that did not exist; `bridge` is the
    node's CNI bridge and `cni_network` its CNI network name.
    """

    work_dir: str
    bridge: str
    cni_network: str
    sysctls: dict[str, str]
    absent_paths: list[str]


class HostLock:
    """An exclusive flock on STATE_DIR/lock, held for a node's lifetime."""

    def __init__(self, state_dir: Path = STATE_DIR) -> None:
        self.path = state_dir / "lock"
        self._fd: int | None = None

    def acquire(self, work_dir: Path, timeout: float) -> None:
        """Take the lock within `timeout` seconds, else raise HostBusy naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                    os.close(fd)
                    raise HostBusy(f"another node runs on this host ({holder}); only one "
                                   "can own the kubepods cgroups and KUBE-* chains") from None
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, work dir {work_dir}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock; idempotent."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_sysctl(name: str) -> str | None:
    """The value of /proc/sys/<name> (whitespace-normalised), None when absent."""
    try:
        return " ".join((Path("/proc/sys") / name).read_text().split())
    except OSError:
        return None


def snapshot(work_dir: Path, bridge: str, cni_network: str) -> HostState:
    """Record the host as it is now (call before the node changes anything)."""
    sysctls = {name: value for name in SYSCTLS if (value := read_sysctl(name)) is not None}
    absent = [p for p in (*FIXED_PATHS, str(NETNS_DIR)) if not os.path.lexists(p)]
    return HostState(str(work_dir), bridge, cni_network, sysctls, absent)


def save(state: HostState, state_dir: Path = STATE_DIR) -> None:
    """Persist `state` (atomically) so that a later start can sweep after a kill."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = _state_file(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=1))
    tmp.replace(_state_file(state_dir))


def load(state_dir: Path = STATE_DIR) -> HostState | None:
    """The state a previous node left (it was not stopped cleanly), or None."""
    try:
        raw = json.loads(_state_file(state_dir).read_text())
    except FileNotFoundError:
        return None
    return HostState(**raw)


def forget(state_dir: Path = STATE_DIR) -> None:
    """Drop the saved state after a complete sweep."""
    _state_file(state_dir).unlink(missing_ok=True)


# -- the sweep -----------------------------------------------------------------------------

def sweep(state: HostState) -> list[str]:
    """Undo everything a node (running or killed) changed; idempotent.

    Order matters: processes first (they hold mounts, cgroups and netns), then mounts,
    network namespaces, cgroups, iptables chains, the bridge, folders, sysctls. Returns
    one line per problem that remains (empty when the host is clean); never raises for a
    single failing item, so one stuck mount does not keep the rest in place.
    """
    problems: list[str] = []
    kill_processes(state.work_dir)
    kill_cgroup_processes()
    created = tuple(p for p in state.absent_paths if p != str(NETNS_DIR))
    problems += unmount_under((state.work_dir, str(NETNS_DIR / CNI_NETNS_PREFIX), *created))
    problems += remove_cni_netns()
    problems += remove_shim_sockets(Path(state.work_dir))
    problems += remove_kubepods_cgroups()
    problems += remove_chains()
    problems += _delete_link(state.bridge)
    problems += _remove_paths(state)
    problems += restore_sysctls(state.sysctls)
    return problems


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _own_lineage() -> set[int]:
    """This process and its ancestors, which a sweep must never signal."""
    lineage, pid = set(), os.getpid()
    while pid > 1:
        lineage.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return lineage


def kill_processes(work_dir: str) -> list[int]:
    """SIGKILL every process whose command line names a file in `work_dir` (containerd,
    kubelet and kube-proxy name their configs there, containerd's shims its socket).
    Returns the pids signalled, after they are gone."""
    marker = work_dir.rstrip("/") + "/"
    spare = _own_lineage()
    killed: list[int] = []
    for pid in _pids():
        if pid in spare:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if marker.encode() in cmdline:
            _kill(pid)
            killed.append(pid)
    _wait_gone(killed)
    return killed


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + SWEEP_WAIT_SECONDS
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                break
            if state == "Z":
                break
            time.sleep(0.05)


def kubepods_cgroups() -> list[Path]:
    """Every `kubepods` cgroup folder, one per hierarchy that has one."""
    found: list[Path] = []
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        candidate = hierarchy / KUBEPODS
        if candidate.is_dir():
            found.append(candidate)
    if (CGROUP_ROOT / KUBEPODS).is_dir():
        found.append(CGROUP_ROOT / KUBEPODS)
    return found


def kill_cgroup_processes() -> list[int]:
    """SIGKILL every process in any kubepods cgroup (the pods' containers)."""
    pids: set[int] = set()
    for top in kubepods_cgroups():
        for folder, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    pids.update(int(p) for p in (Path(folder) / "cgroup.procs").read_text().split())
                except (OSError, ValueError):
                    continue
    pids -= _own_lineage()
    for pid in pids:
        _kill(pid)
    _wait_gone(sorted(pids))
    return sorted(pids)


def _mount_points() -> list[str]:
    """Mount points of this mount namespace, decoded from /proc/self/mountinfo."""
    points: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        field = line.split()[4]
        points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return points


def mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    """Mount points at or below any of `prefixes` (a prefix ending in '-' matches names)."""
    def matches(point: str, prefix: str) -> bool:
        if prefix.endswith("-"):
            return point.startswith(prefix)
        return point == prefix or point.startswith(prefix.rstrip("/") + "/")

    return [p for p in _mount_points() if any(matches(p, prefix) for prefix in prefixes)]


def unmount_under(prefixes: tuple[str, ...]) -> list[str]:
    """Unmount (lazily, deepest first, repeatedly for stacked mounts) everything under
    `prefixes`; returns problems for mounts that stay."""
    for _round in range(5):
        points = mounts_under(prefixes)
        if not points:
            return []
        for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return [f"still mounted: {p}" for p in mounts_under(prefixes)]


def remove_cni_netns() -> list[str]:
    """Delete the CNI plugins' network namespace files /run/netns/cni-* (unmounted)."""
    problems: list[str] = []
    if not NETNS_DIR.is_dir():
        return problems
    for entry in NETNS_DIR.glob(f"{CNI_NETNS_PREFIX}*"):
        try:
            entry.unlink()
        except OSError as error:
            problems.append(f"cannot remove {entry}: {error}")
    return problems


def remove_shim_sockets(work_dir: Path) -> list[str]:
    """Delete the shim sockets of the node's tasks (a killed shim leaves its socket)."""
    paths = node_config.layout(work_dir)
    tasks = paths.containerd_state / "io.containerd.runtime.v2.task" / CRI_NAMESPACE
    problems: list[str] = []
    if not tasks.is_dir():
        return problems
    for task in tasks.iterdir():
        key = f"{paths.containerd_socket}/{CRI_NAMESPACE}/{task.name}".encode()
        socket_path = SHIM_SOCKET_DIR / hashlib.sha256(key).hexdigest()
        try:
            socket_path.unlink(missing_ok=True)
        except OSError as error:
            problems.append(f"cannot remove shim socket {socket_path}: {error}")
    return problems


def remove_kubepods_cgroups() -> list[str]:
    """rmdir every kubepods cgroup bottom-up, retrying while processes exit."""
    deadline = time.monotonic() + SWEEP_WAIT_SECONDS
    while True:
        problems: list[str] = []
        for top in kubepods_cgroups():
            for folder, _dirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(folder)
                except FileNotFoundError:
                    pass
                except OSError as error:
                    problems.append(f"cannot remove cgroup {folder}: {error.strerror}")
        if not problems or time.monotonic() > deadline:
            return problems
        kill_cgroup_processes()
        time.sleep(0.2)


def node_chains(command: str, table: str) -> list[str]:
    """The KUBE-*/CNI-* chains in `table` (empty when the table or command is unusable)."""
    listing = subprocess.run([command, "-w", "-t", table, "-S"], capture_output=True,
                             text=True, check=False)
    chains = []
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "-N" and parts[1].startswith(CHAIN_PREFIXES):
            chains.append(parts[1])
    return chains


def remove_chains() -> list[str]:
    """Delete every KUBE-*/CNI-* chain and every rule that jumps to one (iptables and
    ip6tables, all tables); returns chains that remain."""
    problems: list[str] = []
    for command in ("iptables", "ip6tables"):
        if shutil.which(command) is None:
            continue
        for table in IPTABLES_TABLES:
            chains = node_chains(command, table)
            if not chains:
                continue
            listing = subprocess.run([command, "-w", "-t", table, "-S"], capture_output=True,
                                     text=True, check=False).stdout
            for line in listing.splitlines():
                parts = shlex.split(line)  # comments are quoted: "kubernetes service portals"
                if (parts[:1] == ["-A"] and not parts[1].startswith(CHAIN_PREFIXES)
                        and any(p.startswith(CHAIN_PREFIXES) for p in parts[2:])):
                    subprocess.run([command, "-w", "-t", table, "-D", *parts[1:]],
                                   capture_output=True, check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    subprocess.run([command, "-w", "-t", table, flag, chain],
                                   capture_output=True, check=False)
            problems += [f"{command} -t {table}: chain {c} remains"
                         for c in node_chains(command, table)]
    return problems


def link_exists(name: str) -> bool:
    """Whether a network interface `name` exists in this namespace."""
    return Path("/sys/class/net", name).exists()


def _delete_link(name: str) -> list[str]:
    if not link_exists(name):
        return []
    done = subprocess.run(["ip", "link", "del", name], capture_output=True, text=True,
                          check=False)
    return [] if done.returncode == 0 else [f"cannot delete link {name}: {done.stderr.strip()}"]


def _remove_paths(state: HostState) -> list[str]:
    """Remove the node's CNI result caches and the fixed folders it created."""
    problems: list[str] = []
    results = Path("/var/lib/cni/results")
    if results.is_dir():
        for entry in results.glob(f"{state.cni_network}-*"):
            entry.unlink(missing_ok=True)
    for path in state.absent_paths:
        if path == str(NETNS_DIR):
            try:
                NETNS_DIR.rmdir()
            except OSError:
                pass  # gone, or someone else's namespaces live there now
            continue
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            problems.append(f"cannot remove {path}")
    return problems


def restore_sysctls(values: dict[str, str]) -> list[str]:
    """Write back every sysctl whose value changed; returns the ones that would not."""
    problems: list[str] = []
    for name, value in values.items():
        if read_sysctl(name) == value:
            continue
        try:
            (Path("/proc/sys") / name).write_text(value)
        except OSError as error:
            problems.append(f"cannot restore sysctl {name}={value}: {error}")
    return problems
