"""The Python decoder's view of the kernel record must be the compiled program's.

bcc builds a ctypes class for every map's value from clang's own layout of the C
structs; `scratch` holds `struct falconer_event`, `specs` `struct falconer_spec` and
`paths` is keyed by `struct falconer_path_key`, so comparing those classes member by
member with `record.EventRecord` / `SpecRecord` / `PathKey` catches any drift in order,
type, size or padding between probe.bpf.c and record.py.
"""

from __future__ import annotations

import ctypes

import pytest
from falconer.sensor import probe, record


@pytest.fixture(scope="module")
def loaded(ebpf):
    p = probe.Probe(buffer_pages=8)
    yield p
    p.close()


def layout(cls: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    return [(name, getattr(cls, name).offset, getattr(cls, name).size)
            for name, *_ in cls._fields_]


def test_event_record_matches_the_compiled_struct(loaded):
    compiled = loaded.bpf[b"scratch"].Leaf
    assert layout(record.EventRecord) == layout(compiled)
    assert ctypes.sizeof(record.EventRecord) == ctypes.sizeof(compiled)


def test_spec_record_matches_the_compiled_struct(loaded):
    compiled = loaded.bpf[b"specs"].Leaf
    assert layout(record.SpecRecord) == layout(compiled)
    assert ctypes.sizeof(record.SpecRecord) == ctypes.sizeof(compiled)


def test_path_key_matches_the_compiled_struct(loaded):
    compiled = loaded.bpf[b"paths"].Key
    assert layout(record.PathKey) == layout(compiled)
    assert ctypes.sizeof(record.PathKey) == ctypes.sizeof(compiled)


def test_header_struct_covers_the_fixed_part():
    assert record.HEADER.size == record.EventRecord.data.offset == record.OFF_DATA
