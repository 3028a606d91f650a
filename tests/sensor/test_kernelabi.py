"""The probe's constants come from one place (sensor/kernelabi.py) for C and Python.

probe.bpf.c must use every shared constant and define none of them itself: a
`#define` there, or a name only one side knows, would let the two sides drift.
"""

from __future__ import annotations

import re

from falconer.sensor import btf, kernelabi, probe

#: The C source without comments (a name in a comment is no use).
C_SOURCE = re.sub(r"/\*.*?\*/|//[^\n]*", "", probe.SOURCE.read_text(), flags=re.S)


def test_the_c_side_defines_no_shared_constant():
    defined = set(re.findall(r"^\s*#\s*define\s+(\w+)", C_SOURCE, re.M))
    assert defined & set(kernelabi.constants()) == set()
    assert {d for d in defined if d.startswith(("FALCONER_", "OFF_"))} == set()


def test_every_shared_constant_is_used_by_the_c_side():
    unused = {name for name in kernelabi.constants() if not re.search(rf"\b{name}\b", C_SOURCE)}
    assert unused == set()


def test_every_kernel_offset_is_used_by_the_c_side():
    flags = [f for f, _s, _m in btf.OFFSETS] + [f for f, _s, _m, _mod in btf.MODULE_OFFSETS]
    unused = {flag for flag in flags if not re.search(rf"\b{flag}\b", C_SOURCE)}
    assert unused == set()


def test_every_upper_case_name_in_the_c_side_has_one_source():
    names = set(re.findall(r"\b((?:FALCONER|KIND|RF|CNT|FORWARD|SOCK|CLONE|OFF|SIZE|ENUM)_[A-Z0-9_]+)\b",
                           C_SOURCE))
    known = set(kernelabi.constants()) | {f for f, _s, _m in btf.OFFSETS} | {
        f for f, _s, _m, _mod in btf.MODULE_OFFSETS} | {
        f for f, _s in btf.SIZES} | {f for f, _e in btf.ENUMS} | {
        "FALCONER_RING_PAGES", "FALCONER_NCPU"}   # run-time facts: --buffer-pages, CPUs
    assert names - known == set()


def test_cflags_carry_every_constant():
    flags = kernelabi.cflags()
    assert len(flags) == len(kernelabi.constants())
    assert "-DKIND_SYSCALL=0" in flags and "-DFALCONER_STR_LEN=4096" in flags
