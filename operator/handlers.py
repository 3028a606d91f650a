"""kopf handlers: thin wiring from watch events to `reconcile.Reconciler`.

Every handler is synchronous (kopf runs it in a worker thread) and level-based: it asks
the reconciler to bring the object in line with the world, whatever the event was. Bad
input never raises from here (it ends in a condition); only API failures do, as a
delayed `kopf.TemporaryError`, so the operator never hot-loops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kopf

from falconer.operator.reconcile import Reconciler, TransientError

GROUP, VERSION = "falconer.io", "v1alpha1"
#: Seconds before a handler that hit an API failure is retried.
RETRY_DELAY = 10.0
#: The Reconciler for this process, made at startup (handlers run only after it).
_RECONCILER: list[Reconciler] = []


def _reconciler() -> Reconciler:
    return _RECONCILER[0]


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event through kopf (batched and retried off the handler thread)."""
    kopf.event(kopf.Body(body), type=type_, reason=reason, message=message[:1024])


def _guard(what: str, fn: Callable[[], Any]) -> None:
    """Run `fn`; API failures retry later, never in a tight loop."""
    try:
        fn()
    except TransientError as exc:
        raise kopf.TemporaryError(f"{what}: {exc}", delay=RETRY_DELAY) from exc


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations of our group (status is schema-checked)."""
    from kubernetes import client, config

    from falconer.operator.kube import Kube

    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="falconer.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="falconer.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "falconer.io/cleanup"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
    config.load_config()
    _RECONCILER[:] = [Reconciler(Kube(client.ApiClient()), _post_event, logger)]


@kopf.on.resume(GROUP, VERSION, "falcorules")
@kopf.on.create(GROUP, VERSION, "falcorules")
@kopf.on.update(GROUP, VERSION, "falcorules")
def falcorule_changed(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """Compile the FalcoRule, report in its status, re-render the instances using it."""
    _guard(f"FalcoRule {namespace}/{name}", lambda: _reconciler().reconcile_rule(_plain(body)))


@kopf.on.delete(GROUP, VERSION, "falcorules", optional=True)
def falcorule_deleted(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """Re-render the instances that used the deleted FalcoRule."""
    labels = dict(body.get("metadata", {}).get("labels") or {})

    def rerender() -> None:
        for inst in _reconciler().instances_using(namespace, name, labels):
            _reconciler().reconcile_instance(namespace, inst["metadata"]["name"])

    _guard(f"FalcoRule {namespace}/{name} deleted", rerender)


@kopf.on.resume(GROUP, VERSION, "falcoinstances")
@kopf.on.create(GROUP, VERSION, "falcoinstances")
@kopf.on.update(GROUP, VERSION, "falcoinstances")
def falcoinstance_changed(namespace: str, name: str, **_: Any) -> None:
    """Render and apply the instance's ConfigMap, DaemonSet and RBAC; report status."""
    _guard(f"FalcoInstance {namespace}/{name}", lambda: _reconciler().reconcile_instance(namespace, name))


@kopf.on.delete(GROUP, VERSION, "falcoinstances")
def falcoinstance_deleted(namespace: str, name: str, logger: logging.Logger, **_: Any) -> None:
    """Delete the sensor's ClusterRoleBinding; owner references take care of the rest."""
    _guard(
        f"FalcoInstance {namespace}/{name} deleted",
        lambda: _reconciler().instance_deleted(namespace, name),
    )
    logger.info("removed the sensor binding of %s/%s", namespace, name)


@kopf.on.event("apps", "v1", "daemonsets", labels={"app.kubernetes.io/managed-by": "falconer-operator"})
def daemonset_event(body: kopf.Body, namespace: str, **_: Any) -> None:
    """A sensor DaemonSet changed (rollout progress, deletion): refresh its instance."""
    instance = _reconciler().instance_of_daemonset(_plain(body))
    if instance:
        _guard(f"FalcoInstance {namespace}/{instance}", lambda: _reconciler().reconcile_instance(namespace, instance))


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's read-only body as plain dicts and lists."""
    return _copy(body)


def _copy(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
