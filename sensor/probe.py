"""Loading probe.bpf.c with bcc and talking to its maps.

The kernel side is generic; this module tells it, through maps, which syscalls to
forward, what to read for each and which paths no rule can match (`apply_ruleset`),
which tgid is the sensor itself, and reads back the per-CPU counters. bcc is imported here only, so the rest of the
sensor (state, fields) stays importable and testable without it.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from falconer.engine.ruleset import Ruleset
from falconer.sensor import btf, kfilter, record, syscalls
from falconer.sensor import kernelabi as abi

SOURCE = Path(__file__).with_name("probe.bpf.c")
DEFAULT_BUFFER_PAGES = 1024
#: The longest one `Probe.poll` spends delivering records (seconds).
POLL_BUDGET_S = 0.25


class ProbeError(RuntimeError):
    """The kernel side cannot be loaded; the message says what is missing."""


class ProbeCounters(NamedTuple):
    """The kernel side's per-CPU counters, summed (records since the probe loaded)."""

    ring_full: int      # lost: the ring buffer had no room
    emitted: int        # handed to the ring buffer
    filtered: int       # kept in the kernel by the rule-derived filter (not a loss)


def preflight() -> None:
    """Fail early with a clear message when root, bcc, headers, tracefs or BTF are missing."""
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
    if not btf.VMLINUX.exists():
        raise ProbeError(f"{btf.VMLINUX} is missing: the kernel lacks CONFIG_DEBUG_INFO_BTF")


def _check_pages(pages: int) -> int:
    if pages < 1 or pages & (pages - 1):
        raise ProbeError(f"--buffer-pages must be a power of two >= 1, got {pages}")
    return pages


