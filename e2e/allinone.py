"""The all-in-one demo (`./dev run`): the whole Falconer loop on one host, for real.

It starts the local control plane, installs the CRDs and the RBAC manifests, runs the
operator, applies Falconer's default rules as FalcoRules and a default FalcoInstance,
and then plays the DaemonSet pod's part on this host (there is no kubelet): the kubelet
stand-in projects the instance's ConfigMap into a folder the way a ConfigMap volume is
updated, and `falconer sensor --config <folder>/falconer.yaml` runs as root here. Edit a
FalcoRule with kubectl and the sensor reloads it; Ctrl-C stops sensor, operator and
control plane, in that order.

Everything lives in one work dir, reused by the next run: `controlplane/` (etcd data,
PKI, admin.kubeconfig), `volume/` (the projected ConfigMap), `logs/` and `run/`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from falconer import paths
from falconer.e2e import binaries, processes
from falconer.e2e.controlplane import ControlPlane, ControlPlaneError
from falconer.e2e.kubelet_standin import KubeletStandIn, node_name

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_WORK_DIR = Path("/var/lib/falconer/demo")
OPERATOR_RBAC = paths.ROOT / "operator" / "manifests" / "rbac.yaml"
#: Only processes whose command line contains this are ended as leftovers of a dead run.
LEFTOVER_MARKER = "falconer"
#: How long each waiting step may take before the demo gives up with a reason.
STEP_TIMEOUT_S = 90.0
READY_BANNER = "falconer all-in-one is running"


class AllInOneError(RuntimeError):
    """A step failed; the message says which and why (with a log to read)."""


@dataclass(frozen=True)
class Settings:
    """What the all-in-one sets up."""

    work_dir: Path = DEFAULT_WORK_DIR
    namespace: str = "falconer"
    instance: str = "default"


def say(msg: str) -> None:
    """A progress line (stdout, flushed: the sensor's alerts share the stream)."""
    print(msg, flush=True)


def default_rules() -> list[tuple[str, Path]]:
    """(FalcoRule name, file) for each default rules file, in load order."""
    return [(p.stem.replace("_", "-").lower(), p) for p in paths.default_rules_files()]


def instance_manifest(settings: Settings) -> dict[str, Any]:
    """The default FalcoInstance: every FalcoRule of the namespace, text alerts on stdout
    (this sensor delivers stdout only, so the API-side outputs are switched off)."""
    return {
        "apiVersion": "falconer.io/v1alpha1", "kind": "FalcoInstance",
        "metadata": {"name": settings.instance, "namespace": settings.namespace},
        "spec": {"outputs": {"stdout": {"enabled": True, "format": "text"},
                             "falcoAlerts": False, "kubernetesEvents": False}},
    }


class AllInOne:
    """One run of the demo: `start()`, `wait()` until a signal, `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.work_dir = settings.work_dir.resolve()
        self.logs = self.work_dir / "logs"
        self.run_dir = self.work_dir / "run"
        self.volume = self.work_dir / "volume"
        self.control_plane = ControlPlane(self.work_dir / "controlplane")
        self.kubectl = binaries.locate("kubectl").path
        self.operator: processes.Child | None = None
        self.sensor: processes.Child | None = None
        self.standin: KubeletStandIn | None = None
        self.api: ApiClient | None = None
        self._stopping = threading.Event()
        self._echo_thread: threading.Thread | None = None

    # -- steps ------------------------------------------------------------------------------

    def start(self) -> None:
        """Every step in order; on failure everything started is stopped again."""
        try:
            for folder in (self.logs, self.run_dir):
                folder.mkdir(parents=True, exist_ok=True)
            processes.end_leftovers(self.run_dir, LEFTOVER_MARKER)
            self._start_control_plane()
            self._install_crds()
            self._start_operator()
            self._apply_rules_and_instance()
            self._start_node()
            self._start_sensor()
        except BaseException:
            self.stop()
            raise

    def _start_control_plane(self) -> None:
        say(f"==> starting the local control plane in {self.control_plane.work_dir}")
        t0 = time.monotonic()
        self.control_plane.start()
        self.api = self.control_plane.api_client()
        say(f"    API server {self.control_plane.server} ready in {time.monotonic() - t0:.1f}s")

    def _install_crds(self) -> None:
        say(f"==> installing the CRDs ({paths.CRDS_DIR}) and the RBAC manifests")
        self._kubectl("apply", "--server-side", "--force-conflicts", "-f", str(paths.CRDS_DIR),
                      "-f", str(OPERATOR_RBAC))
        self._kubectl("wait", "--for=condition=Established", f"--timeout={STEP_TIMEOUT_S:.0f}s",
                      "-f", str(paths.CRDS_DIR))
        say("    CRDs Established")

    def _start_operator(self) -> None:
        log = self.logs / "operator.log"
        say(f"==> starting the operator (log: {log})")
        self.operator = processes.Child("operator", [
            "/usr/bin/env", f"KUBECONFIG={self.control_plane.kubeconfig}", "PYTHONSAFEPATH=1",
            sys.executable, "-m", "falconer", "operator"], log, self.run_dir / "operator.pid")
        self.operator.start()

    def _apply_rules_and_instance(self) -> None:
        ns = self.settings.namespace
        say(f"==> applying the default rules and FalcoInstance {ns}/{self.settings.instance}")
        self._kubectl_apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        rules = default_rules()
        for order, (name, path) in enumerate(rules):
            manifest = subprocess.run(
                [sys.executable, "-m", "falconer", "rules", "to-crd", str(path), "--name", name,
                 "--namespace", ns, "--order", str(order)], capture_output=True, text=True,
                check=False, cwd="/",
                env=dict(os.environ, PYTHONSAFEPATH="1"))
            if manifest.returncode != 0:
                raise AllInOneError(f"falconer rules to-crd {path} failed:\n{manifest.stderr}")
            self._kubectl("apply", "--server-side", "-f", "-", stdin=manifest.stdout)
            say(f"    FalcoRule {ns}/{name} from {path.name}")
        self._kubectl_apply(instance_manifest(self.settings))
        for name, _ in rules:
            self._wait(f"FalcoRule {ns}/{name} to be Valid", lambda n=name: self._rule_valid(n))
        say("    the operator compiled every FalcoRule: Valid")

    def _start_node(self) -> None:
        assert self.api is not None
        node = node_name()
        say(f"==> registering this host as Node {node}; the kubelet stand-in projects "
            f"ConfigMap {self.settings.namespace}/{self._configmap()} into {self.volume}")
        self.standin = KubeletStandIn(
            self.api, node=node, namespace=self.settings.namespace, configmap=self._configmap(),
            pod_labels={"falconer.io/instance": self.settings.instance},
            volume=self.volume, say=say,
            sensor_running=lambda: self.sensor is not None and self.sensor.running())
        self.standin.register_node()
        standin = self.standin
        self._wait("the operator to render the ConfigMap",
                   lambda: standin.project_once() is not None)
        self.standin.start()

    def _start_sensor(self) -> None:
        log = self.logs / "sensor.log"
        config = self.volume / "falconer.yaml"
        say(f"==> starting falconer sensor --config {config} (log: {log})")
        offset = log.stat().st_size if log.exists() else 0
        self.sensor = processes.Child("sensor", [
            "/usr/bin/env", "PYTHONSAFEPATH=1", "PYTHONUNBUFFERED=1",
            sys.executable, "-m", "falconer", "sensor", "--config", str(config)],
            log, self.run_dir / "sensor.pid")
        self.sensor.start()
        sensor = self.sensor
        lines = _follow(log, offset, lambda: not sensor.running())
        for line in lines:
            print(line, end="", flush=True)
            if "falconer sensor: watching" in line:
                break
        else:
            raise AllInOneError(f"the sensor exited (status {sensor.exit_code()}); see {log}")
        self._echo_thread = threading.Thread(target=self._echo, args=(lines,),
                                             name="sensor-output", daemon=True)
        self._echo_thread.start()

    # -- running ------------------------------------------------------------------------

    def banner(self) -> None:
        """How to look at it, and how to stop it."""
        kc = self.control_plane.kubeconfig
        say(f"==> {READY_BANNER}\n"
            f"    kubeconfig: {kc}\n"
            f"    try:  {self.kubectl} --kubeconfig {kc} get falcorules,falcoinstances "
            f"-n {self.settings.namespace}\n"
            f"    edit: {self.kubectl} --kubeconfig {kc} edit falcorule "
            f"{default_rules()[0][0]} -n {self.settings.namespace}   (the sensor reloads it)\n"
            f"    logs: {self.logs}\n"
            "    Ctrl-C stops the sensor, the operator and the control plane")

    def wait(self) -> int:
        """Until SIGINT/SIGTERM (0), or until a component dies (1, with the reason)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopping.set())
        while not self._stopping.wait(1.0):
            for child in (self.sensor, self.operator):
                if child is not None and not child.running():
                    say(f"!!  the {child.name} exited with status {child.exit_code()}; last "
                        f"lines of {child.log}:\n{child.log_tail()}")
                    return 1
        say("==> stopping")
        return 0

    def stop(self) -> None:
        """Sensor first (it prints its summary), then the stand-in, operator, control plane."""
        self._stopping.set()
        if self.sensor is not None:
            self.sensor.stop()
            if self._echo_thread is not None:
                self._echo_thread.join(timeout=5.0)  # the sensor's summary
            say("    sensor stopped")
        if self.standin is not None:
            self.standin.stop()
        if self.operator is not None:
            self.operator.stop()
            say("    operator stopped")
        if self.api is not None:
            self.api.close()
        self.control_plane.stop()
        say("    control plane stopped")

    # -- helpers ------------------------------------------------------------------------

    def _configmap(self) -> str:
        return f"{self.settings.instance}-rules"

    def _echo(self, lines: Iterator[str]) -> None:
        """Relay the sensor's log to our stdout (its alerts are what the demo shows)."""
        for line in lines:
            print(line, end="", flush=True)

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        """Run the version-matched kubectl as admin; its stderr becomes the error."""
        done = subprocess.run([str(self.kubectl), "--kubeconfig", str(self.control_plane.kubeconfig),
                               *args], input=stdin, capture_output=True, text=True, check=False,
                              timeout=STEP_TIMEOUT_S + 30)
        if done.returncode != 0:
            raise AllInOneError(f"kubectl {' '.join(args)} failed:\n{done.stderr.strip()}")
        return done.stdout

    def _kubectl_apply(self, manifest: dict[str, Any]) -> None:
        self._kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(manifest))

    def _rule_valid(self, name: str) -> bool:
        """Whether the operator marked FalcoRule `name` Valid; raises when it is not
        (waiting longer would not help: the default rules must compile)."""
        from kubernetes import client

        body = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "falconer.io", "v1alpha1", self.settings.namespace, "falcorules", name)
        conditions = (body.get("status") or {}).get("conditions") or ()
        valid = next((c for c in conditions if c.get("type") == "Valid"), None)
        if valid is not None and valid.get("status") == "False":
            raise AllInOneError(f"FalcoRule {name} is not valid: {valid.get('message')}")
        return valid is not None and valid.get("status") == "True"

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        """Poll `ready()` until true; fail after STEP_TIMEOUT_S, or when the operator died."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not ready():
            if self.operator is not None and not self.operator.running():
                raise AllInOneError(f"the operator exited while waiting for {what}; last lines "
                                    f"of {self.operator.log}:\n{self.operator.log_tail()}")
            if time.monotonic() > deadline or self._stopping.is_set():
                raise AllInOneError(f"gave up waiting for {what} after {STEP_TIMEOUT_S:.0f}s; "
                                    f"see {self.logs / 'operator.log'}")
            time.sleep(0.3)


def _follow(path: Path, offset: int, writer_gone: Callable[[], bool]) -> Iterator[str]:
    """The lines appended to `path` after `offset`, as they come, until the writer is
    gone and everything it wrote was read (so a stopping sensor's summary is included)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        pending = ""
        while True:
            gone = writer_gone()
            chunk = f.readline()
            if chunk:
                pending += chunk
                if pending.endswith("\n"):
                    yield pending
                    pending = ""
            elif gone:
                return
            else:
                time.sleep(0.1)


def parse_args(argv: list[str]) -> Settings:
    """The main job's command line."""
    p = argparse.ArgumentParser(prog="falconer-allinone", description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                   help=f"kept between runs (default {DEFAULT_WORK_DIR})")
    p.add_argument("--namespace", default="falconer", help="namespace of the default resources")
    args = p.parse_args(argv)
    return Settings(work_dir=args.work_dir, namespace=args.namespace)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the demo until Ctrl-C; 0 after a clean stop, 1 when a step or component failed."""
    if os.geteuid() != 0:
        print("falconer all-in-one: must run as root (the sensor loads eBPF)", file=sys.stderr)
        return 1
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    settings = parse_args(argv)
    # A Ctrl-C (or SIGTERM) during start-up ends the step in progress; start() then
    # stops whatever already runs.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    try:
        demo = AllInOne(settings)
        demo.start()
    except (AllInOneError, ControlPlaneError, binaries.BinaryNotFound, OSError,
            subprocess.SubprocessError, ApiException, HTTPError) as exc:
        print(f"falconer all-in-one: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    demo.banner()
    code = 1
    try:
        code = demo.wait()
    finally:
        demo.stop()
    return code
