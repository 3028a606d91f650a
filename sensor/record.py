"""The kernel record (`struct falconer_event` in probe.bpf.c), seen from Python.

`EventRecord` is the ctypes mirror of the C struct; a test compares it member by member
(offsets and sizes) with the layout bcc's clang produced for the loaded program, so the
two sides cannot drift apart silently. Decoding itself uses one precompiled
`struct.Struct` over the fixed header and slices the strings only when a field needs
them, which keeps the per-event cost to one `unpack_from` call.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

STR_LEN = 256
ARGV_LEN = 1024
MAX_ARGS = 32
SOCK_LEN = 128

KIND_SYSCALL = 0
KIND_EXEC = 1
KIND_FORK = 2
KIND_EXIT = 3

# Counter slots of the per-CPU `counters` map.
CNT_RING_FULL = 0
CNT_STASH_FULL = 1
CNT_EMITTED = 2


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
        ("len_argv", ctypes.c_uint16),
        ("len_sock", ctypes.c_uint16),
        ("str_a", ctypes.c_char * STR_LEN),
        ("str_b", ctypes.c_char * STR_LEN),
        ("argv", ctypes.c_char * ARGV_LEN),
        ("sock", ctypes.c_uint8 * SOCK_LEN),
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
    ]


#: ts, tgid, tid, uid, gid, nr, kind, argc, ret, args[6], len_a, len_b, len_argv, len_sock
HEADER = struct.Struct("<QIIIIiHHq6Q4H")
OFF_STR_A = EventRecord.str_a.offset
OFF_STR_B = EventRecord.str_b.offset
OFF_ARGV = EventRecord.argv.offset
OFF_SOCK = EventRecord.sock.offset
RECORD_SIZE = ctypes.sizeof(EventRecord)
assert HEADER.size == OFF_STR_A, "HEADER must cover exactly the members before str_a"


def cflags() -> list[str]:
    """The -D flags that give probe.bpf.c the sizes this module decodes."""
    return [
        f"-DFALCONER_STR_LEN={STR_LEN}",
        f"-DFALCONER_ARGV_LEN={ARGV_LEN}",
        f"-DFALCONER_MAX_ARGS={MAX_ARGS}",
    ]


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
    len_argv: int
    len_sock: int
    raw: bytes

    @classmethod
    def decode(cls, raw: bytes) -> Record:
        """Unpack the header of one ring-buffer record (`raw` is a copy of it).

        `raw` may stop after the header or after str_a: the kernel sends only the part
        in use, and the lengths say which parts are present.
        """
        h = HEADER.unpack_from(raw)
        return cls(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8],
                   h[9:15], h[15], h[16], h[17], h[18], raw)

    def str_a(self) -> str | None:
        """The first path argument, or None when the kernel could not read it."""
        return _text(self.raw, OFF_STR_A, self.len_a)

    def str_b(self) -> str | None:
        """The second path argument, or None when the kernel could not read it."""
        return _text(self.raw, OFF_STR_B, self.len_b)

    def argv(self) -> list[str]:
        """execve's argv as read at sys_enter (bounded by ARGV_LEN and MAX_ARGS)."""
        if not self.len_argv:
            return []
        blob = self.raw[OFF_ARGV:OFF_ARGV + min(self.len_argv, ARGV_LEN)]
        return [p.decode("utf-8", "replace") for p in blob.split(b"\0")[: self.argc]]

    def sockaddr(self) -> bytes:
        """The socket address bytes the kernel side captured (may be empty)."""
        return self.raw[OFF_SOCK:OFF_SOCK + min(self.len_sock, SOCK_LEN)]


def _text(raw: bytes, off: int, n: int) -> str | None:
    if n <= 0:
        return None
    n = min(n, STR_LEN)
    return raw[off:off + n - 1].decode("utf-8", "surrogateescape")
