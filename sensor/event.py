"""The engine's view of one kernel event: Falco field names, computed on demand.

`SensorEvent.get(field, arg)` implements the engine's Event protocol. Nothing is
rendered until a rule (or an output) asks: most events meet only a handful of checks,
so formatting every field up front would waste most of the sensor's CPU.

Reading a field never changes the sensor's state: the tracker updates the process
table before the event exists, and a field that needs more (an evicted parent, the
pid in the process's namespace) reads /proc without remembering it. `ANSWERED_FIELDS`
names every field `get` can return a value for (the sensor's side of the field
contract with the engine).
"""

from __future__ import annotations

import datetime as dt
import operator
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

from falconer.sensor import hostproc, podfields, render, syscalls
from falconer.sensor.podmeta import ContainerMeta, PodMeta
from falconer.sensor.record import Record
from falconer.sensor.state import UNSET_LOGINUID, FdInfo, Process, read_proc

if TYPE_CHECKING:
    from falconer.sensor.tracker import Tracker

MAX_ANCESTORS = 64

_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_FD_TYPES = {"f": "file", "d": "directory", "4": "ipv4", "6": "ipv6", "u": "unix",
             "p": "pipe", "e": "event", "s": "signalfd", "l": "eventpoll", "i": "inotify",
             "t": "timerfd", "n": "netlink", "b": "bpf", "o": "unknown"}
_FAMILIES = {"4": "ip", "6": "ip", "u": "unix"}


class SensorEvent:
    """One syscall exit event bound to its process and descriptor (Event protocol)."""

    __slots__ = ("tracker", "rec", "proc", "spec", "fd_num", "fd", "num", "type", "time_ns",
                 "_meta", "_anc", "_anc_done")
    source = "syscall"

    def __init__(self, tracker: Tracker, rec: Record, proc: Process,
                 spec: syscalls.Syscall | None, fd_num: int | None, fd: FdInfo | None,
                 num: int) -> None:
        self.tracker = tracker
        self.rec = rec
        self.proc = proc
        self.spec = spec
        self.fd_num = fd_num
        self.fd = fd
        self.num = num
        self.type = spec.name if spec is not None else syscalls.name_of(rec.nr)
        self.time_ns: int = rec.ts_ns + tracker.mono_offset
        self._meta: tuple[PodMeta | None, ContainerMeta | None] | None = None
        #: The ancestors found so far (parent first) and whether the chain ended: the
        #: many proc.aname[N] checks of one event walk it once, and only as far as asked.
        self._anc: list[Process] = []
        self._anc_done = False

    def get(self, field: str, arg: str | None = None) -> object | None:
        """The value of a Falco field (None when missing)."""
        fn = FIELDS.get(field)
        if fn is None:
            if field.startswith("evt.arg."):
                return _evt_arg(self, field[8:])
            return None
        return fn(self, arg)

    @classmethod
    def accessor(cls, field: str, arg: str | None) -> Callable[[SensorEvent], object] | None:
        """The field's getter bound once (the engine's `Event.accessor`): the hottest
        fields read their attribute directly, the others call their table entry
        without the lookup by name."""
        if arg is None and field in DIRECT:
            return DIRECT[field]
        fn = FIELDS.get(field)
        if fn is None:
            if field.startswith("evt.arg."):
                name = field[8:]
                return lambda ev: _evt_arg(ev, name)
            return lambda ev: None
        return lambda ev: fn(ev, arg)

    # -- helpers used by the field table ---------------------------------------------

    def meta(self) -> tuple[PodMeta | None, ContainerMeta | None]:
        """(pod, container) of the event's process, looked up once per event."""
        if self._meta is None:
            self._meta = self.tracker.metadata.lookup(self.proc.cgroup)
        return self._meta

    def parent(self, p: Process) -> Process | None:
        """The parent process, from the table or (if evicted) read from /proc; the
        table is left as it is."""
        if p.ppid <= 0:
            return None
        parent = self.tracker.procs.peek(p.ppid)
        return parent if parent is not None else read_proc(p.ppid, self.tracker.boot_ns)

    def ancestors(self, limit: int = MAX_ANCESTORS) -> list[Process]:
        """Parent, grandparent, ... up to init, at most `limit` of them (bounded by
        MAX_ANCESTORS, loop-safe)."""
        anc = self._anc
        while not self._anc_done and len(anc) < min(limit, MAX_ANCESTORS):
            p = self.parent(anc[-1] if anc else self.proc)
            if p is None or p.pid == self.proc.pid or any(a.pid == p.pid for a in anc):
                self._anc_done = True
            else:
                anc.append(p)
        return anc[:limit]

    def ancestor(self, arg: str | None) -> Process | list[Process] | None:
        """proc.a*[N]: N=0 is the process, 1 its parent...; no arg: every ancestor."""
        if arg is None:
            return self.ancestors()
        try:
            n = int(arg)
        except ValueError:
            return None
        if n == 0:
            return self.proc
        anc = self.ancestors(n) if 0 < n <= MAX_ANCESTORS else []
        return anc[n - 1] if 0 < n <= len(anc) else None


