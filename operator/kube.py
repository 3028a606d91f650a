"""The operator's few API calls, on the kubernetes dynamic client.

Writes are compare-then-apply: an object is server-side applied only when the live
object does not already contain every field the operator wants. A restart, a resumed
handler or a repeated event therefore writes nothing, and no write of the operator's
own can trigger another reconcile (no hot loop through the DaemonSet watch).
"""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError, ResourceNotFoundError
from kubernetes.dynamic.resource import Resource
from urllib3.exceptions import HTTPError
from urllib3.util.retry import Retry

FIELD_MANAGER = "falconer-operator"
#: The API server answered with an error (`status`, `reason`, `summary()`): the dynamic
#: client's exception, named here so that only this module imports the client library.
ApiError = DynamicApiError
#: Failures below HTTP (API server unreachable, connection reset, TLS) and a resource
#: type not served (yet): all worth a delayed retry, never a crash or a tight loop.
UNREACHABLE: tuple[type[Exception], ...] = (HTTPError, OSError, ResourceNotFoundError)


def contains(live: Any, desired: Any) -> bool:
    """Whether `live` holds every field of `desired` (server defaults may add more)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b) for a, b in zip(live, desired, strict=True))
        )
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, (int, float)) and isinstance(live, (int, float)):
        return live == desired
    return live == desired or (live is not None and str(live) == str(desired))


def _same_data(live: dict[str, Any], desired: dict[str, Any]) -> bool:
    """ConfigMap data must match exactly: a key left over would be a stale rules file."""
    return "data" not in desired or live.get("data") == desired["data"]


def apply_body(obj: dict[str, Any]) -> bytes:
    """The body of a server-side apply: JSON (valid YAML) in UTF-8, characters unescaped.

    The client would send a dict as `json.dumps` output under the apply-patch+yaml
    content type; its `\\uXXXX` surrogate pairs for characters outside the Basic
    Multilingual Plane (an emoji in a rule's output) are rejected by the API server's YAML
    parser. Pre-serialised bytes are sent as they are.
    """
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def connect() -> Kube:
    """A Kube from kubeconfig ($KUBECONFIG, ~/.kube/config) or, in a pod, the in-cluster
    ServiceAccount (the client library's `load_config` order).

    No new connection is retried at once: a refused or failed connect backs off in the
    caller (the handlers' `_guard`). urllib3's default (3 retries at once) made every
    failing call 4 connections while the API server was down
    (tests/faults/test_outages.py measures the rate). One immediate retry stays for a
    pooled keep-alive connection the server closed (a read error on an idempotent
    request), which is not an outage and should cost no backoff."""
    k8s_config.load_config()  # type: ignore[no-untyped-call]
    api_config = k8s.Configuration.get_default_copy()
    api_config.retries = Retry(total=1, connect=0, backoff_factor=0)
    return Kube(k8s.ApiClient(api_config))


class Kube:
    """Typed-enough access to the objects the operator reads and writes."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self._dyn = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        self._resources: dict[tuple[str, str], Resource] = {}
        #: The client's discovery cache is not thread-safe: a kind it does not find makes
        #: it drop and rebuild its cache, and a second handler thread searching meanwhile
        #: failed with KeyError 'resources' (seen in CI: ServiceMonitor discovery from two
        #: reconciles at once). kopf runs sync handlers in threads: one search at a time.
        self._discovery = threading.Lock()

    def _res(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            with self._discovery:
                found = self._resources.get(key)
                if found is None:
                    found = self._resources[key] = self._dyn.resources.get(api_version=api_version, kind=kind)
        return found

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves this kind (discovery; e.g. a CRD is installed)."""
        try:
            self._res(api_version, kind)
        except ResourceNotFoundError:
            return False
        return True

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            found: dict[str, Any] = self._res(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except NotFoundError:
            return None
        return found

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind (in a namespace), optionally filtered by labels."""
        found = self._res(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        return [item.to_dict() for item in found.items]

    def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Server-side apply `obj` unless the live object already matches; (object, changed)."""
        meta = obj["metadata"]
        live = self.get(obj["apiVersion"], obj["kind"], meta["name"], meta.get("namespace"))
        if live is not None and contains(live, obj) and _same_data(live, obj):
            return live, False
        applied = self._res(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=apply_body(obj), name=meta["name"], namespace=meta.get("namespace"),
            field_manager=FIELD_MANAGER, force_conflicts=True,
        )
        return applied.to_dict(), True

    def patch_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch the status subresource (whole lists are replaced; namespace None for
        a cluster-scoped object)."""
        self._res(api_version, kind).status.patch(
            body={"status": status}, name=name, namespace=namespace,
            content_type="application/merge-patch+json",
        )

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete the object; False when it was already gone."""
        try:
            self._res(api_version, kind).delete(name=name, namespace=namespace)
        except NotFoundError:
            return False
        return True
