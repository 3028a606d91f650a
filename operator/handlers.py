"""kopf handlers: thin wiring from watch events to `reconcile.Reconciler`.

Every handler is synchronous (kopf runs it in a worker thread) and level-based: it asks
the reconciler to bring the object in line with the world, whatever the event was. Bad
input never raises from here (it ends in a condition); only API failures do, as a
delayed `kopf.TemporaryError`, so the operator never hot-loops. kopf retries that for
the change handlers only: the `on.event` ones (FalcoRule deleted, DaemonSet changed)
log it and are not retried, so their instance catches up at its next event or resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, cast

import kopf

from falconer.operator import webhookserver
from falconer.operator.api import GROUP, MANAGED_BY, VERSION
from falconer.operator.catalog import IndexedCatalog
from falconer.operator.kube import connect
from falconer.operator.reconcile import Reconciler, TransientError
from falconer.operator.tenancy import RuleRef
from falconer.sensorreport import SENSORS_KEY

T = TypeVar("T")
#: kopf passes this logger type to handlers.
Logger = logging.Logger | logging.LoggerAdapter[Any]
#: Seconds before a handler that hit an API failure is retried: doubling from the
#: first to the last, so a lasting failure costs one request every few minutes.
RETRY_FIRST, RETRY_MAX = 5.0, 300.0
#: Seconds between two resyncs of each FalcoInstance (`falconer operator --resync-seconds`
#: sets $FALCONER_RESYNC_SECONDS before the handlers are imported).
RESYNC_SECONDS = float(os.environ.get("FALCONER_RESYNC_SECONDS", "60"))


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's "last handled" state as a digest, not a copy of the spec.

    A copy of a large FalcoRule's spec would not fit in an annotation (256 KiB for all of
    an object's annotations). The handlers are level-based and never read the diff: they
    only need to know that something changed, which equal digests tell as well.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        """The digest of kopf's essence (spec, labels, annotations) of `body`."""
        essence = super().build(body=body, extra_fields=extra_fields)
        canonical = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        return cast(kopf.BodyEssence, {"digest": hashlib.sha256(canonical.encode()).hexdigest()})


def _reconciler(memo: kopf.Memo, kwargs: Mapping[str, Any]) -> Reconciler:
    """The process's Reconciler, made at startup (handlers run only after startup),
    reading rules and instances from kopf's indexes (every handler is given them)."""
    reconciler: Reconciler = memo["reconciler"]
    if not isinstance(reconciler.catalog, IndexedCatalog):
        reconciler.catalog = IndexedCatalog(kwargs["falcorule_index"], kwargs["clusterfalcorule_index"],
                                            kwargs["falcoinstance_index"])
    return reconciler


