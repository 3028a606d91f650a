"""Long-running child processes that can never outlive their owner.

Each child runs in its own session (hence its own process group), so stopping it also
stops anything it forked. Every started child is registered for an `atexit` stop, and its
pid is written to a pid file: a run that died without `atexit` (SIGKILL, power loss) left
the pid file behind, and the next start on the same work dir ends those leftovers before
it binds its ports or opens the etcd data dir.

`Supervisor` watches started children for a long run (the all-in-one): a child that
exited is started again after a backoff (1, 2, 4, ... 30 s; logged), and one that keeps
exiting (more than `Backoff.max_restarts` times within `Backoff.window_s`) ends the run
with a reason naming it and its log's last lines, so a run is never silently half alive.
Polling a child also reaps it: a dead component never lingers as `<defunct>`.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: How long a child gets to exit after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0

#: The children started and not yet stopped, oldest first (keyed by id()).
_live: dict[int, Child] = {}
_live_lock = threading.Lock()


class Child:
    """One supervised command, logging to a file, with a pid file next to it."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, pid_file: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.pid_file = pid_file
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the command; its output (stdout and stderr) goes to the log file."""
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        with _live_lock:
            _live[id(self)] = self

    @property
    def pid(self) -> int | None:
        """The process id, or None before start."""
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """None while running (or never started), else the exit status."""
        return None if self._process is None else self._process.poll()

    def running(self) -> bool:
        """Whether the command was started and has not exited (polls, so never stale)."""
        return self._process is not None and self._process.poll() is None

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the whole process group, SIGKILL it after `grace` seconds; idempotent."""
        process = self._process
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
            # The leader is gone; anything it forked into its group goes too.
            _signal_group(process.pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        with _live_lock:
            _live.pop(id(self), None)

    def log_tail(self, lines: int = 25) -> str:
        """The last `lines` lines of the log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class Backoff:
    """How a Supervisor restarts a child: the first restart after `first_s` seconds,
    each following one `factor` times later, at most `cap_s`; a child that ran
    `stable_s` seconds starts over at `first_s`. More than `max_restarts` restarts within
    `window_s` seconds and the supervisor gives up on it."""

    first_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 30.0
    stable_s: float = 60.0
    max_restarts: int = 5
    window_s: float = 300.0


@dataclass
class _Watched:
    """A supervised child and its restart history (monotonic seconds)."""

    child: Child
    started_at: float
    delay_s: float = 0.0
    due_at: float | None = None
    restarts: list[float] = field(default_factory=list)


class SupervisorGaveUp(RuntimeError):
    """A child kept exiting (or could not be started again); the message says which,
    how often, and its log's last lines."""


class Supervisor:
    """Restart exited children with backoff; `check()` once in a while (e.g. a second).

    `say` receives one line per event ("kube-apiserver exited with status -9; restarting
    in 1 s", "kube-apiserver restarted (pid 123, restart 1 of at most 5 in 300 s)").
    """

    def __init__(self, say: Callable[[str], None], backoff: Backoff = Backoff(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.backoff = backoff
        self._clock = clock
        self._watched: list[_Watched] = []

    def watch(self, child: Child) -> None:
        """Supervise a started child from now on."""
        self._watched.append(_Watched(child, self._clock()))

    def forget(self, child: Child) -> None:
        """Stop supervising `child` (before stopping it on purpose)."""
        self._watched = [w for w in self._watched if w.child is not child]

    def restarts(self, name: str) -> int:
        """How many times the child called `name` was restarted (within the window)."""
        return sum(len(w.restarts) for w in self._watched if w.child.name == name)

    def check(self) -> None:
        """Restart every exited child whose backoff has passed; raises SupervisorGaveUp
        when one exited too often or cannot be started."""
        now = self._clock()
        for watched in self._watched:
            code = watched.child.exit_code()
            if code is None:
                continue
            if watched.due_at is None:
                self._schedule(watched, code, now)
            elif now >= watched.due_at:
                self._restart(watched, now)

    def _schedule(self, watched: _Watched, code: int, now: float) -> None:
        b, child = self.backoff, watched.child
        watched.restarts = [t for t in watched.restarts if now - t < b.window_s]
        if len(watched.restarts) >= b.max_restarts:
            raise SupervisorGaveUp(
                f"{child.name} exited with status {code}, its {len(watched.restarts) + 1}th exit "
                f"within {b.window_s:.0f}s; giving up. Last lines of {child.log}:\n{child.log_tail()}")
        ran_s = now - watched.started_at
        watched.delay_s = (b.first_s if ran_s >= b.stable_s or not watched.delay_s
                           else min(watched.delay_s * b.factor, b.cap_s))
        watched.due_at = now + watched.delay_s
        self.say(f"!!  {child.name} exited with status {code} after {ran_s:.0f}s; restarting in "
                 f"{watched.delay_s:.0f}s (log: {child.log})")

    def _restart(self, watched: _Watched, now: float) -> None:
        child = watched.child
        try:
            child.start()
        except OSError as error:
            raise SupervisorGaveUp(f"{child.name} could not be started again: {error}") from error
        watched.restarts.append(now)
        watched.started_at, watched.due_at = now, None
        self.say(f"    {child.name} restarted (pid {child.pid}; restart {len(watched.restarts)} of at "
                 f"most {self.backoff.max_restarts} in {self.backoff.window_s:.0f}s)")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group that may already be gone (stopping twice is harmless)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def end_leftovers(pid_dir: Path, marker: str) -> list[int]:
    """Kill the process groups recorded in `pid_dir` by an earlier run that died.

    A pid is only trusted when its command line still contains `marker` (the work dir):
    after a reboot the same pid may belong to an unrelated process. Returns the pids
    killed.
    """
    killed: list[int] = []
    for pid_file in sorted(pid_dir.glob("*.pid")):
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ValueError):
            cmdline = b""
            pid = 0
        if pid > 0 and marker.encode() in cmdline:
            _signal_group(pid, signal.SIGKILL)
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    for pid in killed:
        _wait_gone(pid)
    return killed


def _wait_gone(pid: int, timeout: float = STOP_GRACE_SECONDS) -> None:
    """Wait until `pid` has exited (init reaps it), so its ports and files are free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.05)


def _stop_all() -> None:
    """The atexit hook: stop every child still running, newest first."""
    with _live_lock:
        children = list(_live.values())
    for child in reversed(children):
        child.stop(grace=2.0)


atexit.register(_stop_all)
