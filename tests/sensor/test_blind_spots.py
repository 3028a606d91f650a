"""What an attacker tried on this host that the sensor did not see (issue 11), closed.

Real kernel, real sensor: 32-bit system calls (`int $0x80` from a 64-bit program) per
family, execveat variants without a spurious drop alert, the environment of a process
that exits at once, and paths longer than 255 bytes. Each action carries the test's
marker (as the program's name, an argument, or in a path).
"""

from __future__ import annotations

import os
import pty
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from stable_sensor import start_with_stable_rules

from falconer.sensor import alerts

PROGRAM = Path(__file__).with_name("programs") / "gate32.c"
FAMILIES = ["open", "unlink", "setuid", "ptrace", "connect", "execve"]

RULES = """
- rule: Seen through the 32-bit gate
  desc: any decoded family, by a program named after a test marker
  condition: >
    evt.type in (open, unlink, setuid, ptrace, connect, execve)
    and (proc.name startswith fm or proc.args contains fm)
  output: "gate32 %evt.type name=%proc.name args=%proc.args fd=%fd.name"
  priority: WARNING
- rule: Environment at exec
  desc: the environment read from the exec event
  condition: evt.type = execve and proc.env contains "FALCONER_MARK=fm"
  output: "env %proc.env[FALCONER_MARK] tunables=%proc.env[GLIBC_TUNABLES] cmd=%proc.cmdline"
  priority: WARNING
- rule: Session leader on a terminal
  desc: tty, session and process group as of exec
  condition: evt.type = execve and proc.args contains fm and proc.is_sid_leader = true
  output: "tty %proc.args tty=%proc.tty sid=%proc.sid pgid=%proc.pgid pid=%proc.pid vpgid=%proc.vpgid leader=%proc.is_vpgid_leader"
  priority: WARNING
- rule: Connect with its local address
  desc: fd.lip/fd.lport of a connect
  condition: evt.type = connect and proc.args contains fm and fd.rip = 127.0.0.1
  output: "conn %proc.args lip=%fd.lip lport=%fd.lport rport=%fd.rport"
  priority: WARNING
- rule: Executable inode at exec
  desc: proc.exe_ino.* read from the new image at exec
  condition: evt.type = execve and proc.name startswith fm
  output: "exe %proc.name ino=%proc.exe_ino ctime=%proc.exe_ino.ctime mtime=%proc.exe_ino.mtime"
  priority: WARNING
- rule: Long path opened
  desc: a path longer than 255 bytes, seen whole
  condition: evt.type in (open, openat) and fd.name contains /fmlong and fd.name endswith .txt
  output: "long %fd.name"
  priority: WARNING
"""


@pytest.fixture(scope="module")
def gate32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.fail("gcc is needed to build the 32-bit gate program")
    exe = tmp_path_factory.mktemp("gate32") / "gate32"
    subprocess.run(["gcc", "-no-pie", "-O1", "-o", str(exe), str(PROGRAM)], check=True)
    return exe


@pytest.fixture(scope="module")
def sensor(start_sensor, tmp_path_factory: pytest.TempPathFactory):
    return start_with_stable_rules(start_sensor, tmp_path_factory.mktemp("rules"), "blind.yaml", RULES)


def named(gate32: Path, dirpath: Path, marker: str) -> Path:
    """The gate program under the marker's name (so proc.name is the marker)."""
    exe = dirpath / marker
    shutil.copy(gate32, exe)
    return exe


def fields_for(sensor, marker: str, rule: str) -> list[dict]:
    sensor.rules_for(marker)
    return [a["output_fields"] for a in sensor.matching(marker) if a["rule"] == rule]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_seen_through_the_32_bit_gate(sensor, gate32, tmp_path, marker, family):
    exe = named(gate32, tmp_path, marker)
    arg = {"open": str(tmp_path / "f"), "unlink": str(tmp_path / "f"), "setuid": "0",
           "ptrace": "0", "connect": str(_free_port()), "execve": marker}[family]
    (tmp_path / "f").write_text("x")
    assert subprocess.run([str(exe), family, arg]).returncode == 0
    seen = fields_for(sensor, marker, "Seen through the 32-bit gate")
    assert family in {f["evt.type"] for f in seen}, seen
    if family == "open":
        assert {f["fd.name"] for f in seen if f["evt.type"] == "open"} == {str(tmp_path / "f")}


