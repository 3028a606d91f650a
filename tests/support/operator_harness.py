"""Run the real operator (`falconer operator`) against the local control plane.

The operator runs as a subprocess with its own least-privilege identity (a token of the
`falconer-operator` ServiceAccount from operator/manifests/rbac.yaml), so the tests also
prove that the shipped RBAC suffices. Helpers poll with deadlines; nothing sleeps blindly.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from falconer.operator.api import API_VERSION as GV  # the tests' apiVersion, re-exported
from falconer.paths import CRDS_DIR, ROOT
from falconer_e2e import binaries

RBAC_MANIFEST = ROOT / "operator" / "manifests" / "rbac.yaml"
OPERATOR_NAMESPACE = "falconer-system"
OPERATOR_ACCOUNT = "falconer-operator"
FALCONER = Path(sys.executable).with_name("falconer")

T = TypeVar("T")


class Timeout(AssertionError):
    """A condition did not come true in time; says what was last seen."""


def wait_for(check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.2,
             what: str = "") -> T:
    """Poll `check` until it returns a truthy value (returned) or the deadline passes.
    The default allows one API error on a loaded machine: the operator then backs off
    5 s, then 10 s, before its next try (operator/handlers.py, measured by tests/faults)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except (KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or check}; last seen: {last!r}")
        time.sleep(interval)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The object's status condition of that type, or {} (no status yet, or no such condition)."""
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or () if c["type"] == type_), {})


def observed(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The object, if the operator has reported on its current generation; else None."""
    if obj and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]:
        return obj
    return None


def adopt_cluster_rbac(kubeconfig: Path, release: str, namespace: str) -> None:
    """Let Helm release `release` take over the cluster-scoped Falconer RBAC that other
    tests applied from operator/manifests/rbac.yaml (the chart renders the same objects),
    so that a `helm install` on the shared control plane does not refuse them; the
    objects stay in place for the tests that use them."""
    kinds, selector = "clusterrole,clusterrolebinding", "app.kubernetes.io/part-of=falconer"
    kubectl(kubeconfig, "label", "--overwrite", kinds, "-l", selector, "app.kubernetes.io/managed-by=Helm",
            check=False)
    kubectl(kubeconfig, "annotate", "--overwrite", kinds, "-l", selector, f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}", check=False)


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the version-matched kubectl as the given identity; `timeout` (seconds) must
    exceed any `--timeout` among `args`, so that kubectl's own message is what fails."""
    done = subprocess.run(
        [str(binaries.locate("kubectl").path), "--kubeconfig", str(kubeconfig), *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def install(kubeconfig: Path) -> None:
    """Apply the CRDs and the operator's RBAC; wait until the CRDs are served."""
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR), "-f", str(RBAC_MANIFEST))
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in sorted(Path(CRDS_DIR).glob("*.yaml"))]
    kubectl(kubeconfig, "wait", "--for", "condition=Established", "--timeout=60s", *(f"crd/{n}" for n in names))


def service_account_kubeconfig(admin: Path, path: Path, namespace: str, account: str) -> Path:
    """A kubeconfig authenticating as a ServiceAccount (a bound token from TokenRequest)."""
    token = kubectl(admin, "create", "token", account, "-n", namespace, "--duration=3h").stdout.strip()
    config = yaml.safe_load(admin.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority-data") or base64.b64encode(
        Path(cluster["certificate-authority"]).read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cluster["server"], "certificate-authority-data": ca}}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c",
    }))
    path.chmod(0o600)
    return path


#: The resync period of the operators under test: short, so drift tests finish quickly.
RESYNC_SECONDS = 10.0


class OperatorProcess:
    """`falconer operator [--namespace NS]` as a child process, with its log in a file
    (namespace None: all namespaces, the default mode)."""

    def __init__(self, kubeconfig: Path, namespace: str | None, log_path: Path, args: Sequence[str] = ()) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.args = tuple(args)  # more `falconer operator` arguments
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the operator; returns once it has handled its first objects or is idle."""
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONSAFEPATH": "1"}
        scope = ["--namespace", self.namespace] if self.namespace else []
        scope += ["--resync-seconds", str(RESYNC_SECONDS), *self.args]
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self._proc = subprocess.Popen(
                [str(FALCONER), "operator", *scope],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.starts += 1
        wait_for(lambda: self.log().count("Initial authentication has finished") >= self.starts,
                 timeout=30, what="the operator to log in")

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM), killing it if it does not exit in time."""
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        """Stop, then start again (a new process, empty memory)."""
        self.stop()
        self.start()

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """Everything the operator has logged so far (all runs)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


#: How long a module's clean-up waits for its FalcoInstances' finalizers (the operator
#: must still run): a large instance on a loaded machine takes more than a minute.
CLEANUP_TIMEOUT_S = 120


def stop_after_deleting_instances(proc: OperatorProcess, admin: Path, namespace: str) -> None:
    """A module's clean-up: delete the namespace's FalcoInstances while `proc` still runs
    (their finalizer needs it), then stop it, even when the deletion timed out."""
    try:
        if proc.alive:
            kubectl(admin, "delete", "falcoinstances", "--all", "-n", namespace, "--wait",
                    f"--timeout={CLEANUP_TIMEOUT_S}s", check=False, timeout=CLEANUP_TIMEOUT_S + 30)
    finally:
        proc.stop()  # never leave an operator running

