"""Which container (and which pod) a process runs in, from its cgroups, the way Falco
names containers.

Only real runtimes' cgroup naming counts; anything else (systemd slices, this sandbox's
own `/process_api/<hex>` groups) is the host. Namings recognised, in cgroup v1
(`N:controller:/path`, every hierarchy alike) and v2 (`0::/path`):

| runtime | cgroupfs driver | systemd driver |
|---|---|---|
| kubelet + containerd / CRI-O | `/kubepods/<qos>/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>` | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`) |
| Docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
| Podman | `/libpod_parent/libpod-<id>` | `/machine.slice/libpod-<id>.scope[/container]` |

`<id>` is the runtime's 64-hex container id; systemd writes the pod UID with `_` for
`-`. Sources: kubelet's cgroup naming (`pkg/kubelet/cm`, checked on this machine's
kubelet, /work/shared/notes/kubelet.md), containerd's and CRI-O's systemd scope
prefixes, Docker's and Podman's cgroup parents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from falconer.sensor import hostproc

#: container.id / container.name of a process outside any container.
HOST = "host"
#: Falco's container.id is the first 12 characters of the runtime's id.
SHORT_ID_LEN = 12


@dataclass(frozen=True, slots=True)
class Cgroup:
    """A process's container identity, as its cgroup path tells it."""

    container_id: str          # the full 64-hex runtime id, or "host"
    runtime: str = HOST        # Falco's container.type: containerd cri-o docker podman cri host
    pod_uid: str = ""          # the Kubernetes pod UID ("" outside kubepods)

    @property
    def is_host(self) -> bool:
        """Whether the process runs outside any container."""
        return self.container_id == HOST

    @property
    def short_id(self) -> str:
        """Falco's container.id: the first 12 characters, or "host"."""
        return self.container_id[:SHORT_ID_LEN]


HOST_CGROUP = Cgroup(HOST)

_HEX64 = "[0-9a-f]{64}"
#: `<prefix>-<id>[.scope]`: one path component that names the runtime and the id.
_SCOPE = re.compile(rf"^(cri-containerd|crio|docker|libpod)-({_HEX64})(?:\.scope)?$")
_SCOPE_RUNTIME = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker",
                  "libpod": "podman"}
#: A bare id component counts only under one of these parents (cgroupfs drivers).
_BARE_ID = re.compile(rf"^{_HEX64}$")
_BARE_PARENTS = {"kubepods": "cri", "docker": "docker"}
#: The pod UID: `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd).
_POD = re.compile(r"^(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}"
                  r"[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$")


def _parse_path(path: str) -> Cgroup | None:
    """The container a cgroup path names, or None."""
    parts = [p for p in path.split("/") if p]
    pod_uid = ""
    in_kubepods = False
    for i, part in enumerate(parts):
        if part.startswith("kubepods"):
            in_kubepods = True
        pod = _POD.match(part) if in_kubepods else None
        if pod:
            pod_uid = pod.group(1).replace("_", "-")
            continue
        m = _SCOPE.match(part)
        if m:
            return Cgroup(m.group(2), _SCOPE_RUNTIME[m.group(1)], pod_uid)
        if _BARE_ID.match(part):
            parent = "kubepods" if in_kubepods else (parts[i - 1] if i else "")
            if parent in _BARE_PARENTS:
                return Cgroup(part, _BARE_PARENTS[parent], pod_uid)
    return None


def parse_cgroup(text: str) -> Cgroup:
    """The identity a `/proc/<pid>/cgroup` text gives (v1 or v2), HOST_CGROUP if none."""
    for line in text.splitlines():
        found = _parse_path(line.split(":", 2)[-1])
        if found is not None:
            return found
    return HOST_CGROUP


def cgroup_of(pid: int) -> Cgroup | None:
    """The identity of a live process, or None when /proc no longer has it."""
    try:
        with open(hostproc.path(pid, "cgroup"), encoding="utf-8", errors="replace") as f:
            return parse_cgroup(f.read())
    except OSError:
        return None
