"""Falconer's own default rules fire on the attack they describe, not on routine work."""

from __future__ import annotations

import pytest

from falconer.engine import MappingEvent
from falconer.engine.ruleset import Ruleset


def _open(path: str, proc: str, write: bool = False, **extra: object) -> dict[str, object]:
    return {"evt.type": "openat", "fd.name": path, "proc.name": proc, "fd.num": 3,
            "evt.is_open_read": not write, "evt.is_open_write": write, **extra}


CASES = [
    ("Credential file read by a non-login program", _open("/etc/shadow", "python3"),
     _open("/etc/shadow", "sshd")),
    ("Shell spawned by a web server",
     {"evt.type": "execve", "evt.res": "SUCCESS", "proc.name": "sh", "proc.pname": "nginx"},
     {"evt.type": "execve", "evt.res": "SUCCESS", "proc.name": "sh", "proc.pname": "sshd"}),
    ("Write below /etc by an unexpected program", _open("/etc/cron.d/x", "curl", write=True),
     _open("/etc/passwd", "useradd", write=True)),
    ("Container connects to a crypto-mining port",
     {"evt.type": "connect", "evt.res": "SUCCESS", "container.id": "3f2a9c1d",
      "fd.sport": 3333},
     {"evt.type": "connect", "evt.res": "SUCCESS", "container.id": "host", "fd.sport": 3333}),
    ("Kernel module loaded by an unexpected program",
     {"evt.type": "finit_module", "evt.res": "SUCCESS", "proc.name": "python3"},
     {"evt.type": "finit_module", "evt.res": "SUCCESS", "proc.name": "modprobe"}),
    ("Process attached to another with ptrace",
     {"evt.type": "ptrace", "evt.res": "SUCCESS", "evt.arg.request": "PTRACE_ATTACH"},
     {"evt.type": "ptrace", "evt.res": "SUCCESS", "evt.arg.request": "PTRACE_TRACEME"}),
    ("Shell history deleted or truncated",
     {"evt.type": "unlinkat", "evt.res": "SUCCESS", "evt.arg.name": "/root/.bash_history"},
     {"evt.type": "unlinkat", "evt.res": "SUCCESS", "evt.arg.name": "/root/notes"}),
]


@pytest.mark.parametrize("rule,attack,routine", CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_attack_only(default_ruleset: Ruleset, rule: str,
                                   attack: dict[str, object],
                                   routine: dict[str, object]) -> None:
    assert [a.rule for a in default_ruleset.evaluate(MappingEvent(attack))] == [rule]
    assert default_ruleset.evaluate(MappingEvent(routine)) == []


def test_every_default_rule_is_covered_and_tagged_with_mitre(
        default_ruleset: Ruleset) -> None:
    assert {r.name for r in default_ruleset.rules} == {c[0] for c in CASES}
    for rule in default_ruleset.rules:
        assert any(t.startswith("mitre_") for t in rule.tags), rule.name
        assert any(t.startswith("T") and t[1:5].isdigit() for t in rule.tags), rule.name
