"""Side-by-side overhead benchmark of the eBPF sensor (not a test; root and bcc needed).

In one run, each workload is timed without and with something attached, interleaved
(base, with, base, with ...) so that a shared machine's drift hits both sides:
- W1: open+close of /etc/hostname (no stable rule can match it: kept in the kernel),
- W2: getppid (no rule watches it),
- W3: fork+exec of /bin/true,
- mixed: a C build, tar of a header tree, git init/add/commit, python start-ups,
- saturate: open+close of /etc/shadow in a tight loop (every open is forwarded: the
  rules watch that file), to report the drop percentage under pressure,
- W1 again with 5,000 generated rules (each watching its own file) instead.
"With" is `falconer sensor` on the upstream stable rules, and, for the hook rows, a
trivial BPF program on one hook type (the floor: the per-syscall tracepoints of one
syscall no workload calls; raw tracepoint sys_exit only, as the probe uses; raw
sys_enter+sys_exit; classic raw_syscalls enter+exit).
For each row: the slowdown ratio (median with / median base), records delivered to user
space, drops, sensor CPU seconds, forwarded records per sensor CPU second and peak RSS.
First, the user-space ceiling without the kernel: synthetic openat+close records (one
open in 500 of /etc/shadow) through decode, state and the stable rules, in records per
CPU second of this process (`userspace_ceiling`).
The table is printed and written as JSON to $FALCONER_CACHE/bench/sensor-<commit>.json.
FALCONER_BENCH_SCALE (default 1) scales every workload's size (0.1 for a quick look).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from falconer.paths import ROOT

sys.path.insert(0, str(Path(__file__).resolve().parent))   # bench/ (PYTHONSAFEPATH is set)
import bench_engine  # noqa: E402

STABLE = ROOT.parent / "shared" / "anchors" / "falco-rules" / "falco_rules.yaml"
REPEAT = 3
CACHE = Path(os.environ.get("FALCONER_CACHE", "/var/cache/falconer")) / "bench"
SCALE = float(os.environ.get("FALCONER_BENCH_SCALE", "1"))

LOOPS = r"""
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = atol(argv[2]);
    if (!strcmp(argv[1], "open")) {
        for (long i = 0; i < n; i++) close(open(argv[3], O_RDONLY));
    } else if (!strcmp(argv[1], "getppid")) {
        for (long i = 0; i < n; i++) getppid();
    } else {
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) { execl("/bin/true", "true", (char *)0); _exit(127); }
            waitpid(p, 0, 0);
        }
    }
    return 0;
}
"""

#: Trivial programs for the hook rows (each one filters on a syscall id, as a probe would).
HOOKS = {
    "floor (syscalls:sys_*_acct)": """
TRACEPOINT_PROBE(syscalls, sys_enter_acct) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_exit_acct) { return 0; }
""",
    "raw tp sys_exit only": """
RAW_TRACEPOINT_PROBE(sys_exit) {
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long nr = 0;
    bpf_probe_read_kernel(&nr, sizeof(nr), &regs->orig_ax);
    if (nr == 100000) bpf_trace_printk("x");
    return 0;
}
""",
    "raw tp sys_enter+sys_exit": """
RAW_TRACEPOINT_PROBE(sys_enter) { if (ctx->args[1] == 100000) bpf_trace_printk("x"); return 0; }
RAW_TRACEPOINT_PROBE(sys_exit) { return 0; }
""",
    "classic raw_syscalls enter+exit": """
