"""Member offsets of kernel structs, read from the running kernel's BTF.

The probe reads a few kernel structs (task_struct, mm_struct, files_struct ...) whose
layout changes between kernel builds; the installed headers may belong to another
kernel than the one running (here: 6.1 headers, a 6.18 kernel). So offsets come from
`/sys/kernel/btf/vmlinux` (the kernel's own type information, format in the kernel's
Documentation/bpf/btf.rst) and reach probe.bpf.c as -D flags: a hand-made CO-RE.
"""

from __future__ import annotations

import array
import struct
from functools import cache
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
#: Where a loaded module's BTF is: /sys/kernel/btf/<module name>.
MODULES_BTF = VMLINUX.parent
MAGIC = 0xEB9F

# BTF kinds (include/uapi/linux/btf.h) and the bytes each adds after the 12-byte type.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_FIXED_EXTRA = {INT: 4, ARRAY: 12, VAR: 4, DECL_TAG: 4}
_PER_MEMBER = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_MODIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}


class BtfError(RuntimeError):
    """BTF is missing, malformed, or lacks a struct member the probe needs."""


class Btf:
    """The types of one BTF blob. One pass records where each type is (type ids start at
    1) and the ids of named structs/unions; members are decoded only when asked for, so
    the ~100k types of a vmlinux cost a few arrays, not objects.

    A module's BTF (/sys/kernel/btf/<module>) is split BTF on top of vmlinux's (`base`):
    its type ids continue vmlinux's and its string offsets start at the end of
    vmlinux's strings (the kernel's Documentation/bpf/btf.rst), so the two sections
    are read as one, base first."""

    def __init__(self, blob: bytes, base: Btf | None = None) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = \
            struct.unpack_from("<HBBIIIII", blob)
        if magic != MAGIC:
            raise BtfError(f"not BTF (magic {magic:#x})")
        types = blob[hdr_len + type_off: hdr_len + type_off + type_len]
        strings = bytes(blob[hdr_len + str_off: hdr_len + str_off + str_len])
        if base is not None:
            types, strings = bytes(base.types) + types, base.strings + strings
        self.types: memoryview = memoryview(types)
        self.strings: bytes = strings
        self.where = array.array("I", [0])   # type id -> offset of its 12-byte header
        self.by_name: dict[str, int] = {}
        pos, view = 0, self.types
        while pos < len(view):
            name_off, info, size = struct.unpack_from("<III", view, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            self.where.append(pos)
            if kind in (STRUCT, UNION) and name_off and size:
                name = _str(self.strings, name_off)
                self.by_name.setdefault(name, len(self.where) - 1)
            pos += 12 + _FIXED_EXTRA.get(kind, 0) + _PER_MEMBER.get(kind, 0) * vlen

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of `path` ("thread_info.status") inside `struct struct_name`,
        looking through anonymous struct/union members. Raises BtfError."""
        tid = self._named(struct_name)
        total = 0
        for part in path.split("."):
            found = self._member(tid, part)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {path}")
            bits, tid = found
            total += bits
        return total // 8

    def size(self, struct_name: str) -> int:
        """sizeof(struct struct_name) in bytes. Raises BtfError."""
        return self._header(self._named(struct_name))[2]

    def enumerator(self, name: str) -> int:
        """The value of enumerator `name` ("memory_cgrp_id") of any enum. Raises BtfError."""
        types = self.types
        for tid in range(1, len(self.where)):
            kind, info, _size = self._header(tid)
            if kind not in (ENUM, ENUM64):
                continue
            start, step = self.where[tid] + 12, _PER_MEMBER[kind]
            for i in range(info & 0xFFFF):
                m_name, value = struct.unpack_from("<Ii", types, start + step * i)
                if _str(self.strings, m_name) == name:
                    return int(value)
        raise BtfError(f"enumerator {name} not in BTF")

    def _named(self, struct_name: str) -> int:
        tid = self.by_name.get(struct_name)
        if tid is None:
            raise BtfError(f"struct {struct_name} not in BTF")
        return tid

    def _header(self, tid: int) -> tuple[int, int, int]:
        """(kind, info, size_or_type) of a type."""
        _name, info, size = struct.unpack_from("<III", self.types, self.where[tid])
        return (info >> 24) & 0x1F, info, size

    def _member(self, tid: int, name: str) -> tuple[int, int] | None:
        """(bit offset, type id) of member `name` of struct/union `tid`."""
        tid = self._resolve(tid)
        kind, info, _size = self._header(tid)
        if kind not in (STRUCT, UNION):
            return None
        start = self.where[tid] + 12
        for i in range(info & 0xFFFF):
            m_name, m_type, m_off = struct.unpack_from("<III", self.types, start + 12 * i)
            bits = m_off & 0xFFFFFF if info >> 31 else m_off
            if m_name and _str(self.strings, m_name) == name:
                return bits, m_type
            if not m_name:
                inner = self._member(m_type, name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None

    def _resolve(self, tid: int) -> int:
        """Through typedefs and qualifiers to the type they name."""
        while tid:
            kind, _info, ref = self._header(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref
        raise BtfError("a BTF type resolves to void")


def _str(strings: bytes, off: int) -> str:
    end = strings.index(b"\0", off)
    return strings[off:end].decode()


#: (-D name, struct, member path): what probe.bpf.c reads from kernel memory; "a|b" tries
#: the spellings of different kernel versions in order (6.11 split i_ctime into _sec/_nsec).
OFFSETS: tuple[tuple[str, str, str], ...] = (
    ("OFF_TASK_STATUS", "task_struct", "thread_info.status"),
    ("OFF_TASK_PID", "task_struct", "pid"),
    ("OFF_TASK_TGID", "task_struct", "tgid"),
    ("OFF_TASK_REAL_PARENT", "task_struct", "real_parent"),
    ("OFF_TASK_FILES", "task_struct", "files"),
    ("OFF_TASK_GROUP_LEADER", "task_struct", "group_leader"),
    ("OFF_TASK_START_TIME", "task_struct", "start_time"),
    ("OFF_TASK_MM", "task_struct", "mm"),
    ("OFF_TASK_VFORK_DONE", "task_struct", "vfork_done"),
    ("OFF_TASK_SIGNAL", "task_struct", "signal"),
    ("OFF_TASK_THREAD_PID", "task_struct", "thread_pid"),
    ("OFF_TASK_REAL_CRED", "task_struct", "real_cred"),
    ("OFF_CRED_CAP_INHERITABLE", "cred", "cap_inheritable"),
    ("OFF_CRED_CAP_PERMITTED", "cred", "cap_permitted"),
    ("OFF_CRED_CAP_EFFECTIVE", "cred", "cap_effective"),
    ("OFF_SIGNAL_PIDS", "signal_struct", "pids"),
    ("OFF_SIGNAL_TTY", "signal_struct", "tty"),
    ("OFF_PID_LEVEL", "pid", "level"),
    ("OFF_PID_NUMBERS", "pid", "numbers"),
    ("OFF_UPID_NR", "upid", "nr"),
    ("OFF_TTY_INDEX", "tty_struct", "index"),
    ("OFF_TTY_DRIVER", "tty_struct", "driver"),
    ("OFF_DRIVER_MAJOR", "tty_driver", "major"),
    ("OFF_DRIVER_MINOR_START", "tty_driver", "minor_start"),
    ("OFF_MM_ARG_START", "mm_struct", "arg_start"),
    ("OFF_MM_ARG_END", "mm_struct", "arg_end"),
    ("OFF_MM_ENV_START", "mm_struct", "env_start"),
    ("OFF_MM_ENV_END", "mm_struct", "env_end"),
    ("OFF_FILES_FDT", "files_struct", "fdt"),
    ("OFF_FDT_FD", "fdtable", "fd"),
    ("OFF_FDT_MAX_FDS", "fdtable", "max_fds"),
    ("OFF_FILE_INODE", "file", "f_inode"),
    ("OFF_FILE_PRIVATE", "file", "private_data"),
    ("OFF_SOCKET_SK", "socket", "sk"),
    ("OFF_SK_FAMILY", "sock", "__sk_common.skc_family"),
    ("OFF_SK_NUM", "sock", "__sk_common.skc_num"),
    ("OFF_SK_RCV_SADDR", "sock", "__sk_common.skc_rcv_saddr"),
    ("OFF_SK_V6_RCV_SADDR", "sock", "__sk_common.skc_v6_rcv_saddr"),
    ("OFF_INODE_MODE", "inode", "i_mode"),
    ("OFF_INODE_INO", "inode", "i_ino"),
    ("OFF_INODE_CTIME_SEC", "inode", "i_ctime_sec|__i_ctime.tv_sec|i_ctime.tv_sec"),
    ("OFF_INODE_CTIME_NSEC", "inode", "i_ctime_nsec|__i_ctime.tv_nsec|i_ctime.tv_nsec"),
    ("OFF_INODE_MTIME_SEC", "inode", "i_mtime_sec|__i_mtime.tv_sec|i_mtime.tv_sec"),
    ("OFF_INODE_MTIME_NSEC", "inode", "i_mtime_nsec|__i_mtime.tv_nsec|i_mtime.tv_nsec"),
    ("OFF_MM_EXE_FILE", "mm_struct", "exe_file"),
    ("OFF_INODE_SB", "inode", "i_sb"),
    ("OFF_SB_MAGIC", "super_block", "s_magic"),
    ("OFF_TASK_CGROUPS", "task_struct", "cgroups"),
    ("OFF_CSS_SET_SUBSYS", "css_set", "subsys"),
    ("OFF_CSS_SET_DFL_CGRP", "css_set", "dfl_cgrp"),
    ("OFF_CSS_CGROUP", "cgroup_subsys_state", "cgroup"),
    ("OFF_CGROUP_KN", "cgroup", "kn"),
    ("OFF_KN_NAME", "kernfs_node", "name"),
    ("OFF_KN_PARENT", "kernfs_node", "__parent|parent"),   # renamed in 6.15
    ("OFF_REGS_ORIG_AX", "pt_regs", "orig_ax"),
    ("OFF_REGS_DI", "pt_regs", "di"),
    ("OFF_REGS_SI", "pt_regs", "si"),
    ("OFF_REGS_DX", "pt_regs", "dx"),
    ("OFF_REGS_R10", "pt_regs", "r10"),
    ("OFF_REGS_R8", "pt_regs", "r8"),
    ("OFF_REGS_R9", "pt_regs", "r9"),
    ("OFF_REGS_BX", "pt_regs", "bx"),
    ("OFF_REGS_CX", "pt_regs", "cx"),
    ("OFF_REGS_BP", "pt_regs", "bp"),
)


#: (-D name, struct, member path, module): offsets in a struct of a kernel part that may
#: be a module: read from vmlinux when it is built in, else from the module's BTF when it
#: is loaded; -1 when neither (the probe then leaves out what needs them: overlayfs not
#: loaded when the sensor starts means proc.is_exe_upper_layer stays false).
MODULE_OFFSETS: tuple[tuple[str, str, str, str], ...] = (
    # struct ovl_inode wraps an overlayfs inode (vfs_inode); __upperdentry is set once
    # the file has an upper-layer copy.
    ("OFF_OVL_VFS_INODE", "ovl_inode", "vfs_inode", "overlay"),
    ("OFF_OVL_UPPERDENTRY", "ovl_inode", "__upperdentry", "overlay"),
)


#: (-D name, struct): sizes the probe steps through arrays of.
SIZES: tuple[tuple[str, str], ...] = (
    ("SIZE_UPID", "upid"),
)


#: (-D name, enumerator): enum values the probe needs; "a|b" tries each in order. The
#: cgroup hierarchy read at exec is the memory controller's (kubelet, containerd and
#: Docker put a container in it on cgroup v1 and v2), else the pids controller's.
ENUMS: tuple[tuple[str, str], ...] = (
    ("ENUM_CGROUP_SUBSYS", "memory_cgrp_id|pids_cgrp_id"),
)


def _first_enumerator(btf: Btf, spellings: str) -> int:
    """The value of the first enumerator this kernel has. Raises BtfError."""
    *others, last = spellings.split("|")
    for name in others:
        try:
            return btf.enumerator(name)
        except BtfError:
            continue
    return btf.enumerator(last)


def _first(btf: Btf, struct_name: str, spellings: str) -> int:
    """The offset of the first spelling of a member this kernel has. Raises BtfError."""
    *others, last = spellings.split("|")
    for path in others:
        try:
            return btf.offset(struct_name, path)
        except BtfError:
            continue
    return btf.offset(struct_name, last)


def module_offset(vmlinux: Btf, struct_name: str, path: str, module: str,
                  modules: Path = MODULES_BTF) -> int:
    """The offset of a member of a struct that `module` defines: from vmlinux when the
    module is built in, else from its split BTF under `modules`; -1 when neither has
    the struct (the module is not loaded). Raises BtfError for a struct without the
    member or an unreadable module BTF."""
    if struct_name in vmlinux.by_name:
        return vmlinux.offset(struct_name, path)
    blob = modules / module
    if not blob.exists():
        return -1
    try:
        split = Btf(blob.read_bytes(), base=vmlinux)
    except OSError as exc:
        raise BtfError(f"cannot read {blob}: {exc}") from exc
    return split.offset(struct_name, path) if struct_name in split.by_name else -1


def missing_modules(path: Path = VMLINUX) -> frozenset[str]:
    """The modules of MODULE_OFFSETS whose structs no BTF described when `cflags` ran
    (their offsets are -1). Raises BtfError as `cflags` does."""
    flags = set(cflags(path))
    return frozenset(mod for flag, _s, _m, mod in MODULE_OFFSETS if f"-D{flag}=-1" in flags)


@cache
def cflags(path: Path = VMLINUX) -> tuple[str, ...]:
    """-D flags with every offset in OFFSETS and MODULE_OFFSETS, size in SIZES and
    enumerator in ENUMS for the running kernel. Raises BtfError."""
    try:
        btf = Btf(path.read_bytes())
    except OSError as exc:
        raise BtfError(f"cannot read {path}: {exc} (kernel without CONFIG_DEBUG_INFO_BTF?)") \
            from exc
    return (tuple(f"-D{flag}={_first(btf, s, member)}" for flag, s, member in OFFSETS)
            + tuple(f"-D{flag}={module_offset(btf, s, member, mod)}"
                    for flag, s, member, mod in MODULE_OFFSETS)
            + tuple(f"-D{flag}={btf.size(s)}" for flag, s in SIZES)
            + tuple(f"-D{flag}={_first_enumerator(btf, e)}" for flag, e in ENUMS))
