"""Where the host's /proc is: `/proc` when the sensor runs on a host, and the node's
procfs mounted read-only at `$FALCONER_HOST_PROC` (the DaemonSet sets /host/proc) when
it runs in a pod, so that every reader of process state looks in one place."""

from __future__ import annotations

import os

#: The procfs root the sensor reads process state from.
ROOT = os.environ.get("FALCONER_HOST_PROC", "/proc")


def path(*parts: object) -> str:
    """`ROOT/part/part...`, e.g. path(42, "status") -> "/proc/42/status"."""
    return "/".join((ROOT, *(str(p) for p in parts)))