TRACEPOINT_PROBE(raw_syscalls, sys_enter) { if (args->id == 100000) bpf_trace_printk("x"); return 0; }
TRACEPOINT_PROBE(raw_syscalls, sys_exit) { return 0; }
""",
}


@dataclass
class Row:
    """One line of the table (times in seconds, rss in MiB)."""

    workload: str
    attached: str
    size: int
    base_s: float
    with_s: float
    ratio: float
    records: int | None = None
    dropped: int | None = None
    drop_pct: float | None = None
    cpu_s: float | None = None
    records_per_cpu_s: float | None = None
    rss_mib: float | None = None


def build_loops() -> Path:
    """The C loops binary (cached by content)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    src, exe = CACHE / "loops.c", CACHE / "loops"
    if not exe.exists() or not src.exists() or src.read_text() != LOOPS:
        src.write_text(LOOPS)
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def workloads(exe: Path, work: Path) -> dict[str, tuple[int, Callable[[], None]]]:
    """name -> (size, run once)."""
    def loop(kind: str, n: int, target: str = "/etc/hostname") -> Callable[[], None]:
        return lambda: subprocess.run([str(exe), kind, str(n), target], check=True)

    def mixed() -> None:
        src = work / "mixed"
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir()
        (src / "loops.c").write_text(LOOPS)
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
        for i in range(3):
            subprocess.run(["gcc", "-O1", "-o", str(src / f"l{i}"), str(src / "loops.c")], **quiet)
        subprocess.run(["tar", "-cf", str(src / "h.tar"), "-C", "/usr/include", "linux"], **quiet)
        git = ["git", "-C", str(src), "-c", "user.name=b", "-c", "user.email=b@b"]
        subprocess.run([*git, "init", "-q"], **quiet)
        subprocess.run([*git, "add", "loops.c", "h.tar"], **quiet)
        subprocess.run([*git, "commit", "-qm", "m"], **quiet)
        for _ in range(10):
            subprocess.run([sys.executable, "-c", "import json, os"], **quiet)

    w1, w2, w3 = int(3_000_000 * SCALE), int(10_000_000 * SCALE), int(3_000 * SCALE)
    return {
        "W1 open+close /etc/hostname": (w1, loop("open", w1)),
        "W2 getppid": (w2, loop("getppid", w2)),
        "W3 fork+exec /bin/true": (w3, loop("forkexec", w3)),
        "mixed (gcc, tar, git, python)": (1, mixed),
        "saturate open+close /etc/shadow": (w1, loop("open", w1, "/etc/shadow")),
    }


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def interleaved(fn: Callable[[], None], attach: Callable[[], None],
                detach: Callable[[], None]) -> tuple[float, float]:
    """Median base and median attached time, alternating REPEAT times."""
    base, with_ = [], []
    for _ in range(REPEAT):
        base.append(timed(fn))
        attach()
        with_.append(timed(fn))
        detach()
    return statistics.median(base), statistics.median(with_)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def generated_rules(path: Path, count: int = 5000) -> Path:
    """`count` generated rules (bench_engine.generated_rules: what a large user ruleset
    looks like, each rule watching its own files or program) written to `path`."""
    path.write_text(bench_engine.generated_rules(count))
    return path