def _possible_cpus() -> int:
    """How many CPU ids the kernel may hand out (/sys/devices/system/cpu/possible, "0-N")."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class Probe:
    """The loaded BPF program: ring buffer, spec/compat/filter maps, counters."""

    def __init__(self, buffer_pages: int = DEFAULT_BUFFER_PAGES) -> None:
        from bcc import BPF  # noqa: PLC0415

        try:
            flags = abi.cflags() + list(btf.cflags()) + [
                f"-DFALCONER_RING_PAGES={_check_pages(buffer_pages)}",
                f"-DFALCONER_NCPU={_possible_cpus()}"]
        except btf.BtfError as exc:
            raise ProbeError(f"kernel struct offsets unavailable: {exc}") from exc
        try:
            self.bpf = BPF(src_file=str(SOURCE).encode(), cflags=flags)
        except Exception as exc:  # bcc raises bare Exception on compile/load errors
            raise ProbeError(f"loading {SOURCE.name} failed: {exc}") from exc
        self.buffer_pages = buffer_pages
        #: Kernel modules whose structs were unknown at load (btf.MODULE_OFFSETS): what
        #: needs them is left out ("overlay": proc.is_exe_upper/lower_layer stay false).
        self.missing_modules = btf.missing_modules()
        self.forwarded: frozenset[int] = frozenset()
        self.filter: kfilter.KernelFilter = kfilter.KernelFilter.forward_all()
        self._generation = 0
        self._poll_deadline = 0.0
        self.bpf[b"config"][ctypes.c_int(0)] = ctypes.c_uint32(os.getpid())
        compat = self.bpf[b"compat_nr"]
        for nr in range(abi.MAX_SYSCALLS):
            compat[ctypes.c_int(nr)] = ctypes.c_int32(syscalls.IA32_TO_X64.get(nr, -1))

    def apply_ruleset(self, ruleset: Ruleset | None, all_events: bool = False) -> None:
        """Forward what the rules and state tracking need, filtered in the kernel by the
        rule-derived path filter (`sensor/kfilter.py`); `all_events` forwards every
        syscall unfiltered. A reload swaps filters without a window: the new paths go in
        under fresh group ids, then each syscall's spec switches, then old paths go."""
        if all_events:
            self._set(set(syscalls.all_names()), kfilter.KernelFilter.forward_all())
            return
        names = ruleset.event_types("syscall") if ruleset is not None else frozenset()
        wanted = syscalls.numbers_for(names)
        filt = (kfilter.derive(ruleset, {syscalls.name_of(n) for n in wanted})
                if ruleset is not None and names is not None
                else kfilter.KernelFilter.forward_all())
        self._set(wanted, filt)

    def forward_unfiltered(self, names: frozenset[str] | None) -> None:
        """Forward these `evt.type`s (None: every syscall) with no path filter: what a
        reload forwards while it switches between two rulesets (their union)."""
        self._set(syscalls.numbers_for(names), kfilter.KernelFilter.forward_all())

    def _set(self, wanted: set[int], filt: kfilter.KernelFilter) -> None:
        wanted_ok = frozenset(n for n in wanted if 0 <= n < abi.MAX_SYSCALLS)
        self._generation ^= 1
        groups = filt.group_ids(self._generation)
        paths = self.bpf[b"paths"]
        for key in filt.keys(self._generation):
            paths[key] = ctypes.c_uint8(1)
        specs = self.bpf[b"specs"]
        close_nr = syscalls.BY_NAME["close"].nr
        for nr in range(abi.MAX_SYSCALLS):
            spec = record.SpecRecord(forward=abi.FORWARD_NO)
            if nr in wanted_ok:
                spec.forward = abi.FORWARD_EMIT
                decoded = syscalls.BY_NR.get(nr)
                if decoded is not None:
                    _fill_spec(spec, decoded)
                    spec.filter = groups.get(decoded.name, 0)
                if nr == close_nr and filt.filters_opens:
                    spec.forward = abi.FORWARD_CLOSE_FILTER
            spec.compat_watched = int(syscalls.IA32_TO_X64.get(nr, -1) in wanted_ok)
            specs[ctypes.c_int(nr)] = spec
        for key in self.filter.keys(self._generation ^ 1):
            del paths[key]
        self.forwarded = wanted_ok
        self.filter = filt

    def open(self, callback: Callable[[bytes], None]) -> None:
        """Deliver every ring-buffer record to `callback` as a bytes copy.

        Records are sent cut after the data in use (record.Record decodes any length).
        """

        def on_record(_ctx: int, data: int, size: int) -> int:
            callback(ctypes.string_at(data, size))
            # A negative return ends this poll after this record (libbpf consumed it);
            # the rest waits in the ring for the next poll.
            return -1 if time.monotonic() > self._poll_deadline else 0

        self.bpf[b"events"].open_ring_buffer(on_record)

    def poll(self, timeout_ms: int) -> None:
        """Wait up to `timeout_ms` for the kernel side's wake-up, then take every record
        in the ring buffer, returning after at most POLL_BUDGET_S of work: a backlog never
        keeps the caller from its signals, reloads and drop checks. Most records are
        submitted without a wake-up (kernelabi.WAKEUP_SHARE): they wait at most
        `timeout_ms` and are read in one batch."""
        self._poll_deadline = time.monotonic() + timeout_ms / 1000 + POLL_BUDGET_S
        self.bpf.ring_buffer_poll(timeout_ms)
        self._poll_deadline = time.monotonic() + POLL_BUDGET_S
        self.bpf.ring_buffer_consume()

    def counters(self) -> ProbeCounters:
        """The kernel side's counters, summed over CPUs."""
        table = self.bpf[b"counters"]
        vals = [sum(table[ctypes.c_int(i)]) for i in range(abi.CNT_MAX)]
        return ProbeCounters(vals[abi.CNT_RING_FULL], vals[abi.CNT_EMITTED],
                             vals[abi.CNT_FILTERED])

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
    spec.sock_local = idx(s.sock_local)
    spec.fd_ret = int(s.name in syscalls.FD_RETURNING)
    flags_arg = syscalls.OPEN_FLAGS_ARG.get(s.name)
    spec.open_flags = idx(flags_arg)
