"""Loading probe.bpf.c with bcc and talking to its maps.

The kernel side is generic; this module tells it, through maps, which syscalls to
forward and what to read for each (`set_forwarded`), which tgid is the sensor itself,
and reads back the per-CPU loss counters. bcc is imported here only, so the rest of the
sensor (state, fields) stays importable and testable without it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from falconer.sensor import record, syscalls

SOURCE = Path(__file__).with_name("probe.bpf.c")
DEFAULT_BUFFER_PAGES = 1024
FORWARD_NO, FORWARD_EMIT, FORWARD_STASH = 0, 1, 2


class ProbeError(RuntimeError):
    """The kernel side cannot be loaded; the message says what is missing."""


def preflight() -> None:
    """Fail early with a clear message when root, bcc, headers or tracefs are missing."""
    syscalls.check_arch()
    if os.geteuid() != 0:
        raise ProbeError("must run as root (it loads eBPF programs)")
    try:
        import bcc  # noqa: F401, PLC0415
    except ImportError as exc:
        raise ProbeError(f"bcc is not importable ({exc}); run ./dev setup "
                         "(installs python3-bpfcc)") from exc
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise ProbeError(f"kernel headers missing: {build} does not exist; run ./dev setup")
    if not Path("/sys/kernel/tracing/events/raw_syscalls").exists():
        raise ProbeError("tracefs is not mounted at /sys/kernel/tracing; run ./dev setup")


def _check_pages(pages: int) -> int:
    if pages < 1 or pages & (pages - 1):
        raise ProbeError(f"--buffer-pages must be a power of two >= 1, got {pages}")
    return pages


class Probe:
    """The loaded BPF program: ring buffer, forward/spec maps, counters."""

    def __init__(self, buffer_pages: int = DEFAULT_BUFFER_PAGES) -> None:
        from bcc import BPF  # noqa: PLC0415

        flags = record.cflags() + [
            f"-DFALCONER_RING_PAGES={_check_pages(buffer_pages)}",
            f"-DFALCONER_MAX_SYSCALLS={syscalls.MAX_SYSCALLS}",
            f"-DFALCONER_NR_CLONE3={syscalls.CLONE_NRS['clone3']}",
            f"-DFALCONER_NR_FORK={syscalls.CLONE_NRS['fork']}",
            f"-DFALCONER_NR_VFORK={syscalls.CLONE_NRS['vfork']}",
        ]
        try:
            self.bpf = BPF(src_file=str(SOURCE).encode(), cflags=flags)
        except Exception as exc:  # bcc raises bare Exception on compile/load errors
            raise ProbeError(f"loading {SOURCE.name} failed: {exc}") from exc
        self.buffer_pages = buffer_pages
        self.forwarded: frozenset[int] = frozenset()
        self.bpf[b"config"][ctypes.c_int(0)] = ctypes.c_uint32(os.getpid())

    def set_forwarded(self, numbers: Iterable[int]) -> None:
        """Forward exactly these syscall numbers (plus clone stashing for state)."""
        wanted = frozenset(n for n in numbers if 0 <= n < syscalls.MAX_SYSCALLS)
        specs = self.bpf[b"specs"]
        clone_nrs = set(syscalls.CLONE_NRS.values())
        for nr in range(syscalls.MAX_SYSCALLS):
            spec = record.SpecRecord()
            if nr in wanted and nr not in clone_nrs:
                spec.forward = FORWARD_EMIT
            elif nr in clone_nrs:
                spec.forward = FORWARD_STASH
                if nr == syscalls.CLONE_NRS["clone3"]:  # clone_args.flags into args[2]
                    spec.deref, spec.deref_to = 1, 3
            decoded = syscalls.BY_NR.get(nr)
            if decoded is not None and spec.forward == FORWARD_EMIT:
                _fill_spec(spec, decoded)
            specs[ctypes.c_int(nr)] = spec
        self.forwarded = wanted

    def open(self, callback: Callable[[bytes], None]) -> None:
        """Deliver every ring-buffer record to `callback` as a bytes copy.

        Records are sent truncated to the part in use (header, + str_a, or whole).
        """

        def on_record(_ctx: int, data: int, size: int) -> int:
            callback(ctypes.string_at(data, size))
            return 0

        self.bpf[b"events"].open_ring_buffer(on_record)

    def poll(self, timeout_ms: int) -> None:
        """Drain the ring buffer, waiting at most `timeout_ms` for the first record."""
        self.bpf.ring_buffer_poll(timeout_ms)

    def counters(self) -> tuple[int, int, int]:
        """(ring buffer full, lost in flight, emitted), summed over CPUs."""
        table = self.bpf[b"counters"]
        vals = [sum(table[ctypes.c_int(i)]) for i in range(3)]
        return vals[record.CNT_RING_FULL], vals[record.CNT_STASH_FULL], vals[record.CNT_EMITTED]

    def close(self) -> None:
        """Detach the programs and free the maps."""
        self.bpf.cleanup()


def _fill_spec(spec: record.SpecRecord, s: syscalls.Syscall) -> None:
    def idx(i: int | None) -> int:
        return 0 if i is None else i + 1

    spec.path_a = idx(s.path_a)
    spec.path_b = idx(s.path_b)
    spec.argv = idx(s.argv)
    spec.sock = idx(s.sock)
    spec.sock_len = idx(s.sock_len)
    spec.sock_when = s.sock_when
    spec.deref = idx(s.deref)
    spec.deref_to = idx(s.deref_to)