class Sensor:
    """A `falconer sensor` subprocess; stderr kept for the summary."""

    def __init__(self, rules: Path = STABLE) -> None:
        env = dict(os.environ, PYTHONSAFEPATH="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconer", "sensor", "--rules", str(rules)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
        self.err: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.err.append(line)
                if "watching" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(120) or self.proc.poll() is not None:
            raise SystemExit("sensor did not start:\n" + "".join(self.err))

    def stop(self) -> tuple[int, int]:
        """(records, dropped) from the summary."""
        self.proc.terminate()
        self.proc.wait(timeout=120)
        time.sleep(0.2)
        text = "".join(self.err)
        records = int(text.split("syscall events from ")[1].split()[0])
        dropped = int(text.split("dropped: ")[1].split()[0])
        return records, dropped


def sensor_row(name: str, size: int, fn: Callable[[], None], rules: Path = STABLE,
               label: str = "falconer sensor (stable rules)") -> Row:
    """Base and with-sensor times; one sensor per workload, counted over its runs."""
    base, with_ = [], []
    sensor = Sensor(rules)
    cpu0 = cpu_seconds(sensor.proc.pid)
    for _ in range(REPEAT):
        with_.append(timed(fn))
    time.sleep(1.0)   # let the sensor drain what is still queued
    cpu = cpu_seconds(sensor.proc.pid) - cpu0
    rss = peak_rss_mib(sensor.proc.pid)
    records, dropped = sensor.stop()
    for _ in range(REPEAT):
        base.append(timed(fn))
    b, w = statistics.median(base), statistics.median(with_)
    total = records + dropped
    return Row(name, label, size, b, w, w / b, records, dropped,
               100 * dropped / total if total else 0.0, cpu,
               records / cpu if cpu else None, rss)


def hook_rows(work: dict[str, tuple[int, Callable[[], None]]]) -> list[Row]:
    """Each trivial hook program on W1 and W2, interleaved with the bare runs."""
    from bcc import BPF  # noqa: PLC0415

    rows = []
    for label, text in HOOKS.items():
        source = ("#include <linux/ptrace.h>\n" + text).encode()
        for name in ("W1 open+close /etc/hostname", "W2 getppid"):
            size, fn = work[name]
            loaded: list[BPF] = []
            b, w = interleaved(fn, lambda: loaded.append(BPF(text=source)),
                               lambda: loaded.pop().cleanup())
            rows.append(Row(name, label, size, b, w, w / b))
    return rows


def _synthetic(nr: int, pid: int, args: list[int], ret: int, path: str | None = None) -> bytes:
    """One KIND_SYSCALL ring-buffer record as the probe writes it (header, then path a)."""
    from falconer.sensor import kernelabi as abi  # noqa: PLC0415
    from falconer.sensor import record  # noqa: PLC0415

    data = path.encode() + b"\0" if path else b""
    head = [0] * len(record.HEADER.unpack(bytes(record.HEADER.size)))
    head[:9] = [1_000, pid, pid, 1000, 1000, nr, abi.KIND_SYSCALL, 0, ret]
    head[9:15] = args
    head[15] = len(data)
    return record.HEADER.pack(*head) + data


def userspace_ceiling(pairs: int = 60_000) -> float:
    """Records per CPU second through decode, state and the stable rules (the sensor's
    forwarded path without the kernel): openat+close pairs of everyday paths by three
    programs under a shell, one open in 500 of /etc/shadow (which alerts)."""
    from falconer.engine import Engine  # noqa: PLC0415
    from falconer.sensor import record, syscalls  # noqa: PLC0415
    from falconer.sensor.state import Process  # noqa: PLC0415
    from falconer.sensor.tracker import Tracker  # noqa: PLC0415

    engine = Engine()
    assert engine.load([STABLE]).ok and engine.ruleset is not None
    ruleset, tracker = engine.ruleset, Tracker(hostname="bench")
    tracker.procs.put(Process(pid=1, ppid=0, name="systemd"))
    tracker.procs.put(Process(pid=500, ppid=1, name="bash"))
    for pid, name in ((1000, "python3"), (1001, "nginx"), (1002, "java")):
        tracker.procs.put(Process(pid=pid, ppid=500, name=name, exe=f"/usr/bin/{name}",
                                  exepath=f"/usr/bin/{name}"))
    openat, close = syscalls.BY_NAME["openat"].nr, syscalls.BY_NAME["close"].nr
    paths = ["/etc/hostname", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache",
             "/proc/self/status", "/var/log/app.log"]
    at_fdcwd, o_cloexec = (-100) & (2**64 - 1), 0o2000000
    raws = []
    for i in range(pairs):
        path = "/etc/shadow" if i % 500 == 499 else paths[i % len(paths)]
        raws.append(_synthetic(openat, 1000 + i % 3, [at_fdcwd, 0, o_cloexec, 0, 0, 0], 5, path))
        raws.append(_synthetic(close, 1000 + i % 3, [5, 0, 0, 0, 0, 0], 0))

    def run() -> None:
        for raw in raws:
            ev = tracker.handle(record.Record.decode(raw))
            if ev is not None:
                ruleset.evaluate(ev)
    run()   # buckets bound, tables warm
    rates = []
    for _ in range(REPEAT):
        start = time.process_time()
        run()
        rates.append(len(raws) / (time.process_time() - start))
    return statistics.median(rates)


def commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def print_table(rows: list[Row]) -> None:
    def opt(v: float | int | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    print(f"{'workload':32} {'attached':32} {'size':>9} {'base s':>7} {'with s':>7} "
          f"{'ratio':>6} {'records':>9} {'dropped':>8} {'drop%':>6} {'cpu s':>6} "
          f"{'rec/cpu-s':>9} {'rss MiB':>7}")
    for r in rows:
        print(f"{r.workload:32} {r.attached:32} {r.size:>9} {r.base_s:>7.3f} {r.with_s:>7.3f} "
              f"{r.ratio:>6.2f} {opt(r.records, 'd'):>9} {opt(r.dropped, 'd'):>8} "
              f"{opt(r.drop_pct, '.1f'):>6} {opt(r.cpu_s, '.2f'):>6} "
              f"{opt(r.records_per_cpu_s, '.0f'):>9} {opt(r.rss_mib, '.1f'):>7}")
    print(f"times: medians of {REPEAT}; ratio = median with / median base; records: what "
          "reached user space during the runs (includes other host activity); cpu: the "
          "sensor's user+system seconds over the runs + 1 s drain")


def main() -> int:
    if os.geteuid() != 0:
        print("bench_sensor: needs root (loads eBPF)", file=sys.stderr)
        return 2
    exe = build_loops()
    ceiling = userspace_ceiling()
    print(f"user-space ceiling (decode, state, stable rules; no kernel): {ceiling:,.0f} "
          "records per CPU second")
    with tempfile.TemporaryDirectory(prefix="falconer-bench-") as tmp:
        work = workloads(exe, Path(tmp))
        rows = hook_rows(work)
        for name, (size, fn) in work.items():
            rows.append(sensor_row(name, size, fn))
        name = "W1 open+close /etc/hostname"
        many = generated_rules(Path(tmp) / "generated.yaml")
        rows.append(sensor_row(name, work[name][0], work[name][1], many,
                               "falconer sensor (5,000 generated rules)"))
    print_table(rows)
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / f"sensor-{commit()}.json"
    out.write_text(json.dumps({"commit": commit(), "scale": SCALE, "repeat": REPEAT,
                               "time": time.time(), "userspace_records_per_cpu_s": ceiling,
                               "rows": [asdict(r) for r in rows]},
                              indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