def _post_event(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event through kopf (batched and retried off the handler thread)."""
    kopf.event(kopf.Body(body), type=type_, reason=reason, message=message[:1024])  # type: ignore[arg-type]


def _namespaced(namespace: str | None) -> str:
    """Falconer's resources (and the DaemonSets it watches) are all namespaced."""
    if namespace is None:
        raise kopf.PermanentError("a cluster-scoped object reached a handler for namespaced resources")
    return namespace


def _guard(what: str, fn: Callable[[], T], retry: int = 0) -> T:
    """Run `fn` (its result returned); API failures retry later with exponential backoff,
    never in a tight loop."""
    try:
        return fn()
    except TransientError as exc:
        delay = min(RETRY_MAX, RETRY_FIRST * 2 ** min(retry, 16))
        raise kopf.TemporaryError(f"{what}: {exc}", delay=delay) from exc


class _QuietResync(logging.Filter):
    """Drops kopf's line for every successful resync (one per instance per period) and
    roll-up of sensor reports (one per report): an idle operator logs nothing; one that
    fails or repairs something is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.levelno <= logging.INFO and "succeeded" in message
                    and ("falcoinstance_resync" in message or "falcoinstance_reported" in message))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations of our group (status is schema-checked)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="falconer.io")
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix="falconer.io", key="last-handled-digest"
    )
    settings.persistence.finalizer = "falconer.io/cleanup"
    settings.posting.level = logging.INFO
    logging.getLogger("kopf.objects").addFilter(_QuietResync())
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.batching.error_delays = (1, 2, 5, 10, 30, 60)
    # kopf's own requests (watch streams, its status and finalizer patches) retry with
    # these delays, and a watch stream starts the sequence over when it gives up: from
    # 5 s up to 30 s, not kopf's 1, 1, 2, 3 ... s, so an API server outage costs each of
    # the 7 streams about one attempt per 20 s (tests/faults/test_outages.py).
    settings.networking.error_backoffs = (5, 10, 20, 30, 30, 30, 30, 30, 30)
    kube = connect()
    reconciler = Reconciler(kube, _post_event)
    memo["reconciler"] = reconciler
    webhook_env = os.environ.get(webhookserver.WebhookSettings.ENV)
    if webhook_env:
        memo["webhook"] = webhookserver.start(webhookserver.WebhookSettings.from_env(webhook_env), kube,
                                              lambda: reconciler.catalog)


@kopf.on.cleanup()
def stop_webhook(memo: kopf.Memo, **_: Any) -> None:
    """Stop the admission webhook's server (the API server then ignores it: failurePolicy Ignore)."""
    server = memo.get("webhook")
    if server is not None:
        server.stop()


@kopf.index(GROUP, VERSION, "falcorules")
def falcorule_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str | None, dict[str, Any]]:
    """FalcoRules by namespace, as last seen by the watch (operator/catalog.py)."""
    return {namespace: _plain(body)}


@kopf.index(GROUP, VERSION, "clusterfalcorules")
def clusterfalcorule_index(body: kopf.Body, **_: Any) -> dict[str | None, dict[str, Any]]:
    """ClusterFalcoRules (under the key None), as last seen by the watch."""
    return {None: _plain(body)}


@kopf.index(GROUP, VERSION, "falcoinstances")
def falcoinstance_index(body: kopf.Body, namespace: str | None, **_: Any) -> dict[str | None, dict[str, Any]]:
    """FalcoInstances by namespace, as last seen by the watch."""
    return {namespace: _plain(body)}


@kopf.on.resume(GROUP, VERSION, "falcorules")
@kopf.on.create(GROUP, VERSION, "falcorules")
@kopf.on.update(GROUP, VERSION, "falcorules")
@kopf.on.resume(GROUP, VERSION, "clusterfalcorules")
@kopf.on.create(GROUP, VERSION, "clusterfalcorules")
@kopf.on.update(GROUP, VERSION, "clusterfalcorules")
def falcorule_changed(body: kopf.Body, name: str, retry: int, memo: kopf.Memo, **kwargs: Any) -> None:
    """Compile the FalcoRule or ClusterFalcoRule, report in its status, re-render the
    instances using it."""
    ref = RuleRef.of(body)
    _guard(f"{ref.kind} {ref.namespace}/{name}", lambda: _reconciler(memo, kwargs).reconcile_rule(_plain(body)),
           retry)


