"""Falco-style renderings of raw syscall values (`evt.arg.*`, `evt.res`).

Rules compare against Falco's spellings (`evt.arg.flags contains O_TRUNC`,
`evt.arg.request contains PTRACE_ATTACH`, `evt.res = ENOENT`), so the raw numbers are
turned into the same names, joined with `|` in the order of Falco's flag tables.
"""

from __future__ import annotations

import errno
import socket

# Linux open(2) bits (x86_64), in the order Falco's table lists them.
_O_BITS: tuple[tuple[str, int], ...] = (
    ("O_LARGEFILE", 0o100000),
    ("O_DIRECTORY", 0o200000),
    ("O_DIRECT", 0o40000),
    ("O_TRUNC", 0o1000),
    ("O_SYNC", 0o4010000),
    ("O_NONBLOCK", 0o4000),
    ("O_EXCL", 0o200),
    ("O_DSYNC", 0o10000),
    ("O_APPEND", 0o2000),
    ("O_CREAT", 0o100),
)
_O_TAIL: tuple[tuple[str, int], ...] = (("O_CLOEXEC", 0o2000000),)
O_ACCMODE = 3
CREAT_FLAGS = 0o1000 | 0o100 | 1   # creat(2) is open(2) with O_CREAT|O_WRONLY|O_TRUNC
O_PATH = 0o10000000


def open_flags(flags: int) -> str:
    """`O_RDONLY|O_CLOEXEC`-style rendering of open(2) flags."""
    names = [name for name, bit in _O_BITS if flags & bit == bit]
    acc = flags & O_ACCMODE
    names.append("O_RDWR" if acc == 2 else "O_WRONLY" if acc == 1 else "O_RDONLY")
    names += [name for name, bit in _O_TAIL if flags & bit]
    return "|".join(names)


def is_open_read(flags: int) -> bool:
    """Opened for reading: O_RDONLY or O_RDWR (and not O_PATH)."""
    return not flags & O_PATH and flags & O_ACCMODE in (0, 2)


def is_open_write(flags: int) -> bool:
    """Opened for writing: O_WRONLY or O_RDWR."""
    return flags & O_ACCMODE in (1, 2)


_MODE_BITS: tuple[tuple[str, int], ...] = (
    ("S_IXOTH", 0o1), ("S_IWOTH", 0o2), ("S_IROTH", 0o4),
    ("S_IXGRP", 0o10), ("S_IWGRP", 0o20), ("S_IRGRP", 0o40),
    ("S_IXUSR", 0o100), ("S_IWUSR", 0o200), ("S_IRUSR", 0o400),
    ("S_ISVTX", 0o1000), ("S_ISGID", 0o2000), ("S_ISUID", 0o4000),
)


def chmod_mode(mode: int) -> str:
    """`S_IRUSR|S_IXUSR`-style rendering of a chmod mode."""
    return "|".join(name for name, bit in _MODE_BITS if mode & bit)


_PTRACE = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSR",
    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSR", 7: "PTRACE_CONT",
    8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS",
    14: "PTRACE_GETFPREGS", 15: "PTRACE_SETFPREGS", 16: "PTRACE_ATTACH",
    17: "PTRACE_DETACH", 18: "PTRACE_GETFPXREGS", 19: "PTRACE_SETFPXREGS",
    24: "PTRACE_SYSCALL", 25: "PTRACE_GET_THREAD_AREA", 26: "PTRACE_SET_THREAD_AREA",
    30: "PTRACE_ARCH_PRCTL", 31: "PTRACE_SYSEMU", 32: "PTRACE_SYSEMU_SINGLESTEP",
    33: "PTRACE_SINGLEBLOCK", 0x4200: "PTRACE_SETOPTIONS", 0x4201: "PTRACE_GETEVENTMSG",
    0x4202: "PTRACE_GETSIGINFO", 0x4203: "PTRACE_SETSIGINFO", 0x4204: "PTRACE_GETREGSET",
    0x4205: "PTRACE_SETREGSET", 0x4206: "PTRACE_SEIZE", 0x4207: "PTRACE_INTERRUPT",
    0x4208: "PTRACE_LISTEN", 0x4209: "PTRACE_PEEKSIGINFO",
}


def ptrace_request(req: int) -> str:
    """The PTRACE_* name of a request (the number itself when unknown)."""
    return _PTRACE.get(req, str(req))


_BPF_CMDS = (
    "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM", "BPF_MAP_DELETE_ELEM",
    "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN", "BPF_OBJ_GET",
    "BPF_PROG_ATTACH", "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN",
)


def bpf_cmd(cmd: int) -> str:
    """The BPF_* name of a bpf(2) command (the number when not in the table)."""
    return _BPF_CMDS[cmd] if 0 <= cmd < len(_BPF_CMDS) else str(cmd)


_FAMILIES: dict[int, str] = {socket.AF_UNIX: "AF_UNIX", socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6",
             socket.AF_NETLINK: "AF_NETLINK", socket.AF_PACKET: "AF_PACKET"}
_SOCK_TYPES: dict[int, str] = {socket.SOCK_STREAM: "SOCK_STREAM", socket.SOCK_DGRAM: "SOCK_DGRAM",
               socket.SOCK_RAW: "SOCK_RAW", socket.SOCK_SEQPACKET: "SOCK_SEQPACKET"}


def family(value: int) -> str:
    """The AF_* name of a socket family."""
    return _FAMILIES.get(value, str(value))


def sock_type(value: int) -> str:
    """The SOCK_* name of a socket type (creation flags ignored)."""
    return _SOCK_TYPES.get(value & 0xF, str(value))


AT_EMPTY_PATH = 0x1000
AT_SYMLINK_FOLLOW = 0x400
_AT = (("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_REMOVEDIR", 0x200),
       ("AT_SYMLINK_FOLLOW", AT_SYMLINK_FOLLOW), ("AT_EMPTY_PATH", AT_EMPTY_PATH))


def at_flags(value: int) -> str:
    """`AT_*` flags of the *at syscalls."""
    return "|".join(name for name, bit in _AT if value & bit)


def res(ret: int) -> str:
    """`evt.res`: SUCCESS for a non-negative return, else the errno name."""
    if ret >= 0:
        return "SUCCESS"
    return errno.errorcode.get(-ret, str(ret))


def fd_arg(value: int) -> int:
    """A descriptor argument as the signed int the syscall saw (AT_FDCWD = -100)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def signed(value: int) -> int:
    """A raw 64-bit register as a signed number."""
    return value - (1 << 64) if value >= 1 << 63 else value


def oct_mode(value: int) -> str:
    """A creation mode as Falco prints it (octal with a leading 0)."""
    return f"0{value & 0o7777:o}"
