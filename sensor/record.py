"""The kernel record (`struct falconer_event` in probe.bpf.c), seen from Python.

`EventRecord` is the ctypes mirror of the C struct; a test compares it member by member
(offsets and sizes) with the layout bcc's clang produced for the loaded program, so the
two sides cannot drift apart silently. A record is sent cut after the data in use: the
header, then path a, path b, socket address, argv, environment and local socket address
packed in that order
(each present when its length is non-zero). Decoding uses one precompiled
`struct.Struct` over the header and slices the pieces only when a field needs them.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from falconer.sensor import kernelabi as abi


class EventRecord(ctypes.Structure):
    """Mirror of `struct falconer_event` (same member order, names and types)."""

    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("nr", ctypes.c_int32),
        ("kind", ctypes.c_uint16),
        ("argc", ctypes.c_uint16),
        ("ret", ctypes.c_int64),
        ("args", ctypes.c_uint64 * 6),
        ("len_a", ctypes.c_uint16),
        ("len_b", ctypes.c_uint16),
        ("len_sock", ctypes.c_uint16),
        ("len_argv", ctypes.c_uint16),
        ("len_env", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("len_local", ctypes.c_uint16),
        ("len_exe", ctypes.c_uint16),
        ("cap_inheritable", ctypes.c_uint64),
        ("cap_permitted", ctypes.c_uint64),
        ("cap_effective", ctypes.c_uint64),
        ("data", ctypes.c_uint8 * (2 * abi.DATA_HALF)),
    ]


class CgroupNames(ctypes.Structure):
    """Mirror of `struct falconer_cgroup_names`: one hierarchy's cgroup at exec, as the
    names of its kernfs node and ancestors, leaf first."""

    _fields_ = [
        ("levels", ctypes.c_uint8),
        ("cut", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 6),
        ("name", (ctypes.c_char * abi.CGROUP_NAME) * abi.CGROUP_LEVELS),
    ]

    def path(self) -> str:
        """The names as a path from the highest one read ("/kubepods/.../<id>"); a
        `cut` path lacks its upper components."""
        names = [bytes(self.name[i].value).decode("utf-8", "surrogateescape")
                 for i in range(min(self.levels, abi.CGROUP_LEVELS))]
        return "/" + "/".join(reversed(names))


class ExeStat(ctypes.Structure):
    """Mirror of `struct falconer_exe_stat`: the new image's executable (proc.exe_ino.*)."""

    _fields_ = [
        ("ino", ctypes.c_uint64),
        ("ctime_ns", ctypes.c_int64),
        ("mtime_ns", ctypes.c_int64),
    ]


class ExecData(ctypes.Structure):
    """Mirror of `struct falconer_exec_data`, a KIND_EXEC record's data: the executable
    and the task's cgroup in the memory (else pids) controller's hierarchy and in
    cgroup v2's."""

    _fields_ = [
        ("exe", ExeStat),
        ("cgroup", CgroupNames * abi.CGROUP_HIERARCHIES),
    ]


class SpecRecord(ctypes.Structure):
    """Mirror of `struct falconer_spec`: what the kernel reads for one syscall."""

    _fields_ = [
        ("forward", ctypes.c_uint8),
        ("path_a", ctypes.c_uint8),
        ("path_b", ctypes.c_uint8),
        ("argv", ctypes.c_uint8),
        ("sock", ctypes.c_uint8),
        ("sock_len", ctypes.c_uint8),
        ("sock_when", ctypes.c_uint8),
        ("deref", ctypes.c_uint8),
        ("deref_to", ctypes.c_uint8),
        ("filter", ctypes.c_uint8),
        ("fd_ret", ctypes.c_uint8),
        ("open_flags", ctypes.c_uint8),
        ("sock_local", ctypes.c_uint8),
        ("compat_watched", ctypes.c_uint8),
    ]


