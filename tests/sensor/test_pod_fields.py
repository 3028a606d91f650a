"""The container.*, k8s.* and k8smeta.* fields of sensor events, with Falco's values
and formats, for host processes, processes in a known container, in a pod whose
container kubelet has not reported yet, and in an unknown container; how negated
checks on them behave through the engine; and that reading fields leaves the process
table alone. The metadata comes from a PodIndex filled directly (the watch that fills
it for real is tested in test_podwatch.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconer.engine import Engine, EngineOptions
from falconer.sensor import record, syscalls
from falconer.sensor.containers import Cgroup
from falconer.sensor.metadata import Metadata, container_of, pod_of
from falconer.sensor.podindex import PodIndex
from falconer.sensor.podmeta import ContainerMeta, Mount, PodMeta, Workload
from falconer.sensor.state import Process
from falconer.sensor.tracker import Tracker

CID = "a1" * 32
OTHER_CID = "b2" * 32
UNKNOWN_CID = "c3" * 32
UID = "9d5b1c7e-2f3a-4b6c-8d9e-0a1b2c3d4e5f"
START_NS = 1_700_000_000 * 1_000_000_000

POD = PodMeta(
    namespace="shop", name="web-7d4b9c8f5-x2x9k", uid=UID, node="node-a", ip="10.88.0.7",
    labels=(("app", "web"), ("io.kubernetes.extra", "hidden"), ("pod-template-hash", "7d4b9c8f5"),
            ("tier", "")),
    workload=Workload("Deployment", "web"),
    containers=(ContainerMeta(
        id=CID, name="nginx", image="docker.io/library/nginx:1.25",
        image_repository="docker.io/library/nginx", image_tag="1.25",
        image_digest="sha256:" + "d" * 64, privileged=True,
        mounts=(Mount("/var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/conf",
                      "/etc/nginx/conf.d", "", False, "private"),
                Mount("/lib/modules", "/host/lib/modules", "", True, "rslave")),
        start_ts_ns=START_NS),),
)


def _event(t: Tracker, pid: int):
    """A close() event of process `pid` (only the header: the tracker needs no more)."""
    raw = record.HEADER.pack(1_000, pid, pid, 0, 0, syscalls.BY_NAME["close"].nr, 0, 0, 0,
                             99, 0, 0, 0, 0, 0,        # args
                             0, 0, 0, 0, 0, 0, 0, 0,   # lengths and flags
                             0, 0, 0)                  # capability sets
    return t.handle(record.Record.decode(raw))


@pytest.fixture
def tracker() -> Tracker:
    index = PodIndex()
    index.put(POD)
    t = Tracker(hostname="node-a")
    t.metadata = Metadata(index=index)
    for pid, cgroup in ((4242, Cgroup("host")),
                        (5000, Cgroup(CID, "cri", UID)),
                        (6000, Cgroup(OTHER_CID, "containerd", UID)),
                        (7000, Cgroup(UNKNOWN_CID, "cri-o", ""))):
        t.procs.put(Process(pid=pid, ppid=1, name="p", cgroup=cgroup))
    return t


def test_a_host_process_has_falcos_host_values(tracker):
    ev = _event(tracker, 4242)
    assert ev.get("container.id") == "host" and ev.get("container.full_id") == "host"
    assert ev.get("container.name") == "host" and ev.get("container.type") == "host"
    for name in ("container.image", "container.image.repository", "container.image.tag",
                 "container.mounts"):
        assert ev.get(name) == "", name
    assert ev.get("container.privileged") is False
    assert ev.get("container.mount", "0") == "none"
    assert ev.get("container.mount.dest", "0") is None
    for name in ("k8s.ns.name", "k8s.pod.name", "k8s.pod.uid", "k8s.pod.ip", "k8s.pod.labels",
                 "k8smeta.ns.name", "k8smeta.pod.name", "k8smeta.pod.labels",
                 "container.start_ts", "container.ip"):
        assert ev.get(name) is None, name
    assert ev.get("k8s.pod.label", "app") is None
    assert pod_of(ev) is None and container_of(ev) is None


def test_a_container_in_the_index_has_every_field(tracker):
    ev = _event(tracker, 5000)
    assert ev.get("container.id") == CID[:12] and ev.get("container.full_id") == CID
    assert ev.get("container.name") == "nginx"
    assert ev.get("container.image") == "docker.io/library/nginx:1.25"
    assert ev.get("container.image.repository") == "docker.io/library/nginx"
    assert ev.get("container.image.tag") == "1.25"
    assert ev.get("container.image.digest") == "sha256:" + "d" * 64
    assert ev.get("container.privileged") is True
    assert ev.get("container.mounts") == (
        "/var/lib/kubelet/pods/x/volumes/kubernetes.io~configmap/conf:/etc/nginx/conf.d::false:private,"
        "/lib/modules:/host/lib/modules::true:rslave")
    assert ev.get("container.start_ts") == START_NS
    assert ev.get("container.duration") == ev.time_ns - START_NS
    assert ev.get("k8s.ns.name") == "shop" == ev.get("k8smeta.ns.name")
    assert ev.get("k8s.pod.name") == "web-7d4b9c8f5-x2x9k" == ev.get("k8smeta.pod.name")
    assert ev.get("k8s.pod.uid") == UID == ev.get("k8smeta.pod.uid") == ev.get("k8s.pod.id")
    assert ev.get("k8s.pod.ip") == "10.88.0.7" == ev.get("k8smeta.pod.ip") == ev.get("container.ip")
    assert ev.get("k8s.pod.labels") == "app:web, pod-template-hash:7d4b9c8f5, tier"
    assert ev.get("k8smeta.pod.labels") == ["app:web", "pod-template-hash:7d4b9c8f5", "tier"]
    assert ev.get("k8s.pod.label", "app") == "web" == ev.get("k8smeta.pod.label", "app")
    assert ev.get("k8s.pod.label", "absent") is None
    assert ev.get("k8s.deployment.name") == "web" == ev.get("k8smeta.deployment.name")
    assert pod_of(ev) is POD and container_of(ev) is POD.containers[0]


@pytest.mark.parametrize(("field", "arg", "value"), [
    ("container.mount", "1", "/lib/modules:/host/lib/modules::true:rslave"),
    ("container.mount", "/lib/*", "/lib/modules:/host/lib/modules::true:rslave"),
    ("container.mount", "/nowhere", "none"),
    ("container.mount", "7", "none"),
    ("container.mount.dest", "0", "/etc/nginx/conf.d"),
    ("container.mount.dest", "/lib/modules", "/host/lib/modules"),       # by source
    ("container.mount.source", "/host/lib/*", "/lib/modules"),           # by destination
    ("container.mount.source", "/lib/modules", None),
    ("container.mount.mode", "0", ""),
    ("container.mount.rdwr", "0", "false"),
    ("container.mount.propagation", "/lib/modules", "rslave"),
])
def test_single_mounts_by_index_or_glob(tracker, field, arg, value):
    assert _event(tracker, 5000).get(field, arg) == value


def test_a_pod_whose_container_is_not_reported_yet_has_pod_fields_only(tracker):
    ev = _event(tracker, 6000)
    assert ev.get("container.id") == OTHER_CID[:12] and ev.get("container.type") == "containerd"
    assert ev.get("k8s.ns.name") == "shop" and ev.get("k8s.pod.name") == POD.name
    assert ev.get("container.name") is None and ev.get("container.image.repository") is None
    assert ev.get("container.privileged") is None
    assert tracker.metadata.stats.pod_uid == 1 and tracker.metadata.stats.misses == 0


def test_an_unknown_container_is_a_counted_miss_once_per_event(tracker):
    ev = _event(tracker, 7000)
    assert ev.get("container.id") == UNKNOWN_CID[:12] and ev.get("container.type") == "cri-o"
    for name in ("container.name", "container.image", "container.privileged", "k8s.ns.name",
                 "k8s.pod.name", "container.mounts"):
        assert ev.get(name) is None, name
    assert tracker.metadata.stats.misses == 1          # one event, one lookup
    _event(tracker, 7000).get("k8s.ns.name")
    assert tracker.metadata.stats.misses == 2


RULES = """
- rule: ns differs
  desc: negated comparison on a missing value
  condition: evt.type = close and k8s.ns.name != kube-system
  output: "ns=%k8s.ns.name pod=%k8s.pod.name repo=%container.image.repository id=%container.id"
  priority: WARNING
