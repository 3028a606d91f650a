"""Benchmark of the rule engine (not a test): load time and evaluation throughput.

Prints:
- load+compile time of the three upstream Falco files together (median of 5 runs);
- events/s through the stable ruleset on a realistic event mix (mostly opens, reads,
  closes and execs of everyday programs, a few connects, a handful of matches),
  through the ruleset's buckets and evaluating every rule for every event;
- many rules: events/s of openat events of paths no rule watches, and of the mix, with
  7 and with 5,000 generated rules (`generated_rules`: what a large user ruleset looks
  like), and the cost ratio (target: 5,000 rules cost at most 2x what 7 cost).
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from falconer.engine import Alert, Engine, EngineOptions, MappingEvent, RulesSource
from falconer.paths import ROOT

UPSTREAM = ROOT.parent / "shared" / "anchors" / "falco-rules"
FILES = [UPSTREAM / "falco_rules.yaml", UPSTREAM / "falco-incubating_rules.yaml",
         UPSTREAM / "falco-sandbox_rules.yaml"]

_PROCS = [("python3", "/usr/bin/python3", "systemd"), ("nginx", "/usr/sbin/nginx", "nginx"),
          ("java", "/usr/bin/java", "containerd-shim"), ("bash", "/usr/bin/bash", "sshd"),
          ("node", "/usr/bin/node", "npm"), ("postgres", "/usr/lib/postgresql/15/bin/postgres",
                                             "postgres")]
_PATHS = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/etc/ld.so.cache", "/proc/self/status",
          "/var/log/app.log", "/tmp/tmp8d7f.json", "/etc/hosts", "/etc/resolv.conf",
          "/usr/share/zoneinfo/UTC", "/home/app/data/cache.db", "/sys/fs/cgroup/cpu.max"]
_BINARIES = [("ls", "/usr/bin/ls"), ("grep", "/usr/bin/grep"), ("sed", "/usr/bin/sed"),
             ("curl", "/usr/bin/curl"), ("git", "/usr/bin/git"), ("sh", "/usr/bin/sh")]


def _common(rng: random.Random, i: int) -> dict[str, object]:
    """Process, user and container fields every event carries (rules read them often)."""
    name, exe, parent = rng.choice(_PROCS)
    return {"proc.name": name, "proc.exe": exe, "proc.exepath": exe, "proc.pname": parent,
            "proc.cmdline": f"{name} --worker {i % 7}", "proc.pid": 1000 + i % 500,
            "proc.vpid": 1000 + i % 500, "user.name": "app", "user.uid": 1000,
            "user.loginuid": -1, "proc.tty": 0, "container.id": rng.choice(["host", "3f2a9c1d"]),
            "proc.aname": [parent, "containerd-shim", "systemd"], "evt.num": i + 1,
            "proc.aname[2]": "containerd-shim", "proc.aname[3]": "systemd"}


def _open(rng: random.Random, i: int) -> dict[str, object]:
    """A file open, mostly reads: the bulk of a real syscall stream."""
    path = rng.choice(_PATHS)
    write = rng.random() < 0.2
    return {**_common(rng, i), "evt.type": "openat", "fd.name": path,
            "fd.directory": path.rsplit("/", 1)[0] or "/", "fd.filename": path.rsplit("/", 1)[1],
            "fd.typechar": "f", "fd.num": 5, "evt.is_open_read": not write,
            "evt.is_open_write": write, "evt.res": "SUCCESS", "evt.rawres": 5,
            "evt.arg.flags": "O_WRONLY|O_CREAT" if write else "O_RDONLY"}


def _exec(rng: random.Random, i: int) -> dict[str, object]:
    """An everyday program started by a service."""
    name, exe = rng.choice(_BINARIES)
    return {**_common(rng, i), "evt.type": "execve", "proc.name": name, "proc.exe": exe,
            "proc.exepath": exe, "proc.cmdline": f"{name} -a", "evt.res": "SUCCESS",
            "evt.rawres": 0, "proc.args": "-a"}


def _connect(rng: random.Random, i: int) -> dict[str, object]:
    """An outbound TCP connection to a database."""
    return {**_common(rng, i), "evt.type": "connect", "fd.typechar": "4", "fd.type": "ipv4",
            "fd.sip": "10.0.3.7", "fd.sport": 5432, "fd.l4proto": "tcp", "fd.net": "10.0.3.7",
            "fd.snet": "10.0.3.7", "fd.name": "10.0.1.2:40122->10.0.3.7:5432",
            "evt.res": "SUCCESS", "evt.rawres": 0, "fd.num": 7, "fd.connected": True}


def _other(rng: random.Random, i: int) -> dict[str, object]:
    """A syscall few rules look at (it should meet few rules through the index)."""
    return {**_common(rng, i), "evt.type": rng.choice(["read", "write", "close", "mmap",
                                                       "futex", "epoll_wait"]),
            "fd.name": rng.choice(_PATHS), "fd.num": 5, "evt.res": "SUCCESS"}


def _matching(rng: random.Random, i: int) -> dict[str, object]:
    """`cat` reading /etc/shadow from a shell: fires a stable rule."""
    ev = _open(rng, i)
    ev.update({"proc.name": "cat", "proc.exepath": "/usr/bin/cat", "fd.name": "/etc/shadow",
               "fd.directory": "/etc", "fd.filename": "shadow", "evt.is_open_read": True,
               "evt.is_open_write": False, "proc.pname": "bash"})
    return ev


def event_mix(n: int, seed: int = 7) -> list[MappingEvent]:
    """Mostly everyday syscalls; about 1 in 500 events matches a stable rule."""
    rng = random.Random(seed)
    makers = [(_open, 45), (_other, 35), (_exec, 12), (_connect, 8)]
    population = [m for m, w in makers for _ in range(w)]
    out = []
    for i in range(n):
        maker = _matching if i % 500 == 499 else rng.choice(population)
        out.append(MappingEvent(maker(rng, i), time_ns=1_764_000_000_000_000_000 + i))
    return out


#: Macros the generated rules share, as a user's file would define or reuse them.
_GENERATED_MACROS = """\
- macro: gen_open_read
  condition: (evt.type in (open, openat, openat2) and evt.is_open_read=true and fd.typechar='f' and fd.num>=0)