class PathKey(ctypes.Structure):
    """Mirror of `struct falconer_path_key` (the filter's LPM trie key)."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("group", ctypes.c_uint8),
        ("path", ctypes.c_char * abi.KEY_PATH),
    ]


#: ts, tgid, tid, uid, gid, nr, kind, argc, ret, args[6], len_a, len_b, len_sock,
#: len_argv, len_env, flags, len_local, len_exe, cap_inheritable, cap_permitted,
#: cap_effective
HEADER = struct.Struct("<QIIIIiHHq6Q8H3Q")
OFF_DATA = EventRecord.data.offset
#: struct falconer_exe_stat: ino, ctime_ns, mtime_ns (the start of a KIND_EXEC's data)
EXE_STAT = struct.Struct("<Qqq")
assert EXE_STAT.size == ctypes.sizeof(ExeStat), "EXE_STAT must mirror struct falconer_exe_stat"
RECORD_SIZE = ctypes.sizeof(EventRecord)
assert HEADER.size == OFF_DATA, "HEADER must cover exactly the members before data"


@dataclass(slots=True)
class Record:
    """One decoded record: the header unpacked, the payload kept as raw bytes."""

    ts_ns: int
    tgid: int
    tid: int
    uid: int
    gid: int
    nr: int
    kind: int
    argc: int
    ret: int
    args: tuple[int, int, int, int, int, int]
    len_a: int
    len_b: int
    len_sock: int
    len_argv: int
    len_env: int
    flags: int
    len_local: int
    len_exe: int
    #: The thread's capability sets at the hook (bit n = capability n).
    cap_inheritable: int
    cap_permitted: int
    cap_effective: int
    raw: bytes

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        """Unpack the header of one ring-buffer record (`raw` is a copy of it).

        Raises struct.error when `raw` is shorter than the header.
        """
        h = HEADER.unpack_from(raw)
        return cls(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8],
                   h[9:15], h[15], h[16], h[17], h[18], h[19], h[20], h[21], h[22],
                   h[23], h[24], h[25], raw)

    @property
    def compat(self) -> bool:
        """Made through the 32-bit gate (`nr` is already the x86_64 equivalent)."""
        return bool(self.flags & abi.RF_COMPAT)

    def str_a(self) -> str | None:
        """The first path argument (or a successful exec's file name), None if unread."""
        return _text(self.raw, OFF_DATA, self.len_a)

    def str_b(self) -> str | None:
        """The second path argument, or None when the kernel could not read it."""
        return _text(self.raw, OFF_DATA + self.len_a, self.len_b)

    def sockaddr(self) -> bytes:
        """The socket address bytes the kernel side captured (may be empty)."""
        off = OFF_DATA + self.len_a + self.len_b
        return self.raw[off:off + self.len_sock]

    def argv(self) -> list[str]:
        """execve's argv (bounded by ARGV_LEN; MAX_ARGS for a failed exec)."""
        off = OFF_DATA + self.len_a + self.len_b + self.len_sock
        parts = _strings(self.raw[off:off + self.len_argv])
        return parts if self.flags & abi.RF_ARGV_FROM_MM else parts[:self.argc]

    def env(self) -> list[str]:
        """A successful exec's environment, "NAME=value" each (bounded by ENV_LEN)."""
        off = OFF_DATA + self.len_a + self.len_b + self.len_sock + self.len_argv
        return _strings(self.raw[off:off + self.len_env])


    def sock_local(self) -> bytes:
        """The socket's local address (connect), a sockaddr; empty when not read."""
        off = (OFF_DATA + self.len_a + self.len_b + self.len_sock + self.len_argv
               + self.len_env)
        return self.raw[off:off + self.len_local]


    def exe_stat(self) -> tuple[int, int, int] | None:
        """KIND_EXEC: (inode number, ctime ns, mtime ns) of the new executable; None when
        the record does not carry them (a length, or the record itself, is too short)."""
        if min(self.len_exe, len(self.raw) - OFF_DATA) < EXE_STAT.size:
            return None
        ino, ctime_ns, mtime_ns = EXE_STAT.unpack_from(self.raw, OFF_DATA)
        return ino, ctime_ns, mtime_ns

    def cgroups(self) -> list[CgroupNames]:
        """KIND_EXEC: the task's cgroup in each hierarchy read (empty when absent, or when
        the record is shorter than its length says)."""
        if min(self.len_exe, len(self.raw) - OFF_DATA) < ctypes.sizeof(ExecData):
            return []
        data = ExecData.from_buffer_copy(self.raw, OFF_DATA)
        return [data.cgroup[i] for i in range(abi.CGROUP_HIERARCHIES)]


def _strings(blob: bytes) -> list[str]:
    if not blob:
        return []
    return [p.decode("utf-8", "replace") for p in blob.rstrip(b"\0").split(b"\0")]


def _text(raw: bytes, off: int, n: int) -> str | None:
    """The C string of `n` bytes (NUL included) at `off`: up to its first NUL, as the
    kernel's string reads end there."""
    if n <= 0:
        return None
    return raw[off:off + n - 1].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def pack(nr: int, ret: int = 0, args: tuple[int, ...] = (), *, kind: int = abi.KIND_SYSCALL,
         tgid: int = 4242, uid: int = 0, str_a: str | None = None, str_b: str | None = None,
         sock: bytes = b"", argv: list[str] | None = None, env: list[str] | None = None,
         flags: int = 0, local: bytes = b"", exe: bytes = b"",
         caps: tuple[int, int, int] = (0, 0, 0), ts_ns: int = 1_000_000) -> bytes:
    """A record as the kernel sends it (the inverse of `Record.decode`): the header, then
    the pieces in use, packed; strings NUL-terminated, `args` up to six registers. For
    tests and the fuzz harness's seeds (bench/fuzz)."""
    a = (str_a.encode() + b"\0") if str_a is not None else b""
    b = (str_b.encode() + b"\0") if str_b is not None else b""
    v = b"".join(x.encode() + b"\0" for x in argv or [])
    e = b"".join(x.encode() + b"\0" for x in env or [])
    head = HEADER.pack(
        ts_ns, tgid, tgid, uid, uid, nr, kind, len(argv or []), ret,
        *(list(args) + [0] * (6 - len(args))), len(a), len(b), len(sock), len(v), len(e),
        flags, len(local), len(exe), *caps)
    return head + a + b + sock + v + e + local + exe
