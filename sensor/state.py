"""What the sensor knows about processes and their descriptors between events.

Seeded from /proc at start, then kept by the event stream (fork, exec, exit, open,
close, ...): a rule about `proc.pname` or `fd.name` must be answerable for a process
that is gone from /proc by the time its event is decoded. Tables are bounded (LRU) so
a fork bomb cannot grow the sensor without limit; evictions are counted.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from falconer.sensor import hostproc, containers

MAX_PROCESSES = 32768
MAX_FDS_PER_PROCESS = 1024
#: uid -> passwd entry and gid -> group name entries kept (misses included).
MAX_NAMES = 4096
UNSET_LOGINUID = 0xFFFFFFFF
#: /proc/<pid>/stat start times are in clock ticks.
_NS_PER_TICK = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class FdInfo:
    """One open descriptor: a file, directory or socket as Falco's fd.* fields see it."""

    typechar: str                 # f d 4 6 u p ... ("o": a socket of unknown family)
    name: str                     # resolved path, or the socket tuple
    nameraw: str = ""             # the path as the program wrote it
    flags: int = 0                # open flags (for O_CLOEXEC at exec)
    memfd: bool = False
    l4proto: str | None = None    # tcp udp raw (sockets)
    cip: str | None = None
    cport: int | None = None
    sip: str | None = None
    sport: int | None = None
    is_server: bool = False
    connected: bool = False
    name_changed: bool = False


@dataclass(slots=True)
class Process:
    """One process (thread group); threads share it."""

    pid: int
    ppid: int
    name: str = ""
    exe: str = ""
    exepath: str = ""
    args: list[str] = field(default_factory=list)
    cwd: str = "/"
    tty: int = 0
    sid: int = 0
    pgid: int = 0
    loginuid: int = UNSET_LOGINUID
    start_ns: int = 0
    cgroup: containers.Cgroup = containers.HOST_CGROUP
    exe_from_memfd: bool = False
    #: The executable is on an overlayfs, in its upper layer / only in a lower layer, as
    #: of exec (both false off overlayfs and for a process seeded from /proc).
    exe_upper_layer: bool = False
    exe_lower_layer: bool = False
    vpid: int | None = None
    #: The executable's (inode number, ctime ns, mtime ns) as of exec (None: not known).
    exe_stat: tuple[int, int, int] | None = None
    #: The process group in the process's own pid namespace (None: not known yet).
    vpgid: int | None = None
    #: The environment as of the last exec ("NAME=value" each, bounded as the kernel
    #: side bounds it); None for a process seeded from /proc, whose /proc file answers.
    env: list[str] | None = None
    fds: dict[int, FdInfo] = field(default_factory=dict)
    #: Descriptors dropped from full tables, all processes together: the bound is per
    #: process, but the summary reports what the sensor as a whole forgot.
    fds_evicted: ClassVar[int] = 0

    def cmdline(self) -> str:
        """Falco's proc.cmdline: the name followed by the arguments."""
        return " ".join([self.name, *self.args]) if self.args else self.name

    def child(self, pid: int, start_ns: int, share_fds: bool) -> Process:
        """The state a forked child starts with: a copy of this process."""
        return Process(
            pid=pid, ppid=self.pid, name=self.name, exe=self.exe, exepath=self.exepath,
            args=self.args, cwd=self.cwd, tty=self.tty, sid=self.sid, pgid=self.pgid,
            loginuid=self.loginuid, start_ns=start_ns, cgroup=self.cgroup,
            exe_from_memfd=self.exe_from_memfd, env=self.env, vpgid=self.vpgid,
            exe_upper_layer=self.exe_upper_layer, exe_lower_layer=self.exe_lower_layer,
            exe_stat=self.exe_stat,
            fds=self.fds if share_fds else dict(self.fds),
        )

    def fd(self, num: int) -> FdInfo | None:
        """The descriptor, learning it from /proc/<pid>/fd when it predates the sensor."""
        info = self.fds.get(num)
        if info is None and num >= 0:
            info = fd_from_proc(self.pid, num)
            if info is not None:
                self.set_fd(num, info)
        return info

    def set_fd(self, num: int, info: FdInfo) -> None:
        """Record a descriptor (bounded: the oldest entry goes when full)."""
        if num not in self.fds and len(self.fds) >= MAX_FDS_PER_PROCESS:
            del self.fds[next(iter(self.fds))]
            Process.fds_evicted += 1
        self.fds[num] = info


class ProcessTable:
    """pid -> Process, bounded, least recently used evicted first."""

    def __init__(self, limit: int = MAX_PROCESSES) -> None:
        self._procs: OrderedDict[int, Process] = OrderedDict()
        self.limit = limit
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._procs)

    def get(self, pid: int) -> Process | None:
        """The process, marked as recently used; None if unknown."""
        p = self._procs.get(pid)
        if p is not None:
            self._procs.move_to_end(pid)
        return p

    def peek(self, pid: int) -> Process | None:
        """The process without touching the LRU order (for ancestor walks)."""
        return self._procs.get(pid)

    def put(self, proc: Process) -> None:
        """Insert or replace, evicting the least recently used beyond the limit."""
        self._procs[proc.pid] = proc
        self._procs.move_to_end(proc.pid)
        while len(self._procs) > self.limit:
            self._procs.popitem(last=False)
            self.evicted += 1

    def remove(self, pid: int) -> None:
        """Forget a process that exited."""
        self._procs.pop(pid, None)

    def load_or_create(self, pid: int, boot_ns: int) -> Process:
        """The known process, else one read from /proc, else a bare placeholder."""
        p = self.get(pid)
        if p is None:
            p = read_proc(pid, boot_ns) or Process(pid=pid, ppid=0)
            self.put(p)
        return p

    def seed(self, boot_ns: int) -> int:
        """Read every live process from /proc (parents first); returns how many."""
        pids = sorted(int(d) for d in os.listdir(hostproc.ROOT) if d.isdigit())
        for pid in pids:
            p = read_proc(pid, boot_ns)
            if p is not None:
                self.put(p)
        return len(self._procs)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


