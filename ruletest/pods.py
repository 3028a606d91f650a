"""In-pod contexts: a test's steps run in a pod of the given image, on a node of this host.

The runner's sensor watches this host, so the pod must be scheduled on a node that runs
here (`falconer_e2e.node.Node`, or any kubelet on this machine). Everything goes through
`kubectl` with the given kubeconfig, as a user would: the pod (`sleep` as its main
process, `restartPolicy: Never`) is created, waited for, its steps are `kubectl exec`-ed
(`run`: `sh -c`, `exec`: the program and its arguments), the barrier is an exec that
creates `/tmp/falconer-ruletest-barrier-<nonce>` in the container, and the pod is deleted.
A pod test's alerts are those whose `container.id` is the pod's container (the
overlay prints it), since exec-ed processes descend from the runtime, not the runner.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from falconer.ruletest.actor import Step

#: Where a pod test's barrier file is created inside its container.
BARRIER_PREFIX = "/tmp/falconer-ruletest-barrier-"
POD_READY_TIMEOUT_S = 120
EXEC_TIMEOUT_S = 120
#: The step kinds a pod can run (the others need the runner's own processes).
POD_STEPS = ("run", "exec")


class PodError(RuntimeError):
    """The pod could not be created, did not run, or kubectl failed (with its output)."""


@dataclass(frozen=True)
class Cluster:
    """How to reach the cluster: a kubeconfig, the namespace for test pods, kubectl."""

    kubeconfig: Path
    namespace: str = "default"
    kubectl: str = "kubectl"

    def _kubectl(self, *args: str, stdin: str | None = None,
                 timeout: float = EXEC_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.kubectl, "--kubeconfig", str(self.kubeconfig),
                               "-n", self.namespace, *args], input=stdin, text=True,
                              capture_output=True, timeout=timeout, check=False)

    def _must(self, *args: str, stdin: str | None = None, timeout: float = EXEC_TIMEOUT_S) -> str:
        done = self._kubectl(*args, stdin=stdin, timeout=timeout)
        if done.returncode != 0:
            raise PodError(f"kubectl {' '.join(args[:2])}: {done.stderr.strip()}")
        return done.stdout

    def start_pod(self, name: str, image: str, privileged: bool = False) -> str:
        """Create pod `name` of `image` (its container privileged when asked) and wait
        until it runs; its container id (64 hex)."""
        manifest = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "falconer-ruletest"}},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "main", "image": image,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", "3600"],
                                     "securityContext": {"privileged": privileged}}]},
        }
        self._must("apply", "-f", "-", stdin=json.dumps(manifest))
        try:
            self._must("wait", "--for=condition=Ready", f"pod/{name}",
                       f"--timeout={POD_READY_TIMEOUT_S}s", timeout=POD_READY_TIMEOUT_S + 10)
        except PodError as exc:
            status = self._kubectl("get", "pod", name, "-o", "jsonpath={.status}").stdout
            raise PodError(f"{exc}; pod status: {status}") from exc
        ref = self._must("get", "pod", name, "-o",
                         "jsonpath={.status.containerStatuses[0].containerID}")
        return ref.rpartition("://")[2]

    def run_steps(self, name: str, steps: list[Step], barrier: str) -> tuple[int, str]:
        """The steps in the pod, then the barrier; (0, "") or (1, the failing step)."""
        try:
            for i, step in enumerate(steps):
                args = step["args"]
                if step["kind"] == "run":
                    argv = ["sh", "-c", str(args["command"])]
                else:
                    argv = [str(args["path"]), *map(str, args.get("args", []))]
                done = self._kubectl("exec", name, "--", *argv)
                if done.returncode != 0 and args.get("check", True):
                    return 1, (f"step {i + 1} ({step['kind']}) in the pod: exit "
                               f"{done.returncode}: {done.stderr.strip()}")
            return 0, ""
        finally:
            # No shell: a shell started by the runtime is itself what some rules look for.
            self._kubectl("exec", name, "--", "/bin/touch", barrier)

    def delete_pod(self, name: str) -> None:
        """Delete the pod without waiting for it to go."""
        self._kubectl("delete", "pod", name, "--wait=false", "--grace-period=0",
                      "--ignore-not-found")
