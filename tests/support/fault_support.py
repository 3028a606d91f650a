"""What the fault tests share: the operator as a supervised child process, a stream of
FalcoRule edits that runs throughout a fault, and the check that an instance converged
with no duplicate, orphaned or stale object.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import operator_harness
import yaml
from operator_harness import FALCONER, RESYNC_SECONDS, condition, observed

from falconer.operator.api import API_VERSION as GV
from falconer.operator.render import INSTANCE_LABEL, RULES_HASH_ANNOTATION, Names
from falconer.sensor.kube import Kube
from falconer_e2e import processes


#: The FalcoInstance of every fault test (one namespace per test).
INSTANCE = "fi"
#: The namespaced kinds the operator renders per instance: (API path part, plural).
RENDERED = (("api/v1", "configmaps"), ("api/v1", "serviceaccounts"), ("apis/apps/v1", "daemonsets"),
            ("apis/rbac.authorization.k8s.io/v1", "roles"), ("apis/rbac.authorization.k8s.io/v1", "rolebindings"))


def operator_child(kubeconfig: Path, namespace: str, folder: Path) -> processes.Child:
    """`falconer operator --namespace NS` as the operator's ServiceAccount (not started)."""
    return processes.Child("operator", [
        "/usr/bin/env", f"KUBECONFIG={kubeconfig}", "PYTHONSAFEPATH=1", str(FALCONER), "operator",
        "--namespace", namespace, "--resync-seconds", str(RESYNC_SECONDS)],
        folder / "operator.log", folder / "operator.pid")


def operator_kubeconfig(admin: Path, path: Path, server: str | None = None) -> Path:
    """The operator's ServiceAccount kubeconfig; `server` replaces the API server's URL
    (a relay in front of it, to count the operator's connections)."""
    operator_harness.service_account_kubeconfig(admin, path, operator_harness.OPERATOR_NAMESPACE,
                                                operator_harness.OPERATOR_ACCOUNT)
    if server:
        config = yaml.safe_load(path.read_text())
        config["clusters"][0]["cluster"]["server"] = server
        path.write_text(yaml.safe_dump(config))
    return path


def rule_manifest(namespace: str, name: str, version: int) -> dict[str, Any]:
    """A FalcoRule with one rule whose condition names `version` (each edit changes it)."""
    return {"apiVersion": GV, "kind": "FalcoRule", "metadata": {"name": name, "namespace": namespace},
            "spec": {"items": [{"rule": f"Fault {name}", "desc": "a fault test's rule",
                                "condition": f"evt.type = openat and fd.name = /tmp/fault-{name}-{version}",
                                "output": "fault %fd.name", "priority": "Notice"}]}}


def instance_manifest(namespace: str) -> dict[str, Any]:
    """The fault tests' FalcoInstance (every FalcoRule of its namespace)."""
    return {"apiVersion": GV, "kind": "FalcoInstance", "metadata": {"name": INSTANCE, "namespace": namespace},
            "spec": {"outputs": {"falcoAlerts": True}}}