- macro: gen_open_write
  condition: (evt.type in (open, openat, openat2) and evt.is_open_write=true and fd.typechar='f' and fd.num>=0)
- macro: gen_spawned_process
  condition: (evt.type in (execve, execveat) and evt.res = SUCCESS)
"""
#: Generated conditions, in turn: each rule watches its own paths or program.
_GENERATED_CONDITIONS = (
    "gen_open_read and fd.name = /srv/app{i}/secret.key and not proc.name in (sshd, backup)",
    "gen_open_write and fd.directory = /srv/app{i}/conf and not proc.name in (deploy, ansible)",
    "gen_spawned_process and proc.name = tool{i} and not proc.pname in (bash, systemd)",
    "gen_open_read and fd.name in (/srv/app{i}/a.pem, /srv/app{i}/b.pem) and container.id != host",
)


def generated_rules(count: int) -> str:
    """A rules file of `count` rules like a large user ruleset's (`open_read and fd.name =
    /srv/appN/secret.key and not proc.name in (...)` and its kin)."""
    rules = [f"- rule: generated {i}\n  desc: generated\n  condition: "
             f"{_GENERATED_CONDITIONS[i % len(_GENERATED_CONDITIONS)].format(i=i)}\n"
             f"  output: watched file %fd.name by %proc.name\n  priority: WARNING\n"
             for i in range(count)]
    return _GENERATED_MACROS + "".join(rules)


def unwatched_opens(n: int) -> list[MappingEvent]:
    """openat events of everyday paths no generated rule watches."""
    rng = random.Random(11)
    return [MappingEvent(_open(rng, i), time_ns=1_764_000_000_000_000_000 + i)
            for i in range(n)]


def _median_load(files: list[Path], runs: int = 5) -> float:
    """Seconds to load and compile `files` (median: the machine may be busy)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = Engine().load(files)
        times.append(time.perf_counter() - start)
        assert result.ok, result.errors
    return statistics.median(times)


def _throughput(evaluate: Callable[[MappingEvent], list[Alert]],
                events: list[MappingEvent], runs: int = 3) -> tuple[int, float]:
    """Alerts raised and events/s (median of `runs` passes; the machine may be busy)."""
    rates = []
    alerts = 0
    for _ in range(runs):
        start = time.perf_counter()
        alerts = sum(len(evaluate(e)) for e in events)
        rates.append(len(events) / (time.perf_counter() - start))
    return alerts, statistics.median(rates)


def main() -> None:
    """Measure and print; the two evaluation paths must raise the same alerts."""
    print(f"load+compile of 3 upstream files: {_median_load(FILES) * 1000:.1f} ms (median of 5)")
    engine = Engine(EngineOptions())
    assert engine.load(FILES[:1]).ok
    ruleset = engine.ruleset
    assert ruleset is not None
    events = event_mix(50_000)
    indexed_alerts, indexed = _throughput(ruleset.evaluate, events)
    flat_alerts, flat = _throughput(ruleset.evaluate_unindexed, events)
    assert indexed_alerts == flat_alerts, (indexed_alerts, flat_alerts)
    print(f"stable ruleset, {len(events)} events, {indexed_alerts} alerts (median of 3 passes)")
    print(f"  indexed by evt.type: {indexed:,.0f} events/s")
    print(f"  every rule, every event: {flat:,.0f} events/s")
    print(f"  index speed-up: {indexed / flat:.1f}x")
    _many_rules(events)


def _many_rules(mix: list[MappingEvent]) -> None:
    """Events/s with 7 and with 5,000 generated rules, and the cost ratio."""
    opens = unwatched_opens(50_000)
    rates: dict[int, tuple[float, float]] = {}
    for count in (7, 5000):
        engine = Engine()
        start = time.perf_counter()
        assert engine.load([RulesSource("generated.yaml", generated_rules(count))]).ok
        load_s = time.perf_counter() - start
        assert engine.ruleset is not None
        _, open_rate = _throughput(engine.ruleset.evaluate, opens)
        _, mix_rate = _throughput(engine.ruleset.evaluate, mix)
        rates[count] = open_rate, mix_rate
        print(f"{count} generated rules (load {load_s * 1000:.0f} ms): unwatched openat "
              f"{open_rate:,.0f} events/s, mix {mix_rate:,.0f} events/s")
    print(f"  cost of 5,000 rules / cost of 7: unwatched openat "
          f"{rates[7][0] / rates[5000][0]:.2f}x, mix {rates[7][1] / rates[5000][1]:.2f}x "
          "(target <= 2x)")


if __name__ == "__main__":
    main()
