"""The all-in-one demo (`./dev run`): the whole Falconer loop on one host, for real.

It starts the local control plane and a real node (containerd, kube-proxy and a kubelet
registered to it, with the locally built pause, busybox and sensor images imported),
installs the CRDs and the RBAC manifests, runs the operator, applies Falconer's default
rules as FalcoRules and a default FalcoInstance. The operator renders the sensor's
ConfigMap and DaemonSet; the kubelet runs the sensor as the DaemonSet's pod, which
watches this host's system calls with eBPF, and reports alerts as FalcoAlerts, Events
and on its log, which the demo follows. A demo workload (namespace `demo`) shows an
alert on a real pod. Edit a FalcoRule with kubectl and the sensor reloads it; delete the
FalcoInstance and its sensor stops; Ctrl-C stops operator, node and control plane.

Its parts are supervised (`processes.Supervisor`): a control plane component, a node
process or the operator that exits is restarted after a backoff (1, 2, 4, ... 30 s,
each restart logged); one that exits more than 5 times in 5 minutes stops the whole run
with its name and log. The sensor is the DaemonSet's pod, which the kubelet restarts;
the demo follows the log of whichever sensor pod runs.

A FalcoRule or FalcoInstance that already exists (from an earlier run, maybe edited by
you) is kept as it is: the demo creates only what is missing, so `kubectl edit` survives
the next `./dev run` (delete an object to get the default back).

Everything lives in one work dir, reused by the next run: `controlplane/` (etcd data,
PKI, admin.kubeconfig), `node/` (containerd's image store, kubelet), `logs/` and `run/`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from falconer import paths
from falconer_e2e import binaries, images, processes
from falconer_e2e.controlplane import ControlPlane, ControlPlaneError
from falconer_e2e.node import Node, NodeError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

DEFAULT_WORK_DIR = Path("/var/lib/falconer/demo")
OPERATOR_RBAC = paths.ROOT / "operator" / "manifests" / "rbac.yaml"
#: Only processes whose command line contains this are ended as leftovers of a dead run.
LEFTOVER_MARKER = "falconer"
#: How long each waiting step may take before the demo gives up with a reason (the
#: sensor image's first import into containerd takes about a minute on 2 cores).
STEP_TIMEOUT_S = 240.0
READY_BANNER = "falconer all-in-one is running"
#: What the sensor logs once its probe is attached (sensor/runner.py).
SENSOR_WATCHING = "falconer sensor: watching"
GROUP_VERSION = "falconer.io/v1alpha1"
#: The demo workload: a Deployment whose pod the demo reads /etc/shadow in.
DEMO_NAMESPACE, DEMO_APP = "demo", "shop"


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


def instance_manifest(settings: Settings, node: Node) -> dict[str, Any]:
    """The default FalcoInstance: every FalcoRule of the namespace, on the demo's node
    (with that node's containerd socket), from the locally built sensor image; text alerts
    on the sensor's log, FalcoAlerts and Events in the API."""
    return {
        "apiVersion": GROUP_VERSION, "kind": "FalcoInstance",
        "metadata": {"name": settings.instance, "namespace": settings.namespace},
        "spec": {"image": images.REFS["sensor"], "imagePullPolicy": "Never",
                 "nodeSelector": {"kubernetes.io/hostname": node.name},
                 "criSocket": str(node.paths.containerd_socket),
                 "outputs": {"stdout": {"enabled": True, "format": "text"},
                             "falcoAlerts": True, "kubernetesEvents": True}},
    }


def demo_workload() -> list[dict[str, Any]]:
    """The demo's namespace and a one-replica busybox Deployment that just waits."""
    labels = {"app": DEMO_APP}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": DEMO_APP, "namespace": DEMO_NAMESPACE},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "terminationGracePeriodSeconds": 0,
                      "containers": [{"name": "main", "image": images.REFS["busybox"],
                                      "imagePullPolicy": "Never",
                                      "command": ["sh", "-c", "while true; do sleep 3600; done"]}]}}}},
    ]


