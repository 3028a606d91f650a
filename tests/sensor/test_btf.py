"""Kernel struct offsets read from the running kernel's BTF (sensor/btf.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import prereq
import pytest

from falconer.sensor import btf


@pytest.fixture(scope="module")
def vmlinux() -> btf.Btf:
    prereq.require(btf.VMLINUX.exists(), f"{btf.VMLINUX} missing (no CONFIG_DEBUG_INFO_BTF)")
    return btf.Btf(btf.VMLINUX.read_bytes())


def test_pt_regs_offsets_are_the_x86_64_abi(vmlinux):
    # struct pt_regs is user-visible ABI (ptrace's PTRACE_GETREGS order): r15 ... ss.
    assert vmlinux.offset("pt_regs", "orig_ax") == 15 * 8
    assert vmlinux.offset("pt_regs", "di") == 14 * 8
    assert vmlinux.offset("pt_regs", "r10") == 7 * 8


def test_members_inside_anonymous_structs_are_found(vmlinux):
    # mm_struct keeps arg_start ... env_end inside an anonymous struct: 8 bytes apart.
    start = vmlinux.offset("mm_struct", "arg_start")
    assert [vmlinux.offset("mm_struct", m) - start
            for m in ("arg_end", "env_start", "env_end")] == [8, 16, 24]
    assert vmlinux.offset("task_struct", "thread_info.status") >= 0


def test_every_offset_the_probe_needs_exists(vmlinux):
    flags = btf.cflags()
    assert len(flags) == (len(btf.OFFSETS) + len(btf.MODULE_OFFSETS) + len(btf.SIZES)
                          + len(btf.ENUMS))
    assert vmlinux.size("upid") >= 8


def test_unknown_members_and_structs_are_clear_errors(vmlinux):
    with pytest.raises(btf.BtfError, match="no member"):
        vmlinux.offset("task_struct", "no_such_member")
    with pytest.raises(btf.BtfError, match="not in BTF"):
        vmlinux.offset("no_such_struct", "x")
    with pytest.raises(btf.BtfError, match="not BTF"):
        btf.Btf(b"\0" * 32)


def test_enumerators_are_read(vmlinux):
    # enum pid_type is stable ABI of the kernel's own: PIDTYPE_PID first.
    assert vmlinux.enumerator("PIDTYPE_PID") == 0
    assert vmlinux.enumerator("PIDTYPE_SID") == 3
    with pytest.raises(btf.BtfError, match="not in BTF"):
        vmlinux.enumerator("no_such_enumerator")


def split_btf(base: btf.Btf, struct_name: str, members: list[tuple[str, int]]) -> bytes:
    """A module's BTF as the kernel writes it on top of `base`: one struct whose
    members are pointers (a new PTR type to base type 1), at the given byte offsets;
    type ids and string offsets continue base's."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in [struct_name] + [m for m, _ in members])
    first_id, str_base = len(base.where), len(base.strings)
    name_offs, off = [], 1
    for n in [struct_name] + [m for m, _ in members]:
        name_offs.append(str_base + off)
        off += len(n) + 1
    types = struct.pack("<III", 0, btf.PTR << 24, 1)                      # id first_id
    types += struct.pack("<III", name_offs[0], btf.STRUCT << 24 | len(members),
                         max(o for _, o in members) + 8)
    for (_, o), name_off in zip(members, name_offs[1:], strict=True):
        types += struct.pack("<III", name_off, first_id, o * 8)
    header = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(types), len(types),
                         len(strings))
    return header + types + strings


def test_a_module_struct_comes_from_its_split_btf(vmlinux, tmp_path: Path):
    blob = split_btf(vmlinux, "falconer_test_inode", [("vfs_inode", 32), ("__upperdentry", 680)])
    (tmp_path / "falconertest").write_bytes(blob)
    assert btf.module_offset(vmlinux, "falconer_test_inode", "__upperdentry", "falconertest",
                             tmp_path) == 680
    assert btf.module_offset(vmlinux, "falconer_test_inode", "vfs_inode", "falconertest",
                             tmp_path) == 32
    # not loaded: unknown, -1; built into vmlinux: read from there
    assert btf.module_offset(vmlinux, "falconer_test_inode", "vfs_inode", "absent",
                             tmp_path) == -1
    assert btf.module_offset(vmlinux, "upid", "nr", "absent", tmp_path) == \
        vmlinux.offset("upid", "nr")
    with pytest.raises(btf.BtfError, match="no member"):
        btf.module_offset(vmlinux, "falconer_test_inode", "nope", "falconertest", tmp_path)
