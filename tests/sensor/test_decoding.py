"""Decoding and state without the kernel: records built byte for byte as probe.bpf.c
lays them out, fed through the same Record/Tracker/SensorEvent code the sensor runs."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from falconer.sensor import containers, record, render, syscalls
from falconer.sensor import kernelabi as abi
from falconer.sensor.state import MAX_FDS_PER_PROCESS, FdInfo, Process, Users
from falconer.sensor.tracker import Tracker, parse_sockaddr

AT_FDCWD = (1 << 64) - 100   # -100 as the kernel's unsigned long register


def raw_record(nr: int, ret: int = 0, args: tuple[int, ...] = (), kind: int = 0,
               tgid: int = 4242, str_a: str | None = None, str_b: str | None = None,
               argv: list[str] | None = None, sock: bytes = b"", uid: int = 0,
               env: list[str] | None = None, flags: int = 0, local: bytes = b"",
               exe: bytes = b"", caps: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """A record as the kernel sends it (record.pack)."""
    return record.pack(nr, ret, args, kind=kind, tgid=tgid, uid=uid, str_a=str_a, str_b=str_b,
                       sock=sock, argv=argv, env=env, flags=flags, local=local, exe=exe, caps=caps)


@pytest.fixture
def tracker() -> Tracker:
    t = Tracker(hostname="testhost")
    t.procs.put(Process(pid=4242, ppid=1, name="app", exe="app", exepath="/usr/bin/app",
                        cwd="/srv", start_ns=1))
    t.procs.put(Process(pid=1, ppid=0, name="init", exe="/sbin/init"))
    return t


def nr(name: str) -> int:
    return syscalls.BY_NAME[name].nr


def feed(t: Tracker, raw: bytes):
    return t.handle(record.Record.decode(raw))


# -- renderings --------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "text"), [
    (os.O_RDONLY, "O_RDONLY"),
    (os.O_RDONLY | os.O_CLOEXEC, "O_RDONLY|O_CLOEXEC"),
    (os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, "O_TRUNC|O_CREAT|O_WRONLY|O_CLOEXEC"),
    (os.O_RDWR | os.O_APPEND, "O_APPEND|O_RDWR"),
    (os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK, "O_DIRECTORY|O_NONBLOCK|O_RDONLY"),
])
def test_open_flags_render_like_falco(flags, text):
    assert render.open_flags(flags) == text


def test_open_read_write_classification():
    assert render.is_open_read(os.O_RDONLY) and not render.is_open_write(os.O_RDONLY)
    assert render.is_open_write(os.O_WRONLY) and not render.is_open_read(os.O_WRONLY)
    assert render.is_open_read(os.O_RDWR) and render.is_open_write(os.O_RDWR)
    assert not render.is_open_read(os.O_PATH)


def test_other_renderings():
    assert render.ptrace_request(16) == "PTRACE_ATTACH"
    assert render.ptrace_request(0) == "PTRACE_TRACEME"
    assert render.ptrace_request(0x4206) == "PTRACE_SEIZE"
    assert render.res(0) == "SUCCESS" and render.res(3) == "SUCCESS"
    assert render.res(-2) == "ENOENT" and render.res(-13) == "EACCES"
    assert render.chmod_mode(0o4755) == (
        "S_IXOTH|S_IROTH|S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID")
    assert render.fd_arg(AT_FDCWD) == -100
    assert render.bpf_cmd(5) == "BPF_PROG_LOAD"
    assert render.family(socket.AF_INET6) == "AF_INET6"


# -- socket addresses ------------------------------------------------------------------

def test_parse_sockaddrs():
    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + socket.inet_aton("10.1.2.3")
    assert parse_sockaddr(v4 + b"\0" * 8) == ("4", "10.1.2.3", 443)
    v6 = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 22) + b"\0" * 4
          + socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\0" * 4)
    assert parse_sockaddr(v6) == ("6", "2001:db8::1", 22)
    unix = struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0"
    assert parse_sockaddr(unix) == ("u", "/run/x.sock", None)
    abstract = struct.pack("<H", socket.AF_UNIX) + b"\0hidden\0"
    assert parse_sockaddr(abstract) == ("u", "@hidden", None)
    assert parse_sockaddr(b"") == ("", None, None)
    assert parse_sockaddr(struct.pack("<H", socket.AF_INET) + b"\1") == ("", None, None)


# -- tracker -------------------------------------------------------------------------------

def test_openat_resolves_against_cwd_and_tracks_the_fd(tracker):
    flags = os.O_RDONLY | os.O_CLOEXEC
    ev = feed(tracker, raw_record(nr("openat"), 5, (AT_FDCWD, 0, flags), str_a="../etc/passwd"))
    assert ev.get("evt.type") == "openat"
    assert ev.get("fd.name") == "/etc/passwd"
    assert ev.get("fd.nameraw") == "../etc/passwd"
    assert ev.get("fd.directory") == "/etc" and ev.get("fd.filename") == "passwd"
    assert ev.get("fd.num") == 5 and ev.get("fd.typechar") == "f"
    assert ev.get("evt.arg.flags") == "O_RDONLY|O_CLOEXEC"
    assert ev.get("evt.arg", "flags") == "O_RDONLY|O_CLOEXEC"
    assert ev.get("evt.is_open_read") is True and ev.get("evt.is_open_write") is False
    assert ev.get("evt.res") == "SUCCESS" and ev.get("evt.rawres") == 5
    assert ev.get("evt.dir") == "<"
    close = feed(tracker, raw_record(nr("close"), 0, (5,)))
    assert close.get("fd.name") == "/etc/passwd"   # the fd as it was before closing
    assert 5 not in tracker.procs.get(4242).fds


def test_failed_open_has_fd_num_minus_one(tracker):
    ev = feed(tracker, raw_record(nr("openat"), -2, (AT_FDCWD, 0, 0), str_a="/nope"))
    assert ev.get("fd.num") == -1 and ev.get("evt.res") == "ENOENT"
    assert ev.get("fd.name") == "/nope"


def test_openat_relative_to_a_directory_fd(tracker):
    feed(tracker, raw_record(nr("openat"), 7, (AT_FDCWD, 0, os.O_DIRECTORY), str_a="/var/log"))
    ev = feed(tracker, raw_record(nr("openat"), 8, (7, 0, os.O_WRONLY | os.O_TRUNC),
                                  str_a="syslog"))
    assert ev.get("fd.name") == "/var/log/syslog"
    assert "O_TRUNC" in ev.get("evt.arg.flags")


def test_fork_exec_exit_keep_the_process_table(tracker):
    feed(tracker, raw_record(-1, 0, (0, 5000, 5000, 4242), kind=abi.KIND_FORK))
    child = tracker.procs.get(5000)
    assert child.ppid == 4242 and child.cwd == "/srv" and child.name == "app"
    ev = feed(tracker, raw_record(nr("execve"), 0, (), tgid=5000, str_a="/bin/grep",
                                  argv=["grep", "-r", "BEGIN RSA PRIVATE", "/x"]))
    assert ev.get("proc.name") == "grep"
    assert ev.get("proc.exe") == "grep"
    assert ev.get("proc.args") == "-r BEGIN RSA PRIVATE /x"
    assert ev.get("proc.cmdline") == "grep -r BEGIN RSA PRIVATE /x"
    assert ev.get("proc.pname") == "app" and ev.get("proc.pcmdline") == "app"
    assert ev.get("proc.aname", "1") == "app" and ev.get("proc.aname", "2") == "init"
    assert ev.get("proc.aname") == ["app", "init"]
    assert ev.get("proc.apid") == [4242, 1]
    assert ev.get("proc.aname", "9") is None
    assert ev.get("proc.cwd") == "/srv/"
    feed(tracker, raw_record(-1, 0, (), kind=abi.KIND_EXIT, tgid=5000))
    assert tracker.procs.get(5000) is None


def test_a_thread_is_no_new_process(tracker):
    clone_thread = 0x10000 | 0x100 | 0x400
    feed(tracker, raw_record(-1, 0, (clone_thread, 5001, 4242, 1), kind=abi.KIND_FORK))
    assert tracker.procs.get(5001) is None


def test_connect_fills_the_socket_fields(tracker):
    feed(tracker, raw_record(nr("socket"), 3, (socket.AF_INET, socket.SOCK_STREAM, 0)))
    addr = (struct.pack("<H", socket.AF_INET) + struct.pack(">H", 8443)
            + socket.inet_aton("93.184.216.34"))
    ev = feed(tracker, raw_record(nr("connect"), -115, (3,), sock=addr))
    assert ev.get("evt.res") == "EINPROGRESS"
    assert ev.get("fd.typechar") == "4" and ev.get("fd.type") == "ipv4"
    assert ev.get("fd.sip") == "93.184.216.34" and ev.get("fd.sport") == 8443
    assert ev.get("fd.l4proto") == "tcp" and ev.get("fd.connected") is True
    assert ev.get("fd.name") == "0.0.0.0:0->93.184.216.34:8443"


def test_connect_takes_the_local_address_the_kernel_read(tracker):
    feed(tracker, raw_record(nr("socket"), 3, (socket.AF_INET, socket.SOCK_STREAM, 0)))
    remote = (struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443)
              + socket.inet_aton("10.0.0.9"))
    local = (struct.pack("<H", socket.AF_INET) + struct.pack(">H", 40000)
             + socket.inet_aton("10.0.0.5") + b"\0" * 8)
    ev = feed(tracker, raw_record(nr("connect"), 0, (3,), sock=remote, local=local))
    assert ev.get("fd.lip") == "10.0.0.5" and ev.get("fd.lport") == 40000
    assert ev.get("fd.rip") == "10.0.0.9" and ev.get("fd.rport") == 443
    assert ev.get("fd.name") == "10.0.0.5:40000->10.0.0.9:443"


def test_memfd_exec_is_fileless(tracker):
    feed(tracker, raw_record(nr("memfd_create"), 4, (0, 0), str_a="payload"))
    ev = feed(tracker, raw_record(nr("execve"), 0, (), str_a="/proc/self/fd/4",
                                  argv=["payload"]))
    assert ev.get("proc.is_exe_from_memfd") is True
    assert ev.get("proc.name") == "4"


def test_symlink_args_and_ptrace_request(tracker):
    ev = feed(tracker, raw_record(nr("symlinkat"), 0, (0, AT_FDCWD, 0), str_a="/etc/shadow",
                                  str_b="/tmp/l"))
    assert ev.get("evt.arg.target") == "/etc/shadow"
    assert ev.get("evt.arg.linkpath") == "/tmp/l"
    assert ev.get("evt.arg.linkdirfd") == "-100"
    ev = feed(tracker, raw_record(nr("ptrace"), 0, (16, 77, 0, 0)))
    assert ev.get("evt.arg.request") == "PTRACE_ATTACH"
    assert ev.get("evt.arg.pid") == "77"


def test_chdir_moves_the_cwd(tracker):
    feed(tracker, raw_record(nr("chdir"), 0, (), str_a="sub/dir"))
    assert tracker.procs.get(4242).cwd == "/srv/sub/dir"


def test_packed_records_decode(tracker):
    ev = feed(tracker, raw_record(nr("openat"), 3, (AT_FDCWD, 0, 0), str_a="/etc/hosts"))
    assert ev.get("fd.name") == "/etc/hosts"
    ev = feed(tracker, raw_record(nr("close"), 0, (3,)))
    assert len(raw_record(nr("close"), 0, (3,))) == record.OFF_DATA
    assert ev.get("fd.name") == "/etc/hosts"


def test_full_length_paths_decode(tracker):
    long_path = "/tmp/" + "/".join(["d" * 200] * 15) + "/f"   # > 3000 bytes
    ev = feed(tracker, raw_record(nr("renameat"), 0, (AT_FDCWD, 0, AT_FDCWD, 0),
                                  str_a=long_path, str_b=long_path + "2"))
    assert ev.get("evt.arg.oldpath") == long_path
    assert ev.get("evt.arg.newpath") == long_path + "2"


def test_exec_takes_the_environment_from_the_record(tracker):
    ev = feed(tracker, raw_record(nr("execve"), 0, (), str_a="/bin/true", argv=["true"],
                                  env=["GLIBC_TUNABLES=glibc.tune.x=1", "PATH=/bin"],
                                  flags=abi.RF_ARGV_FROM_MM))
    assert ev.get("proc.env") == "GLIBC_TUNABLES=glibc.tune.x=1 PATH=/bin"
    assert ev.get("proc.env", "GLIBC_TUNABLES") == "glibc.tune.x=1"
    feed(tracker, raw_record(-1, 0, (0, 5002, 5002, 4242), kind=abi.KIND_FORK))
    child = tracker.procs.get(5002)
    assert child.env == ["GLIBC_TUNABLES=glibc.tune.x=1", "PATH=/bin"]


def test_exec_setsid_setpgid_update_session_and_group(tracker):
    feed(tracker, raw_record(-1, 0, (0, 5003, 5003, 4242), kind=abi.KIND_FORK))
    feed(tracker, raw_record(nr("setsid"), 5003, (), tgid=5003))
    child = tracker.procs.get(5003)
    assert (child.sid, child.pgid, child.tty) == (5003, 5003, 0)
    tty_nr = (136 << 8) | 3      # /dev/pts/3
    feed(tracker, raw_record(-1, 0, (5003, 5003, 5003 | 5003 << 32, tty_nr, 7 | 7 << 32),
                             kind=abi.KIND_EXEC, tgid=5003,
                             exe=record.EXE_STAT.pack(1234, 5 * 10**9, 4 * 10**9)))
    ev = feed(tracker, raw_record(nr("execve"), 0, (), tgid=5003, str_a="/usr/bin/whoami",
                                  argv=["whoami"], flags=abi.RF_ARGV_FROM_MM))
    assert ev.get("proc.tty") == tty_nr and ev.get("proc.sid") == 5003
    assert ev.get("proc.is_sid_leader") is True and ev.get("proc.pgid") == 5003
    assert ev.get("proc.vpid") == 7 and ev.get("proc.vpgid") == 7
    assert ev.get("proc.is_vpgid_leader") is True
    assert ev.get("proc.exe_ino") == 1234
    assert (ev.get("proc.exe_ino.ctime"), ev.get("proc.exe_ino.mtime")) == (5 * 10**9, 4 * 10**9)
    feed(tracker, raw_record(nr("setpgid"), 0, (0, 4242), tgid=4242))
    assert tracker.procs.get(4242).pgid == 4242


def test_a_32_bit_record_is_flagged(tracker):
    ev = feed(tracker, raw_record(nr("openat"), 3, (AT_FDCWD, 0, 0), str_a="/etc/shadow",
                                  flags=abi.RF_COMPAT))
    assert record.Record.decode(raw_record(nr("open"), 3, flags=abi.RF_COMPAT)).compat
    assert ev.get("evt.type") == "openat" and ev.get("fd.name") == "/etc/shadow"


def test_ia32_numbers_map_to_their_x86_64_syscalls():
    assert syscalls.IA32_TO_X64[5] == nr("open")        # ia32 open is x86_64 fstat's 5
    assert syscalls.IA32_TO_X64[11] == nr("execve")
    assert syscalls.IA32_TO_X64[213] == syscalls.IA32_TO_X64[23] == nr("setuid")
    assert set(syscalls.IA32) == {s.name for s in syscalls.DECODED} - {"accept"}


def test_unknown_process_is_created_on_first_sight():
    t = Tracker(hostname="h")
    ev = t.handle(record.Record.decode(raw_record(nr("close"), 0, (1,), tgid=os.getpid())))
    assert ev.get("proc.pid") == os.getpid()
    assert ev.get("proc.name")  # read from /proc
    assert ev.get("container.id") == "host"


# -- coverage of the upstream rules -----------------------------------------------------

def test_every_syscall_the_upstream_rules_name_is_decoded():
    import upstream
    from falconer.engine import Engine

    named: set[str] = set()
    for path in upstream.upstream_files():
        engine = Engine()
        assert engine.load([path]).ok
        types = engine.ruleset.event_types("syscall")
        assert types is not None, f"{path.name}: some rule matches every event type"
        named |= types
    assert {"execve", "openat", "ptrace", "symlinkat", "userfaultfd"} <= named
    missing = named - set(syscalls.BY_NAME)
    assert missing == set()


def test_forwarded_set_is_the_rules_plus_the_state_tracker():
    nrs = syscalls.numbers_for(frozenset({"ptrace"}))
    names = {syscalls.name_of(n) for n in nrs}
    assert names == {"ptrace"} | syscalls.STATE_SYSCALLS


def test_descriptors_from_before_the_start_are_learned_from_proc(tmp_path):
    t = Tracker(hostname="h")
    path = tmp_path / "held-open"
    with open(path, "w") as f:
        ev = t.handle(record.Record.decode(
            raw_record(nr("fchmod"), 0, (f.fileno(), 0o600), tgid=os.getpid())))
        assert ev.get("fd.name") == str(path)
        assert ev.get("fd.typechar") == "f" and ev.get("fd.num") == f.fileno()
        assert ev.get("evt.arg.mode") == "S_IWUSR|S_IRUSR"
    r, w = os.pipe()
    t = Tracker(hostname="h")  # the closed file's number may be reused by the pipe
    try:
        ev = t.handle(record.Record.decode(raw_record(nr("dup"), 99, (r,), tgid=os.getpid())))
        assert ev.get("fd.type") == "pipe" and ev.get("fd.num") == 99
    finally:
        os.close(r)
        os.close(w)


# -- bounds ------------------------------------------------------------------------------

def test_open_flags_come_from_each_calls_own_register():
    args = (10, 11, 12, 13, 14, 15)
    assert [syscalls.open_flags(n, args) for n in ("open", "openat", "openat2")] == [11, 12, 13]
    assert syscalls.open_flags("creat", args) == render.CREAT_FLAGS
    assert syscalls.open_flags("close", args) is None


def test_open_exec_reads_the_mode_of_each_open_call(tracker):
    creat_x = feed(tracker, raw_record(nr("creat"), 3, (0, 0o755), str_a="/tmp/x"))
    assert creat_x.get("evt.is_open_exec") is True and creat_x.get("evt.is_open_create") is True
    openat_rw = feed(tracker, raw_record(nr("openat"), 4, (AT_FDCWD, 0, os.O_CREAT | os.O_WRONLY,
                                                           0o644), str_a="/tmp/y"))
    assert openat_rw.get("evt.is_open_exec") is False and openat_rw.get("evt.is_open_write")


def test_name_caches_are_bounded_and_count_evictions():
    users = Users(limit=2)
    for uid in (0, 65534, 4_000_000_000):
        users.name(uid)
    assert users.evicted == 1 and len(users._users) == 2
    assert users.name(0) == "root"          # evicted, asked again: looked up again
    assert users.evicted == 2


def test_a_full_fd_table_drops_the_oldest_and_counts_it():
    p = Process(pid=1, ppid=0)
    before = Process.fds_evicted
    for num in range(MAX_FDS_PER_PROCESS + 3):
        p.set_fd(num, FdInfo("f", f"/f{num}"))
    assert len(p.fds) == MAX_FDS_PER_PROCESS and 0 not in p.fds
    assert Process.fds_evicted - before == 3


def test_capabilities_are_rendered_from_the_record(tracker):
    kill, module, sys_admin = 1 << 5, 1 << 16, 1 << 21
    ev = feed(tracker, raw_record(nr("close"), 0, (3,),
                                  caps=(kill, kill | module | sys_admin, module | 1 << 63)))
    assert ev.get("thread.cap_inheritable") == "CAP_KILL"
    assert ev.get("thread.cap_permitted") == "CAP_KILL CAP_SYS_MODULE CAP_SYS_ADMIN"
    assert ev.get("thread.cap_effective") == "CAP_SYS_MODULE"   # unnamed bit 63 left out
    assert feed(tracker, raw_record(nr("close"), 0, (3,))).get("thread.cap_effective") == ""


def exec_data(*paths: tuple[list[str], bool]) -> bytes:
    """A KIND_EXEC record's data: an executable and, per hierarchy, (names leaf first,
    cut)."""
    data = record.ExecData()
    for i, (names, cut) in enumerate(paths):
        data.cgroup[i].levels, data.cgroup[i].cut = len(names), int(cut)
        for j, name in enumerate(names):
            data.cgroup[i].name[j].value = name.encode()
    return bytes(data)


CID = "ab" * 32


def test_the_container_comes_from_the_cgroup_names_read_at_exec(tracker):
    uid = "0b8e9a3c-1f2d-4c5e-8a7b-123456789abc"
    names = [CID, f"pod{uid}", "besteffort", "kubepods"]
    feed(tracker, raw_record(-1, 0, (4242, 4242), kind=abi.KIND_EXEC,
                             exe=exec_data(([], False), (names, False))))
    cgroup = tracker.procs.get(4242).cgroup
    assert (cgroup.container_id, cgroup.runtime, cgroup.pod_uid) == (CID, "cri", uid)
    assert record.CgroupNames.path(record.ExecData.from_buffer_copy(
        exec_data((names, False))).cgroup[0]) == f"/kubepods/besteffort/pod{uid}/{CID}"


def test_names_of_the_host_and_records_without_names(tracker):
    tracker.procs.get(4242).cgroup = containers.Cgroup(CID, "cri")
    feed(tracker, raw_record(-1, 0, (4242, 4242), kind=abi.KIND_EXEC,
                             exe=record.EXE_STAT.pack(1, 2, 3)))   # no names: kept
    assert tracker.procs.get(4242).cgroup.container_id == CID
    feed(tracker, raw_record(-1, 0, (4242, 4242), kind=abi.KIND_EXEC,
                             exe=exec_data((["user.slice"], False), ([], False))))
    assert tracker.procs.get(4242).cgroup == containers.HOST_CGROUP


def test_cut_names_that_name_no_container_defer_to_proc(tracker):
    # Five levels deep: the kubepods component is above the four names read. The
    # process (pid 4242) is not alive, so /proc cannot help: the host it stays.
    names = ["init.scope", CID, "pod0b8e9a3c-1f2d-4c5e-8a7b-123456789abc", "besteffort"]
    feed(tracker, raw_record(-1, 0, (4242, 4242), kind=abi.KIND_EXEC,
                             exe=exec_data((names, True), ([], False))))
    assert tracker.procs.get(4242).cgroup == containers.HOST_CGROUP


def test_the_exe_layer_comes_from_the_exec_record_and_is_inherited(tracker):
    feed(tracker, raw_record(-1, 0, (4242, 4242), kind=abi.KIND_EXEC,
                             flags=abi.RF_EXE_UPPER_LAYER, exe=exec_data()))
    ev = feed(tracker, raw_record(nr("close"), 0, (3,)))
    assert (ev.get("proc.is_exe_upper_layer"), ev.get("proc.is_exe_lower_layer")) == (True, False)
    feed(tracker, raw_record(-1, 0, (0, 5004, 5004, 4242), kind=abi.KIND_FORK))
    assert tracker.procs.get(5004).exe_upper_layer is True
    feed(tracker, raw_record(-1, 0, (5004, 5004), kind=abi.KIND_EXEC, tgid=5004,
                             flags=abi.RF_EXE_LOWER_LAYER, exe=exec_data()))
    child = tracker.procs.get(5004)
    assert (child.exe_upper_layer, child.exe_lower_layer) == (False, True)
