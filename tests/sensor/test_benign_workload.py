"""Everyday work on a host must not raise alerts from the upstream stable rules.

Package queries, a git commit, compiling C and tar/untar run under a driver process
with a unique name; any stable-rule alert whose process or parent belongs to that work
fails the test (alerts from unrelated host activity are ignored).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import upstream

WORKLOAD = r"""
set -e
cd "$1"
dpkg -l bash coreutils > /dev/null
dpkg -S /bin/ls > /dev/null
apt-cache policy bash > /dev/null
apt-cache show coreutils > /dev/null
git init -q repo
cd repo
git config user.email bench@example.invalid
git config user.name bench
printf 'int main(void) { return 0; }\n' > main.c
git add main.c
git commit -q -m "first commit"
git log --oneline > /dev/null
gcc -O2 -o main main.c
./main
cd ..
tar czf repo.tgz repo
mkdir out
tar xzf repo.tgz -C out
ls -R out > /dev/null
"""

#: Processes the workload runs; an alert naming one of them as process or parent is ours.
#: The driver is a uniquely named bash, so a plain "bash" elsewhere on the host (another
#: test, a developer's shell) is not mistaken for the workload.
WORKLOAD_NAMES = {"dpkg", "dpkg-query", "apt-cache", "git", "gcc", "cc1", "as", "collect2",
                  "ld", "main", "tar", "gzip", "ls", "mkdir", "printf"}


def test_benign_workload_raises_no_stable_alert(start_sensor, tmp_path: Path, marker: str):
    sensor = start_sensor("--rules", str(upstream.STABLE), "--buffer-pages", "4096")
    driver = tmp_path / f"drv_{marker}"[:15]
    driver.symlink_to("/bin/bash")
    script = tmp_path / "workload.sh"
    script.write_text(WORKLOAD)
    before = len(sensor.alerts)
    subprocess.run([str(driver), str(script), str(tmp_path)], check=True, timeout=120,
                   env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path)))
    time.sleep(2.0)
    ours = [a for a in sensor.alerts[before:]
            if a["source"] == "syscall"
            and ({a["output_fields"].get("proc.name"), a["output_fields"].get("proc.pname")}
                 & (WORKLOAD_NAMES | {driver.name}))]
    assert ours == [], ours
