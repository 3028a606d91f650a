"""A test that needs a real kernel or a real API server must run in CI, never skip.

`require(ok, why)` skips on a developer's machine that lacks the prerequisite, but
fails when `CI=true`, so CI can never go green by skipping the parts that matter.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(ok: bool, why: str) -> None:
    """Skip (developer machine) or fail (CI) when a prerequisite is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}", pytrace=False)
    pytest.skip(why)


def ebpf_missing() -> str | None:
    """Why the sensor cannot run here (root, bcc, headers, tracefs), None when it can."""
    from falconer.sensor import probe

    try:
        probe.preflight()
    except (probe.ProbeError, RuntimeError) as exc:
        return str(exc)
    return None


def require_ebpf() -> None:
    """Skip on a dev machine, fail in CI, when the sensor's prerequisites are missing."""
    why = ebpf_missing()
    require(why is None, why or "")
