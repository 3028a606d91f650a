"""The processes a rule test runs as: its context (container cgroup, namespaces, user,
parent chain) and its steps (shell commands and named system calls).

`falconer test` (the runner) starts this file as a script, once per test, through a
symlink whose name becomes the process name (the kernel's `comm`, Falco's `proc.name`,
is the basename of the executed path). The first process is the test's *setup* process:
as root it joins a fresh container cgroup, creates the private mount and network
namespaces the context asks for, then starts the parent chain, each link again this
script through a symlink named after that ancestor, under the context's user. The
innermost link is the test's process: it performs the steps. When the chain has ended,
the setup process opens the test's *barrier* file; the runner's barrier rule reports
that open, and since the sensor handles events in order, every alert the test caused
has been printed before it.

This file is run with `python -I` and imports only the standard library: a symlinked
interpreter outside the virtual environment cannot import `falconer`. The runner
imports it for the plan's types, so both sides share one definition of the plan.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any, TypedDict

#: Linux constants (uapi headers: sched.h, mount.h, ptrace.h, bpf.h; x86_64 numbers).
CLONE_NEWNS = 0x00020000
NAMESPACE_FLAGS: dict[str, int] = {
    "mnt": CLONE_NEWNS, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
    "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000,
}
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PTRACE_REQUESTS: dict[str, int] = {"traceme": 0, "attach": 16, "seize": 0x4206}
PTRACE_DETACH = 17
SYS_BPF = 321
SYS_FINIT_MODULE = 313
BPF_PROG_LOAD = 5
BPF_PROG_TYPE_SOCKET_FILTER = 1
#: `r0 = 0; exit`: the smallest program the verifier accepts.
BPF_RETURN_ZERO = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
OPEN_MODES: dict[str, int] = {
    "read": os.O_RDONLY,
    "write": os.O_WRONLY | os.O_CREAT,
    "append": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "truncate": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "create": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


class Step(TypedDict):
    """One step: `kind` is a key of `STEPS` (or "run"), `args` its parameters."""

    kind: str
    args: dict[str, Any]


class Plan(TypedDict):
    """Everything one test's processes need; written by the runner as JSON.

    `chain` is the process names from the outermost parent to the test's process;
    `links` is a folder of symlinks to the interpreter, one per name. `cgroup` is the
    folder of the container cgroup to join ("" on the host), `tmpfs` the paths to hide
    under fresh tmpfs in a private mount namespace, `addresses` the addresses to give
    the loopback device of a fresh network namespace (none: stay in the host's).
    """

    actor: str
    links: str
    chain: list[str]
    uid: int
    gid: int
    workdir: str
    nonce: str
    barrier: str
    cgroup: str
    tmpfs: list[str]
    addresses: list[str]
    steps: list[Step]


#: The setup process's argument after it has joined its container cgroup.
JOINED = "joined"


class StepError(Exception):
    """A step could not be carried out (the message says which and why)."""


_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise StepError(f"{what}: {os.strerror(err)}")
    return ret


def _in_child(fn: Any, *args: Any) -> None:
    """Run `fn` in a forked child (namespace and credential changes must not stick to
    this process); raise StepError with the child's reason when it fails."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fn(*args)
            code = 0
        except (StepError, OSError) as exc:
            os.write(w, str(exc).encode())
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        reason = f.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise StepError(reason or f"child exited with {status}")


# -- named system calls --------------------------------------------------------------------

def step_open(plan: Plan, path: str, mode: str = "read") -> None:
    """open(2) `path` (read, write, append, truncate, create) and close it."""
    os.close(os.open(path, OPEN_MODES[mode] | os.O_CLOEXEC, 0o644))


def step_connect(plan: Plan, address: str, port: int, proto: str = "tcp") -> None:
    """connect(2) to address:port (TCP waits up to 2 s for the handshake)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(2.0)
        try:
            s.connect((address, port))
        except OSError as exc:
            raise StepError(f"connect {address}:{port}: {exc}") from exc


_listeners: list[socket.socket] = []


def step_listen(plan: Plan, address: str, port: int) -> None:
    """A TCP listener on address:port, open until the test's process ends."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(8)
    _listeners.append(s)


def step_exec(plan: Plan, path: str, name: str = "", args: list[str] | None = None,
              check: bool = True) -> None:
    """Run `path` with `args` as a child; with `name`, through a symlink of that name."""
    exe = path
    if name:
        exe = os.path.join(plan["workdir"], "bin", name)
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        if not os.path.lexists(exe):
            os.symlink(path, exe)
    done = subprocess.run([exe, *(args or [])], check=False, env=_env(plan),
                          cwd=plan["workdir"], stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise StepError(f"exec {exe}: exit status {done.returncode}")


def step_ptrace(plan: Plan, request: str = "attach") -> None:
    """ptrace(2) a child of ours (attach/seize, then detach), or `traceme` in a child."""
    libc_ptrace = _libc.ptrace
    libc_ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    if request == "traceme":
        _in_child(lambda: _check(libc_ptrace(0, 0, None, None), "ptrace(PTRACE_TRACEME)"))
        return
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    try:
        _check(libc_ptrace(PTRACE_REQUESTS[request], pid, None, None), f"ptrace({request})")
        if request == "attach":
            os.waitpid(pid, 0)
        libc_ptrace(PTRACE_DETACH, pid, None, None)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def step_memfd_exec(plan: Plan, path: str = "/bin/true", name: str = "payload",
                    args: list[str] | None = None) -> None:
    """Copy `path` into a memfd_create(2) file and execve(2) it as /proc/self/fd/N."""
    fd = os.memfd_create(name, 0)
    try:
        with open(path, "rb") as src:
            os.write(fd, src.read())
        pid = os.fork()
        if pid == 0:
            try:
                os.execve(f"/proc/self/fd/{fd}", [name, *(args or [])], _env(plan))
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise StepError(f"memfd exec of {path}: exit status {status}")
    finally:
        os.close(fd)


def step_setns(plan: Plan, namespace: str, pid: int = 0) -> None:
    """setns(2) into process `pid`'s namespace (in a child); pid 0: this process's
    parent (the same namespace: harmless, and always permitted)."""
    target = pid or os.getppid()

    def enter() -> None:
        fd = os.open(f"/proc/{target}/ns/{namespace}", os.O_RDONLY)
        _check(_libc.setns(fd, NAMESPACE_FLAGS[namespace]), f"setns({namespace} of {target})")
    _in_child(enter)


def step_unshare(plan: Plan, namespaces: list[str]) -> None:
    """unshare(2) the given namespaces (in a child)."""
    flags = 0
    for ns in namespaces:
        flags |= NAMESPACE_FLAGS[ns]
    _in_child(lambda: _check(_libc.unshare(flags), f"unshare({', '.join(namespaces)})"))


def step_setuid(plan: Plan, uid: int) -> None:
    """setuid(2) to `uid` (in a child)."""
    _in_child(os.setuid, uid)


def step_bpf_prog_load(plan: Plan) -> None:
    """bpf(BPF_PROG_LOAD) of a two-instruction socket filter; the program is closed."""
    insns = ctypes.create_string_buffer(BPF_RETURN_ZERO, len(BPF_RETURN_ZERO))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(struct.pack(
        "<IIQQIIQII", BPF_PROG_TYPE_SOCKET_FILTER, len(BPF_RETURN_ZERO) // 8,
        ctypes.addressof(insns), ctypes.addressof(license_), 0, 0, 0, 0, 0), 128)
    _libc.syscall.restype = ctypes.c_long
    fd = _check(_libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, 128), "bpf(BPF_PROG_LOAD)")
    os.close(fd)


def step_finit_module(plan: Plan, path: str) -> None:
    """finit_module(2) on `path`: an attempt; the kernel's refusal (no valid module, or
    no CAP_SYS_MODULE) is expected and not an error of the step."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc.syscall(SYS_FINIT_MODULE, fd, b"", 0)
    finally:
        os.close(fd)


def step_sleep(plan: Plan, seconds: float) -> None:
    """Wait (for rules about process age)."""
    time.sleep(seconds)


def step_run(plan: Plan, command: str, check: bool = True) -> None:
    """`/bin/sh -c command` as a child, with $WORKDIR and $NONCE set."""
    done = subprocess.run(["/bin/sh", "-c", command], check=False, env=_env(plan),
                          cwd=plan["workdir"], stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise StepError(f"run {command!r}: exit status {done.returncode}")


#: Step kind -> implementation; the suite reader validates arguments against these.
STEPS: dict[str, Any] = {
    "run": step_run, "open": step_open, "connect": step_connect, "listen": step_listen,
    "exec": step_exec, "ptrace": step_ptrace, "memfd_exec": step_memfd_exec,
    "setns": step_setns, "unshare": step_unshare, "setuid": step_setuid,
    "bpf_prog_load": step_bpf_prog_load, "finit_module": step_finit_module,
    "sleep": step_sleep,
}


# -- context ---------------------------------------------------------------------------

def _env(plan: Plan) -> dict[str, str]:
    return {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": plan["workdir"], "WORKDIR": plan["workdir"], "NONCE": plan["nonce"],
            "LANG": "C.UTF-8"}


def join_container(cgroup: str) -> None:
    """Move this process into the container cgroup folder `cgroup` (created here)."""
    os.makedirs(cgroup, exist_ok=True)
    with open(os.path.join(cgroup, "cgroup.procs"), "w", encoding="ascii") as f:
        f.write(str(os.getpid()))


def private_tmpfs(paths: list[str]) -> None:
    """A private mount namespace with a fresh tmpfs on each of `paths`."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(mnt)")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for path in paths:
        _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"mode=0755"),
               f"mount tmpfs on {path}")


