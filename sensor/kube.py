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

The API caches (sensor/listwatch.py: the pod watch, the Service names) use the generated
client's typed APIs (`typed_api`) through `call` and `Watch`, which raise the same
exceptions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
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


def _answer_error(status: int, message: str) -> KubeError:
    """The exception for an HTTP error answer: 429 and 5xx are worth a retry."""
    if status == 429 or status >= 500:
        return KubeUnavailable(f"HTTP {status}: {message}")
    return KubeRejected(status, message)


def _client_error(exc: Exception, what: str) -> KubeError:
    """Falconer's exception for one the generated client raised: an ApiException (an
    answer, or status 0 when none came) or a connection failure."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status > 0:
        return _answer_error(status, f"{what}: {getattr(exc, 'reason', '')} {_reason(getattr(exc, 'body', ''))}")
    return KubeUnavailable(f"{what}: {type(exc).__name__}: {exc}")


def _client_exceptions() -> tuple[type[Exception], ...]:
    """What the generated client raises on a failed request."""
    import urllib3  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    return ApiException, urllib3.exceptions.HTTPError, OSError


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
        if not 200 <= status <= 299:
            raise _answer_error(status, f"{method} {path}: {_reason(raw)}")
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


#: The generated client's typed APIs the sensor uses, by API group/version.
_TYPED_APIS = {"v1": "CoreV1Api", "apps/v1": "AppsV1Api", "batch/v1": "BatchV1Api"}


def typed_api(api: Any, group_version: str) -> Any:
    """The generated client's typed API for `group_version` ("v1", "apps/v1",
    "batch/v1") on ApiClient `api`; call its methods through `call`."""
    from kubernetes import client  # noqa: PLC0415

    return getattr(client, _TYPED_APIS[group_version])(api)


def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`method(*args, **kwargs)` of a typed API, its failures as KubeRejected (with the
    HTTP status) or KubeUnavailable."""
    try:
        return method(*args, **kwargs)
    except _client_exceptions() as exc:
        raise _client_error(exc, getattr(method, "__name__", "request")) from exc


class Watch:
    """A watch of a typed API's list method (`kubernetes.watch.Watch`), its failures as
    Falconer's exceptions (a 410 Gone ends it with KubeRejected status 410)."""

    def __init__(self) -> None:
        from kubernetes import watch  # noqa: PLC0415

        self._watch = watch.Watch()  # type: ignore[no-untyped-call]

    def stream(self, method: Callable[..., Any], **kwargs: Any) -> Iterator[dict[str, Any]]:
        """The watch events ({"type", "object", "raw_object"}) of `method(**kwargs)`."""
        try:
            yield from self._watch.stream(method, **kwargs)  # type: ignore[no-untyped-call]
        except _client_exceptions() as exc:
            raise _client_error(exc, getattr(method, "__name__", "watch")) from exc

    def stop(self) -> None:
        """End the stream (its connection is cut)."""
        self._watch.stop()  # type: ignore[no-untyped-call]


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
