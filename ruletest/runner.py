"""Run rule tests for real: one sensor for the whole run, the tests one after another.

The runner loads the rules with the engine (a suite naming a rule that is not loaded is
an error before anything runs), then starts `falconer sensor --json` on the rules plus
an *overlay* file that (1) appends `proc.pid` and `proc.apid` (every ancestor's pid)
to each rule's output, and (2) adds a barrier rule that fires when a test's setup
process opens its barrier file. An alert belongs to a test when the test's setup
process is the alerting process or one of its ancestors, so unrelated activity on the
host (or another test) is never mistaken for it. The barrier alert marks the end of a
test: the sensor handles events in order, so by then every alert of the test has been
printed, and a near miss is proven without waiting on a timer (before the first test
the runner waits for a barrier of its own: a fresh sensor on a busy host can lag at
first). Events the sensor lost
during a test (its drop alert) make that test an error: neither outcome is proven.

Rules are matched with `rule_matching: all`, so each rule is tested on its own
condition, whatever rules come before it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from falconer.engine import Engine, LoadResult
from falconer.ruletest import actor, pods
from falconer.ruletest.suite import RuleTest, substitute
from falconer.sensor.alerts import DROP_RULE
from falconer.sensor.runner import CHECK_EVERY_S, POLL_MS

BARRIER_RULE = "Falconer rule test barrier"
SETUP_NAME = "ruletest-setup"
SENSOR_START_TIMEOUT_S = 90.0
BARRIER_TIMEOUT_S = 10.0
#: How long a fresh sensor may take to report its first barrier (`Runner._warm_up`).
WARM_UP_TIMEOUT_S = 90.0
ACTOR_TIMEOUT_S = 120.0
#: 64 MiB of ring buffer: a test run must ride out bursts of other work on the host.
DEFAULT_BUFFER_PAGES = 16384
#: Seconds to wait before a second attempt (times the attempts made so far).
RETRY_PAUSE_S = 2.0
#: A test that did not pass (failed, or lost events made it unprovable) runs again, up
#: to this many times in all.
MAX_ATTEMPTS = 4
#: How long after a test's last event the sensor has surely reported its losses: it
#: checks the kernel's counters every CHECK_EVERY_S, between polls of POLL_MS.
LOSS_REPORT_S = CHECK_EVERY_S + 3 * POLL_MS / 1000
#: Where a test's folders live by default: not under /tmp or /var/tmp, which rules about
#: programs run from temporary folders watch.
DEFAULT_BASE = Path("/var/lib/falconer/ruletest")
CGROUP_PARENT = "falconer-ruletest"
#: Why a pod test cannot run without a cluster.
POD_NEEDS_CLUSTER = ("an in-pod context needs a cluster with a node on this host: "
                     "falconer test --kubeconfig FILE")


@dataclass
class Result:
    """One test's outcome: status "pass", "fail" or "error" with the reason."""

    test: RuleTest
    status: str
    reason: str = ""
    seconds: float = 0.0
    alerts: list[dict[str, object]] = field(default_factory=list)
    lost: bool = False          # the sensor lost events during the test
    attempts: int = 1


class RunError(RuntimeError):
    """The run cannot start (rules with errors, no sensor, no eBPF)."""


def load_rules(rules: list[Path]) -> tuple[LoadResult, list[str]]:
    """The load result of `rules` and the names of the rules they define."""
    engine = Engine()
    result = engine.load(rules)
    names = [r.name for r in engine.ruleset.rules] if engine.ruleset is not None else []
    return result, names


def overlay_text(rule_names: list[str], barrier_dir: str) -> str:
    """The overlay rules file: attribution fields on every rule, and the barrier rule."""
    items: list[dict[str, object]] = [
        {"rule": name, "output": "proc.pid=%proc.pid proc.apid=%proc.apid "
         "container.id=%container.id", "override": {"output": "append"}}
        for name in rule_names
    ]
    items.append({
        "rule": BARRIER_RULE,
        "desc": "Marks the end of one rule test (falconer test only).",
        "condition": f"evt.type in (open, openat, openat2) and (fd.name startswith "
                     f"{barrier_dir}/ or fd.name startswith {pods.BARRIER_PREFIX})",
        "output": "rule test barrier %fd.name proc.pid=%proc.pid container.id=%container.id",
        "priority": "DEBUG", "tags": ["falconer_test"],
    })
    return yaml.safe_dump(items, sort_keys=False, width=1000)


