"""The fuzz targets: each takes one input (bytes) and returns when the part under test gave
a clean result or its documented, positioned error; anything else raises, and the fuzzer
records the input as a crash.

| target | part | clean error |
|---|---|---|
| loader | `Engine.load` of one rules file | diagnostics with a known code, a position inside the file |
| condition | `parser.parse_condition` | `ConditionSyntaxError` with an offset inside the text |
| output | `output.compile_output`, then `render` | `OutputFormatError` with an offset inside the text |
| replay | `commands.read_events`, then evaluation | a counted, reported bad line |
| record | `Record.decode`, `Tracker.handle`, every field | `struct.error` for a record shorter than the header |
| sensorconfig | `sensor.config.parse` (falconer.yaml) | `ConfigError` naming the file |

Seeds come from real inputs: the upstream Falco rules files in shared/anchors and
Falconer's rules/ (cut into items, conditions and outputs), records packed for every
decoded syscall, replay lines and falconer.yaml documents as the operator renders them.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import random
import re
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource
from falconer.engine.commands import read_events
from falconer.engine.diagnostics import ERROR_CODES, WARNING_CODES, Diagnostic
from falconer.engine.lexer import ConditionSyntaxError
from falconer.engine.output import OutputFormatError, compile_output
from falconer.engine.parser import parse_condition
from falconer.engine.ruleset import Ruleset
from falconer.paths import ROOT
from falconer.sensor import kernelabi as abi
from falconer.sensor import record, syscalls
from falconer.sensor.config import ConfigError
from falconer.sensor.config import parse as parse_sensor_config
from falconer.sensor.event import FIELDS
from falconer.sensor.tracker import Tracker

#: Real rules files the seeds are cut from: the upstream Falco files in the shared folder
#: beside the checkout (as tests/support/upstream.py finds them) and Falconer's own.
RULES_FILES = (
    *sorted((ROOT.parent / "shared" / "anchors" / "falco-rules").glob("*.yaml")),
    *sorted((ROOT / "rules").glob("*.yaml")),
)
FUZZ_FILE = "fuzz_rules.yaml"
CONFIG_PATH = Path("/etc/falconer/falconer.yaml")
#: A Tracker is replaced after this many records, so that state from random pids stays bounded.
TRACKER_RECORDS = 5000


class Crash(AssertionError):
    """The part under test answered with something other than a clean result or its
    documented, positioned error."""


def text(data: bytes) -> str:
    """The input as text, as a file read with errors replaced would give it."""
    return data.decode("utf-8", "replace")


# -- the targets ---------------------------------------------------------------------------

def loader(data: bytes) -> None:
    """One rules file through read, collect and compile."""
    source = text(data)
    result = Engine(EngineOptions(rule_matching="all")).load([RulesSource(FUZZ_FILE, source)])
    lines = len(source.splitlines()) + 2   # a superset of YAML's line breaks
    for diag in (*result.errors, *result.warnings):
        _check_diagnostic(diag, lines)
    OUTCOMES.count(result.errors[0].code if result.errors else
                   "loaded with rules" if result.counts["rules"] else "loaded, no rules")


class Outcomes:
    """How far the inputs got (the first error's code, or loaded), written every
    `every` inputs to $FALCONER_FUZZ_OUTCOMES (JSON) when set: the campaign reports it,
    to show how many inputs reached the compiler rather than the YAML parser."""

    def __init__(self, every: int = 2000) -> None:
        self.counts: Counter[str] = Counter()
        self.every = every
        self.path = os.environ.get("FALCONER_FUZZ_OUTCOMES")

    def count(self, outcome: str) -> None:
        """Count one input's outcome."""
        self.counts[outcome] += 1
        if self.path and self.counts.total() % self.every == 0:
            Path(self.path).write_text(json.dumps(dict(self.counts)))


OUTCOMES = Outcomes()


def _check_diagnostic(diag: Diagnostic, lines: int) -> None:
    if diag.code not in ERROR_CODES | WARNING_CODES:
        raise Crash(f"unknown diagnostic code {diag.code}: {diag}")
    if diag.file != FUZZ_FILE or not 0 <= diag.line <= lines or diag.column < 0:
        raise Crash(f"diagnostic outside the file: {diag.file}:{diag.line}:{diag.column} {diag}")


def condition(data: bytes) -> None:
    """One condition through the parser."""
    source = text(data)
    try:
        parse_condition(source)
    except ConditionSyntaxError as exc:
        _check_offset(exc.offset, source, exc)


def output(data: bytes) -> None:
    """One output format compiled, then rendered for a sample event."""
    source = text(data)
    try:
        fmt = compile_output(source)
    except OutputFormatError as exc:
        _check_offset(exc.offset, source, exc)
        return
    line, fields = fmt.render(SAMPLE_EVENT)
    if not isinstance(line, str) or not isinstance(fields, dict):
        raise Crash(f"render gave {type(line).__name__}, {type(fields).__name__}")


def _check_offset(offset: int, source: str, exc: Exception) -> None:
    if not 0 <= offset <= len(source):
        raise Crash(f"error offset {offset} outside a text of {len(source)} characters: {exc}")


def replay(data: bytes) -> None:
    """Replay lines read, then every event evaluated against the upstream rules and its
    alerts printed as text and JSON."""
    stream = io.StringIO(text(data))
    stream.name = "fuzz.jsonl"
    err = io.StringIO()
    events, bad = read_events(stream, err)
    if err.getvalue().count("skipped event") != bad:
        raise Crash(f"{bad} bad lines counted, but reported:\n{err.getvalue()}")
    for event in events:
        for alert in upstream_ruleset().evaluate(event):
            alert.text_line()
            json.dumps(alert.to_json("fuzzhost"))


def sensor_record(data: bytes) -> None:
    """One ring-buffer record decoded and applied to the process state, then every field
    the sensor answers read from its event."""
    try:
        rec = record.Record.decode(data)
    except struct.error:
        if len(data) >= record.HEADER.size:
            raise
        return
    tracker = _tracker()
    event = tracker.handle(rec)
    if event is not None:
        for name in FIELDS:
            event.get(name)


def sensorconfig(data: bytes) -> None:
    """One falconer.yaml document parsed."""
    try:
        parse_sensor_config(text(data), CONFIG_PATH)
    except ConfigError as exc:
        if not str(exc).startswith(str(CONFIG_PATH)):
            raise Crash(f"a ConfigError that does not name the file: {exc}") from exc


# -- shared state ---------------------------------------------------------------------------

SAMPLE_EVENT = MappingEvent({
    "evt.type": "openat", "proc.name": "sh\x1b[31m", "proc.pid": 42, "proc.aname[2]": "bash",
    "fd.name": "/etc/shadow", "fd.num": 3, "evt.arg.flags": "O_RDONLY", "container.id": "host",
    "k8s.ns.name": None, "proc.args": ["-c", "id"], "user.uid": 0, "evt.rawres": -2,
}, time_ns=1_700_000_000_123_456_789)


@cache
def upstream_ruleset() -> Ruleset:
    """falco_rules.yaml (upstream, stable) loaded once, every rule matching."""
    engine = Engine(EngineOptions(rule_matching="all"))
    result = engine.load([p for p in RULES_FILES if p.name == "falco_rules.yaml"])
    assert engine.ruleset is not None, result.errors
    return engine.ruleset


_trackers: list[tuple[Tracker, list[int]]] = []


def _tracker() -> Tracker:
    """The sensor's process state, seeded from /proc as the sensor's is at start."""
    if not _trackers or _trackers[0][1][0] >= TRACKER_RECORDS:
        tracker = Tracker(hostname="fuzzhost")
        tracker.seed()
        _trackers[:] = [(tracker, [0])]
    tracker, used = _trackers[0]
    used[0] += 1
    return tracker


# -- seeds ------------------------------------------------------------------------------------

def _rules_items() -> Iterator[dict[str, object]]:
    for path in RULES_FILES:
        doc = yaml.safe_load(path.read_text())
        yield from (item for item in doc or () if isinstance(item, dict))


def loader_seeds() -> Iterator[bytes]:
    """Each item of the real rules files alone, and each rule with the lists and macros
    its condition names (transitively, in file order), so that it compiles."""
    for path in RULES_FILES:
        items = [i for i in yaml.safe_load(path.read_text()) or () if isinstance(i, dict)]
        for item in items:
            yield yaml.safe_dump([item], sort_keys=False).encode()
        for rule in (i for i in items if "rule" in i and isinstance(i.get("condition"), str)):
            yield yaml.safe_dump([*_needed(items, rule), rule], sort_keys=False).encode()


_WORD = re.compile(r"[A-Za-z0-9_.\-]+")


def _needed(items: list[dict[str, object]], rule: dict[str, object]) -> list[dict[str, object]]:
    """The lists and macros `rule` uses, directly or through them, in file order."""
    defined = {str(i.get("macro") or i.get("list")): i for i in items if "macro" in i or "list" in i}
    wanted: set[str] = set()
    pending = [str(rule["condition"])]
    while pending:
        for word in _WORD.findall(pending.pop()):
            if word in defined and word not in wanted:
                wanted.add(word)
                used = defined[word]
                pending.append(str(used.get("condition") or used.get("items") or ""))
    return [i for i in items if str(i.get("macro") or i.get("list")) in wanted]


def condition_seeds() -> Iterator[bytes]:
    """Every condition of the real rules files."""
    for item in _rules_items():
        if isinstance(item.get("condition"), str):
            yield str(item["condition"]).encode()


def output_seeds() -> Iterator[bytes]:
    """Every output of the real rules files."""
    for item in _rules_items():
        if isinstance(item.get("output"), str):
            yield str(item["output"]).encode()


def replay_seeds() -> Iterator[bytes]:
    """Replay lines that fire upstream rules, and bad lines the reader must skip."""
    lines = [
        {"time": "2024-01-01T00:00:00.123456789Z", "fields": {
            "evt.type": "openat", "evt.is_open_read": True, "fd.name": "/etc/shadow",
            "proc.name": "cat", "proc.pname": "sh", "container.id": "abc", "fd.typechar": "f",
            "evt.dir": "<", "user.name": "root", "proc.cmdline": "cat /etc/shadow"}},
        {"time": 1_700_000_000_000_000_000, "source": "syscall", "fields": {
            "evt.type": "execve", "evt.dir": "<", "proc.name": "bash", "proc.tty": 34816,
            "container.id": "abc", "proc.pname": "runc", "proc.args": "-i", "spawned_process": True}},
        {"time": "yesterday", "fields": {}}, {"fields": {}}, [], "x",
    ]
    yield "\n".join(json.dumps(line) for line in lines).encode()
    for line in lines:
        yield json.dumps(line).encode()


_SOCKADDR_IN = struct.pack("<HH4s8x", 2, 0x5000, bytes([10, 0, 0, 7]))
_SOCKADDR_UN = struct.pack("<H", 1) + b"/run/containerd/containerd.sock\0"
_AT_FDCWD = (1 << 64) - 100


def record_seeds() -> Iterator[bytes]:
    """A record of every decoded syscall (success and failure), and the fork, exec and
    exit records of the process hooks."""
    pid = os.getpid()
    for spec in syscalls.DECODED:
        for ret in (3, -13):
            yield record.pack(spec.nr, ret, (_AT_FDCWD, 0x241, 0o644, 3, 0, 0), tgid=pid,
                              str_a="/etc/shadow", str_b="../x", sock=_SOCKADDR_IN,
                              argv=["cat", "/etc/shadow"], local=_SOCKADDR_UN)
    yield record.pack(0, 0, (0x11, pid + 1, pid + 1, pid), kind=abi.KIND_FORK, tgid=pid)
    yield record.pack(59, 0, (pid, pid, pid | pid << 32, 34816), kind=abi.KIND_EXEC, tgid=pid,
                      str_a="/usr/bin/id", argv=["id", "-u"], env=["PATH=/bin", "HOME=/root"],
                      flags=abi.RF_ARGV_FROM_MM, exe=bytes(ctypes.sizeof(record.ExecData)))
    yield record.pack(60, 0, (), kind=abi.KIND_EXIT, tgid=pid)


def sensorconfig_seeds() -> Iterator[bytes]:
    """falconer.yaml as the operator renders it, minimal and with every output."""
    base: dict[str, object] = {
        "instance": {"namespace": "security", "name": "default"}, "rulesFiles": ["rules.yaml"],
        "engine": {"minPriority": "warning", "ruleMatching": "first",
                   "selection": [{"action": "disable", "tag": "T1059"}]},
        "outputs": {}, "bufferSizeBytes": 1 << 20, "clusterDomain": "cluster.local"}
    yield yaml.safe_dump(base, sort_keys=False).encode()
    yield b"rulesFiles: []\n"
    yield b"rulesFiles: [a.yaml, b.yaml]\nengine: {minPriority: loud}\n"


# -- the loader's structure-aware mutation -------------------------------------------------

#: Mutations of a rules file that keep it YAML, so that inputs reach the collector and
#: the compiler instead of stopping at the YAML parser.
_ITEM_MUTATIONS = ("scalar", "scalar", "scalar", "swap-value", "drop-key", "copy-item", "drop-item")


#: libyaml's safe loader and dumper when PyYAML has them (the mutation runs per input).
_FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FastDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@cache
def _scalar_pool() -> tuple[str, ...]:
    """Every string value of the real rules files (conditions, outputs, names, ...)."""
    pool: list[str] = []
    for item in _rules_items():
        for value in item.values():
            pool.extend(str(v) for v in (value if isinstance(value, list) else [value])
                        if isinstance(v, (str, int, bool)))
    return tuple(pool)


def mutate_rules(data: bytes, max_size: int, seed: int, mutate_bytes: Callable[[bytes, int], bytes]) -> bytes:
    """One mutation of a rules file: at the YAML level (a scalar's text mutated byte-wise
    or replaced by another real file's value, a key dropped, an item copied or dropped)
    when the input is a list of items, else byte-wise (`mutate_bytes`, libFuzzer's)."""
    rng = random.Random(seed)
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=_FastLoader)
    except (UnicodeDecodeError, yaml.YAMLError):
        doc = None
    items = [i for i in doc if isinstance(i, dict) and i] if isinstance(doc, list) else []
    if not items or rng.random() < 0.2:
        return mutate_bytes(data, max_size)
    item = rng.choice(items)
    key = rng.choice(list(item))
    kind = rng.choice(_ITEM_MUTATIONS)
    if kind == "scalar":
        text = str(item[key]).encode()
        item[key] = mutate_bytes(text, max(len(text) * 2, 64)).decode("utf-8", "replace")
    elif kind == "swap-value":
        item[key] = rng.choice(_scalar_pool())
    elif kind == "drop-key":
        del item[key]
    elif kind == "copy-item":
        items.insert(rng.randrange(len(items) + 1), dict(item))
    else:
        items.remove(item)
    out = yaml.dump(items, Dumper=_FastDumper, sort_keys=False, allow_unicode=True).encode()
    return out[:max_size]


@dataclass(frozen=True)
class Target:
    """A target: its function, its seeds, the libFuzzer input size bound (bytes), and its
    own mutation (`mutate(data, max_size, seed, mutate_bytes)`) or None for libFuzzer's."""

    run: Callable[[bytes], None]
    seeds: Callable[[], Iterator[bytes]]
    max_len: int
    mutate: Callable[[bytes, int, int, Callable[[bytes, int], bytes]], bytes] | None = None


TARGETS: dict[str, Target] = {
    "loader": Target(loader, loader_seeds, 8192, mutate_rules),
    "condition": Target(condition, condition_seeds, 4096),
    "output": Target(output, output_seeds, 2048),
    "replay": Target(replay, replay_seeds, 4096),
    "record": Target(sensor_record, record_seeds, 4096),
    "sensorconfig": Target(sensorconfig, sensorconfig_seeds, 4096),
}
