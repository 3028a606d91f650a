"""Turning kernel records into state changes and engine events.

Each record first updates the process/fd tables (a fork adds a child, an exec replaces
the image, an open adds a descriptor, a close removes one) and then, for syscall
records, becomes one `SensorEvent` bound to the state it concerns — the way Falco's
exit events see the process after execve and the descriptor before close.
"""

from __future__ import annotations

import os
import posixpath
import socket
import struct
import time
from collections.abc import Callable

from falconer.sensor import containers, record, render, syscalls
from falconer.sensor import kernelabi as abi
from falconer.sensor.event import SensorEvent
from falconer.sensor.metadata import Metadata
from falconer.sensor.state import FdInfo, Process, ProcessTable, Users, boot_time_ns, exe_link

AT_FDCWD = -100
EINPROGRESS = 115
O_DIRECTORY = abi.O_DIRECTORY
O_CLOEXEC = abi.O_CLOEXEC


def parse_sockaddr(raw: bytes) -> tuple[str, str | None, int | None]:
    """(typechar, address, port) of a sockaddr: '4'/'6' with ip and port, 'u' with path."""
    if len(raw) < 2:
        return "", None, None
    fam = struct.unpack_from("<H", raw)[0]
    if fam == socket.AF_INET and len(raw) >= 8:
        return "4", socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from(">H", raw, 2)[0]
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return ("6", socket.inet_ntop(socket.AF_INET6, raw[8:24]),
                struct.unpack_from(">H", raw, 2)[0])
    if fam == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":
            return "u", "@" + path[1:].split(b"\0", 1)[0].decode("utf-8", "replace"), None
        return "u", path.split(b"\0", 1)[0].decode("utf-8", "replace"), None
    return "", None, None


def _sock_name(fd: FdInfo) -> str:
    if fd.typechar == "u":
        return fd.sip or fd.cip or ""
    local = f"{fd.cip or '0.0.0.0'}:{fd.cport or 0}"
    return f"{local}->{fd.sip}:{fd.sport}" if fd.sip else local


_L4: dict[int, str] = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp", socket.SOCK_RAW: "raw"}
_FAMILY_CHAR: dict[int, str] = {socket.AF_INET: "4", socket.AF_INET6: "6", socket.AF_UNIX: "u",
                socket.AF_NETLINK: "n"}

Handler = Callable[["Tracker", Process, record.Record], "tuple[int | None, FdInfo | None]"]


class Tracker:
    """The sensor's state machine: records in, state updated, events out."""

    def __init__(self, hostname: str | None = None) -> None:
        self.procs = ProcessTable()
        self.users: Users = Users()
        self.hostname: str = hostname or socket.gethostname()
        self.boot_ns = boot_time_ns()
        #: CLOCK_MONOTONIC (the kernel's bpf_ktime_get_ns) -> epoch ns
        self.mono_offset: int = time.time_ns() - time.monotonic_ns()
        self.num = 0
        #: Pod and container metadata; the runner gives it its sources (CRI, pod watch).
        self.metadata = Metadata()

    def seed(self) -> int:
        """Load every live process from /proc; returns how many."""
        return self.procs.seed(self.boot_ns)

    def handle(self, rec: record.Record) -> SensorEvent | None:
        """Apply one record; a syscall record also yields its event."""
        kind = rec.kind
        if kind == abi.KIND_SYSCALL:
            return self._syscall(rec)
        if kind == abi.KIND_FORK:
            self._fork(rec)
        elif kind == abi.KIND_EXIT:
            if rec.tid == rec.tgid:
                self.procs.remove(rec.tgid)
        elif kind == abi.KIND_EXEC:
            _exec_ids(self.procs.load_or_create(rec.tgid, self.boot_ns), rec)
        return None

    def _fork(self, rec: record.Record) -> None:
        """args = (clone flags, child tid, child tgid, tgid of the child's real parent),
        derived by the kernel side from the two tasks."""
        flags, child_tid, real_parent = rec.args[0], rec.args[1], rec.args[3]
        if flags & abi.CLONE_THREAD:
            return
        parent = self.procs.load_or_create(rec.tgid, self.boot_ns)
        child = parent.child(child_tid, rec.ts_ns + self.mono_offset,
                             share_fds=bool(flags & abi.CLONE_FILES))
        if real_parent:
            child.ppid = real_parent
        self.procs.put(child)

    def _syscall(self, rec: record.Record) -> SensorEvent:
        proc = self.procs.load_or_create(rec.tgid, self.boot_ns)
        spec = syscalls.BY_NR.get(rec.nr)
        fd_num: int | None = None
        fd: FdInfo | None = None
        if spec is not None:
            handler = _HANDLERS.get(spec.name)
            if handler is not None:
                fd_num, fd = handler(self, proc, rec)
        self.num += 1
        return SensorEvent(self, rec, proc, spec, fd_num, fd, self.num)

    # -- path resolution -------------------------------------------------------------

    def resolve(self, proc: Process, dirfd: int, path: str | None) -> str | None:
        """An absolute, normalised path for `path` relative to dirfd (or the cwd)."""
        if path is None:
            return None
        if path.startswith("/"):
            if "//" in path or "/." in path or path.endswith("/"):
                return posixpath.normpath(path)
            return path   # already normal: no empty, "." or ".." component
        if dirfd == AT_FDCWD:
            base = proc.cwd
        else:
            d = proc.fd(dirfd)
            base = d.name if d is not None else proc.cwd
        return posixpath.normpath(posixpath.join(base, path)) if path else base


