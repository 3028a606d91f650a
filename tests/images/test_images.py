"""The pause and busybox images: valid OCI layouts, byte-for-byte reproducible, cached by
their inputs, with the contents tests rely on; the pause binary behaves as a sandbox's
first process must (real processes, a real PID namespace)."""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import prereq
import pytest

from falconer_e2e import images, oci

#: The applets the node tests' workloads use.
APPLETS = ("sh", "cat", "ls", "nc", "wget", "sleep", "mount", "echo", "id", "ps")


def layer_members(archive: Path) -> dict[str, tarfile.TarInfo]:
    """The members of the single layer of `archive`, by path."""
    checked = oci.check_archive(archive)
    (digest, _, _), = checked.layers
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            return {m.name: m for m in layer.getmembers()}


def layer_file(archive: Path, name: str) -> bytes:
    checked = oci.check_archive(archive)
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{checked.layers[-1][0].split(':')[1]}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r:gz") as layer:
            data = layer.extractfile(name)
            assert data is not None
            return data.read()


@pytest.mark.parametrize("name", ["pause", "busybox", "workload"])
def test_image_is_valid_and_reproducible(tmp_path: Path, name: str) -> None:
    first = images.build(name, tmp_path / "a")
    second = images.build(name, tmp_path / "b")
    assert first.name == second.name, "the cache key depends only on the inputs"
    assert first.read_bytes() == second.read_bytes()
    checked = oci.check_archive(first)
    assert checked.reference == images.REFS[name]


def test_a_cached_image_is_reused_and_a_changed_input_rebuilds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = images.build("busybox", tmp_path)
    assert images.build("busybox", tmp_path) == first
    monkeypatch.setattr(images, "PASSWD", images.PASSWD + "guest:x:1000:1000::/tmp:/bin/sh\n")
    second = images.build("busybox", tmp_path)
    assert second != first and first.exists(), "a recently used archive stays"
    assert b"guest:x:1000" in layer_file(second, "etc/passwd")
    # Unused for longer than UNUSED_ARCHIVE_SECONDS: the next build of busybox removes it.
    long_ago = time.time() - images.UNUSED_ARCHIVE_SECONDS - 60
    os.utime(first, (long_ago, long_ago))
    monkeypatch.setattr(images, "PASSWD", images.PASSWD + "other:x:1001:1001::/tmp:/bin/sh\n")
    third = images.build("busybox", tmp_path)
    assert not first.exists() and second.exists() and third.exists()


def test_a_killed_builds_scratch_is_swept(tmp_path: Path) -> None:
    prereq.require(os.geteuid() == 0, "needs root to mount")
    leftover = tmp_path / "pause-killed" / "rootfs" / "proc"
    leftover.mkdir(parents=True)
    other_image = tmp_path / "busybox-building"  # another image's build, maybe running
    other_image.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", leftover], check=True)
    try:
        images.build("pause", tmp_path)
        assert not leftover.parent.parent.exists()
        assert other_image.is_dir()
        assert str(leftover) not in Path("/proc/self/mountinfo").read_text()
    finally:
        subprocess.run(["umount", leftover], capture_output=True, check=False)


def test_an_unknown_image_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image 'alpine'; images: pause, busybox, sensor"):
        images.build("alpine", tmp_path)


def test_busybox_rootfs_has_the_applets_and_accounts(tmp_path: Path) -> None:
    archive = images.build("busybox", tmp_path)
    members = layer_members(archive)
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode == 0o755
    for applet in APPLETS:
        links = [m for name, m in members.items() if name.rsplit("/", 1)[-1] == applet]
        assert links, f"no {applet} applet"
        assert all(m.issym() and m.linkname == "/bin/busybox" for m in links), applet
    assert members["tmp"].mode == 0o1777
    assert layer_file(archive, "etc/passwd").startswith(b"root:x:0:0:")
    assert layer_file(archive, "etc/group").startswith(b"root:x:0:")
    assert layer_file(archive, "etc/shadow").startswith(b"root:*:")
    assert oci.check_archive(archive).config["config"]["Cmd"] == ["sh"]