def private_network(addresses: list[str]) -> None:
    """A fresh network namespace whose loopback device is up and has `addresses`."""
    _check(_libc.unshare(NAMESPACE_FLAGS["net"]), "unshare(net)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for addr in addresses:
        prefix = "/128" if ":" in addr else "/32"
        subprocess.run(["ip", "addr", "add", addr + prefix, "dev", "lo"], check=True)


def setup(plan: Plan, joined: bool) -> int:
    """The setup process: context, then the chain; the barrier in any case. Exit 2
    when the context could not be made."""
    try:
        if plan["cgroup"] and not joined:
            join_container(plan["cgroup"])
            # Exec again: a sensor reads a process's container at exec, and every
            # descendant inherits what it read for this long-lived process (a child as
            # short-lived as /bin/true may be gone before the sensor can look at it).
            os.execv(sys.executable, [sys.executable, "-I", plan["actor"], sys.argv[1], JOINED])
        if plan["tmpfs"]:
            private_tmpfs(plan["tmpfs"])
        if plan["addresses"]:
            private_network(plan["addresses"])
        return _spawn(plan, 0)
    except (StepError, OSError, subprocess.SubprocessError) as exc:
        print(f"context: {exc}", file=sys.stderr)
        return 2
    finally:
        os.close(os.open(plan["barrier"], os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _spawn(plan: Plan, level: int) -> int:
    """Start chain link `level` (this script, named after it) and wait for it."""
    exe = os.path.join(plan["links"], plan["chain"][level])
    as_user: dict[str, Any] = {}
    if level == 0 and plan["uid"] != 0:
        as_user = {"user": plan["uid"], "group": plan["gid"], "extra_groups": []}
    done = subprocess.run([exe, "-I", plan["actor"], sys.argv[1], str(level)], check=False,
                          cwd=plan["workdir"], env=_env(plan), **as_user)
    return done.returncode


def link(plan: Plan, level: int) -> int:
    """One link of the chain: the next one, or (the last) the steps."""
    if level + 1 < len(plan["chain"]):
        return _spawn(plan, level + 1)
    for i, step in enumerate(plan["steps"]):
        try:
            STEPS[step["kind"]](plan, **step["args"])
        except (StepError, OSError, subprocess.SubprocessError) as exc:
            print(f"step {i + 1} ({step['kind']}): {exc}", file=sys.stderr)
            return 1
    return 0


def main() -> int:
    """`actor.py PLAN.json [joined]` (setup) or `actor.py PLAN.json LEVEL` (a link)."""
    with open(sys.argv[1], encoding="utf-8") as f:
        plan: Plan = json.load(f)
    if len(sys.argv) > 2 and sys.argv[2] != JOINED:
        return link(plan, int(sys.argv[2]))
    return setup(plan, joined=sys.argv[2:] == [JOINED])


if __name__ == "__main__":
    sys.exit(main())