def _open(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    name = syscalls.BY_NR[rec.nr].name
    raw = rec.str_a()
    dirfd = AT_FDCWD if name in ("open", "creat") else render.fd_arg(rec.args[0])
    flags = syscalls.open_flags(name, rec.args) or 0
    info = FdInfo("d" if flags & O_DIRECTORY else "f", t.resolve(p, dirfd, raw) or "",
                  nameraw=raw or "", flags=flags)
    if rec.ret >= 0:
        p.set_fd(rec.ret, info)
        return rec.ret, info
    return -1, info


def _exec(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    if rec.ret != 0:
        return None, None
    is_at = syscalls.BY_NR[rec.nr].name == "execveat"
    dirfd = render.fd_arg(rec.args[0]) if is_at else AT_FDCWD
    filename = rec.str_a() or ""
    argv = rec.argv() or [filename]
    via_fd: FdInfo | None = None
    if is_at and not filename and rec.args[4] & render.AT_EMPTY_PATH:
        via_fd = p.fd(dirfd)
        comm = str(dirfd)
    else:
        if filename.startswith(("/proc/self/fd/", "/dev/fd/")):
            num = filename.rsplit("/", 1)[1]
            via_fd = p.fd(int(num)) if num.isdigit() else None
        comm = posixpath.basename(filename)
    link = exe_link(p.pid)
    if link is not None:
        p.exepath, p.exe_from_memfd = link
    elif via_fd is not None:
        p.exepath, p.exe_from_memfd = via_fd.name, via_fd.memfd
    else:
        p.exepath = os.path.realpath(t.resolve(p, dirfd, filename) or filename)
        p.exe_from_memfd = False
    if via_fd is not None and via_fd.memfd:
        p.exe_from_memfd = True
    p.name = comm[:15]
    p.exe = argv[0] if argv else filename
    p.args = argv[1:]
    p.env = rec.env()
    for fd_num in [n for n, f in p.fds.items() if f.flags & O_CLOEXEC]:
        del p.fds[fd_num]
    return None, None


def _exec_ids(p: Process, rec: record.Record) -> None:
    """Session, process group, terminal and namespace ids as the kernel had them at exec
    (KIND_EXEC args): what setsid/setpgid/TIOCSCTTY did since the fork is in them; the
    executable's inode, ctime and mtime (the record's data) and overlayfs layer (its
    flags); the cgroups."""
    ids, tty, vids = rec.args[2], rec.args[3], rec.args[4]
    p.sid, p.pgid, p.tty = ids & 0xFFFFFFFF, ids >> 32, tty
    if vids & 0xFFFFFFFF:
        p.vpid = vids & 0xFFFFFFFF
    if vids >> 32:
        p.vpgid = vids >> 32
    p.exe_stat = rec.exe_stat()
    p.exe_upper_layer = bool(rec.flags & abi.RF_EXE_UPPER_LAYER)
    p.exe_lower_layer = bool(rec.flags & abi.RF_EXE_LOWER_LAYER)
    _exec_cgroup(p, rec)


def _setsid(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    """A new session: leader of it and of a new process group, no controlling tty."""
    if rec.ret >= 0:
        p.sid = p.pgid = rec.ret
        p.tty = 0
        p.vpgid = p.vpid
    return None, None


def _setpgid(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    """setpgid(pid, pgid): 0 means the caller, resp. the target's own pid. The numbers
    are the caller's namespace's; they are taken as host pids only for a host process."""
    if rec.ret != 0 or (p.vpid is not None and p.vpid != p.pid):
        return None, None
    pid, pgid = render.fd_arg(rec.args[0]), render.fd_arg(rec.args[1])
    target = p if pid in (0, p.pid) else t.procs.peek(pid)
    if target is not None:
        target.pgid = pgid or target.pid
        target.vpgid = target.pgid
    return None, None


def _exec_cgroup(p: Process, rec: record.Record) -> None:
    """The container identity as of exec, from the cgroup names the kernel read then (a
    runtime moves its init into the container's group between fork and exec; the
    process may be gone from /proc by now). Only when those names were cut short and
    name no container does /proc/<pid>/cgroup (whole paths) get a say, if still there.
    A record without names leaves the identity inherited at fork."""
    names = rec.cgroups()
    if not names:
        return
    found = containers.parse_cgroup("\n".join(f"0::{n.path()}" for n in names if n.levels))
    if found.is_host and any(n.cut for n in names):
        found = containers.cgroup_of(p.pid) or found
    p.cgroup = found


def _socket(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    if rec.ret < 0:
        return None, None
    fam, typ = rec.args[0], rec.args[1] & 0xF
    info = FdInfo(_FAMILY_CHAR.get(fam, "o"), "", l4proto=_L4.get(typ) if fam in (2, 10) else None)
    p.set_fd(rec.ret, info)
    return rec.ret, info


def _sock_fd(p: Process, num: int, typechar: str) -> FdInfo:
    fd = p.fd(num)
    if fd is None or fd.typechar == "o":
        fd = FdInfo(typechar or "o", "", l4proto="tcp" if typechar in ("4", "6") else None)
        p.set_fd(num, fd)
    return fd


def _connect(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num = render.fd_arg(rec.args[0])
    typechar, addr, port = parse_sockaddr(rec.sockaddr())
    fd = _sock_fd(p, num, typechar)
    if addr is not None and (rec.ret >= 0 or rec.ret == -EINPROGRESS):
        if typechar:
            fd.typechar = typechar
        fd.sip, fd.sport, fd.connected = addr, port, True
        _, local, local_port = parse_sockaddr(rec.sock_local())
        if local is not None:
            fd.cip, fd.cport = local, local_port
        fd.name = _sock_name(fd)
    return num, fd


def _bind(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num = render.fd_arg(rec.args[0])
    typechar, addr, port = parse_sockaddr(rec.sockaddr())
    fd = _sock_fd(p, num, typechar)
    if rec.ret == 0 and addr is not None:
        fd.sip, fd.sport, fd.is_server = addr, port, True
        fd.name = _sock_name(fd)
    return num, fd


def _accept(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    listen_fd = render.fd_arg(rec.args[0])
    listener = p.fd(listen_fd)
    if rec.ret < 0:
        return listen_fd, listener
    typechar, addr, port = parse_sockaddr(rec.sockaddr())
    info = FdInfo(typechar or (listener.typechar if listener else "o"), "",
                  l4proto=listener.l4proto if listener else None, cip=addr, cport=port,
                  sip=listener.sip if listener else None,
                  sport=listener.sport if listener else None,
                  is_server=True, connected=True)
    info.name = _sock_name(info)
    p.set_fd(rec.ret, info)
    return rec.ret, info


def _send_recv(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num = render.fd_arg(rec.args[0])
    fd = p.fd(num)
    typechar, addr, port = parse_sockaddr(rec.sockaddr())
    if fd is not None and addr is not None and typechar in ("4", "6"):
        changed = (fd.sip, fd.sport) != (addr, port)
        fd.sip, fd.sport, fd.name_changed = addr, port, changed
        fd.name = _sock_name(fd)
    return num, fd


def _dup(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    old = p.fd(render.fd_arg(rec.args[0]))
    if rec.ret < 0 or old is None:
        return None, old
    new = FdInfo(**{k: getattr(old, k) for k in FdInfo.__slots__})
    new.flags &= ~O_CLOEXEC
    p.set_fd(rec.ret, new)
    return rec.ret, new


def _close(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num = render.fd_arg(rec.args[0])
    return num, (p.fds.pop(num, None) if rec.ret == 0 else p.fds.get(num))


def _memfd(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    if rec.ret < 0:
        return None, None
    info = FdInfo("f", f"memfd:{rec.str_a() or ''}", memfd=True)
    p.set_fd(rec.ret, info)
    return rec.ret, info


def _chdir(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    if rec.ret == 0:
        p.cwd = t.resolve(p, AT_FDCWD, rec.str_a()) or p.cwd
    return None, None


def _fd_arg0(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num = render.fd_arg(rec.args[0])
    return num, p.fd(num)


def _listen(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num, fd = _fd_arg0(t, p, rec)
    if rec.ret == 0 and fd is not None:
        fd.is_server = True
    return num, fd


def _fchdir(t: Tracker, p: Process, rec: record.Record) -> tuple[int | None, FdInfo | None]:
    num, fd = _fd_arg0(t, p, rec)
    if rec.ret == 0 and fd is not None:
        p.cwd = fd.name
    return num, fd


_HANDLERS: dict[str, Handler] = {
    "open": _open, "openat": _open, "openat2": _open, "creat": _open,
    "execve": _exec, "execveat": _exec,
    "socket": _socket, "connect": _connect, "bind": _bind,
    "accept": _accept, "accept4": _accept,
    "sendto": _send_recv, "sendmsg": _send_recv, "recvfrom": _send_recv, "recvmsg": _send_recv,
    "listen": _listen, "fchmod": _fd_arg0, "setns": _fd_arg0, "finit_module": _fd_arg0,
    "dup": _dup, "dup2": _dup, "dup3": _dup, "close": _close,
    "memfd_create": _memfd, "chdir": _chdir, "fchdir": _fchdir,
    "setsid": _setsid, "setpgid": _setpgid,
}
