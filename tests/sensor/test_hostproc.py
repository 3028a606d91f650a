"""The sensor reads process state from `$FALCONER_HOST_PROC` when set (the DaemonSet
mounts the node's /proc at /host/proc), and from /proc otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import os
from falconer.sensor import state
p = state.read_proc(os.getpid(), state.boot_time_ns())
print("none" if p is None else p.name)
"""


def _read_own_process(proc_root: Path | None) -> str:
    env = dict(os.environ, PYTHONSAFEPATH="1")
    env.pop("FALCONER_HOST_PROC", None)
    if proc_root is not None:
        env["FALCONER_HOST_PROC"] = str(proc_root)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_default_root_is_proc() -> None:
    assert _read_own_process(None) != "none"


def test_host_proc_mount_is_honoured(tmp_path: Path) -> None:
    mounted = tmp_path / "host" / "proc"
    mounted.parent.mkdir()
    mounted.symlink_to("/proc")
    assert _read_own_process(mounted) != "none"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _read_own_process(empty) == "none"