def test_workload_image_runs_redis_and_serves_a_page(tmp_path: Path) -> None:
    """busybox's layer unchanged below, Redis with every library the loader resolves, and
    the server really starts in the image's root (chroot)."""
    prereq.require(os.geteuid() == 0, "needs root to chroot")
    archive = images.build("workload", tmp_path / "cache")
    checked = oci.check_archive(archive)
    busybox = oci.check_archive(images.build("busybox", tmp_path / "cache"))
    assert checked.layers[0] == busybox.layers[0] and len(checked.layers) == 2
    root = tmp_path / "root"
    with tarfile.open(archive) as outer:
        for digest, _, _ in checked.layers:
            blob = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert blob is not None
            with tarfile.open(fileobj=blob, mode="r:gz") as layer:
                layer.extractall(root)
    for lib in images.shared_libraries(images.REDIS_SERVER):
        assert (root / str(lib).lstrip("/")).is_file(), lib
    assert os.readlink(root / "usr/bin/redis-server") == "redis-check-rdb"
    assert (root / "www/index.html").read_text() == images.WORKLOAD_PAGE
    for binary, banner in (("redis-server", "Redis server v=7."), ("redis-cli", "redis-cli 7.")):
        done = subprocess.run(["chroot", str(root), f"/usr/bin/{binary}", "--version"],
                              capture_output=True, text=True, timeout=30, check=True)
        assert done.stdout.startswith(banner), done.stdout


@pytest.fixture
def pause_binary(tmp_path: Path) -> Path:
    """/pause of the pause image, extracted."""
    binary = tmp_path / "pause"
    binary.write_bytes(layer_file(images.build("pause", tmp_path / "cache"), "pause"))
    binary.chmod(0o755)
    return binary


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_0_on_sigterm_and_sigint(pause_binary: Path, sig: signal.Signals) -> None:
    process = subprocess.Popen([pause_binary], stderr=subprocess.PIPE)
    time.sleep(0.3)
    assert process.poll() is None, "pause blocks"
    process.send_signal(sig)
    assert process.wait(timeout=5) == 0
    assert process.stderr is not None
    assert b"not PID 1" in process.stderr.read()


def zombie_children(pid: int) -> list[int]:
    """Zombie processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state == "Z" and int(ppid) == pid:
            found.append(int(entry))
    return found


def test_pause_reaps_orphans_as_pid_1(pause_binary: Path) -> None:
    prereq.require(os.geteuid() == 0, "needs root for a PID namespace")
    # unshare forks pause as PID 1 of a new PID namespace.
    unshare = subprocess.Popen(["unshare", "--pid", "--fork", pause_binary],
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while not (children := Path(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
                   .read_text().split()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pause_pid = int(children[0])
        # A shell in that namespace starts a short sleep and exits: the sleep is orphaned,
        # re-parented to PID 1 (pause), and must be reaped when it exits.
        subprocess.run(["nsenter", "--target", str(pause_pid), "--pid", "--",
                        "sh", "-c", "sleep 0.3 & exit 0"], check=True, timeout=10)
        time.sleep(1.0)
        assert zombie_children(pause_pid) == []
        # Proof the orphan was pause's to reap: its namespace has only pause left.
        assert Path(f"/proc/{pause_pid}/task/{pause_pid}/children").read_text().split() == []
        os.kill(pause_pid, signal.SIGTERM)
        assert unshare.wait(timeout=5) == 0
        assert unshare.stderr is not None
        assert b"not PID 1" not in unshare.stderr.read()
    finally:
        if unshare.poll() is None:
            unshare.kill()
            unshare.wait()


def test_debian_mirrors_come_from_the_apt_sources(tmp_path: Path) -> None:
    one_line = tmp_path / "sources.list"
    one_line.write_text("# deb http://old.example/debian bookworm main\n"
                        "deb [signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian/ "
                        "bookworm main\n"
                        "deb http://apt.example/nodesource nodistro main\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://sec.example/debian-security\n"
                      "Suites: bookworm-security\nComponents: main\n")
    assert images.debian_mirrors([one_line, deb822]) == images.Mirrors(
        "http://mirror.example/debian", "http://sec.example/debian-security")
    assert images.debian_mirrors([]) == images.Mirrors(
        images.DEFAULT_MIRROR, images.DEFAULT_SECURITY_MIRROR)


def test_command_line_builds_and_refuses_unknown_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert images.main(["build", "pause", "--cache", str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"{images.build('pause', tmp_path)}\n"
    assert images.main(["build", "alpine", "--cache", str(tmp_path)]) == 1
    assert "no image 'alpine'" in capsys.readouterr().err
