"""Kernel struct offsets read from the running kernel's BTF (sensor/btf.py)."""

from __future__ import annotations

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
    assert len(flags) == len(btf.OFFSETS) + len(btf.SIZES) + len(btf.ENUMS)
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