Field = Callable[[SensorEvent, "str | None"], object]


def _proc_attr(fn: Callable[[Process], object]) -> Field:
    return lambda ev, arg: fn(ev.proc)


def _parent_attr(fn: Callable[[Process], object]) -> Field:
    def get(ev: SensorEvent, arg: str | None) -> object:
        p = ev.parent(ev.proc)
        return fn(p) if p is not None else None
    return get


def _ancestor_attr(fn: Callable[[Process], object]) -> Field:
    def get(ev: SensorEvent, arg: str | None) -> object:
        a = ev.ancestor(arg)
        if isinstance(a, list):
            return [fn(p) for p in a]
        return fn(a) if a is not None else None
    return get


def _fd_attr(fn: Callable[[FdInfo], object]) -> Field:
    def get(ev: SensorEvent, arg: str | None) -> object:
        return fn(ev.fd) if ev.fd is not None else None
    return get


def _cap_names(bits: int) -> str:
    """Falco's rendering of a capability set: the names of its bits, space-separated,
    lowest first (capabilities this kernel has and the list does not name are left out)."""
    return " ".join(n for i, n in enumerate(_CAPS) if bits >> i & 1)


def _vpid(p: Process) -> int:
    """The pid in the process's own namespace (NSpid's last entry); the host pid when
    /proc no longer has the process (then the namespace cannot be known). The kernel's
    value at exec wins (a process seeded from /proc has none)."""
    if p.vpid is not None:
        return p.vpid
    try:
        with open(hostproc.path(p.pid, "status"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        pass
    return p.pid


def _vpgid(p: Process) -> int:
    """The process group in the process's own namespace: as of its last exec or setsid/
    setpgid; else the host's (a process seen only since a fork in the host namespace)."""
    return p.vpgid if p.vpgid is not None else p.pgid


def _env(ev: SensorEvent, arg: str | None) -> str | None:
    """From the exec record (a process that exits at once has no /proc file left to
    read); /proc/<pid>/environ only for a process that predates the sensor."""
    items = ev.proc.env
    if items is None:
        try:
            with open(hostproc.path(ev.proc.pid, "environ"), "rb") as f:
                items = [e.decode("utf-8", "replace") for e in f.read().split(b"\0") if e]
        except OSError:
            return None
    if arg is None:
        return " ".join(items)
    prefix = arg + "="
    return next((e[len(prefix):] for e in items if e.startswith(prefix)), None)


def _duration(ev: SensorEvent, arg: str | None) -> int | None:
    start = ev.proc.start_ns
    return ev.time_ns - start if start else None


def _loginuid(ev: SensorEvent, arg: str | None) -> int:
    lu = ev.proc.loginuid
    return -1 if lu == UNSET_LOGINUID else lu


def _loginname(ev: SensorEvent, arg: str | None) -> str | None:
    lu = ev.proc.loginuid
    return None if lu == UNSET_LOGINUID else ev.tracker.users.name(lu)


def _sname(ev: SensorEvent, arg: str | None) -> str | None:
    s = ev.tracker.procs.peek(ev.proc.sid)
    return s.name if s is not None else None


def _is_open(test: Callable[[int], bool]) -> Field:
    def get(ev: SensorEvent, arg: str | None) -> bool:
        flags = syscalls.open_flags(ev.type, ev.rec.args)
        return flags is not None and test(flags)
    return get


def _is_open_exec(ev: SensorEvent, arg: str | None) -> bool:
    """Created with an execute bit in the mode (O_CREAT + S_IX*), as Falco defines it."""
    flags = syscalls.open_flags(ev.type, ev.rec.args)
    if flags is None or not flags & 0o100:
        return False
    mode = syscalls.OPEN_MODE_ARG.get(ev.type)
    return mode is not None and bool(ev.rec.args[mode] & 0o111)


def _fd_ip(fd: FdInfo) -> str | None:
    return fd.sip or fd.cip


def _fd_port(fd: FdInfo) -> int | None:
    return fd.sport if fd.sport is not None else fd.cport


def _ip_name(pick: Callable[[FdInfo], str | None]) -> Field:
    """An address's names (sensor/names.py): one name, a list of several, or None."""
    def get(ev: SensorEvent, arg: str | None) -> object:
        return ev.tracker.metadata.names.names(pick(ev.fd)) if ev.fd is not None else None
    return get


def _fd_local(fd: FdInfo, server: object, client: object) -> object:
    return server if fd.is_server else client


def _fd_remote(fd: FdInfo, server: object, client: object) -> object:
    return client if fd.is_server else server


#: How a raw register value of each parameter kind reads in Falco's spelling. Kinds that
#: need more than the value (paths, user names) are handled in `_render_param`.
_RAW_RENDERERS: dict[str, Callable[[int], str]] = {
    syscalls.FD: lambda raw: str(render.fd_arg(raw)),
    syscalls.OFLAGS: render.open_flags,
    syscalls.MODE: render.chmod_mode,
    syscalls.OMODE: render.oct_mode,
    syscalls.PTRACE_REQ: render.ptrace_request,
    syscalls.DOMAIN: render.family,
    syscalls.SOCKTYPE: render.sock_type,
    syscalls.BPF_CMD: render.bpf_cmd,
    syscalls.AT_FLAGS: render.at_flags,
    syscalls.HEX: hex,
    syscalls.UINT: str,
}


def _render_param(ev: SensorEvent, index: int, kind: str) -> str | None:
    rec = ev.rec
    raw = rec.args[index]
    if kind == syscalls.PATH_A:
        return rec.str_a()
    if kind == syscalls.PATH_B:
        return rec.str_b()
    if kind == syscalls.UID:
        uid = raw & 0xFFFFFFFF
        return ev.tracker.users.name(uid) or str(uid)
    renderer = _RAW_RENDERERS.get(kind)
    return renderer(raw) if renderer else str(render.signed(raw))


#: Syscalls whose result Falco names `fd` (every other result is `res`).
_RETURNS_FD = frozenset({"open", "openat", "openat2", "creat", "socket", "accept", "accept4",
                         "memfd_create"})


def _params(ev: SensorEvent) -> list[tuple[str, str | None]]:
    """Falco's exit-event parameter list: the result first, then the arguments."""
    ret_name = "fd" if ev.type in _RETURNS_FD else "res"
    out: list[tuple[str, str | None]] = [(ret_name, str(ev.rec.ret))]
    if ev.spec is not None:
        out += [(name, _render_param(ev, i, kind)) for name, i, kind in ev.spec.params]
    if ev.type in ("execve", "execveat") and ev.rec.ret == 0:
        out += [("exe", ev.proc.exe), ("args", " ".join(ev.proc.args)),
                ("cwd", ev.proc.cwd)]
    return out


def _evt_arg(ev: SensorEvent, name: str) -> str | None:
    if name.isdigit():
        params = _params(ev)
        i = int(name)
        return params[i][1] if i < len(params) else None
    if name in ("res", "fd") and ev.spec is None:
        return str(ev.rec.ret)
    for pname, value in _params(ev):
        if pname == name:
            return value
    return None


def _evt_args(ev: SensorEvent, arg: str | None) -> str:
    return " ".join(f"{k}={v}" for k, v in _params(ev) if v is not None)


def _evt_time(ev: SensorEvent, arg: str | None) -> str:
    t = dt.datetime.fromtimestamp(ev.time_ns // 1_000_000_000, dt.timezone.utc)
    return f"{t:%H:%M:%S}.{ev.time_ns % 1_000_000_000:09d}"


FIELDS: dict[str, Field] = {
    # evt.*
    "evt.type": lambda ev, a: ev.type,
    "syscall.type": lambda ev, a: ev.type,
    "evt.dir": lambda ev, a: "<",
    "evt.num": lambda ev, a: ev.num,
    "evt.source": lambda ev, a: "syscall",
    "evt.hostname": lambda ev, a: ev.tracker.hostname,
    "evt.rawtime": lambda ev, a: ev.time_ns,
    "evt.time": _evt_time,
    "evt.res": lambda ev, a: render.res(ev.rec.ret),
    "evt.rawres": lambda ev, a: ev.rec.ret,
    "evt.failed": lambda ev, a: ev.rec.ret < 0,
    "evt.arg": lambda ev, a: _evt_arg(ev, a) if a is not None else None,
    "evt.args": _evt_args,
    "evt.is_open_read": _is_open(render.is_open_read),
    "evt.is_open_write": _is_open(render.is_open_write),
    "evt.is_open_exec": _is_open_exec,
    "evt.is_open_create": _is_open(lambda f: bool(f & 0o100)),
    # proc.* / thread.*
    "proc.pid": _proc_attr(lambda p: p.pid),
    "proc.ppid": _proc_attr(lambda p: p.ppid),
    "proc.vpid": _proc_attr(_vpid),
    "proc.pvpid": _parent_attr(_vpid),
    "proc.name": _proc_attr(lambda p: p.name),
    "proc.exe": _proc_attr(lambda p: p.exe),
    "proc.exepath": _proc_attr(lambda p: p.exepath),
    "proc.args": _proc_attr(lambda p: " ".join(p.args)),
    "proc.cmdline": _proc_attr(lambda p: p.cmdline()),
    "proc.exeline": _proc_attr(lambda p: " ".join([p.exe, *p.args])),
    "proc.cmdnargs": _proc_attr(lambda p: len(p.args)),
    "proc.cmdlenargs": _proc_attr(lambda p: sum(len(a) for a in p.args)),
    "proc.cwd": _proc_attr(lambda p: p.cwd if p.cwd.endswith("/") else p.cwd + "/"),
    "proc.tty": _proc_attr(lambda p: p.tty),
    "proc.sid": _proc_attr(lambda p: p.sid),
    "proc.sname": _sname,
    "proc.pgid": _proc_attr(lambda p: p.pgid),
    "proc.is_sid_leader": _proc_attr(lambda p: p.sid == p.pid),
    "proc.is_pgid_leader": _proc_attr(lambda p: p.pgid == p.pid),
    "proc.vpgid": _proc_attr(_vpgid),
    "proc.exe_ino": _proc_attr(lambda p: p.exe_stat[0] if p.exe_stat else None),
    "proc.exe_ino.ctime": _proc_attr(lambda p: p.exe_stat[1] if p.exe_stat else None),
    "proc.exe_ino.mtime": _proc_attr(lambda p: p.exe_stat[2] if p.exe_stat else None),
    "proc.exe_ino.ctime_duration_proc_start": _proc_attr(
        lambda p: p.start_ns - p.exe_stat[1] if p.exe_stat and p.start_ns else None),
    "proc.is_vpgid_leader": _proc_attr(lambda p: _vpgid(p) == _vpid(p)),
    "proc.env": _env,
    "proc.duration": _duration,
    "proc.pid.ts": _proc_attr(lambda p: p.start_ns),
    "proc.is_exe_from_memfd": _proc_attr(lambda p: p.exe_from_memfd),
    "proc.is_exe_upper_layer": _proc_attr(lambda p: p.exe_upper_layer),
    "proc.is_exe_lower_layer": _proc_attr(lambda p: p.exe_lower_layer),
    "proc.pname": _parent_attr(lambda p: p.name),
    "proc.pexe": _parent_attr(lambda p: p.exe),
    "proc.pexepath": _parent_attr(lambda p: p.exepath),
    "proc.pcmdline": _parent_attr(lambda p: p.cmdline()),
    "proc.ppid.duration": lambda ev, a: (
        (lambda p: ev.time_ns - p.start_ns if p is not None and p.start_ns else None)(
            ev.parent(ev.proc))),
    "proc.aname": _ancestor_attr(lambda p: p.name),
    "proc.apid": _ancestor_attr(lambda p: p.pid),
    "proc.aexe": _ancestor_attr(lambda p: p.exe),
    "proc.aexepath": _ancestor_attr(lambda p: p.exepath),
    "proc.acmdline": _ancestor_attr(lambda p: p.cmdline()),
    "thread.tid": lambda ev, a: ev.rec.tid,
    "thread.vtid": lambda ev, a: ev.rec.tid,
    "thread.ismain": lambda ev, a: ev.rec.tid == ev.rec.tgid,
    "thread.cap_effective": lambda ev, a: _cap_names(ev.rec.cap_effective),
    "thread.cap_permitted": lambda ev, a: _cap_names(ev.rec.cap_permitted),
    "thread.cap_inheritable": lambda ev, a: _cap_names(ev.rec.cap_inheritable),
    # user.* / group.*
    "user.uid": lambda ev, a: ev.rec.uid,
    "user.name": lambda ev, a: ev.tracker.users.name(ev.rec.uid),
    "user.homedir": lambda ev, a: (lambda u: u.pw_dir if u else None)(
        ev.tracker.users.user(ev.rec.uid)),
    "user.shell": lambda ev, a: (lambda u: u.pw_shell if u else None)(
        ev.tracker.users.user(ev.rec.uid)),
    "user.loginuid": _loginuid,
    "user.loginname": _loginname,
    "group.gid": lambda ev, a: ev.rec.gid,
    "group.name": lambda ev, a: ev.tracker.users.group(ev.rec.gid),
    # fd.*
    "fd.num": lambda ev, a: ev.fd_num,
    "fd.name": _fd_attr(lambda f: f.name or None),
    "fd.nameraw": _fd_attr(lambda f: f.nameraw or f.name or None),
    "fd.typechar": _fd_attr(lambda f: f.typechar),
    "fd.type": _fd_attr(lambda f: _FD_TYPES.get(f.typechar)),
    "fd.directory": _fd_attr(lambda f: (f.name if f.typechar == "d" else posixpath.dirname(f.name))
                             if f.typechar in ("f", "d") and f.name else None),
    "fd.filename": _fd_attr(lambda f: posixpath.basename(f.name)
                            if f.typechar == "f" and f.name else None),
    "fd.l4proto": _fd_attr(lambda f: f.l4proto),
    "fd.sockfamily": _fd_attr(lambda f: _FAMILIES.get(f.typechar)),
    "fd.is_server": _fd_attr(lambda f: f.is_server),
    "fd.connected": _fd_attr(lambda f: f.connected),
    "fd.name_changed": _fd_attr(lambda f: f.name_changed),
    "fd.ip": _fd_attr(_fd_ip),
    "fd.net": _fd_attr(_fd_ip),
    "fd.sip": _fd_attr(lambda f: f.sip),
    "fd.snet": _fd_attr(lambda f: f.sip),
    "fd.cip": _fd_attr(lambda f: f.cip),
    "fd.cnet": _fd_attr(lambda f: f.cip),
    "fd.lip": _fd_attr(lambda f: _fd_local(f, f.sip, f.cip)),
    "fd.rip": _fd_attr(lambda f: _fd_remote(f, f.sip, f.cip)),
    "fd.lnet": _fd_attr(lambda f: _fd_local(f, f.sip, f.cip)),
    "fd.rnet": _fd_attr(lambda f: _fd_remote(f, f.sip, f.cip)),
    "fd.sip.name": _ip_name(lambda f: f.sip),
    "fd.cip.name": _ip_name(lambda f: f.cip),
    "fd.lip.name": _ip_name(lambda f: f.sip if f.is_server else f.cip),
    "fd.rip.name": _ip_name(lambda f: f.cip if f.is_server else f.sip),
    "fd.port": _fd_attr(_fd_port),
    "fd.sport": _fd_attr(lambda f: f.sport),
    "fd.cport": _fd_attr(lambda f: f.cport),
    "fd.lport": _fd_attr(lambda f: _fd_local(f, f.sport, f.cport)),
    "fd.rport": _fd_attr(lambda f: _fd_remote(f, f.sport, f.cport)),
    # container.*, k8s.*, k8smeta.*
    **podfields.FIELDS,
}

#: Fields read straight from the event's own attributes (what `FIELDS` computes for
#: them, without the table's indirections): the ones most rule checks read.
DIRECT: dict[str, Callable[[SensorEvent], object]] = {
    # attrgetter reads in C: no Python frame per check
    "evt.type": operator.attrgetter("type"),
    "proc.name": operator.attrgetter("proc.name"),
    "proc.exepath": operator.attrgetter("proc.exepath"),
    "proc.exe": operator.attrgetter("proc.exe"),
    "proc.tty": operator.attrgetter("proc.tty"),
    "fd.num": operator.attrgetter("fd_num"),
    "user.uid": operator.attrgetter("rec.uid"),
    "fd.name": lambda ev: (ev.fd.name or None) if ev.fd is not None else None,
    "fd.typechar": lambda ev: ev.fd.typechar if ev.fd is not None else None,
    "container.id": operator.attrgetter("proc.cgroup.short_id"),
}

#: Every field name `SensorEvent.get` answers (base names: `evt.arg` covers
#: `evt.arg.NAME`, `proc.aname` covers `proc.aname[N]`).
ANSWERED_FIELDS: frozenset[str] = frozenset(FIELDS)
