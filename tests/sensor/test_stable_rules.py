"""Real actions on this host against the upstream stable rules, through the real sensor.

For every stable rule that can fire without a container, one action must raise exactly
that rule (default `rule_matching: first`, as Falco) and a near miss must raise nothing.
Each action carries a unique marker in its command line or file name; alerts are
matched to actions by that marker only, so other activity on the host cannot interfere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import upstream

PY = sys.executable


@pytest.fixture(scope="module")
def sensor(start_sensor):
    # A roomy ring buffer: a busy shared CI host must not drop the actions under test.
    return start_sensor("--rules", str(upstream.STABLE), "--buffer-pages", "4096")


@pytest.fixture
def workdir(tmp_path: Path, marker: str) -> Iterator[Path]:
    d = tmp_path / marker
    d.mkdir()
    yield d


def alias(dirpath: Path, name: str, target: str = PY) -> str:
    """A symlink named `name` to `target`: exec through it and the process is `name`."""
    link = dirpath / name
    link.symlink_to(os.path.realpath(target))
    return str(link)


def py(code: str, marker: str, exe: str = PY) -> subprocess.CompletedProcess:
    """Run Python code in a child whose command line carries the marker.

    From "/": `-c` puts the working directory on sys.path, and the repository's
    `operator/` would shadow the standard library's.
    """
    return subprocess.run([exe, "-c", code, marker], check=True, timeout=60,
                          capture_output=True, cwd="/")


# -- files -------------------------------------------------------------------------------

def test_read_sensitive_file_untrusted(sensor, marker):
    py("open('/etc/shadow').read()", marker)
    assert sensor.rules_for(marker) == {"Read sensitive file untrusted"}


def test_read_sensitive_file_by_a_shell_is_trusted(sensor, marker):
    subprocess.run(["bash", "-c", "read -r l < /etc/shadow; : " + marker], check=False)
    assert sensor.rules_for(marker, expect=False) == set()


def test_read_sensitive_file_trusted_after_startup(sensor, marker, workdir):
    httpd = alias(workdir, "httpd")
    py("import time; time.sleep(5.5); open('/etc/shadow').read()", marker, exe=httpd)
    assert sensor.rules_for(marker) == {"Read sensitive file trusted after startup"}


def test_read_sensitive_file_by_a_new_server_process(sensor, marker, workdir):
    # A trusted program reading at startup is not "after startup" (the untrusted rule
    # still applies to httpd, which is not in its allow lists).
    httpd = alias(workdir, "httpd")
    py("open('/etc/shadow').read()", marker, exe=httpd)
    assert sensor.rules_for(marker) == {"Read sensitive file untrusted"}


def test_directory_traversal_monitored_file_read(sensor, marker):
    py("open('/tmp/../../etc/hostname').read()", marker)
    assert sensor.rules_for(marker) == {"Directory traversal monitored file read"}


def test_plain_etc_read_is_no_traversal(sensor, marker):
    py("open('/tmp/../etc/hostname').read(); open('/etc/hostname').read()", marker)
    assert sensor.rules_for(marker, expect=False) == set()


def test_clear_log_activities(sensor, marker, workdir):
    log = workdir / "syslog"
    log.write_text("old\n")
    py(f"open({str(log)!r}, 'w').close()", marker)  # O_WRONLY|O_CREAT|O_TRUNC
    assert sensor.rules_for(marker) == {"Clear Log Activities"}


def test_appending_to_a_log_is_no_clearing(sensor, marker, workdir):
    log = workdir / "syslog"
    py(f"open({str(log)!r}, 'a').write('x')", marker)
    assert sensor.rules_for(marker, expect=False) == set()


def test_create_symlink_over_sensitive_files(sensor, marker, workdir):
    subprocess.run(["ln", "-s", "/etc/shadow", str(workdir / "link")], check=True)
    assert sensor.rules_for(marker) == {"Create Symlink Over Sensitive Files"}


def test_symlink_to_a_plain_file(sensor, marker, workdir):
    subprocess.run(["ln", "-s", "/etc/hostname", str(workdir / "link")], check=True)
    assert sensor.rules_for(marker, expect=False) == set()


def test_create_hardlink_over_sensitive_files(sensor, marker, workdir):
    link = workdir / "hard"
    subprocess.run(["ln", "/etc/shadow", str(link)], check=False)
    link.unlink(missing_ok=True)
    assert sensor.rules_for(marker) == {"Create Hardlink Over Sensitive Files"}


def test_hardlink_to_a_plain_file(sensor, marker, workdir):
    plain = workdir / "plain"
    plain.write_text("x")
    subprocess.run(["ln", str(plain), str(workdir / "hard")], check=True)
    assert sensor.rules_for(marker, expect=False) == set()


# -- processes ---------------------------------------------------------------------------

def test_run_shell_untrusted(sensor, marker, workdir):
    nginx = alias(workdir, "nginx")
    py(f"import subprocess; subprocess.run(['sh', '-c', ': {marker}'])", "x", exe=nginx)
    assert sensor.rules_for(marker) == {"Run shell untrusted"}


def test_shell_from_an_ordinary_program(sensor, marker, workdir):
    worker = alias(workdir, "worker")
    py(f"import subprocess; subprocess.run(['sh', '-c', ': {marker}'])", "x", exe=worker)
    assert sensor.rules_for(marker, expect=False) == set()


def _spawn_below_sshd(workdir: Path, marker: str, user: str | None) -> None:
    """sshd (a python named so) runs `bash -c ': MARKER'`, optionally as another user."""
    sshd = alias(workdir, "sshd")
    code = "import subprocess, sys; subprocess.run(['bash', '-c', ': ' + sys.argv[1]], user=%r)"
    subprocess.run([sshd, "-c", code % user, marker], check=True, timeout=60, cwd="/")


def test_system_user_interactive(sensor, marker, workdir):
    _spawn_below_sshd(workdir, marker, "nobody")
    assert sensor.rules_for(marker) == {"System user interactive"}


def test_root_below_sshd_is_no_system_user(sensor, marker, workdir):
    _spawn_below_sshd(workdir, marker, None)
    assert sensor.rules_for(marker, expect=False) == set()


def test_search_private_keys_or_passwords(sensor, marker, workdir):
    subprocess.run(["grep", "-r", "BEGIN RSA PRIVATE", str(workdir)], check=False)
    subprocess.run(["find", str(workdir), "-name", "id_rsa"], check=False)
    alerts = sensor.rules_for(marker)
    assert alerts == {"Search Private Keys or Passwords"}
    assert len(sensor.matching(marker)) == 2


def test_grep_for_something_else(sensor, marker, workdir):
    subprocess.run(["grep", "-r", "BEGIN CERTIFICATE", str(workdir)], check=False)
    assert sensor.rules_for(marker, expect=False) == set()


def test_find_aws_credentials(sensor, marker, workdir):
    subprocess.run(["find", str(workdir), "-path", "*/.aws/credentials"], check=False)
    subprocess.run(["grep", "-r", "aws_secret_access_key", str(workdir)], check=False)
    assert sensor.rules_for(marker) == {"Find AWS Credentials"}
    assert len(sensor.matching(marker)) == 2


def test_find_other_files(sensor, marker, workdir):
    subprocess.run(["find", str(workdir), "-name", "credentials.txt"], check=False)
    assert sensor.rules_for(marker, expect=False) == set()


def test_remove_bulk_data_from_disk(sensor, marker, workdir):
    victim = workdir / "data"
    victim.write_bytes(b"x" * 4096)
    subprocess.run(["shred", "-u", str(victim)], check=True)
    assert sensor.rules_for(marker) == {"Remove Bulk Data from Disk"}


def test_rm_is_no_bulk_removal(sensor, marker, workdir):
    victim = workdir / "data"
    victim.write_bytes(b"x")
    subprocess.run(["rm", str(victim)], check=True)
    assert sensor.rules_for(marker, expect=False) == set()


def test_execution_from_dev_shm(sensor, marker):
    exe = Path("/dev/shm") / f"tool_{marker}"
    shutil.copy("/bin/true", exe)
    try:
        subprocess.run([str(exe)], check=True)
    finally:
        exe.unlink()
    assert sensor.rules_for(marker) == {"Execution from /dev/shm"}


def test_execution_from_tmp(sensor, marker, workdir):
    exe = workdir / "tool"
    shutil.copy("/bin/true", exe)
    subprocess.run([str(exe)], check=True)
    assert sensor.rules_for(marker, expect=False) == set()


MEMFD_EXEC = """
import os, sys
fd = os.memfd_create("payload", 0)
os.write(fd, open("/bin/true", "rb").read())
os.execv(f"/proc/self/fd/{fd}", ["payload", sys.argv[1]])
"""


def test_fileless_execution_via_memfd_create(sensor, marker):
    py(MEMFD_EXEC, marker)
    assert sensor.rules_for(marker) == {"Fileless execution via memfd_create"}


def test_exec_from_a_file_is_not_fileless(sensor, marker):
    subprocess.run(["/bin/true", marker], check=True)
    assert sensor.rules_for(marker, expect=False) == set()


# -- ptrace --------------------------------------------------------------------------------

PTRACE = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

/* usage: ptrace_helper attach|peek|traceme MARKER */
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (!strcmp(argv[1], "traceme")) {
        ptrace(PTRACE_TRACEME, 0, 0, 0);
        return 0;
    }
    pid_t child = fork();
    if (child == 0) { pause(); _exit(0); }
    if (!strcmp(argv[1], "attach")) {
        if (ptrace(PTRACE_ATTACH, child, 0, 0) == 0) {
            waitpid(child, NULL, 0);
            ptrace(PTRACE_DETACH, child, 0, 0);
        }
    } else {
        ptrace(PTRACE_PEEKDATA, child, 0, 0);   /* not traced: fails with ESRCH */
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 0;
}
"""


@pytest.fixture(scope="module")
def ptrace_helper(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("ptrace")
    (d / "ptrace_helper.c").write_text(PTRACE)
    exe = d / "ptrace_helper"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(d / "ptrace_helper.c")], check=True)
    return str(exe)


def test_ptrace_attached_to_process(sensor, marker, ptrace_helper):
    subprocess.run([ptrace_helper, "attach", marker], check=True, timeout=30)
    assert sensor.rules_for(marker) == {"PTRACE attached to process"}


def test_ptrace_peek_is_no_attach(sensor, marker, ptrace_helper):
    subprocess.run([ptrace_helper, "peek", marker], check=True, timeout=30)
    assert sensor.rules_for(marker, expect=False) == set()


def test_ptrace_anti_debug_attempt(sensor, marker, ptrace_helper):
    subprocess.run([ptrace_helper, "traceme", marker], check=True, timeout=30)
    assert sensor.rules_for(marker) == {"PTRACE anti-debug attempt"}
