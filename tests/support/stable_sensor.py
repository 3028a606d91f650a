"""A sensor running the upstream stable rules plus a test module's own rules, every
matching rule reported: the set-up of the sensor tests that check fields the kernel
gives at the event (tests/sensor/test_blind_spots.py, tests/sensor/test_kernel_facts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import upstream
from sensor_process import SensorProcess

#: The sensor's ring buffer, in pages (--buffer-pages): room for these modules' bursts.
BUFFER_PAGES = 4096


def start_with_stable_rules(start_sensor: Callable[..., SensorProcess], folder: Path, file_name: str,
                            rules: str) -> SensorProcess:
    """Write `rules` to folder/file_name and start (with the sensor tests' `start_sensor`
    factory) a sensor loading the upstream stable rules, then that file, with
    `-o rule_matching=all` (an action's alert for every rule it matches, not only the
    first) and a ring buffer of BUFFER_PAGES pages. Raises what SensorProcess raises."""
    path = folder / file_name
    path.write_text(rules)
    return start_sensor("--rules", str(upstream.STABLE), str(path),
                        "-o", "rule_matching=all", "--buffer-pages", str(BUFFER_PAGES))
