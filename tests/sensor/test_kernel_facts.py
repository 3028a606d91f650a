"""Facts the kernel gives at the event, not /proc after the fact (issues 8 and 11).

Real kernel, real sensor: each action is done by a process that exits at once, so
nothing is left in /proc when the sensor handles its records; what the fields show can
only come from the records themselves. Covered: the capability sets at each event
(`thread.cap_*`), the container identity of a process that joined a container's cgroup
between fork and exec (`container.id`), and whether the executable lives in an
overlayfs upper layer (`proc.is_exe_upper_layer`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from stable_sensor import start_with_stable_rules

PROGRAM = Path(__file__).with_name("programs") / "capset.c"

RULES = """
- rule: Capabilities at the event
  desc: thread.cap_* of an open by the capset program
  condition: evt.type in (open, openat) and fd.name contains fmcap
  output: "caps %fd.name eff=%thread.cap_effective prm=%thread.cap_permitted inh=%thread.cap_inheritable"
  priority: WARNING
- rule: Container at exec
  desc: the container identity of an exec, as the kernel had the cgroup then
  condition: evt.type = execve and proc.args contains fm
  output: "exec %proc.args id=%container.id type=%container.type"
  priority: WARNING
- rule: Exe layer at exec
  desc: proc.is_exe_upper_layer of an exec
  condition: evt.type = execve and proc.exepath contains fm
  output: "layer %proc.exepath upper=%proc.is_exe_upper_layer lower=%proc.is_exe_lower_layer"
  priority: WARNING
