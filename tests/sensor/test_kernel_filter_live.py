"""The rule-derived filter in the real kernel, with the upstream stable rules.

Opens no stable rule can match (W1 of issue 11: /etc/hostname) and their closes stay in
the kernel; a watched path still reaches the rules; a directory, relative and
unnormalised paths are still forwarded (state and fd.name need them).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import upstream

LOOP = """
import os, sys
for _ in range(int(sys.argv[1])):
    os.close(os.open("/etc/hostname", os.O_RDONLY))
"""


@pytest.fixture(scope="module")
def sensor(start_sensor):
    return start_sensor("--rules", str(upstream.STABLE), "--buffer-pages", "4096")


def kept(summary: str) -> int:
    return int(summary.split("kept in the kernel by the rule-derived filter: ")[1].split()[0])


def test_unwatched_opens_and_their_closes_stay_in_the_kernel(sensor, marker):
    assert sensor.wait_stderr("kernel filter: creat: 0 paths; open: 21 paths")
    subprocess.run([sys.executable, "-c", LOOP, "5000", marker], check=True)
    # a watched file still reaches the rules, through a relative and an odd path too
    for path in ("/etc/shadow", "../../etc/shadow", "/etc//shadow"):
        script = f"import os; os.chdir('/tmp'); os.close(os.open({path!r}, os.O_RDONLY))"
        subprocess.run([sys.executable, "-c", script, marker], check=True)
    assert "Read sensitive file untrusted" in sensor.rules_for(marker)
    names = {a["output_fields"]["fd.name"] for a in sensor.matching(marker)}
    assert names == {"/etc/shadow"}
    assert len(sensor.matching(marker)) == 3
    summary = sensor.stop()
    assert kept(summary) >= 2 * 5000, summary
    assert "dropped: 0 " in summary
