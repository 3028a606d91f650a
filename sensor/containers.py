"""container.id from a process's cgroups, the way Falco names containers.

Only real runtimes' cgroup naming counts (Docker, containerd/CRI, CRI-O, Podman,
kubepods): a 64-hex id inside a cgroup path that also names one of them. Anything else
(systemd slices, a sandbox's own `/process_api/<hex>` groups) is the host.
"""

from __future__ import annotations

import re

from falconer.sensor import hostproc

HOST = "host"

_RUNTIME = re.compile(r"docker|containerd|cri-o|crio|libpod|podman|kubepods")
_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def container_id(cgroup_text: str) -> str:
    """The 12-char container id for a `/proc/<pid>/cgroup` text, or "host"."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        if not _RUNTIME.search(path):
            continue
        m = _ID.search(path)
        if m:
            return m.group(1)[:12]
    return HOST


def container_id_of(pid: int) -> str | None:
    """container.id of a live process, or None when /proc no longer has it."""
    try:
        with open(hostproc.path(pid, "cgroup"), encoding="utf-8", errors="replace") as f:
            return container_id(f.read())
    except OSError:
        return None
