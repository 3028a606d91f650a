"""The CRI client against a real containerd (Debian's, with its CRI plugin) that this
module starts on its own socket, root and state under a temporary folder, and the real
sensor reading a real container's metadata from it.

A pod sandbox and a container are created over CRI with `crictl`, from two images
built here as docker archives around the static busybox (no registry is reachable):
`falconer.test/pause:1` as the sandbox image and `falconer.test/busybox:1`. kubelet is
not running: the `io.kubernetes.*` labels it puts on every container are written into
the container config by the test (a stand-in for kubelet, nothing else). The cgroup
parent has kubelet's cgroupfs naming (`.../kubepods/besteffort/pod<uid>`) but sits under
`/falconer-enrich`, out of the way of any real kubelet's `/kubepods` on this machine.
The sandbox uses the host network (no CNI here), so the pod has no IP.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import prereq
import pytest
import upstream

from falconer.sensor import cri
from falconer.sensor.containers import Cgroup, parse_cgroup
from falconer.sensor.metadata import RETRY_S, Metadata
from falconer.sensor.podmeta import Mount

BUSYBOX = "/bin/busybox"
CGROUP_ROOT = "/falconer-enrich"
NAMESPACE, POD, CONTAINER = "shop", "cri-pod", "app"


def _crictl() -> str | None:
    found = sorted(glob.glob("/var/cache/falconer/bin/crictl-*"))
    return found[-1] if found else None


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("containerd", "ctr", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package containerd / runc)"
    if _crictl() is None:
        return "crictl is not built (/var/cache/falconer/bin/crictl-*)"
    if not os.path.isfile(BUSYBOX):
        return "no static busybox (Debian package busybox-static)"
    return None


def _image_archive(path: Path, tag: str, entrypoint: list[str]) -> None:
    """A docker archive (`docker save` layout) of one layer: busybox and its applets."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add(BUSYBOX, arcname="bin/busybox")
        # debugfs is no busybox applet: exec'ing it succeeds, then busybox says so.
        for applet in ("sh", "sleep", "cat", "nc", "debugfs"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(link)
        for d in ("etc", "tmp", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        shadow = b"root:*:19000:0:99999:7:::\n"
        info = tarfile.TarInfo("etc/shadow")
        info.size, info.mode = len(shadow), 0o640
        t.addfile(info, io.BytesIO(shadow))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag],
                            "Layers": [f"{diff_id}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as out:
        for name, data in ((f"{diff_id}/layer.tar", layer_bytes), (config_name, config),
                           ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


@dataclass
class Runtime:
    """A running containerd and one running CRI container in it."""

    socket: str
    container_id: str
    sandbox_id: str
    pod_uid: str
    pid: int                 # the container's first process, on the host
    host_dir: str            # bind-mounted read-only at /host/data


def _cri(runtime_socket: str, *args: str) -> str:
    crictl = _crictl()
    assert crictl is not None
    done = subprocess.run([crictl, "--runtime-endpoint", f"unix://{runtime_socket}",
                           "--timeout", "30s", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"crictl {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def _in_container(runtime: Runtime, command: str) -> None:
    """Run a shell command in the container. The shell stays a few seconds: the sensor
    learns a process's container from /proc/<pid>/cgroup when it decodes the exec, and
    the command inherits it from the shell (see the report: the kernel does not send
    the cgroup yet)."""
    subprocess.run([_crictl() or "", "--runtime-endpoint", f"unix://{runtime.socket}", "exec",
                    runtime.container_id, "/bin/sh", "-c", f"{command}; sleep 5"],
                   capture_output=True, timeout=60, check=False)


def _remove_cgroups(pod_uid: str) -> None:
    for hierarchy in glob.glob("/sys/fs/cgroup/*/") + ["/sys/fs/cgroup/"]:
        path = Path(hierarchy + CGROUP_ROOT.strip("/"), "kubepods", "besteffort", f"pod{pod_uid}")
        while path.name and str(path).startswith(hierarchy + CGROUP_ROOT.strip("/")):
            try:
                path.rmdir()
            except OSError:
                break
            path = path.parent


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    why = _missing()
    prereq.require(why is None, why or "")
    base = tmp_path_factory.mktemp("ctrd")
    sock = str(base / "containerd.sock")
    (base / "cni").mkdir()
    (base / "config.toml").write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "falconer.test/pause:1"
  # This sandbox lacks CAP_SYS_RESOURCE: no negative oom_score_adj (see the kubelet notes).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{base}/cni"
    conf_dir = "{base}/cni"
""")
    log = open(base / "containerd.log", "wb")  # noqa: SIM115 - closed at teardown
    daemon = subprocess.Popen(["containerd", "--config", str(base / "config.toml")],
                              stdout=log, stderr=subprocess.STDOUT)
    pod_uid = str(uuid.uuid4())
    sandbox_id = ""
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.1)
        for tag, entry in (("falconer.test/pause:1", ["/bin/sleep", "100000"]),
                           ("falconer.test/busybox:1", ["/bin/sh"])):
            archive = base / (tag.split("/")[1].replace(":", "-") + ".tar")
            _image_archive(archive, tag, entry)
            subprocess.run(["ctr", "--address", sock, "-n", "k8s.io", "images", "import",
                            str(archive)], check=True, capture_output=True, timeout=60)
        host_dir = base / "hostdata"
        host_dir.mkdir()
        pod_config = {
            "metadata": {"name": POD, "namespace": NAMESPACE, "uid": pod_uid, "attempt": 0},
            "labels": {"app": "shop-web", "io.kubernetes.pod.name": POD},
            "log_directory": str(base / "logs"),
            "linux": {"cgroup_parent": f"{CGROUP_ROOT}/kubepods/besteffort/pod{pod_uid}",
                      "security_context": {"privileged": True,
                                           "namespace_options": {"network": 2}}},
        }
        (base / "pod.json").write_text(json.dumps(pod_config))
        sandbox_id = _cri(sock, "runp", str(base / "pod.json"))
        # What kubelet labels every container with (kuberuntime_labels.go), by hand.
        kubelet_labels = {"io.kubernetes.pod.name": POD, "io.kubernetes.pod.namespace": NAMESPACE,
                          "io.kubernetes.pod.uid": pod_uid,
                          "io.kubernetes.container.name": CONTAINER}
        (base / "container.json").write_text(json.dumps({
            "metadata": {"name": CONTAINER}, "image": {"image": "falconer.test/busybox:1"},
            "command": ["/bin/sleep", "100000"], "labels": kubelet_labels,
            "log_path": "app.log",
            "mounts": [{"container_path": "/host/data", "host_path": str(host_dir),
                        "readonly": True, "propagation": 0}],
            "linux": {"security_context": {"privileged": True,
                                           "namespace_options": {"network": 2}}},
        }))
        container_id = _cri(sock, "create", sandbox_id, str(base / "container.json"),
                            str(base / "pod.json"))
        _cri(sock, "start", container_id)
        pid = json.loads(_cri(sock, "inspect", container_id))["info"]["pid"]
        yield Runtime(sock, container_id, sandbox_id, pod_uid, pid, str(host_dir))
    finally:
        if sandbox_id:
            for step in (("stopp", sandbox_id), ("rmp", "-f", sandbox_id)):
                try:
                    _cri(sock, *step)
                except RuntimeError:
                    pass
        daemon.terminate()
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        _remove_cgroups(pod_uid)


def test_the_runtime_describes_the_container_and_its_pod(runtime):
    client = cri.CriClient(runtime.socket)
    try:
        assert client.version().runtime_name == "containerd"
        pod = client.container(runtime.container_id)
        assert pod is not None
        assert (pod.namespace, pod.name, pod.uid) == (NAMESPACE, POD, runtime.pod_uid)
        assert pod.labels == (("app", "shop-web"),)          # kubelet's own labels left out
        [c] = pod.containers
        assert (c.id, c.name, c.image, c.image_repository, c.image_tag) == (
            runtime.container_id, CONTAINER, "falconer.test/busybox:1", "falconer.test/busybox",
            "1")
        assert c.privileged is True
        assert Mount(runtime.host_dir, "/host/data", "", False, "private") in c.mounts
        assert abs(c.start_ts_ns - time.time_ns()) < 600 * 1_000_000_000
        # a unique prefix works too (containerd resolves it), an unknown id is None
        assert client.container(runtime.container_id[:12]) is not None
        assert client.container("0" * 64) is None
    finally:
        client.close()


def test_a_dead_socket_is_an_error_not_a_hang(tmp_path):
    client = cri.CriClient(str(tmp_path / "nothing.sock"))
    started = time.monotonic()
    with pytest.raises(cri.CriError):
        client.container("ab" * 32)
    assert time.monotonic() - started < 2 * cri.TIMEOUT_S + 0.5
    client.close()


def test_a_real_containers_cgroup_names_it_and_its_pod(runtime):
    with open(f"/proc/{runtime.pid}/cgroup", encoding="utf-8") as f:
        cgroup = parse_cgroup(f.read())
    assert cgroup == Cgroup(runtime.container_id, "cri", runtime.pod_uid)


def test_the_resolver_finds_a_container_the_watch_has_not_seen(runtime):
    client = cri.CriClient(runtime.socket)
    try:
        meta = Metadata(cri=client)
        cgroup = Cgroup(runtime.container_id, "cri", runtime.pod_uid)
        pod, container = meta.lookup(cgroup)
        assert pod is not None and pod.name == POD and container is not None
        assert meta.lookup(cgroup)[0] is pod                  # cached: asked once
        assert meta.stats.cri == 1 and meta.stats.misses == 0
        assert meta.runtime_name(cgroup) == "containerd"
    finally:
        client.close()


RULES = """
- rule: Enrich probe
  desc: an exec whose command line carries a test marker
  condition: evt.type in (execve, execveat) and proc.cmdline contains "enrich-mark"
  output: >-
    cmd=%proc.cmdline id=%container.id name=%container.name image=%container.image
    repo=%container.image.repository tag=%container.image.tag priv=%container.privileged
    ns=%k8s.ns.name pod=%k8s.pod.name uid=%k8s.pod.uid app=%k8s.pod.label[app]
    type=%container.type mount=%container.mount.dest[/tmp/*]
  priority: WARNING
"""


@pytest.fixture(scope="module")
def sensor(runtime, start_sensor, tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules") / "enrich.yaml"
    rules.write_text(RULES)
    return start_sensor("--rules", str(rules), "--cri-socket", runtime.socket)


def test_the_sensor_enriches_a_process_in_a_real_container(runtime, sensor, marker):
    _in_container(runtime, f"/bin/busybox true enrich-mark-{marker}")
    assert sensor.rules_for(marker) == {"Enrich probe"}
    inside = [a for a in sensor.matching(marker) if "cmd=crictl" not in a["output"]]
    assert len(inside) == 2                      # sh -c ..., then busybox true ...
    for alert in inside:
        out = alert["output"]
        assert (f"id={runtime.container_id[:12]} name={CONTAINER} image=falconer.test/busybox:1 "
                f"repo=falconer.test/busybox tag=1 priv=true ns={NAMESPACE} pod={POD} "
                f"uid={runtime.pod_uid} app=shop-web type=containerd mount=/host/data") in out, out
        assert alert["output_fields"]["k8s.ns.name"] == NAMESPACE


def test_the_sensor_sees_a_host_process_as_the_host(sensor, marker):
    subprocess.run(["/bin/sh", "-c", f": enrich-mark-{marker}"], check=True, cwd="/")
    assert sensor.rules_for(marker) == {"Enrich probe"}
    [alert] = sensor.matching(marker)
    assert ("id=host name=host image= repo= tag= priv=false ns=<NA> pod=<NA> uid=<NA> "
            "app=<NA> type=host mount=<NA>") in alert["output"], alert["output"]
    assert alert["output_fields"]["container.id"] == "host"
    assert alert["output_fields"]["k8s.ns.name"] is None


@pytest.fixture(scope="module")
def stable_sensor(runtime, start_sensor):
    return start_sensor("--rules", str(upstream.STABLE), "--buffer-pages", "4096",
                        "--cri-socket", runtime.socket)


@pytest.mark.parametrize(("command", "rule"), [
    # by path: busybox's shell runs a bare applet name through /proc/self/exe ("exe")
    ("/bin/nc -e /bin/true 127.0.0.1 9 {marker}", "Netcat Remote Code Execution in Container"),
    ("debugfs {marker}", "Debugfs Launched in Privileged Container"),
    ("cat /etc/shadow /{marker}", "Read sensitive file untrusted"),
])
def test_container_only_stable_rules_fire_in_a_real_container(runtime, stable_sensor, marker,
                                                              command, rule):
    _in_container(runtime, command.format(marker=marker))
    assert stable_sensor.rules_for(marker) == {rule}


def test_the_same_netcat_on_the_host_is_not_in_a_container(stable_sensor, marker, tmp_path):
    nc = tmp_path / "nc"
    nc.symlink_to(BUSYBOX)
    subprocess.run([str(nc), "-e", "/bin/true", "127.0.0.1", "9", marker], capture_output=True,
                   timeout=30, check=False, cwd="/")
    assert stable_sensor.rules_for(marker, expect=False) == set()



def test_a_failing_runtime_is_asked_again_only_after_a_while(tmp_path):
    now = [0.0]
    client = cri.CriClient(str(tmp_path / "gone.sock"))
    meta = Metadata(cri=client, clock=lambda: now[0])
    cgroup = Cgroup("ab" * 32, "cri", "")
    try:
        assert meta.lookup(cgroup) == (None, None)
        assert meta.lookup(cgroup) == (None, None)
        assert (meta.stats.cri_errors, meta.stats.misses) == (1, 2)   # every miss counted
        now[0] += RETRY_S
        meta.lookup(cgroup)
        assert meta.stats.cri_errors == 2
    finally:
        client.close()