#: /proc/<pid>/fd link prefixes of non-file descriptors -> Falco's fd type char.
_ANON_TYPES = (("socket:", "o"), ("pipe:", "p"), ("anon_inode:[eventfd]", "e"),
               ("anon_inode:[signalfd]", "s"), ("anon_inode:[eventpoll]", "l"),
               ("anon_inode:inotify", "i"), ("anon_inode:[timerfd]", "t"),
               ("anon_inode:bpf", "b"))


def fd_from_proc(pid: int, num: int) -> FdInfo | None:
    """What /proc says descriptor `num` of `pid` is (None if gone or unreadable).

    Only the kind and the path are known this way; socket addresses stay unknown.
    """
    try:
        target = os.readlink(hostproc.path(pid, "fd", num))
    except OSError:
        return None
    if target.startswith("/"):
        return FdInfo("f", target.removesuffix(" (deleted)"), memfd=target.startswith("/memfd:"))
    for prefix, typechar in _ANON_TYPES:
        if target.startswith(prefix):
            return FdInfo(typechar, "")
    return None


def exe_link(pid: int) -> tuple[str, bool] | None:
    """(Falco-style exepath, is memfd) from /proc/<pid>/exe, None if unreadable."""
    try:
        target = os.readlink(hostproc.path(pid, "exe"))
    except OSError:
        return None
    if target.startswith("/memfd:"):
        name = target[1:].removesuffix(" (deleted)")
        return name, True
    return target.removesuffix(" (deleted)"), False


def read_proc(pid: int, boot_ns: int) -> Process | None:
    """A Process from /proc/<pid>, or None if it is gone (or a kernel thread's is partial)."""
    stat = _read(hostproc.path(pid, "stat"))
    if stat is None:
        return None
    # comm may hold spaces and parentheses: split after the last ')'.
    rparen = stat.rfind(b")")
    comm = stat[stat.find(b"(") + 1:rparen].decode("utf-8", "replace")
    rest = stat[rparen + 2:].split()
    ppid, pgid, sid, tty = int(rest[1]), int(rest[2]), int(rest[3]), int(rest[4])
    start_ticks = int(rest[19])
    cmd = (_read(hostproc.path(pid, "cmdline")) or b"").split(b"\0")
    if cmd and cmd[-1] == b"":
        cmd.pop()
    argv = [a.decode("utf-8", "replace") for a in cmd]
    link = exe_link(pid)
    exepath, memfd = link if link else ("", False)
    try:
        cwd = os.readlink(hostproc.path(pid, "cwd"))
    except OSError:
        cwd = "/"
    loginuid = (_read(hostproc.path(pid, "loginuid")) or b"").strip()
    return Process(
        pid=pid, ppid=ppid, name=comm, exe=argv[0] if argv else comm, exepath=exepath,
        args=argv[1:], cwd=cwd, tty=tty, sid=sid, pgid=pgid,
        loginuid=int(loginuid) if loginuid.isdigit() else UNSET_LOGINUID,
        start_ns=boot_ns + start_ticks * _NS_PER_TICK,
        cgroup=containers.cgroup_of(pid) or containers.HOST_CGROUP,
        exe_from_memfd=memfd,
    )


def boot_time_ns() -> int:
    """Epoch ns of boot (for /proc start times), from /proc/stat's btime."""
    for line in (_read(hostproc.path("stat")) or b"").splitlines():
        if line.startswith(b"btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


_K = TypeVar("_K")
_V = TypeVar("_V")


class Users:
    """uid/gid -> names from the passwd/group databases, cached (misses too), so that
    `user.name` costs one dict lookup per event after the first. Each cache holds at most
    MAX_NAMES entries (a process can switch to any of 2^32 ids); the oldest goes first and
    is counted in `evicted`."""

    def __init__(self, limit: int = MAX_NAMES) -> None:
        self._users: dict[int, pwd.struct_passwd | None] = {}
        self._groups: dict[int, str | None] = {}
        self.limit = limit
        self.evicted = 0

    def _remember(self, cache: dict[_K, _V], key: _K, value: _V) -> None:
        if len(cache) >= self.limit:
            del cache[next(iter(cache))]
            self.evicted += 1
        cache[key] = value

    def user(self, uid: int) -> pwd.struct_passwd | None:
        """The passwd entry of uid (None for an unknown uid)."""
        if uid not in self._users:
            try:
                entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
            except KeyError:
                entry = None
            self._remember(self._users, uid, entry)
        return self._users[uid]

    def name(self, uid: int) -> str | None:
        """The user name of uid, or None."""
        u = self.user(uid)
        return u.pw_name if u else None

    def group(self, gid: int) -> str | None:
        """The group name of gid, or None."""
        if gid not in self._groups:
            try:
                name: str | None = grp.getgrgid(gid).gr_name
            except KeyError:
                name = None
            self._remember(self._groups, gid, name)
        return self._groups[gid]