def _deleted(type: str | None, **_: Any) -> bool:
    """kopf's `when` filter for watch events of deletion (kopf names the kwarg `type`)."""
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, "falcorules", when=_deleted)
@kopf.on.event(GROUP, VERSION, "clusterfalcorules", when=_deleted)
def falcorule_deleted(body: kopf.Body, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A deleted FalcoRule or ClusterFalcoRule (no finalizer, so only the watch tells):
    re-render its instances."""
    labels = dict(body.get("metadata", {}).get("labels") or {})
    ref = RuleRef.of(body)
    _guard(f"{ref.kind} {ref.namespace}/{name} deleted",
           lambda: _reconciler(memo, kwargs).rule_deleted(ref, labels))


@kopf.on.resume(GROUP, VERSION, "falcoinstances")
@kopf.on.create(GROUP, VERSION, "falcoinstances")
@kopf.on.update(GROUP, VERSION, "falcoinstances")
def falcoinstance_changed(namespace: str | None, name: str, retry: int, memo: kopf.Memo, **kwargs: Any) -> None:
    """Render and apply the instance's ConfigMap, DaemonSet and RBAC; report status."""
    ns = _namespaced(namespace)
    _guard(f"FalcoInstance {ns}/{name}", lambda: _reconciler(memo, kwargs).reconcile_instance(ns, name), retry)


@kopf.on.delete(GROUP, VERSION, "falcoinstances")
def falcoinstance_deleted(
    namespace: str | None, name: str, retry: int, logger: Logger, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Delete the sensor's ClusterRoleBinding; owner references take care of the rest."""
    ns = _namespaced(namespace)
    if _guard(f"FalcoInstance {ns}/{name} deleted", lambda: _reconciler(memo, kwargs).instance_deleted(ns, name), retry):
        logger.info("removed the sensor binding of %s/%s", ns, name)


def _owned_event(body: kopf.Body, namespace: str | None, memo: kopf.Memo, kwargs: Mapping[str, Any]) -> None:
    """Something an instance owns changed or vanished: reconcile the instance, which puts
    back what drifted (compare-then-apply writes only what differs)."""
    instance = _reconciler(memo, kwargs).instance_of_owned(_plain(body))
    if instance:
        ns = _namespaced(namespace)
        _guard(f"FalcoInstance {ns}/{instance}", lambda: _reconciler(memo, kwargs).reconcile_instance(ns, instance))


@kopf.on.event("apps", "v1", "daemonsets", labels=MANAGED_BY)
def daemonset_event(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A sensor DaemonSet changed (rollout progress, an edit, deletion)."""
    _owned_event(body, namespace, memo, kwargs)


@kopf.on.event("", "v1", "configmaps", labels=MANAGED_BY)
def configmap_event(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A rules ConfigMap was edited or deleted behind the operator's back."""
    _owned_event(body, namespace, memo, kwargs)


@kopf.on.event("", "v1", "serviceaccounts", labels=MANAGED_BY)
def serviceaccount_event(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    """A sensor ServiceAccount was edited or deleted behind the operator's back."""
    _owned_event(body, namespace, memo, kwargs)


@kopf.timer(GROUP, VERSION, "falcoinstances", interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def falcoinstance_resync(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """The periodic resync: whatever a watch missed (the sensor's ClusterRoleBinding, which
    is cluster-scoped and not watched; events lost while the API server was away) is put
    back within one period. Compare-then-apply makes a resync of a healthy instance reads only."""
    ns = _namespaced(namespace)
    _guard(f"FalcoInstance {ns}/{name} resync", lambda: _reconciler(memo, kwargs).reconcile_instance(ns, name),
           int(kwargs.get("retry", 0)))


def _reported(type: str | None, body: kopf.Body, **_: Any) -> bool:
    """kopf's `when` filter: an instance changed and carries sensor reports (a sensor's
    status write, or the operator's own, which rolls up to no change and writes nothing)."""
    return type == "MODIFIED" and bool((body.get("status") or {}).get(SENSORS_KEY))


@kopf.on.event(GROUP, VERSION, "falcoinstances", when=_reported)
def falcoinstance_reported(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    """A sensor reported (status.sensors, which no change handler sees): roll the reports
    up into the instance's and its FalcoRules' status now, not at the next resync."""
    ns = _namespaced(namespace)
    _guard(f"FalcoInstance {ns}/{name} roll-up", lambda: _reconciler(memo, kwargs).reconcile_instance(ns, name))


def _plain(body: kopf.Body) -> dict[str, Any]:
    """kopf's read-only body as plain dicts and lists."""
    plain: dict[str, Any] = _copy(body)
    return plain


def _copy(value: Any) -> Any:
    """A deep copy of kopf's mapping views (which are not dicts) as plain containers."""
    if hasattr(value, "items"):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value