- rule: not in ns
  desc: negation of a comparison on a missing value
  condition: evt.type = close and not k8s.ns.name = kube-system
  output: "ns=%k8s.ns.name"
  priority: WARNING
- rule: repo differs
  desc: a host's image repository is empty, not missing
  condition: evt.type = close and container.image.repository != nginx
  output: "repo=%container.image.repository"
  priority: WARNING
- rule: not privileged
  desc: a host is not privileged
  condition: evt.type = close and container.privileged = false
  output: "id=%container.id"
  priority: WARNING
"""


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    e = Engine(EngineOptions(rule_matching="all"))
    assert e.load([path]).ok
    return e


def test_negated_checks_on_missing_values_behave_as_in_falco(tracker, engine):
    host = {a.rule: a for a in engine.ruleset.evaluate(_event(tracker, 4242))}
    # k8s.ns.name is missing on the host: `!=` is false, `not ... =` is true.
    assert set(host) == {"not in ns", "repo differs", "not privileged"}
    assert host["repo differs"].output.endswith("repo=")
    in_pod = {a.rule for a in engine.ruleset.evaluate(_event(tracker, 5000))}
    assert in_pod == {"ns differs", "not in ns", "repo differs"}


def test_outputs_print_missing_values_as_na(tracker, engine, tmp_path):
    rules = tmp_path / "one.yaml"
    rules.write_text(RULES.split("- rule: not in ns")[0].replace(
        "k8s.ns.name != kube-system", "container.id exists"))
    e = Engine()
    assert e.load([rules]).ok
    [alert] = e.ruleset.evaluate(_event(tracker, 4242))
    assert alert.output.endswith("ns=<NA> pod=<NA> repo= id=host")


def test_reading_fields_never_writes_the_process_table():
    t = Tracker(hostname="h")
    me = os.getpid()
    t.procs.put(Process(pid=me, ppid=os.getppid(), name="pytest"))   # the parent is unknown
    ev = _event(t, me)
    before = len(t.procs)
    assert ev.get("proc.pname")            # read from /proc
    assert ev.get("proc.aname", "1") and ev.get("proc.pvpid") and ev.get("proc.vpid") == me
    assert ev.get("container.id") == "host" and ev.get("k8s.ns.name") is None
    assert len(t.procs) == before and t.procs.peek(os.getppid()) is None