class SensorSession:
    """`falconer sensor --json` on the rules plus the overlay; alerts kept in order."""

    def __init__(self, rules: list[Path], overlay: Path, buffer_pages: int) -> None:
        env = dict(os.environ, PYTHONSAFEPATH="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "falconer", "sensor", "--json", "-o", "rule_matching=all",
             "--buffer-pages", str(buffer_pages), "--rules", *map(str, rules), str(overlay)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd="/")
        self.alerts: list[dict[str, object]] = []
        self.stderr: list[str] = []
        self.unparsed = 0
        self._cond = threading.Condition()
        self._ready = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        if not self._ready.wait(SENSOR_START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RunError("the sensor did not start:\n" + "".join(self.stderr))

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                alert = json.loads(line)
            except json.JSONDecodeError:
                self.unparsed += 1
                continue
            with self._cond:
                self.alerts.append(alert)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "watching" in line:
                self._ready.set()
        self._ready.set()

    def wait_for(self, pred: Callable[[dict[str, object]], bool], start: int,
                 timeout_s: float) -> bool:
        """Whether an alert from index `start` on satisfies `pred` within the timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                if any(pred(a) for a in self.alerts[start:]):
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return False
                self._cond.wait(left)

    def stop(self) -> str:
        """SIGTERM the sensor and return its stderr (the summary)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        time.sleep(0.1)
        return "".join(self.stderr)


def _field(alert: dict[str, object], key: str) -> object:
    fields = alert.get("output_fields")
    return fields.get(key) if isinstance(fields, dict) else None


def _pids(alert: dict[str, object]) -> set[int]:
    fields = alert.get("output_fields")
    if not isinstance(fields, dict):
        return set()
    words = [str(fields.get("proc.pid")), *str(fields.get("proc.apid") or "").split()]
    return {int(w) for w in words if w.isdigit()}


def _cgroup_root() -> Path:
    """A writable cgroup hierarchy: the v2 one, else v1's pids controller."""
    mounts: dict[str, str] = {}
    with open("/proc/self/mounts", encoding="utf-8") as f:
        for line in f:
            dev, point, fstype, opts, *_ = line.split()
            if fstype == "cgroup2":
                mounts.setdefault("cgroup2", point)
            elif fstype == "cgroup" and "pids" in opts.split(","):
                mounts.setdefault("pids", point)
    for key in ("cgroup2", "pids"):
        if key in mounts:
            return Path(mounts[key])
    raise RunError("container contexts need a cgroup2 or v1 pids hierarchy; none is mounted")


class Runner:
    """Runs tests against one sensor session; `run()` yields one Result per test."""

    def __init__(self, rules: list[Path], base: Path = DEFAULT_BASE,
                 buffer_pages: int = DEFAULT_BUFFER_PAGES,
                 cluster: pods.Cluster | None = None) -> None:
        self.rules = [p.absolute() for p in rules]
        self.cluster = cluster
        self.buffer_pages = buffer_pages
        base.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="run-", dir=base))
        self.dir.chmod(0o755)
        self.barriers = self.dir / "barriers"
        self.barriers.mkdir(mode=0o755)
        self.links = self.dir / "links"
        self.links.mkdir(mode=0o755)
        self.python = os.path.realpath(sys.executable)
        self.rule_names: list[str] = []
        self.summary = ""               # the sensor's own summary, once it has stopped
        self._cgroups_used = False

    @contextmanager
    def session(self) -> Iterator[SensorSession]:
        """Load the rules (RunError on errors), start the sensor, clean up at the end."""
        result, self.rule_names = load_rules(self.rules)
        if result.errors:
            raise RunError("the rules have errors:\n" + "\n".join(
                f"  {d.file}:{d.line}:{d.column}: {d.code}: {d.message}" for d in result.errors))
        overlay = self.dir / "zz_falconer_test_overlay.yaml"
        overlay.write_text(overlay_text(self.rule_names, str(self.barriers)), encoding="utf-8")
        sensor = SensorSession(self.rules, overlay, self.buffer_pages)
        try:
            self._warm_up(sensor)
            yield sensor
        finally:
            self.summary = sensor.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self._cgroups_used:
                _remove_cgroup(_cgroup_root() / CGROUP_PARENT)

    def _warm_up(self, sensor: SensorSession) -> None:
        """Return once the sensor reports an open of a barrier file by this process: on a
        busy host a fresh sensor may lag its first events by more than a test's barrier
        wait. The open is repeated every BARRIER_TIMEOUT_S (a lost event is no proof);
        RunError when none is reported within WARM_UP_TIMEOUT_S."""
        path = str(self.barriers / "warm-up")
        start = len(sensor.alerts)
        deadline = time.monotonic() + WARM_UP_TIMEOUT_S
        while time.monotonic() < deadline:
            with open(path, "w", encoding="utf-8"):
                pass
            if self._setup_pid(sensor, path, start) is not None:
                return
        raise RunError(f"the sensor reported no event within {WARM_UP_TIMEOUT_S:.0f} s:\n"
                       + "".join(sensor.stderr[-5:]))

    def run(self, tests: list[RuleTest], sensor: SensorSession) -> Iterator[Result]:
        """Each test in turn (the sensor must be running)."""
        for index, test in enumerate(tests):
            started = time.monotonic()
            result = self._run_one(index, test, sensor)
            # A lost event explains a missing alert or barrier, and once the sensor
            # throttles its drop reports a loss may go unreported: a test that did not
            # pass runs again. A rule that is really wrong fails every attempt.
            while result.status != "pass" and result.attempts < MAX_ATTEMPTS and (
                    result.lost or result.status == "fail"):
                attempts = result.attempts + 1
                time.sleep(RETRY_PAUSE_S * result.attempts)  # let a burst of host activity pass
                result = self._run_one(index, test, sensor)
                result.attempts = attempts
            result.seconds = time.monotonic() - started
            yield result

    def _run_one(self, index: int, test: RuleTest, sensor: SensorSession) -> Result:
        if test.rule is not None and test.rule not in self.rule_names:
            return Result(test, "error", f"rule {test.rule!r} is not in the loaded rules")
        if sensor.proc.poll() is not None:
            return Result(test, "error", "the sensor has exited:\n" + "".join(sensor.stderr[-5:]))
        nonce = "rt" + uuid.uuid4().hex[:10]
        if test.context.pod is not None:
            if self.cluster is None:
                return Result(test, "error", POD_NEEDS_CLUSTER)
            return self._run_in_pod(test, sensor, self.cluster, nonce)
        workdir = self.dir / f"t{index:03d}-{nonce}"
        workdir.mkdir(mode=0o755)
        ctx = test.context
        if ctx.uid:
            os.chown(workdir, ctx.uid, ctx.gid)
        cgroup = ""
        if ctx.container:
            self._cgroups_used = True
            cid = hashlib.sha256(nonce.encode()).hexdigest()
            cgroup = str(_cgroup_root() / CGROUP_PARENT / f"cri-containerd-{cid}.scope")
        for name in {SETUP_NAME, *ctx.chain}:
            link = self.links / name
            if not link.exists():
                link.symlink_to(self.python)
        barrier = str(self.barriers / nonce)
        plan = actor.Plan(
            actor=actor.__file__, links=str(self.links), chain=ctx.chain,
            uid=ctx.uid, gid=ctx.gid, workdir=str(workdir), nonce=nonce, barrier=barrier,
            cgroup=cgroup, tmpfs=list(ctx.tmpfs), addresses=list(ctx.network),
            steps=[actor.Step(kind=s["kind"], args=substitute(s["args"], str(workdir), nonce))
                   for s in test.steps])
        plan_file = self.dir / f"plan-{nonce}.json"
        plan_file.write_text(json.dumps(plan), encoding="utf-8")
        plan_file.chmod(0o644)
        start = len(sensor.alerts)
        try:
            return self._judge(test, sensor, plan_file, barrier, start, str(workdir), nonce)
        finally:
            if cgroup:
                _remove_cgroup(Path(cgroup))
            shutil.rmtree(workdir, ignore_errors=True)

    def _judge(self, test: RuleTest, sensor: SensorSession, plan_file: Path, barrier: str,
               start: int, workdir: str, nonce: str) -> Result:
        try:
            done = subprocess.run(
                [str(self.links / SETUP_NAME), "-I", actor.__file__, str(plan_file)],
                capture_output=True, text=True, timeout=ACTOR_TIMEOUT_S, cwd=workdir,
                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Result(test, "error", f"the steps did not finish in {ACTOR_TIMEOUT_S:.0f} s")
        root = self._setup_pid(sensor, barrier, start)
        if done.returncode != 0:
            return Result(test, "error", done.stderr.strip() or f"exit {done.returncode}")
        if root is None:
            return Result(test, "error", f"no barrier alert within {BARRIER_TIMEOUT_S:.0f} s "
                          "(the sensor lost it, or is not keeping up)", lost=True)
        ours = [a for a in sensor.alerts[start:]
                if a.get("rule") != BARRIER_RULE and root in _pids(a)]
        return self._checked(test, sensor, ours, start, workdir, nonce)

    def _checked(self, test: RuleTest, sensor: SensorSession, ours: list[dict[str, object]],
                 start: int, workdir: str, nonce: str) -> Result:
        """The verdict on the test's alerts, unless lost events leave it unproven."""
        result = _verdict(test, ours, workdir, nonce)
        fired = any(test.rule is None or a.get("rule") == test.rule for a in ours)
        if not fired:
            # An alert that came is proof either way; the absence of one is not when
            # records were lost. The sensor reports losses once a second, maybe after
            # the barrier: wait for that report before calling the absence a result.
            time.sleep(LOSS_REPORT_S)
            if _lost(sensor, start):
                return Result(test, "error", "the sensor lost events during this test, so "
                              f"its outcome is not proven ({result.reason or 'no alert'})",
                              alerts=ours, lost=True)
        return result

    def _run_in_pod(self, test: RuleTest, sensor: SensorSession, cluster: pods.Cluster,
                    nonce: str) -> Result:
        """One test in a fresh pod; alerts attributed by the pod's container id."""
        assert test.context.pod is not None
        name = f"falconer-ruletest-{nonce}"
        barrier = pods.BARRIER_PREFIX + nonce
        workdir = "/tmp"
        try:
            pod = test.context.pod
            cid = cluster.start_pod(name, pod.image, pod.privileged)[:12]
            time.sleep(LOSS_REPORT_S)  # losses while the node started the pod are not ours
            start = len(sensor.alerts)
            steps = [actor.Step(kind=s["kind"], args=substitute(s["args"], workdir, nonce))
                     for s in test.steps]
            code, why = cluster.run_steps(name, steps, barrier)
        except (pods.PodError, subprocess.SubprocessError, OSError) as exc:
            return Result(test, "error", str(exc))
        finally:
            cluster.delete_pod(name)
        if self._setup_pid(sensor, barrier, start) is None:
            return Result(test, "error", f"no barrier alert within {BARRIER_TIMEOUT_S:.0f} s "
                          "(the sensor lost it, or is not keeping up)", lost=True)
        if code != 0:
            return Result(test, "error", why)
        ours = [a for a in sensor.alerts[start:] if a.get("rule") != BARRIER_RULE
                and _field(a, "container.id") == cid]
        return self._checked(test, sensor, ours, start, workdir, nonce)

    def _setup_pid(self, sensor: SensorSession, barrier: str, start: int) -> int | None:
        """The setup process's pid, from its barrier alert (None: no barrier seen)."""
        def is_barrier(a: dict[str, object]) -> bool:
            fields = a.get("output_fields")
            return (a.get("rule") == BARRIER_RULE and isinstance(fields, dict)
                    and fields.get("fd.name") == barrier)
        if not sensor.wait_for(is_barrier, start, BARRIER_TIMEOUT_S):
            return None
        alert = next(a for a in sensor.alerts[start:] if is_barrier(a))
        pid = alert["output_fields"]["proc.pid"]  # type: ignore[index]
        return int(pid)


def _lost(sensor: SensorSession, start: int) -> bool:
    """Whether the sensor reported lost events since alert index `start`."""
    return any(a.get("rule") == DROP_RULE for a in sensor.alerts[start:])


def _verdict(test: RuleTest, ours: list[dict[str, object]], workdir: str,
             nonce: str) -> Result:
    """Compare the test's alerts with its expectation."""
    fired = [a for a in ours if test.rule is None or a.get("rule") == test.rule]
    exp = test.expect
    if not exp.alert:
        if fired:
            names = sorted({str(a.get("rule")) for a in fired})
            return Result(test, "fail", "near miss raised: " + "; ".join(names), alerts=ours)
        return Result(test, "pass", alerts=ours)
    if not fired:
        others = sorted({str(a.get("rule")) for a in ours})
        return Result(test, "fail", "no alert" + (f" (other rules: {'; '.join(others)})"
                                                  if others else ""), alerts=ours)
    wanted = {k: substitute(v, workdir, nonce) for k, v in exp.output_fields.items()}
    problems = []
    for a in fired:
        p = _mismatch(a, exp.priority, wanted)
        if not p:
            return Result(test, "pass", alerts=ours)
        problems.append(p)
    return Result(test, "fail", problems[0], alerts=ours)


def _mismatch(alert: dict[str, object], priority: str | None,
              wanted: dict[str, str]) -> str:
    """What differs between one alert and the expectation ("" when it matches)."""
    if priority is not None and str(alert.get("priority", "")).upper() != priority:
        return f"priority {alert.get('priority')}, expected {priority}"
    fields = alert.get("output_fields")
    fields = fields if isinstance(fields, dict) else {}
    for key, pattern in wanted.items():
        if key not in fields:
            return f"{key} is not in the rule's output"
        value = fields[key]
        text = "<NA>" if value is None else str(value)
        if not fnmatch.fnmatchcase(text, pattern):
            return f"{key}={text!r}, expected {pattern!r}"
    return ""


def _remove_cgroup(path: Path) -> None:
    """rmdir the test's container cgroup once its processes are gone (a few tries)."""
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
