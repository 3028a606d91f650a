"""The syscalls Falconer decodes: numbers (x86_64), Falco's parameter names, and what
the kernel side must read for each.

One table drives both sides: `probe.Probe.set_forwarded()` fills the BPF `specs` map
(which args are paths, argv, socket addresses) and the decoder uses the same rows to name arguments
(`evt.arg.<name>`) the way Falco's event table does, so a rule written for Falco finds
the argument under the name it expects.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from falconer.sensor import kernelabi as abi
from falconer.sensor import render

# Parameter renderings (how `evt.arg.<name>` shows the raw value).
FD = "fd"            # signed 32-bit descriptor
INT = "int"          # signed 64-bit number
UINT = "uint"        # unsigned number
HEX = "hex"          # address-like value, 0x...
PATH_A = "path_a"    # user string read into str_a
PATH_B = "path_b"    # user string read into str_b
OFLAGS = "oflags"    # open(2) flags: O_RDONLY|O_CLOEXEC
MODE = "mode"        # chmod-style mode: S_IRUSR|S_IWUSR
OMODE = "omode"      # open(2) creation mode, octal
PTRACE_REQ = "ptrace_req"
UID = "uid"          # rendered as the user name, as Falco does
DOMAIN = "domain"    # socket family AF_INET...
SOCKTYPE = "socktype"
BPF_CMD = "bpf_cmd"
AT_FLAGS = "at_flags"

SOCK_ENTER_LEN_VALUE = abi.SOCK_ENTER_LEN_VALUE
SOCK_EXIT_LEN_PTR = abi.SOCK_EXIT_LEN_PTR
SOCK_ENTER_MSGHDR = abi.SOCK_ENTER_MSGHDR
SOCK_EXIT_MSGHDR = abi.SOCK_EXIT_MSGHDR


@dataclass(frozen=True)
class Syscall:
    """One decoded syscall: `params` are (Falco name, raw arg index, rendering)."""

    nr: int
    name: str
    params: tuple[tuple[str, int, str], ...] = ()
    path_a: int | None = None
    path_b: int | None = None
    argv: int | None = None
    sock: int | None = None
    sock_len: int | None = None
    sock_when: int = 0
    deref: int | None = None       # pointer arg whose pointee's first u64 ...
    deref_to: int | None = None    # ... replaces this arg (read at sys_exit)
    sock_local: int | None = None  # socket arg whose local address is read at exit


def _s(nr: int, name: str, *params: tuple[str, int, str], **kw: int) -> Syscall:
    return Syscall(nr, name, tuple(params), **kw)


# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DECODED: tuple[Syscall, ...] = (
    _s(2, "open", ("name", 0, PATH_A), ("flags", 1, OFLAGS), ("mode", 2, OMODE), path_a=0),
    _s(257, "openat", ("dirfd", 0, FD), ("name", 1, PATH_A), ("flags", 2, OFLAGS),
       ("mode", 3, OMODE), path_a=1),
    _s(437, "openat2", ("dirfd", 0, FD), ("name", 1, PATH_A), ("flags", 3, OFLAGS), path_a=1,
       deref=2, deref_to=3),
    _s(85, "creat", ("name", 0, PATH_A), ("mode", 1, OMODE), path_a=0),
    _s(59, "execve", ("filename", 0, PATH_A), path_a=0, argv=1),
    _s(322, "execveat", ("dirfd", 0, FD), ("pathname", 1, PATH_A), ("flags", 4, AT_FLAGS),
       path_a=1, argv=2),
    _s(42, "connect", ("fd", 0, FD), sock=1, sock_len=2, sock_when=SOCK_ENTER_LEN_VALUE,
       sock_local=0),
    _s(43, "accept", ("fd", 0, FD), sock=1, sock_len=2, sock_when=SOCK_EXIT_LEN_PTR),
    _s(288, "accept4", ("fd", 0, FD), ("flags", 3, INT), sock=1, sock_len=2,
       sock_when=SOCK_EXIT_LEN_PTR),
    _s(49, "bind", ("fd", 0, FD), sock=1, sock_len=2, sock_when=SOCK_ENTER_LEN_VALUE),
    _s(50, "listen", ("fd", 0, FD), ("backlog", 1, INT)),
    _s(41, "socket", ("domain", 0, DOMAIN), ("type", 1, SOCKTYPE), ("proto", 2, INT)),
    _s(44, "sendto", ("fd", 0, FD), ("size", 2, UINT), sock=4, sock_len=5,
       sock_when=SOCK_ENTER_LEN_VALUE),
    _s(46, "sendmsg", ("fd", 0, FD), sock=1, sock_when=SOCK_ENTER_MSGHDR),
    _s(45, "recvfrom", ("fd", 0, FD), ("size", 2, UINT), sock=4, sock_len=5,
       sock_when=SOCK_EXIT_LEN_PTR),
    _s(47, "recvmsg", ("fd", 0, FD), sock=1, sock_when=SOCK_EXIT_MSGHDR),
    _s(32, "dup", ("oldfd", 0, FD)),
    _s(33, "dup2", ("oldfd", 0, FD), ("newfd", 1, FD)),
    _s(292, "dup3", ("oldfd", 0, FD), ("newfd", 1, FD), ("flags", 2, INT)),
    _s(101, "ptrace", ("request", 0, PTRACE_REQ), ("pid", 1, INT), ("addr", 2, HEX),
       ("data", 3, HEX)),
    _s(175, "init_module", ("length", 1, UINT), ("uargs", 2, PATH_A), path_a=2),
    _s(313, "finit_module", ("fd", 0, FD), ("uargs", 1, PATH_A), ("flags", 2, INT), path_a=1),
    _s(86, "link", ("oldpath", 0, PATH_A), ("newpath", 1, PATH_B), path_a=0, path_b=1),
    _s(265, "linkat", ("olddir", 0, FD), ("oldpath", 1, PATH_A), ("newdir", 2, FD),
       ("newpath", 3, PATH_B), ("flags", 4, AT_FLAGS), path_a=1, path_b=3),
    _s(88, "symlink", ("target", 0, PATH_A), ("linkpath", 1, PATH_B), path_a=0, path_b=1),
    _s(266, "symlinkat", ("target", 0, PATH_A), ("linkdirfd", 1, FD), ("linkpath", 2, PATH_B),
       path_a=0, path_b=2),
    _s(82, "rename", ("oldpath", 0, PATH_A), ("newpath", 1, PATH_B), path_a=0, path_b=1),
    _s(264, "renameat", ("olddirfd", 0, FD), ("oldpath", 1, PATH_A), ("newdirfd", 2, FD),
       ("newpath", 3, PATH_B), path_a=1, path_b=3),
    _s(316, "renameat2", ("olddirfd", 0, FD), ("oldpath", 1, PATH_A), ("newdirfd", 2, FD),
       ("newpath", 3, PATH_B), ("flags", 4, INT), path_a=1, path_b=3),
    _s(87, "unlink", ("path", 0, PATH_A), path_a=0),
    _s(263, "unlinkat", ("dirfd", 0, FD), ("name", 1, PATH_A), ("flags", 2, AT_FLAGS),
       path_a=1),
    _s(83, "mkdir", ("path", 0, PATH_A), ("mode", 1, OMODE), path_a=0),
    _s(258, "mkdirat", ("dirfd", 0, FD), ("path", 1, PATH_A), ("mode", 2, OMODE), path_a=1),
    _s(84, "rmdir", ("path", 0, PATH_A), path_a=0),
    _s(90, "chmod", ("filename", 0, PATH_A), ("mode", 1, MODE), path_a=0),
    _s(91, "fchmod", ("fd", 0, FD), ("mode", 1, MODE)),
    _s(268, "fchmodat", ("dirfd", 0, FD), ("filename", 1, PATH_A), ("mode", 2, MODE),
       path_a=1),
    _s(105, "setuid", ("uid", 0, UID)),
    _s(308, "setns", ("fd", 0, FD), ("nstype", 1, INT)),
    _s(272, "unshare", ("flags", 0, INT)),
    _s(321, "bpf", ("cmd", 0, BPF_CMD)),
    _s(323, "userfaultfd", ("flags", 0, INT)),
    _s(319, "memfd_create", ("name", 0, PATH_A), ("flags", 1, INT), path_a=0),
    _s(3, "close", ("fd", 0, FD)),
    _s(80, "chdir", ("path", 0, PATH_A), path_a=0),
    _s(112, "setsid"),
    _s(109, "setpgid", ("pid", 0, INT), ("pgid", 1, INT)),
    _s(81, "fchdir", ("fd", 0, FD)),
)

#: Thread/process creation (named for `evt.type`; state comes from sched_process_fork).
CLONE_NRS: dict[str, int] = {"clone": 56, "fork": 57, "vfork": 58, "clone3": 435}

#: What the state tracker itself needs, whatever the rules: fd table and cwd.
STATE_SYSCALLS: frozenset[str] = frozenset({
    "open", "openat", "openat2", "creat", "execve", "execveat", "connect", "accept",
    "accept4", "bind", "socket", "dup", "dup2", "dup3", "close", "chdir", "fchdir",
    "memfd_create", "setsid", "setpgid",
})

#: The open family: raw arg index of the open(2) flags and of the creation mode (None:
#: not in a register; openat2's mode stays inside struct open_how). creat(2) has no flags
#: argument: it is open(2) with `render.CREAT_FLAGS`.
OPEN_FLAGS_ARG: dict[str, int] = {"open": 1, "openat": 2, "openat2": 3}
OPEN_MODE_ARG: dict[str, int] = {"open": 2, "openat": 3, "creat": 1}


def open_flags(name: str, args: Sequence[int]) -> int | None:
    """The open(2) flags an open-family call used (creat's implied ones), else None.

    One place for the tracker (fd type, O_CLOEXEC) and the fields (evt.is_open_*), so
    the two cannot disagree about where a syscall keeps its flags.
    """
    i = OPEN_FLAGS_ARG.get(name)
    if i is not None:
        return args[i]
    return render.CREAT_FLAGS if name == "creat" else None


#: Syscalls whose return value is a new descriptor (the kernel filter forgets a
#: filtered-out descriptor when its number is handed out again).
FD_RETURNING: frozenset[str] = frozenset({
    "open", "openat", "openat2", "creat", "socket", "accept", "accept4", "dup", "dup2",
    "dup3", "memfd_create",
})

#: The 32-bit gate (`int $0x80`, sysenter): i386 number -> the x86_64 syscall of the same
#: meaning, for every decoded syscall (arch/x86/entry/syscalls/syscall_32.tbl). The
#: kernel side maps them before anything else, so rules and state see one syscall.
#: Not mapped: socketcall(2) (102), the multiplexer older i386 libcs use for sockets.
IA32: dict[str, tuple[int, ...]] = {
    "open": (5,), "openat": (295,), "openat2": (437,), "creat": (8,), "execve": (11,),
    "execveat": (358,), "connect": (362,), "accept4": (364,), "bind": (361,),
    "listen": (363,), "socket": (359,), "sendto": (369,), "sendmsg": (370,),
    "recvfrom": (371,), "recvmsg": (372,), "dup": (41,), "dup2": (63,), "dup3": (330,),
    "ptrace": (26,), "init_module": (128,), "finit_module": (350,), "link": (9,),
    "linkat": (303,), "symlink": (83,), "symlinkat": (304,), "rename": (38,),
    "renameat": (302,), "renameat2": (353,), "unlink": (10,), "unlinkat": (301,),
    "mkdir": (39,), "mkdirat": (296,), "rmdir": (40,), "chmod": (15,), "fchmod": (94,),
    "fchmodat": (306,), "setuid": (23, 213), "setns": (346,), "unshare": (310,),
    "bpf": (357,), "userfaultfd": (374,), "memfd_create": (356,), "close": (6,),
    "chdir": (12,), "fchdir": (133,), "setsid": (66,), "setpgid": (57,),
}

BY_NR: dict[int, Syscall] = {s.nr: s for s in DECODED}
BY_NAME: dict[str, Syscall] = {s.name: s for s in DECODED}
IA32_TO_X64: dict[int, int] = {i: BY_NAME[name].nr for name, nrs in IA32.items() for i in nrs}


def check_arch() -> None:
    """The numbers above are x86_64's; refuse clearly anywhere else."""
    if platform.machine() != "x86_64":
        raise RuntimeError(f"falconer sensor supports x86_64 only (this is {platform.machine()})")


@cache
def all_names() -> dict[int, str]:
    """Every syscall number -> name (bcc's table completed with the decoded ones)."""
    from bcc.syscall import syscalls  # noqa: PLC0415 - bcc only where the sensor runs

    names = {nr: name.decode() for nr, name in syscalls.items()}
    names.update({s.nr: s.name for s in DECODED})
    names.update({nr: name for name, nr in CLONE_NRS.items()})
    return names


def name_of(nr: int) -> str:
    """The syscall's name for `evt.type`, or `syscall_<nr>` when unknown."""
    s = BY_NR.get(nr)
    if s is not None:
        return s.name
    return all_names().get(nr, f"syscall_{nr}")


def numbers_for(names: frozenset[str] | None) -> set[int]:
    """The syscall numbers to forward for these `evt.type` names (None = all)."""
    table = all_names()
    if names is None:
        return set(table)
    wanted = set(names) | STATE_SYSCALLS
    return {nr for nr, name in table.items() if name in wanted}