"""

CGROUP_HIERARCHIES = {"memory": Path("/sys/fs/cgroup/memory"),
                   "unified": Path("/sys/fs/cgroup/unified")}


@pytest.fixture(scope="module")
def sensor(start_sensor, tmp_path_factory: pytest.TempPathFactory):
    return start_with_stable_rules(start_sensor, tmp_path_factory.mktemp("rules"), "facts.yaml", RULES)


@pytest.fixture(scope="module")
def capset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the capset program")
    exe = tmp_path_factory.mktemp("capset") / "capset"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(PROGRAM)], check=True)
    return exe


@contextmanager
def paused(sensor) -> Iterator[None]:
    """The sensor stopped (SIGSTOP) while the body runs: its records wait in the ring
    buffer and are handled after the processes are gone, as on a busy node."""
    os.kill(sensor.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(sensor.proc.pid, signal.SIGCONT)


def fields_for(sensor, marker: str, rule: str) -> list[dict]:
    sensor.rules_for(marker)
    return [a["output_fields"] for a in sensor.matching(marker) if a["rule"] == rule]


def test_capabilities_are_those_at_each_event(sensor, capset, tmp_path, marker):
    paths = [tmp_path / f"fmcap{marker}{step}" for step in "abc"]
    for p in paths:
        p.write_text("x")
    with paused(sensor):
        subprocess.run([str(capset), *map(str, paths)], check=True)
    seen = {f["fd.name"]: f for f in fields_for(sensor, marker, "Capabilities at the event")}
    assert set(seen) == set(map(str, paths)), seen
    both, kill = "CAP_KILL CAP_SYS_MODULE", "CAP_KILL"
    expected = [(both, both, kill), (kill, both, kill), (both, both, kill)]
    for p, (eff, prm, inh) in zip(paths, expected, strict=True):
        f = seen[str(p)]
        assert (f["thread.cap_effective"], f["thread.cap_permitted"],
                f["thread.cap_inheritable"]) == (eff, prm, inh), f


@pytest.fixture(params=sorted(CGROUP_HIERARCHIES))
def container_cgroup(request: pytest.FixtureRequest) -> Iterator[tuple[Path, str]]:
    """A cgroup named as kubelet's cgroupfs driver names a container's, under a scratch
    group of one hierarchy (removed after): (its directory, the 64-hex id)."""
    root = CGROUP_HIERARCHIES[request.param]
    if not (root / "cgroup.procs").exists():
        pytest.fail(f"{root} is not a mounted cgroup hierarchy")
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    scratch = root / f"falconer-test-{uuid.uuid4().hex[:8]}"
    leaf = scratch / "kubepods" / "besteffort" / f"pod{uuid.uuid4()}" / cid
    leaf.mkdir(parents=True)
    try:
        yield leaf, cid
    finally:
        for d, _subdirs, _files in sorted(os.walk(scratch), key=lambda w: -len(w[0])):
            os.rmdir(d)


def test_a_process_that_joins_a_container_before_exec_has_its_identity(
        sensor, container_cgroup, marker):
    leaf, cid = container_cgroup

    def join() -> None:   # in the child, between fork and exec, as runc's init does
        (leaf / "cgroup.procs").write_text(str(os.getpid()))

    with paused(sensor):
        subprocess.run(["/bin/true", marker], preexec_fn=join, check=True)
    seen = fields_for(sensor, marker, "Container at exec")
    assert seen, sensor.matching(marker)
    assert seen[0]["container.id"] == cid[:12]
    assert seen[0]["container.type"] == "cri"


def test_a_process_nested_below_a_container_keeps_its_identity(
        sensor, container_cgroup, marker):
    # Five levels: the kernel reads the lowest four, which name no runtime; the
    # process is still alive, so its /proc/<pid>/cgroup (the whole path) answers.
    leaf, cid = container_cgroup
    nested = leaf / "init.scope"
    nested.mkdir()

    def join() -> None:
        (nested / "cgroup.procs").write_text(str(os.getpid()))

    # The marker is the shell's $0; the shell then becomes a sleep that stays alive.
    sleeper = subprocess.Popen(["/bin/sh", "-c", "exec /bin/sleep 5", marker], preexec_fn=join)
    try:
        seen = fields_for(sensor, marker, "Container at exec")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert seen, sensor.matching(marker)
    assert seen[0]["container.id"] == cid[:12]


@pytest.fixture
def overlay(tmp_path: Path, marker: str) -> Iterator[tuple[Path, Path]]:
    """An overlayfs on a scratch tmpfs: (a binary of its lower layer, one copied into
    the merged directory, so into the upper layer), both seen through the merged dir."""
    base = tmp_path / "fs"
    base.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(base)], check=True)
    try:
        lower, upper, work, merged = (base / n for n in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            d.mkdir()
        shutil.copy("/bin/true", lower / f"{marker}lo")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)],
                       check=True)
        try:
            shutil.copy("/bin/true", merged / f"{marker}up")
            yield merged / f"{marker}lo", merged / f"{marker}up"
        finally:
            subprocess.run(["umount", str(merged)], check=True)
    finally:
        subprocess.run(["umount", str(base)], check=True)


def test_an_executable_written_into_an_overlay_is_on_its_upper_layer(sensor, overlay, marker):
    lower_exe, upper_exe = overlay
    with paused(sensor):
        subprocess.run([str(lower_exe)], check=True)
        subprocess.run([str(upper_exe)], check=True)
    seen = {f["proc.exepath"]: f for f in fields_for(sensor, marker, "Exe layer at exec")}
    assert set(seen) == {str(lower_exe), str(upper_exe)}, seen
    upper, lower = seen[str(upper_exe)], seen[str(lower_exe)]
    assert (upper["proc.is_exe_upper_layer"], upper["proc.is_exe_lower_layer"]) == (True, False)
    assert (lower["proc.is_exe_upper_layer"], lower["proc.is_exe_lower_layer"]) == (False, True)


def test_an_executable_off_overlayfs_is_on_no_layer(sensor, tmp_path, marker):
    exe = tmp_path / marker
    shutil.copy("/bin/true", exe)
    with paused(sensor):
        subprocess.run([str(exe)], check=True)
    seen = fields_for(sensor, marker, "Exe layer at exec")
    assert seen, sensor.matching(marker)
    assert (seen[0]["proc.is_exe_upper_layer"], seen[0]["proc.is_exe_lower_layer"]) == (
        False, False)
