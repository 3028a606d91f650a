"""Container identity from cgroup paths (every runtime naming), image references, and
the protobuf wire format the CRI client speaks. Pure logic: no kernel, no runtime."""

from __future__ import annotations

import os

import pytest

from falconer.sensor import containers, protowire
from falconer.sensor.containers import HOST, HOST_CGROUP, Cgroup, parse_cgroup
from falconer.sensor.podmeta import image_parts

CID = "3f2c1e9a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e"
UID = "9d5b1c7e-2f3a-4b6c-8d9e-0a1b2c3d4e5f"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(("path", "runtime", "pod_uid"), [
    # kubelet with the cgroupfs driver (containerd or CRI-O: the path does not say)
    (f"/kubepods/besteffort/pod{UID}/{CID}", "cri", UID),
    (f"/kubepods/burstable/pod{UID}/{CID}", "cri", UID),
    (f"/kubepods/pod{UID}/{CID}", "cri", UID),                       # Guaranteed
    # kubelet with the systemd driver
    (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
     f"cri-containerd-{CID}.scope", "containerd", UID),
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope", "cri-o", UID),
    (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"docker-{CID}.scope", "docker", UID),
    # Docker
    (f"/docker/{CID}", "docker", ""),
    (f"/system.slice/docker-{CID}.scope", "docker", ""),
    # Podman
    (f"/machine.slice/libpod-{CID}.scope", "podman", ""),
    (f"/machine.slice/libpod-{CID}.scope/container", "podman", ""),
    (f"/libpod_parent/libpod-{CID}", "podman", ""),
    # seen from a sensor in its own cgroup namespace: the path starts above its root
    (f"/../../kubepods/besteffort/pod{UID}/{CID}", "cri", UID),
])
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_runtime_cgroups_name_a_container(path, runtime, pod_uid, version):
    if version == "v2":
        text = f"0::{path}\n"
    else:                      # every v1 hierarchy lists the same path; systemd's may not
        text = "".join(f"{n}:{c}:{path}\n" for n, c in ((12, "pids"), (4, "memory"),
                                                         (1, "cpu,cpuacct")))
        text = "13:name=systemd:/user.slice\n" + text
    cg = parse_cgroup(text)
    assert cg == Cgroup(CID, runtime, pod_uid)
    assert cg.short_id == CID[:12] and not cg.is_host


@pytest.mark.parametrize("text", [
    "0::/process_api/" + "ab" * 32,       # the sandbox's own groups: not a runtime
    "0::/user.slice/user-0.slice/session-3.scope",
    "0::/system.slice/containerd.service",  # the runtime's daemon runs on the host
    f"0::/kubepods/besteffort/pod{UID}",    # a pod's own group holds no process
    f"0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope",  # CRI-O's monitor
    f"0::/elsewhere/{CID}",               # a bare id under no runtime's parent
    "0::/",
    "",
])
def test_everything_else_is_the_host(text):
    cg = parse_cgroup(text)
    assert cg == HOST_CGROUP
    assert cg.short_id == HOST and cg.is_host and cg.runtime == "host"


def test_this_process_is_on_the_host_and_a_gone_one_is_unknown():
    assert containers.cgroup_of(os.getpid()) == HOST_CGROUP
    assert containers.cgroup_of(2 ** 22 + 1) is None        # above pid_max


@pytest.mark.parametrize(("ref", "parts"), [
    ("docker.io/library/busybox:1.36", ("docker.io/library/busybox", "1.36", "")),
    ("busybox", ("busybox", "latest", "")),
    ("registry:5000/team/app", ("registry:5000/team/app", "latest", "")),
    ("registry:5000/team/app:v2", ("registry:5000/team/app", "v2", "")),
    ("quay.io/app@sha256:" + "a" * 64, ("quay.io/app", "", "sha256:" + "a" * 64)),
    ("quay.io/app:1.0@sha256:" + "b" * 64, ("quay.io/app", "1.0", "sha256:" + "b" * 64)),
])
def test_image_references_split_as_falco_does(ref, parts):
    assert image_parts(ref) == parts


def test_protobuf_wire_round_trip():
    inner = protowire.encode((1, "docker.io/busybox:1"))
    entry = protowire.encode((1, "k"), (2, "v"))
    msg = protowire.encode((1, "abc"), (2, True), (8, inner), (12, entry), (12, entry),
                           (3, b"\xff\x01"))
    fields = protowire.decode(msg)
    assert protowire.string(fields, 1) == "abc"
    assert protowire.integer(fields, 2) == 1
    assert protowire.string(protowire.message(fields, 8), 1) == "docker.io/busybox:1"
    assert protowire.string_map(fields, 12) == {"k": "v"}
    assert protowire.string(fields, 99) == "" and protowire.integer(fields, 99) == 0
    assert protowire.message(fields, 99) == {}
    # a 64-bit varint (an int64 timestamp) and a negative one
    big = bytes([5 << 3]) + bytes([0xFF] * 9 + [0x01])
    assert protowire.integer(protowire.decode(big), 5) == -1


@pytest.mark.parametrize("bad", [b"\x0a\x05ab", b"\x08", b"\x0b", b"\x80"])
def test_malformed_protobuf_is_an_error(bad):
    with pytest.raises(protowire.WireError):
        protowire.decode(bad)
