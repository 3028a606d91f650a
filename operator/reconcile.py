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

import datetime
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from falconer.operator import render, rollup, rules, selectors, status
from falconer.operator.api import API_VERSION, RULES_HASH_ANNOTATION
from falconer.operator.kube import UNREACHABLE, ApiError, Kube
from falconer.operator.ruleyaml import RuleText
from falconer.sensorreport import FALCO_RULES_KEY, SENSORS_KEY

#: HTTP statuses that mean "this object is wrong", not "try again".
PERMANENT_HTTP = frozenset({400, 403, 404, 422})


class EventSink(Protocol):
    """Posts a Kubernetes Event about an object (kopf's poster in the operator)."""

    def __call__(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None: ...


class TransientError(RuntimeError):
    """The API server failed in a way worth retrying later."""


@dataclass(frozen=True)
class Selected:
    """One FalcoRule as an instance uses it."""

    name: str
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

    def __init__(self, kube: Kube, post_event: EventSink) -> None:
        self._kube = kube
        self._post = post_event
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- FalcoRule ---------------------------------------------------------------

    def reconcile_rule(self, body: dict[str, Any]) -> None:
        """Compile a FalcoRule, write its status, re-render the instances using it."""
        meta = body["metadata"]
        users = self._instances_using(meta["namespace"], meta["name"], meta.get("labels") or {})
        self._write_rule_status(body, users)
        self._rerender(meta["namespace"], users)

    def rule_deleted(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        """Re-render the instances that selected (or rendered) a deleted FalcoRule."""
        self._rerender(namespace, self._instances_using(namespace, name, labels))

    def _rerender(self, namespace: str, instances: Sequence[dict[str, Any]]) -> None:
        """Reconcile each instance (each under its own lock, reading it afresh)."""
        for instance in instances:
            self.reconcile_instance(namespace, instance["metadata"]["name"])

    def _write_rule_status(self, body: dict[str, Any], instances: Sequence[dict[str, Any]]) -> None:
        """Compile the FalcoRule (cached) and write its status if it changed; an Event when
        its validity changed."""
        meta = body["metadata"]
        labels = meta.get("labels") or {}
        selecting = [i for i in instances if _selects(i, labels) and not i["metadata"].get("deletionTimestamp")]
        text, compiled = rules.compile_falcorule(meta["name"], body.get("spec"))
        in_context = [c for i in selecting if (c := self._compiled_in(i, meta["name"])) is not None]
        if in_context:
            compiled = rules.merge_contexts(in_context)
        selected_by = len(selecting)
        old = body.get("status") or {}
        generation = int(meta.get("generation") or 0)
        applied_in = sum(1 for i in selecting if self._ships(i, meta["namespace"], meta["name"], generation))
        new, verdicts = status.rule_status(old, compiled, text.digest if text else None, selected_by, generation,
                                           applied_in)
        new.update(rollup.rule_rollup(meta["namespace"], meta["name"], generation, rollup.defined_rules(body.get("spec")),
                                      instances, datetime.datetime.now(datetime.UTC)))
        self._write_status("FalcoRule", body, new, status.rule_events(old.get("conditions"), verdicts))

    def _ships(self, instance: dict[str, Any], namespace: str, rule_name: str, generation: int) -> bool:
        """Whether the instance's live ConfigMap (what the API server accepted, not what
        was rendered) holds this generation of the FalcoRule."""
        meta = instance["metadata"]
        names = render.Names.for_instance(meta["namespace"], meta["name"])
        live = self._get("ConfigMap", names.configmap, meta["namespace"], api_version="v1")
        text = ((live or {}).get("data") or {}).get(render.CONFIG_FILE)
        return text is not None and render.ships(text, namespace, rule_name, generation)

    def _compiled_in(self, instance: dict[str, Any], rule_name: str) -> rules.Compiled | None:
        """A FalcoRule compiled where `instance` loads it (after the FalcoRules before it);
        None when the instance's selector is broken (its own status says so)."""
        meta = instance["metadata"]
        spec = render.with_defaults(instance.get("spec"))
        names = render.Names.for_instance(meta["namespace"], meta["name"])
        live_cm = self._get("ConfigMap", names.configmap, meta["namespace"], api_version="v1")
        try:
            chosen = self._select(meta["namespace"], spec, (live_cm or {}).get("data") or {})
        except selectors.SelectorError:
            return None
        return next((s.compiled for s in chosen if s.name == rule_name), None)

    def _instances_using(self, namespace: str, rule_name: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        """Instances whose selector matches the labels, or that rendered this FalcoRule before."""
        found = []
        for inst in self._list("FalcoInstance", namespace):
            before = {r.get("name") for r in (inst.get("status") or {}).get("rules") or ()}
            if _selects(inst, labels) or rule_name in before:
                found.append(inst)
        return found

    # ---- FalcoInstance -----------------------------------------------------------

    def reconcile_instance(self, namespace: str, name: str) -> None:
        """Render and apply an instance's objects; write its status (one at a time per instance)."""
        with self._lock(namespace, name):
            body = self._get("FalcoInstance", name, namespace)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return
            self._reconcile_instance(body)

    def _reconcile_instance(self, body: dict[str, Any]) -> None:
        """Select, compile, render and apply; an invalid combination keeps the live ConfigMap."""
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        spec = render.with_defaults(body.get("spec"))
        names = render.Names.for_instance(namespace, name)
        live_cm = self._get("ConfigMap", names.configmap, namespace, api_version="v1")
        live_data = (live_cm or {}).get("data") or {}
        try:
            chosen = self._select(namespace, spec, live_data)
        except selectors.SelectorError as exc:
            self._finish(body, status.InstanceState(apply_error=f"spec.ruleSelector: {exc}"), [], None, None)
            return
        texts = [s.text for s in chosen if s.text is not None]
        options = rules.engine_options(spec["minPriority"], spec["ruleMatching"], render.selection_actions(spec))
        combined = rules.compile_texts(texts, options)
        rendered = render.render_instance(body, texts, _shipped_generations(chosen, live_data))
        objects = rendered.objects()
        too_large = render.configmap_too_large(rendered.configmap)
        if not combined.valid or too_large:
            # Keep the last valid rules: everything but the ConfigMap is still applied.
            objects = [o for o in objects if o is not rendered.configmap]
        changed, apply_error = self._apply(objects)
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
        self._update_rule_counts(namespace)

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

    def _select(self, namespace: str, spec: dict[str, Any], live_data: dict[str, str]) -> list[Selected]:
        """The FalcoRules the instance selects, in load order, each with the text to ship."""
        selector = spec.get("ruleSelector")
        candidates = [
            fr for fr in self._list("FalcoRule", namespace)
            if selectors.matches(selector, fr["metadata"].get("labels"))
            and not fr["metadata"].get("deletionTimestamp")
        ]
        candidates.sort(key=lambda fr: (int((fr.get("spec") or {}).get("order") or 0), fr["metadata"]["name"]))
        chosen: list[Selected] = []
        for fr in candidates:
            fr_name = fr["metadata"]["name"]
            before = [s.text for s in chosen if s.text is not None]
            text, compiled = rules.compile_falcorule(fr_name, fr.get("spec"), before)
            if not compiled.valid or text is None:
                last = live_data.get(render.rule_file_key(fr_name))
                text = RuleText(fr_name, last) if last is not None else None
            chosen.append(Selected(fr_name, int(fr["metadata"].get("generation") or 0), text,
                                   compiled.valid, compiled))
        return chosen

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
        verdicts = [*status.instance_verdicts(state), sensors.verdict,
                    rollup.outputs_verdict(render.with_defaults(body.get("spec")).get("outputs"))]
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

    def _update_rule_counts(self, namespace: str) -> None:
        """Refresh every FalcoRule's `instances` and `Applied` after instances changed."""
        instances = self._list("FalcoInstance", namespace)
        for fr in self._list("FalcoRule", namespace):
            self._write_rule_status(fr, instances)

    def instance_deleted(self, namespace: str, name: str) -> bool:
        """Remove the sensor's ClusterRoleBinding (it cannot be owned by the instance) and
        recount the FalcoRules' instances; owner references remove the rest."""
        names = render.Names.for_instance(namespace, name)
        removed = self._call(
            f"deleting ClusterRoleBinding {names.clusterrolebinding}",
            lambda: self._kube.delete("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", names.clusterrolebinding),
        )
        self._update_rule_counts(namespace)
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
        self._patch_status(kind, meta["namespace"], meta["name"], new)
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

    def _list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._call(
            f"listing {kind} in {namespace}", lambda: self._kube.list(API_VERSION, kind, namespace)
        )
        return found

    def _patch_status(self, kind: str, namespace: str, name: str, new: dict[str, Any]) -> None:
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


def _selects(instance: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether the instance's selector takes a FalcoRule with these labels; a selector the
    schema should have refused selects nothing (the instance reports it in its status)."""
    try:
        return selectors.matches((instance.get("spec") or {}).get("ruleSelector"), labels)
    except selectors.SelectorError:
        return False


def _shipped_generations(chosen: Sequence[Selected], live_data: dict[str, str]) -> dict[str, int]:
    """The generation whose text each FalcoRule ships: its own when valid, else the one
    the live ConfigMap recorded for the last valid text it keeps (0 when unknown), so a
    sensor never reports a generation it was not given."""
    live: dict[str, int] = {}
    try:
        doc = yaml.safe_load(live_data.get(render.CONFIG_FILE, "")) or {}
        for entry in doc.get(FALCO_RULES_KEY) or () if isinstance(doc, dict) else ():
            live[str(entry["name"])] = int(entry["generation"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        live = {}
    return {s.name: s.generation if s.valid else live.get(s.name, 0) for s in chosen if s.text is not None}


def _live_hash(configmap: dict[str, Any] | None) -> str | None:
    """The rules hash of the ConfigMap the sensors read now (kept when a render is refused)."""
    return ((configmap or {}).get("metadata", {}).get("annotations") or {}).get(RULES_HASH_ANNOTATION)