def test_a_32_bit_open_of_etc_shadow_raises_the_stable_rule(sensor, gate32, tmp_path, marker):
    exe = named(gate32, tmp_path, marker)
    assert subprocess.run([str(exe), "open", "/etc/shadow"]).returncode == 0
    assert "Read sensitive file untrusted" in sensor.rules_for(marker)
    shadow = fields_for(sensor, marker, "Read sensitive file untrusted")
    assert shadow and shadow[0]["evt.type"] == "open"


@pytest.mark.parametrize("variant", ["execveat-empty", "execveat-dirfd", "execveat-fail"])
def test_execveat_raises_no_drop_alert(sensor, gate32, tmp_path, marker, variant):
    exe = named(gate32, tmp_path, marker)
    target = tmp_path / marker
    subprocess.run([str(exe), variant, str(target)], capture_output=True)
    sensor.rules_for(marker, expect=False)
    drops = [a for a in sensor.alerts if a["rule"] == alerts.DROP_RULE]
    assert drops == []


def test_environment_of_a_process_that_exits_at_once(sensor, marker):
    env = dict(os.environ, GLIBC_TUNABLES="glibc.tune.x=1", FALCONER_MARK=marker)
    subprocess.run(["/bin/true", marker], env=env, check=True)
    seen = fields_for(sensor, marker, "Environment at exec")
    assert seen, sensor.matching(marker)
    assert seen[0]["proc.env[FALCONER_MARK]"] == marker
    assert seen[0]["proc.env[GLIBC_TUNABLES]"] == "glibc.tune.x=1"


def test_tty_session_and_group_after_setsid_on_a_new_pty(sensor, marker):
    pid, fd = pty.fork()   # the child: setsid(), then the pty's slave as controlling tty
    if pid == 0:
        os.execv("/bin/true", ["/bin/true", marker])
    os.waitpid(pid, 0)
    os.close(fd)
    seen = fields_for(sensor, marker, "Session leader on a terminal")
    assert seen, sensor.matching(marker)
    f = seen[0]
    assert f["proc.sid"] == f["proc.pgid"] == f["proc.pid"] == pid
    assert f["proc.tty"] >> 8 == 136          # a /dev/pts/N terminal (major 136)
    assert f["proc.vpgid"] == pid and f["proc.is_vpgid_leader"] is True


def test_setsid_without_exec_has_no_terminal(sensor, marker, tmp_path):
    script = f"import os; os.setsid(); os.execv('/bin/true', ['/bin/true', '{marker}'])"
    subprocess.run([sys.executable, "-c", script], check=True)
    seen = fields_for(sensor, marker, "Session leader on a terminal")
    assert seen and seen[0]["proc.tty"] == 0


def test_a_path_longer_than_255_bytes_is_seen_whole(sensor, tmp_path, marker):
    deep = tmp_path / ("d" * 200) / ("e" * 200) / ("f" * 200)
    deep.mkdir(parents=True)
    path = deep / f"fmlong{marker}.txt"
    path.write_text("x")
    assert len(str(path)) > 600
    seen = fields_for(sensor, marker, "Long path opened")
    assert {f["fd.name"] for f in seen} == {str(path)}


def test_connect_reports_its_local_address(sensor, marker):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        script = ("import socket, sys; s = socket.create_connection(('127.0.0.1', "
                  f"{port})); print(s.getsockname()[1])")
        out = subprocess.run([sys.executable, "-c", script, marker], capture_output=True,
                             text=True, check=True).stdout
    seen = fields_for(sensor, marker, "Connect with its local address")
    assert seen, sensor.matching(marker)
    assert seen[0]["fd.lip"] == "127.0.0.1" and seen[0]["fd.rport"] == port
    assert seen[0]["fd.lport"] == int(out)


def test_exe_inode_times_come_from_the_exec(sensor, gate32, tmp_path, marker):
    exe = named(gate32, tmp_path, marker)
    st = exe.stat()
    subprocess.run([str(exe), "setuid", "0"], check=True)
    exe.unlink()   # gone from disk at once: nothing left to look up afterwards
    seen = fields_for(sensor, marker, "Executable inode at exec")
    assert seen, sensor.matching(marker)
    assert seen[0]["proc.exe_ino"] == st.st_ino
    assert seen[0]["proc.exe_ino.ctime"] == st.st_ctime_ns
    assert seen[0]["proc.exe_ino.mtime"] == st.st_mtime_ns


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