@dataclass
class RuleStream:
    """A stream of FalcoRule creations and edits, one every `interval_s`, on its own
    thread until stop(): `rules` FalcoRules are created in turn, then edited round-robin.
    Requests the API server refuses (during an outage) are counted, not fatal."""

    custom: Any                       # kubernetes.client.CustomObjectsApi, admin
    namespace: str
    rules: int = 6
    interval_s: float = 0.3
    done: int = 0
    failed: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RuleStream:
        self._thread = threading.Thread(target=self._run, name="rule-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(self.interval_s):
            name = f"r{step % self.rules}"
            try:
                self._edit(name, self.versions.get(name, -1) + 1)
            except Exception:  # noqa: BLE001 - the API server may be down: counted
                self.failed += 1
            else:
                self.done += 1
                step += 1

    def _edit(self, name: str, version: int) -> None:
        from kubernetes.client.exceptions import ApiException

        body = rule_manifest(self.namespace, name, version)
        try:
            self.custom.create_namespaced_custom_object("falconer.io", "v1alpha1", self.namespace,
                                                        "falcorules", body, _request_timeout=5)
        except ApiException as error:
            if error.status != 409:
                raise
            self.custom.patch_namespaced_custom_object("falconer.io", "v1alpha1", self.namespace, "falcorules",
                                                       name, {"spec": body["spec"]}, _request_timeout=5)
        self.versions[name] = version


def not_converged(api: Any, namespace: str, versions: dict[str, int] | None = None) -> str | None:
    """Why the instance `namespace/fi` and its FalcoRules have not converged, or None.

    Converged: every FalcoRule reports on its current generation (Valid True, holding
    `versions[name]` when given); the instance reports on its current generation with
    the ConfigMap's rules hash, and the ConfigMap names every FalcoRule's current
    generation; each rendered kind exists exactly once for the instance (no duplicate)
    and is owned by the live instance (no orphan); the ClusterRoleBinding exists once.
    """
    kube = Kube(api)
    base = f"/apis/falconer.io/v1alpha1/namespaces/{namespace}"
    rules = kube.list(f"{base}/falcorules")
    for rule in rules:
        name = rule["metadata"]["name"]
        if not observed(rule) or condition(rule, "Valid").get("status") != "True":
            return f"FalcoRule {name}: status {json.dumps(rule.get('status'))[:300]}"
        if versions and f"fault-{name}-{versions[name]}" not in json.dumps(rule["spec"]):
            return f"FalcoRule {name}: not the last edit"
    instance = kube.get(f"{base}/falcoinstances/{INSTANCE}")
    if not observed(instance):
        return f"instance: status {json.dumps(instance.get('status'))[:300]}"
    owned = _rendered(kube, namespace, instance["metadata"]["uid"])
    if owned:
        return owned
    names = Names.for_instance(namespace, INSTANCE)
    cm = kube.get(f"/api/v1/namespaces/{namespace}/configmaps/{names.configmap}")
    if instance["status"].get("rulesHash") != cm["metadata"]["annotations"][RULES_HASH_ANNOTATION][:16]:
        return f"instance rulesHash {instance['status'].get('rulesHash')} is not the ConfigMap's"
    listed = {o["name"]: o["generation"] for o in yaml.safe_load(cm["data"]["falconer.yaml"])["falcoRules"]}
    current = {r["metadata"]["name"]: r["metadata"]["generation"] for r in rules}
    if listed != current:
        return f"ConfigMap holds generations {listed}, FalcoRules are at {current}"
    return None


def _rendered(kube: Kube, namespace: str, uid: str) -> str | None:
    """Why the rendered objects are not exactly one each, owned by `uid`, or None."""
    selector = f"{INSTANCE_LABEL}={INSTANCE}"
    for prefix, plural in RENDERED:
        items = kube.list(f"/{prefix}/namespaces/{namespace}/{plural}", selector)
        if len(items) != 1:
            return f"{len(items)} {plural} for the instance: {[i['metadata']['name'] for i in items]}"
        owners = [o.get("uid") for o in items[0]["metadata"].get("ownerReferences") or ()]
        if owners != [uid]:
            return f"{plural} {items[0]['metadata']['name']} is owned by {owners}, not the instance {uid}"
    bindings = [b for b in kube.list("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", selector)
                if b["metadata"]["name"] == Names.for_instance(namespace, INSTANCE).clusterrolebinding]
    return None if len(bindings) == 1 else f"{len(bindings)} ClusterRoleBindings for the instance"


def wait_converged(api: Any, namespace: str, versions: dict[str, int] | None, timeout: float) -> float:
    """Seconds until `not_converged` is None; AssertionError with the last reason."""
    started = time.monotonic()
    why: str | None = "not checked"
    while time.monotonic() - started < timeout:
        try:
            why = not_converged(api, namespace, versions)
        except Exception as error:  # noqa: BLE001 - the API server may still be coming back
            why = repr(error)
        if why is None:
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"not converged after {timeout:.0f}s: {why}")
