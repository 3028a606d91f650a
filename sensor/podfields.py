"""The `container.*`, `k8s.*` and `k8smeta.*` fields of a SensorEvent, with the values
Falco's container and k8smeta plugins give (falcosecurity/plugins `plugins/container`
extract.cpp and README, `plugins/k8smeta` README):

- On the host: container.id and container.name are "host"; the image fields and
  container.mounts are ""; container.privileged is false; every k8s.* field is
  missing (printed <NA>, and every comparison on it is false).
- In a container whose metadata is not known (yet): only container.id (and
  container.full_id, container.type) have a value.
- container.mounts joins `source:dest:mode:rdwr:propagation` items with ","; a
  container.mount*[...] argument is an index or a glob over the source (over the
  destination for container.mount.source); container.mount[...] is "none" when no
  mount matches.
- k8s.pod.labels is "k1:v1, k2:v2" (kubelet's `io.kubernetes.*` labels left out);
  k8smeta.pod.labels is the list of "k:v" items.
- container.start_ts is the container's start as the runtime (or kubelet) reports it
  — Falco takes the start of the container's pid-namespace init, which is the same
  moment give or take the runtime's own start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from falconer.engine.fnglob import glob_regex
from falconer.sensor.containers import HOST
from falconer.sensor.podmeta import ContainerMeta, Mount, PodMeta

if TYPE_CHECKING:
    from falconer.sensor.event import SensorEvent

Field = Callable[["SensorEvent", "str | None"], object]


def _mount_text(m: Mount) -> str:
    return f"{m.source}:{m.dest}:{m.mode}:{'true' if m.read_write else 'false'}:{m.propagation}"


def _container_attr(fn: Callable[[ContainerMeta], object], on_host: object) -> Field:
    """A field of the container's metadata; `on_host` for host processes."""
    def get(ev: SensorEvent, arg: str | None) -> object:
        if ev.proc.cgroup.is_host:
            return on_host
        c = ev.meta()[1]
        return fn(c) if c is not None else None
    return get


def _pod_attr(fn: Callable[[PodMeta], object]) -> Field:
    """A field of the pod's metadata (missing on the host and outside Kubernetes)."""
    def get(ev: SensorEvent, arg: str | None) -> object:
        pod = ev.meta()[0]
        return fn(pod) if pod is not None else None
    return get


def _pod_label(ev: SensorEvent, arg: str | None) -> str | None:
    pod = ev.meta()[0]
    return pod.label(arg) if pod is not None and arg is not None else None


def _visible_labels(pod: PodMeta) -> list[str]:
    return [f"{k}:{v}" if v else k for k, v in pod.labels if not k.startswith("io.kubernetes.")]


def _deployment(pod: PodMeta) -> str | None:
    w = pod.workload
    return w.name if w is not None and w.kind == "Deployment" else None


def _find_mount(c: ContainerMeta, arg: str, by_dest: bool) -> Mount | None:
    """A mount by index, or the first whose source (or dest) matches the glob."""
    if arg.isdigit():
        i = int(arg)
        return c.mounts[i] if i < len(c.mounts) else None
    rx = glob_regex(arg)
    return next((m for m in c.mounts if rx.fullmatch(m.dest if by_dest else m.source)), None)


def _mount_field(fn: Callable[[Mount], str], by_dest: bool = False,
                 none: str | None = None) -> Field:
    def get(ev: SensorEvent, arg: str | None) -> object:
        if arg is None:
            return None
        if ev.proc.cgroup.is_host:
            return none
        c = ev.meta()[1]
        if c is None:
            return None
        m = _find_mount(c, arg, by_dest)
        return fn(m) if m is not None else none
    return get


def _start_ts(ev: SensorEvent, arg: str | None) -> int | None:
    c = None if ev.proc.cgroup.is_host else ev.meta()[1]
    return c.start_ts_ns if c is not None and c.start_ts_ns else None


def _duration(ev: SensorEvent, arg: str | None) -> int | None:
    start = _start_ts(ev, arg)
    return ev.time_ns - start if start is not None else None


def _container_id(ev: SensorEvent, arg: str | None) -> str:
    return ev.proc.cgroup.short_id


def _container_full_id(ev: SensorEvent, arg: str | None) -> str:
    return ev.proc.cgroup.container_id


def _container_type(ev: SensorEvent, arg: str | None) -> str:
    return ev.tracker.metadata.runtime_name(ev.proc.cgroup)


FIELDS: dict[str, Field] = {
    "container.id": _container_id,
    "container.full_id": _container_full_id,
    "container.type": _container_type,
    "container.name": _container_attr(lambda c: c.name or None, HOST),
    "container.image": _container_attr(lambda c: c.image, ""),
    "container.image.repository": _container_attr(lambda c: c.image_repository, ""),
    "container.image.tag": _container_attr(lambda c: c.image_tag, ""),
    "container.image.digest": _container_attr(lambda c: c.image_digest, ""),
    "container.privileged": _container_attr(lambda c: c.privileged, False),
    "container.mounts": _container_attr(lambda c: ",".join(map(_mount_text, c.mounts)), ""),
    "container.mount": _mount_field(_mount_text, none="none"),
    "container.mount.source": _mount_field(lambda m: m.source, by_dest=True),
    "container.mount.dest": _mount_field(lambda m: m.dest),
    "container.mount.mode": _mount_field(lambda m: m.mode),
    "container.mount.rdwr": _mount_field(lambda m: "true" if m.read_write else "false"),
    "container.mount.propagation": _mount_field(lambda m: m.propagation),
    "container.start_ts": _start_ts,
    "container.duration": _duration,
    "container.ip": _pod_attr(lambda p: p.ip or None),
    "k8s.ns.name": _pod_attr(lambda p: p.namespace),
    "k8s.pod.name": _pod_attr(lambda p: p.name),
    "k8s.pod.uid": _pod_attr(lambda p: p.uid),
    "k8s.pod.id": _pod_attr(lambda p: p.uid),
    "k8s.pod.ip": _pod_attr(lambda p: p.ip or None),
    "k8s.pod.label": _pod_label,
    "k8s.pod.labels": _pod_attr(lambda p: ", ".join(_visible_labels(p))),
    "k8s.deployment.name": _pod_attr(_deployment),
    "k8smeta.ns.name": _pod_attr(lambda p: p.namespace),
    "k8smeta.pod.name": _pod_attr(lambda p: p.name),
    "k8smeta.pod.uid": _pod_attr(lambda p: p.uid),
    "k8smeta.pod.ip": _pod_attr(lambda p: p.ip or None),
    "k8smeta.pod.label": _pod_label,
    "k8smeta.pod.labels": _pod_attr(_visible_labels),
    "k8smeta.deployment.name": _pod_attr(_deployment),
}
