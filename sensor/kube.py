"""The sensor's one Kubernetes client: connection, node identity, and the few calls it makes.

Only this module imports `kubernetes` and `urllib3`. It connects in-cluster (the
DaemonSet pod's ServiceAccount token) or from a kubeconfig (`--kubeconfig`, else
$KUBECONFIG), learns its node name from `--node-name` or $NODE_NAME (the DaemonSet sets
it from the downward API's `spec.nodeName`), and turns every API failure into one of
Falconer's own exceptions so that callers never handle client-library types:

- `KubeUnavailable`: the API server did not answer (connection refused or reset, TLS,
  timeout) or answered 429/5xx: retry later with backoff;
- `KubeRejected`: the API server refused the request (4xx other than 429); `status`
  carries the HTTP code (404 not found, 409 already exists, 403 forbidden, 422 invalid).

Requests carry a short timeout (`REQUEST_TIMEOUT_S`) so a sink's worker never hangs on a
server that is gone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Seconds one API request may take (connect, read) before it counts as unavailable.
REQUEST_TIMEOUT_S = (3.0, 10.0)
#: The environment variable naming the node (the DaemonSet sets it from spec.nodeName).
NODE_NAME_ENV = "NODE_NAME"
GROUP_VERSION = "falconer.io/v1alpha1"


class KubeError(RuntimeError):
    """A Kubernetes API call failed (base class)."""


class KubeUnavailable(KubeError):
    """The API server is unreachable, overloaded or failing: worth a retry later."""


class KubeRejected(KubeError):
    """The API server refused the request; `status` is the HTTP status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeConfigError(KubeError):
    """No usable connection settings (not in a cluster and no kubeconfig)."""


def node_name(given: str | None = None) -> str:
    """The node this sensor runs on: `given` (--node-name), else $NODE_NAME;
    KubeConfigError when neither is set."""
    value = given or os.environ.get(NODE_NAME_ENV)
    if value:
        return value
    raise KubeConfigError("the node name is unknown: pass --node-name or set NODE_NAME "
                          "(the DaemonSet sets it from spec.nodeName)")


def api_client(kubeconfig: Path | None = None) -> Any:
    """A `kubernetes.client.ApiClient`: from `kubeconfig`, else $KUBECONFIG, else the
    in-cluster ServiceAccount. This is the client the enrichment's pod watch receives.
    Raises KubeConfigError when none of them works."""
    from kubernetes import client, config  # noqa: PLC0415
    from kubernetes.config.config_exception import ConfigException  # noqa: PLC0415

    path = kubeconfig or (Path(os.environ["KUBECONFIG"]) if os.environ.get("KUBECONFIG") else None)
    try:
        if path is not None:
            return config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except (ConfigException, OSError, ValueError) as exc:
        where = str(path) if path is not None else "in-cluster ServiceAccount"
        raise KubeConfigError(f"cannot connect to the Kubernetes API ({where}): {exc}") from exc


class Kube:
    """The REST calls the sinks make, on one ApiClient, with Falconer's exceptions."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json", query: Mapping[str, str] | None = None) -> Any:
        """One call to `path` (e.g. "/api/v1/namespaces/ns/events"); the decoded JSON answer."""
        import urllib3  # noqa: PLC0415

        try:
            params = self.client.param_serialize(
                method, path, query_params=list((query or {}).items()),
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"])
            answer = self.client.call_api(*params, _request_timeout=REQUEST_TIMEOUT_S)
            raw = answer.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        status = int(answer.status)
        if status == 429 or status >= 500:
            raise KubeUnavailable(f"{method} {path}: HTTP {status}: {_reason(raw)}")
        if not 200 <= status <= 299:
            raise KubeRejected(status, f"{method} {path}: {_reason(raw)}")
        return json.loads(raw) if raw else None

    # -- the objects the sinks write ---------------------------------------------------

    def create(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST `body` to the collection at `path`."""
        return self.request("POST", path, body)

    def get(self, path: str) -> Any:
        """GET one object (KubeRejected with status 404 when it does not exist)."""
        return self.request("GET", path)

    def merge_patch(self, path: str, body: Mapping[str, Any]) -> Any:
        """JSON merge patch (RFC 7386) of the object (or subresource) at `path`."""
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def list(self, path: str, label_selector: str = "") -> list[dict[str, Any]]:
        """The items of the collection at `path`, optionally filtered by labels."""
        answer = self.request("GET", path, query={"labelSelector": label_selector} if label_selector else None)
        return list((answer or {}).get("items") or ())

    def delete(self, path: str) -> None:
        """DELETE the object; one already gone is not an error."""
        try:
            self.request("DELETE", path)
        except KubeRejected as exc:
            if exc.status != 404:
                raise


def _reason(body: Any) -> str:
    """The message of a Kubernetes Status body, or the body itself (shortened)."""
    try:
        return str(json.loads(body)["message"])[:500]
    except (TypeError, ValueError, KeyError):
        return str(body)[:500]


def events_path(namespace: str, name: str = "") -> str:
    """core/v1 Events of a namespace (or one of them)."""
    return f"/api/v1/namespaces/{namespace}/events" + (f"/{name}" if name else "")


def falcoalerts_path(namespace: str, name: str = "", subresource: str = "") -> str:
    """FalcoAlerts of a namespace (or one of them, or its subresource)."""
    path = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/falcoalerts"
    return path + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


def falcoinstance_status_path(namespace: str, name: str) -> str:
    """The status subresource of one FalcoInstance."""
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/falcoinstances/{name}/status"