class AllInOne:
    """One run of the demo: `start()`, `wait()` until a signal, `stop()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.work_dir = settings.work_dir.resolve()
        self.logs = self.work_dir / "logs"
        self.run_dir = self.work_dir / "run"
        self.control_plane = ControlPlane(self.work_dir / "controlplane")
        self.node: Node | None = None
        self.kubectl = binaries.locate("kubectl").path
        self.operator: processes.Child | None = None
        self.sensor_log: subprocess.Popen[str] | None = None
        self.api: ApiClient | None = None
        self.supervisor = processes.Supervisor(say)
        self._stopping = threading.Event()
        self._follow_thread: threading.Thread | None = None

    # -- steps ------------------------------------------------------------------------------

    def start(self) -> None:
        """Every step in order; on failure everything started is stopped again."""
        try:
            for folder in (self.logs, self.run_dir):
                folder.mkdir(parents=True, exist_ok=True)
            processes.end_leftovers(self.run_dir, LEFTOVER_MARKER)
            self._start_control_plane()
            self._start_node()
            self._install_crds()
            self._start_operator()
            self._apply_rules_and_instance()
            self._follow_sensor()
            self._show_an_alert()
        except BaseException:
            self.stop()
            raise

    def _start_control_plane(self) -> None:
        say(f"==> starting the local control plane in {self.control_plane.work_dir}")
        t0 = time.monotonic()
        self.control_plane.start()
        for component in self.control_plane.components:
            self.supervisor.watch(component)
        self.api = self.control_plane.api_client()
        say(f"    API server {self.control_plane.server} ready in {time.monotonic() - t0:.1f}s")

    def _start_node(self) -> None:
        say("==> building (or reusing) the local images: pause, busybox, sensor")
        archives = [images.build(name) for name in ("pause", "busybox", "sensor")]
        say(f"==> starting a node: containerd, kube-proxy, kubelet (log: {self.work_dir / 'node'})")
        t0 = time.monotonic()
        self.node = Node(self.control_plane, self.work_dir / "node",
                         sandbox_image=images.REFS["pause"], images=archives,
                         start_timeout=STEP_TIMEOUT_S)
        self.node.start()
        for component in self.node.components:
            self.supervisor.watch(component)
        say(f"    Node {self.node.name} Ready in {time.monotonic() - t0:.1f}s")

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
        self.supervisor.watch(self.operator)

    def _apply_rules_and_instance(self) -> None:
        assert self.node is not None
        ns = self.settings.namespace
        say(f"==> the default rules and FalcoInstance {ns}/{self.settings.instance}")
        self._create_missing({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        rules = default_rules()
        for order, (name, path) in enumerate(rules):
            manifest = subprocess.run(
                [sys.executable, "-m", "falconer", "rules", "to-crd", str(path), "--name", name,
                 "--namespace", ns, "--order", str(order)], capture_output=True, text=True,
                check=False, cwd="/", env=dict(os.environ, PYTHONSAFEPATH="1"))
            if manifest.returncode != 0:
                raise AllInOneError(f"falconer rules to-crd {path} failed:\n{manifest.stderr}")
            self._create_missing(yaml.safe_load(manifest.stdout))
        self._create_missing(instance_manifest(self.settings, self.node))
        for name, _ in rules:
            self._wait(f"FalcoRule {ns}/{name} to be compiled", functools.partial(self._rule_checked, name))

    def _follow_sensor(self) -> None:
        """Wait for the DaemonSet's pod, then relay its log (alerts) to our stdout, from
        whichever sensor pod runs (the kubelet restarts a sensor that exits)."""
        say("==> waiting for the sensor DaemonSet's pod (the kubelet runs it from the local image)")
        log = self.logs / "sensor.log"
        watching = threading.Event()
        self._follow_thread = threading.Thread(target=self._follow, args=(log, watching),
                                               name="sensor-log", daemon=True)
        self._follow_thread.start()
        self._wait("the sensor to attach its probe", watching.is_set)

    def _show_an_alert(self) -> None:
        """A real pod reads /etc/shadow: the default credential rule fires, and the alert
        shows up as a FalcoAlert in the pod's namespace and an Event on the pod."""
        say(f"==> demo workload {DEMO_NAMESPACE}/{DEMO_APP}; reading /etc/shadow in its pod")
        for obj in demo_workload():
            self._create_missing(obj)
        pod = self._wait_value("the demo pod to run", lambda: self._running_pod(
            DEMO_NAMESPACE, f"app={DEMO_APP}"))
        self._kubectl("exec", "-n", DEMO_NAMESPACE, pod, "--", "sh", "-c",
                      "cat /etc/shadow > /dev/null; sleep 1")
        self._wait("a FalcoAlert in namespace demo", lambda: bool(self._kubectl(
            "get", "falcoalerts", "-n", DEMO_NAMESPACE, "-o", "name").strip()))
        say(self._kubectl("get", "falcoalerts", "-A").rstrip())

    # -- running ------------------------------------------------------------------------

    def banner(self) -> None:
        """How to look at it, and how to stop it."""
        kc, k, ns = self.control_plane.kubeconfig, self.kubectl, self.settings.namespace
        say(f"==> {READY_BANNER}\n"
            f"    kubeconfig: {kc}\n"
            f"    alerts: {k} --kubeconfig {kc} get falcoalerts -A\n"
            f"    events: {k} --kubeconfig {kc} get events -n {DEMO_NAMESPACE}\n"
            f"    rules:  {k} --kubeconfig {kc} get falcorules,falcoinstances -n {ns}\n"
            f"    edit:   {k} --kubeconfig {kc} edit falcorule "
            f"{default_rules()[0][0]} -n {ns}   (the sensor reloads it)\n"
            f"    try:    {k} --kubeconfig {kc} exec -n {DEMO_NAMESPACE} deploy/{DEMO_APP} -- "
            "cat /etc/shadow\n"
            f"    logs: {self.logs}\n"
            "    Ctrl-C stops the operator, the node (and its pods) and the control plane")

    def wait(self) -> int:
        """Until SIGINT/SIGTERM (0), or until a part keeps exiting (1, with the reason);
        a part that exits is restarted meanwhile (see the module's docstring)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self._stopping.set())
        while not self._stopping.wait(1.0):
            try:
                self.supervisor.check()
            except processes.SupervisorGaveUp as gave_up:
                say(f"!!  {gave_up}\n!!  stopping the whole run")
                return 1
        say("==> stopping")
        return 0

    def stop(self) -> None:
        """Operator first (so it does not react to the node going), then node, control plane."""
        self._stopping.set()
        self.supervisor = processes.Supervisor(say)  # nothing is restarted from here on
        if self.operator is not None:
            self.operator.stop()
            say("    operator stopped")
        if self.node is not None:
            try:
                self.node.stop()
                say("    node stopped (sensor pod included)")
            except NodeError as exc:
                say(f"!!  the node could not undo everything (the next run retries): {exc}")
        self._end_follow()
        if self._follow_thread is not None:
            self._follow_thread.join(timeout=5.0)
            self._end_follow()  # one the thread started as we stopped
        if self.api is not None:
            self.api.close()  # type: ignore[no-untyped-call]
        self.control_plane.stop()
        say("    control plane stopped")

    # -- helpers ------------------------------------------------------------------------

    def _end_follow(self) -> None:
        """Stop the current `kubectl logs -f`, if any."""
        if self.sensor_log is not None and self.sensor_log.poll() is None:
            self.sensor_log.terminate()
            self.sensor_log.wait(timeout=10)

    def _follow(self, log: Path, watching: threading.Event) -> None:
        """Until the run stops: `kubectl logs -f` the running sensor pod and relay its
        lines to our stdout and to `log`. When a follow ends (the sensor restarted, the
        pod was replaced, the API server went away) the next one starts at the time the
        last one ended, so lines are neither repeated nor lost (to the second)."""
        ns, since = self.settings.namespace, ""
        while not self._stopping.is_set():
            try:
                pod = self._sensor_pod()
            except (AllInOneError, subprocess.SubprocessError, ValueError):
                pod = None  # the API server is away: the supervisor deals with it
            if pod is None:
                self._stopping.wait(2.0)
                continue
            say(f"    following sensor pod {ns}/{pod} (log also in {log})")
            self.sensor_log = subprocess.Popen(
                [str(self.kubectl), "--kubeconfig", str(self.control_plane.kubeconfig), "logs",
                 "-f", "-n", ns, pod, *([f"--since-time={since}"] if since else [])],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            self._echo(log, watching)
            since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if not self._stopping.is_set():
                say(f"    the sensor pod {ns}/{pod}'s log ended (the sensor restarted or the API "
                    "server is away); following again")
                self._stopping.wait(2.0)

    def _echo(self, log: Path, watching: threading.Event) -> None:
        """Relay one `kubectl logs -f` to our stdout and a file (its alerts are the demo)."""
        assert self.sensor_log is not None and self.sensor_log.stdout is not None
        with log.open("a", encoding="utf-8") as f:
            for line in self.sensor_log.stdout:
                print(line, end="", flush=True)
                f.write(line)
                f.flush()
                if SENSOR_WATCHING in line:
                    watching.set()
        self.sensor_log.wait()

    def _sensor_pod(self) -> str | None:
        return self._running_pod(self.settings.namespace, f"falconer.io/instance={self.settings.instance}")

    def _running_pod(self, namespace: str, selector: str) -> str | None:
        """The name of a Running pod matching `selector`, or None."""
        pods = json.loads(self._kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json"))
        running = [p["metadata"]["name"] for p in pods["items"]
                   if p.get("status", {}).get("phase") == "Running"
                   and not p["metadata"].get("deletionTimestamp")]
        return running[0] if running else None

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        """Run the version-matched kubectl as admin; its stderr becomes the error."""
        done = subprocess.run([str(self.kubectl), "--kubeconfig", str(self.control_plane.kubeconfig),
                               *args], input=stdin, capture_output=True, text=True, check=False,
                              timeout=STEP_TIMEOUT_S + 30)
        if done.returncode != 0:
            raise AllInOneError(f"kubectl {' '.join(args)} failed:\n{done.stderr.strip()}")
        return done.stdout

    def _create_missing(self, manifest: dict[str, Any]) -> None:
        """Create the object unless it exists; an existing one (maybe edited by the user)
        is kept as it is."""
        meta = manifest["metadata"]
        kind, name = manifest["kind"], meta["name"]
        where = ["-n", meta["namespace"]] if meta.get("namespace") else []
        found = subprocess.run([str(self.kubectl), "--kubeconfig", str(self.control_plane.kubeconfig),
                                "get", _resource(manifest), name, *where, "-o", "name"],
                               capture_output=True, text=True, check=False, timeout=60)
        if found.returncode == 0:
            say(f"    {kind} {name}: exists, kept as it is")
            return
        self._kubectl("create", "-f", "-", stdin=json.dumps(manifest))
        say(f"    {kind} {name}: created")

    def _rule_checked(self, name: str) -> bool:
        """Whether the operator has compiled FalcoRule `name`; an invalid one is reported
        (your edit, kept) but does not stop the demo."""
        from kubernetes import client

        # The generated client types a custom object as `object`: it is the decoded JSON.
        body = cast("dict[str, Any]", client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            "falconer.io", "v1alpha1", self.settings.namespace, "falcorules", name))
        conditions = (body.get("status") or {}).get("conditions") or ()
        valid = next((c for c in conditions if c.get("type") == "Valid"), None)
        if valid is not None and valid.get("status") == "False":
            say(f"!!  FalcoRule {name} is not valid (the sensors keep its last valid rules): "
                f"{valid.get('message')}")
        return valid is not None

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        """Poll `ready()` until true; fail after STEP_TIMEOUT_S, or when the operator died."""
        self._wait_value(what, lambda: True if ready() else None)

    def _wait_value(self, what: str, value: Callable[[], str | bool | None]) -> Any:
        """Poll `value()` until it is not None; its value. Fails after STEP_TIMEOUT_S or
        when a part keeps exiting (with the reason); restarts exited parts meanwhile."""
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while (found := value()) is None:
            try:
                self.supervisor.check()
            except processes.SupervisorGaveUp as gave_up:
                raise AllInOneError(f"while waiting for {what}: {gave_up}") from gave_up
            if time.monotonic() > deadline or self._stopping.is_set():
                raise AllInOneError(f"gave up waiting for {what} after {STEP_TIMEOUT_S:.0f}s; "
                                    f"see {self.logs}")
            time.sleep(0.5)
        return found


def _resource(manifest: dict[str, Any]) -> str:
    """kubectl's name for the manifest's kind: `namespace`, `deployment.apps`, ..."""
    group, _, _ = manifest["apiVersion"].rpartition("/")
    kind = str(manifest["kind"]).lower()
    return f"{kind}.{group}" if group else kind


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
        print("falconer all-in-one: must run as root (containerd, kubelet and eBPF)", file=sys.stderr)
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
    except (AllInOneError, ControlPlaneError, NodeError, binaries.BinaryNotFound, OSError,
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
