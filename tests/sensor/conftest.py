"""Fixtures for the sensor tests: a real `falconer sensor` process on this host
(`sensor_process.SensorProcess`), started once per module (bcc compiles for a few
seconds), and a unique marker per test to find its alerts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import prereq
import pytest
from sensor_process import SensorProcess


@pytest.fixture(scope="session")
def ebpf() -> None:
    """Require root, bcc, kernel headers and tracefs (fails in CI when missing)."""
    prereq.require_ebpf()


@pytest.fixture(scope="module")
def start_sensor() -> Iterator[Callable[..., SensorProcess]]:
    """A factory: start a sensor with given CLI args; all are stopped at module end."""
    started: list[SensorProcess] = []

    def start(*args: str) -> SensorProcess:
        prereq.require_ebpf()
        s = SensorProcess(*args)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def marker() -> str:
    """A unique token to find this test's alerts among everything the host does."""
    return "fm" + uuid.uuid4().hex[:12]
