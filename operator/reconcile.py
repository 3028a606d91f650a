"""Reconcile FalcoRules and FalcoInstances: plain logic, no kopf.

The kopf handlers call in here. Everything is level-based: a reconcile reads the
current state of the world, computes what should be, writes only differences and
reports through status and Events. Calling it twice, or after a restart, changes nothing.

Errors split in two:
- permanent (bad input: a rule that does not compile, a rendered object the API server
  rejects as invalid) become conditions and Events; the operator then waits for the
  next change of the resource instead of retrying;
- transient (API unavailable, conflicts) raise `TransientError`, which the handlers turn
  into a delayed kopf retry.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from falconer import sensorconfig
from falconer.operator import render, rollup, rules, selectors, status
from falconer.operator.api import API_VERSION, RULES_HASH_ANNOTATION
from falconer.operator.catalog import Catalog, ListedCatalog
from falconer.operator.kube import UNREACHABLE, ApiError, Kube
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import FalcoInstanceSpec, parse_instance
from falconer.operator.tenancy import RuleRef, Tenancy, compile_in_order, load_order, rule_spec
from falconer.sensorconfig import CONFIG_FILE
from falconer.sensorreport import SENSORS_KEY
from falconer.shapes import ShapeError

#: HTTP statuses that mean "this object is wrong", not "try again".
PERMANENT_HTTP = frozenset({400, 403, 404, 422})


class EventSink(Protocol):
    """Posts a Kubernetes Event about an object (kopf's poster in the operator)."""

    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class TransientError(RuntimeError):
    """The API server failed in a way worth retrying later."""


@dataclass(frozen=True)
class Selected:
    """One FalcoRule or ClusterFalcoRule as an instance uses it (`name`: its label,
    operator/tenancy.py; `tenant`: the scope it loads in, "" for the cluster's)."""

    name: str
    ref: RuleRef
    tenant: str
    generation: int
    text: RuleText | None  # what the sensors get: the current text if valid, else the last valid one
    valid: bool
    compiled: rules.Compiled  # its current text compiled after the FalcoRules before it


def _api_error(exc: ApiError, what: str) -> str:
    """`what` and the API server's answer, for conditions and logs."""
    return f"{what}: {exc.status} {exc.reason}: {exc.summary()}"  # type: ignore[no-untyped-call]


def _unreachable(exc: Exception, what: str) -> TransientError:
    """A TransientError for a failure below HTTP, naming its type (the text may be empty)."""
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


class Reconciler:
    """Reconciles the operator's resources against one API server."""

    def __init__(self, kube: Kube, post_event: EventSink, catalog: Catalog | None = None) -> None:
        self._kube = kube
        self._post = post_event
        #: Where rules and instances are read (kopf indexes in the operator).
        self.catalog: Catalog = catalog or ListedCatalog(self._list)
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # Instances with a reconcile waiting for their lock: it reads the world when it
        # runs, so a burst of changes (100 FalcoRules applied at once) costs one more
        # reconcile, not one each.
        self._waiting: set[tuple[str, str]] = set()

    # ---- FalcoRule ---------------------------------------------------------------

    def reconcile_rule(self, body: dict[str, Any]) -> None:
        """Compile a FalcoRule or ClusterFalcoRule, write its status, re-render the
        instances using it."""
        users = self._instances_using(RuleRef.of(body), body["metadata"].get("labels") or {})
        self._write_rule_status(body, users, _Views(self))
        self._rerender(users)

    def rule_deleted(self, ref: RuleRef, labels: dict[str, str]) -> None:
        """Re-render the instances that selected (or rendered) a deleted rule."""
        self._rerender(self._instances_using(ref, labels))

    def _rerender(self, instances: Sequence[dict[str, Any]]) -> None:
        """Reconcile each instance (each under its own lock, reading it afresh)."""
        for instance in instances:
            self.reconcile_instance(instance["metadata"]["namespace"], instance["metadata"]["name"])

    def _write_rule_status(self, body: dict[str, Any], instances: Sequence[dict[str, Any]],
                           views: _Views) -> None:
        """Compile the rule (cached) and write its status if it changed; an Event when
        its validity changed."""
        meta = body["metadata"]
        ref = RuleRef.of(body)
        labels = meta.get("labels") or {}
        selecting = [i for i in instances if _loads(i, ref, labels) and not i["metadata"].get("deletionTimestamp")]
        spec = rule_spec(body)
        in_context = [c for i in selecting if (c := views.compiled_in(i, ref)) is not None]
        if in_context:  # compiled where it loads; alone only when nothing loads it
            compiled = rules.merge_contexts(in_context)
            text = None if isinstance(spec, ShapeError) else rules.render_text(meta["name"], spec)
        else:
            text, compiled = rules.compile_falcorule(meta["name"], spec)
        selected_by = len(selecting)
        old = body.get("status") or {}
        generation = int(meta.get("generation") or 0)
        applied_in = sum(1 for i in selecting if views.ships(i, ref, generation))
        new, verdicts = status.rule_status(old, compiled, text.digest if text else None, selected_by, generation,
                                           applied_in)
        new.update(rollup.rule_rollup(ref.namespace, ref.name, generation, rollup.defined_rules(spec),
                                      instances, datetime.datetime.now(datetime.UTC)))
        self._write_status(ref.kind, body, new, status.rule_events(old.get("conditions"), verdicts))

    def _instances_using(self, ref: RuleRef, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Instances that load the rule (selector and scope), or that rendered it before."""
        found = []
        for inst in self.catalog.instances():
            before = {r.get("name") for r in (inst.get("status") or {}).get("rules") or ()}
            if _loads(inst, ref, labels) or ref.label(inst["metadata"]["namespace"]) in before:
                found.append(inst)
        return found

    # ---- FalcoInstance -----------------------------------------------------------

    def reconcile_instance(self, namespace: str, name: str) -> None:
        """Render and apply an instance's objects; write its status (one at a time per
        instance; nothing to do when another call is already waiting to run, since that
        one reads the world after this call's cause)."""
        key = (namespace, name)
        with self._locks_guard:
            if key in self._waiting:
                return
            self._waiting.add(key)
        with self._lock(namespace, name):
            with self._locks_guard:
                self._waiting.discard(key)
            body = self._get("FalcoInstance", name, namespace)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            self._reconcile_instance(body)

    def _reconcile_instance(self, body: dict[str, Any]) -> None:
        """Select, compile, render and apply; an invalid combination keeps the live ConfigMap."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = _instance_spec(body)
        if isinstance(spec, ShapeError):
            # The schema let through what the model refuses: nothing is rendered from it.
            self._finish(body, status.InstanceState(spec_error=str(spec)), [], None, None)
            return
        names = render.Names.for_instance(namespace, name)
        live_cm = self._get("ConfigMap", names.configmap, namespace, api_version="v1")
        live_data = (live_cm or {}).get("data") or {}
        chosen = self._select(namespace, spec, live_data)
        texts = [s.text for s in chosen if s.text is not None]
        options = dataclasses.replace(spec.engine.options(), tenant_max_priority=spec.tenants.max_priority)
        combined = rules.compile_texts(texts, options)
        rendered = render.render_instance(body, spec, texts, _shipped_generations(chosen, live_data),
                                          service_monitors=self._serves(*render.SERVICE_MONITOR))
        objects = rendered.objects()
        too_large = render.configmap_too_large(rendered.configmap)
        if not combined.valid or too_large:
            # Keep the last valid rules: everything but the ConfigMap is still applied.
            objects = [o for o in objects if o is not rendered.configmap]
        changed, apply_error = self._apply(objects)
        self._remove(namespace, rendered.absent(names))
        apply_error = apply_error or too_large
        ds = self._get("DaemonSet", names.daemonset, namespace, api_version="apps/v1")
        state = status.InstanceState(
            selected=len(chosen),
            invalid_rules=tuple(s.name for s in chosen if not s.valid),
            compile_errors=tuple(f.text() for f in combined.errors),
            apply_error=apply_error,
            redefined=tuple(rules.redefinitions([(s.name, s.text) for s in chosen if s.text is not None])),
            rollout=status.RolloutState.from_daemonset(ds) if ds else None,
        )
        rules_hash = rendered.rules_hash if combined.valid and not apply_error else _live_hash(live_cm)
        self._finish(body, state, chosen, combined, rules_hash)
        self._announce(body, names, rendered, changed, len(texts))
        self._update_rule_statuses()

    def _announce(
        self, body: dict[str, Any], names: render.Names, rendered: render.Rendered, changed: set[str], files: int
    ) -> None:
        """Events for what this reconcile actually wrote (nothing when nothing changed)."""
        if "ConfigMap" in changed:
            self._post(body, "Normal", "RulesRendered",
                       f"ConfigMap {names.configmap}: {files} FalcoRule(s), rules hash {rendered.rules_hash}")
        if "DaemonSet" in changed:
            self._post(body, "Normal", "SensorsUpdated",
                       f"DaemonSet {names.daemonset} applied (settings hash {rendered.config_hash})")

    def _apply(self, objects: Sequence[dict[str, Any]]) -> tuple[set[str], str | None]:
        """Apply in order; the kinds that changed, and the API server's refusal, if any."""
        changed: set[str] = set()
        for obj in objects:
            what = f"{obj['kind']} {obj['metadata']['name']}"
            try:
                _, did_change = self._kube.apply(obj)
            except ApiError as exc:
                if exc.status not in PERMANENT_HTTP:
                    raise TransientError(_api_error(exc, f"applying {what}")) from exc
                return changed, _api_error(exc, f"the API server rejected {what}")
            except UNREACHABLE as exc:
                raise _unreachable(exc, f"applying {what}") from exc
            if did_change:
                changed.add(obj["kind"])
        return changed, None

    def _serves(self, api_version: str, kind: str) -> bool:
        """Whether the API server serves `kind` now (ServiceMonitor: the CRD is installed)."""
        found: bool = self._call(f"discovering {kind}", lambda: self._kube.serves(api_version, kind))
        return found

    def _remove(self, namespace: str, absent: Sequence[tuple[str, str, str]]) -> None:
        """Delete optional objects an earlier rendering made and this one has not (a
        kind the API server does not serve has none)."""
        for api_version, kind, name in absent:
            if self._serves(api_version, kind):
                self._call(f"deleting {kind} {namespace}/{name}",
                           functools.partial(self._kube.delete, api_version, kind, name, namespace))

    def _select(self, namespace: str, spec: FalcoInstanceSpec, live_data: dict[str, str]) -> list[Selected]:
        """The FalcoRules and ClusterFalcoRules the instance loads (operator/tenancy.py),
        in load order, each compiled after what loads before it in its scope (the
        cluster's rules, then its tenant's earlier ones) and with the text to ship."""
        tenancy = Tenancy.of(namespace, spec)
        candidates = load_order(tenancy, spec.rule_selector, self.catalog.rules(tenancy.namespaces()))

        def last_valid(label: str, tenant: str) -> RuleText | None:
            last = live_data.get(render.rule_file_key(label))
            return RuleText(label, last, tenant) if last is not None else None
        loaded = compile_in_order(candidates, namespace, rules.engine_options(tenant_max_priority=tenancy.max_priority),
                                  last_valid)
        return [Selected(done.label, done.candidate.ref, done.candidate.scope,
                         int(done.candidate.body["metadata"].get("generation") or 0), done.text,
                         done.compiled.valid, done.compiled) for done in loaded]

    def _finish(
        self,
        body: dict[str, Any],
        state: status.InstanceState,
        chosen: Sequence[Selected],
        combined: rules.Compiled | None,
        rules_hash: str | None,
    ) -> None:
        """Write the instance's status (only when it changed) and Events for new problems."""
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        names = render.Names.for_instance(meta["namespace"], meta["name"])
        old = body.get("status") or {}
        sensors = rollup.instance_rollup(old, rules_hash or "", datetime.datetime.now(datetime.UTC))
        verdicts = [*status.instance_verdicts(state), sensors.verdict]
        new: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": status.merge_conditions(old.get("conditions"), verdicts, generation, status.now()),
            "desiredNumberScheduled": state.rollout.desired if state.rollout else 0,
            "numberReady": state.rollout.ready if state.rollout else 0,
            "rulesHash": rules_hash or "",
            "configMap": names.configmap,
            "daemonSet": names.daemonset,
            "rules": [{"name": s.name, "generation": s.generation, "valid": s.valid} for s in chosen],
            "counts": combined.counts if combined else {"rules": 0, "macros": 0, "lists": 0},
            "errors": [f.to_status(with_rule=True) for f in (combined.errors if combined else ())],
            "warnings": [f.to_status(with_rule=True) for f in (combined.warnings if combined else ())],
            "sensorsReporting": sensors.reporting,
            "sensorsCurrent": sensors.current,
        }
        if sensors.stale_nodes:  # merge patch: null removes the report of a sensor that is gone
            new[SENSORS_KEY] = dict.fromkeys(sensors.stale_nodes)
        self._write_status("FalcoInstance", body, new, status.instance_events(old.get("conditions"), verdicts))

    def _update_rule_statuses(self) -> None:
        """Refresh the status of every rule an instance may load (`instances`, `Applied`,
        roll-up) after instances changed; each instance's ConfigMap and selection is read
        once for all of them, and a status is written only when it changed."""
        instances = self.catalog.instances()
        views = _Views(self)
        specs = [(i["metadata"]["namespace"], _instance_spec(i)) for i in instances]
        spaces = [Tenancy.of(ns, spec).namespaces() for ns, spec in specs if not isinstance(spec, ShapeError)]
        namespaces = None if None in spaces else frozenset().union(*(s for s in spaces if s is not None))
        for body in self.catalog.rules(namespaces):
            self._write_rule_status(body, instances, views)

    def instance_deleted(self, namespace: str, name: str) -> bool:
        """Remove the sensor's ClusterRoleBinding (it cannot be owned by the instance) and
        recount the FalcoRules' instances; owner references remove the rest."""
        names = render.Names.for_instance(namespace, name)
        removed = self._call(
            f"deleting ClusterRoleBinding {names.clusterrolebinding}",
            lambda: self._kube.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", names.clusterrolebinding),
        )
        self._update_rule_statuses()
        return bool(removed)

    def instance_of_owned(self, obj: dict[str, Any]) -> str | None:
        """The owning instance's name for a namespaced object the operator made."""
        for ref in obj.get("metadata", {}).get("ownerReferences") or ():
            if ref.get("kind") == "FalcoInstance" and ref.get("apiVersion", "").startswith("falconer.io/"):
                return str(ref.get("name"))
        return None

    # ---- plumbing ----------------------------------------------------------------

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        """The lock serialising reconciles of one instance (handlers run in several threads)."""
        with self._locks_guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def _write_status(
        self, kind: str, body: dict[str, Any], new: dict[str, Any], events: Sequence[status.EventSpec]
    ) -> None:
        """Write `new` as the object's status only when it changes something (so a repeated
        reconcile writes nothing), then post the Events the change calls for."""
        old = body.get("status") or {}
        if not any(old.get(k) != v for k, v in new.items()):
            return
        meta = body["metadata"]
        self._patch_status(kind, meta.get("namespace"), meta["name"], new)
        for event in events:
            self._post(body, *event)

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run an API read (or the binding's delete); any failure is worth a later retry."""
        try:
            return fn()
        except ApiError as exc:
            raise TransientError(_api_error(exc, what)) from exc
        except UNREACHABLE as exc:
            raise _unreachable(exc, what) from exc

    def _get(self, kind: str, name: str, namespace: str, api_version: str = API_VERSION) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call(
            f"reading {kind} {namespace}/{name}", lambda: self._kube.get(api_version, kind, name, namespace)
        )
        return found

    def _list(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            f"listing {kind} in {namespace}", lambda: self._kube.list(API_VERSION, kind, namespace)
        )
        return found

    def _patch_status(self, kind: str, namespace: str | None, name: str, new: dict[str, Any]) -> None:
        """Write a status; an object deleted meanwhile needs none."""
        what = f"writing status of {kind} {namespace}/{name}"
        try:
            self._kube.patch_status(API_VERSION, kind, namespace, name, new)
        except ApiError as exc:
            if exc.status == 404:
                return
            raise TransientError(_api_error(exc, what)) from exc
        except UNREACHABLE as exc:
            raise _unreachable(exc, what) from exc


def _loads(instance: dict[str, Any], ref: RuleRef, labels: dict[str, str]) -> bool:
    """Whether the instance loads that rule: its selector takes the labels and the rule's
    namespace is in one of its scopes (operator/tenancy.py)."""
    spec = _instance_spec(instance)
    return (not isinstance(spec, ShapeError) and selectors.matches(spec.rule_selector, labels)
            and Tenancy.of(instance["metadata"]["namespace"], spec).scope(ref) is not None)


def _instance_spec(instance: dict[str, Any]) -> FalcoInstanceSpec | ShapeError:
    """The instance's parsed spec, or why it does not parse (for its status)."""
    try:
        return parse_instance(instance.get("spec"))
    except ShapeError as exc:
        return exc


def _shipped_generations(chosen: Sequence[Selected], live_data: dict[str, str]) -> dict[str, int]:
    """The generation whose text each FalcoRule ships: its own when valid, else the one
    the live ConfigMap recorded for the last valid text it keeps (0 when unknown), so a
    sensor never reports a generation it was not given."""
    try:
        live = sensorconfig.load(live_data.get(CONFIG_FILE, ""), CONFIG_FILE).generations()
    except sensorconfig.ConfigError:
        live = {}
    return {s.name: s.generation if s.valid else live.get(render.rule_file_key(s.name), 0)
            for s in chosen if s.text is not None}


def _live_hash(configmap: dict[str, Any] | None) -> str | None:
    """The rules hash of the ConfigMap the sensors read now (kept when a render is refused)."""
    return ((configmap or {}).get("metadata", {}).get("annotations") or {}).get(RULES_HASH_ANNOTATION)


class _Views:
    """What one pass reads of each instance, read at most once: its live ConfigMap's data
    and its selection (so refreshing N rules' status costs one read per instance, not N)."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler
        self._live: dict[tuple[str, str], dict[str, str]] = {}
        self._chosen: dict[tuple[str, str], list[Selected] | None] = {}

    def live_data(self, instance: dict[str, Any]) -> dict[str, str]:
        """The data of the instance's live ConfigMap (what the API server accepted)."""
        meta = instance["metadata"]
        key = (meta["namespace"], meta["name"])
        if key not in self._live:
            names = render.Names.for_instance(*key)
            live = self._r._get("ConfigMap", names.configmap, meta["namespace"], api_version="v1")
            self._live[key] = (live or {}).get("data") or {}
        return self._live[key]

    def chosen(self, instance: dict[str, Any]) -> list[Selected] | None:
        """The instance's selection; None when its spec is invalid (its status says so)."""
        meta = instance["metadata"]
        key = (meta["namespace"], meta["name"])
        if key not in self._chosen:
            spec = _instance_spec(instance)
            self._chosen[key] = None if isinstance(spec, ShapeError) else \
                self._r._select(meta["namespace"], spec, self.live_data(instance))
        return self._chosen[key]

    def compiled_in(self, instance: dict[str, Any], ref: RuleRef) -> rules.Compiled | None:
        """The rule compiled where the instance loads it (after what loads before it)."""
        return next((s.compiled for s in self.chosen(instance) or () if s.ref == ref), None)

    def ships(self, instance: dict[str, Any], ref: RuleRef, generation: int) -> bool:
        """Whether the instance's live ConfigMap holds this generation of the rule."""
        text = self.live_data(instance).get(CONFIG_FILE)
        return text is not None and render.ships(text, ref.namespace, ref.name, generation)

