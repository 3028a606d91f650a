"""Render a FalcoInstance into the objects that run its sensors (jinja2 templates).

Rendering is a pure function of the instance and the rule texts it selected: equal
inputs give byte-equal manifests, so re-applying them changes nothing. Two hashes tell
changes apart: `rules_hash` covers everything in the ConfigMap (rules are reloaded in
place by the sensor), `config_hash` covers the instance's settings and goes into the pod
template, so only a changed instance rolls the DaemonSet.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from falconer import sensorconfig
from falconer.operator.api import API_VERSION, MANAGED_BY, RULES_HASH_ANNOTATION
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import FalcoInstanceSpec, Tenants
from falconer.operator.tenancy import CLUSTER_FALCO_RULE, RuleRef
from falconer.sensorconfig import (CONFIG_FILE, METRICS_TLS_MOUNT, TLS_ROOT, FalconerConfig, InstanceRef, Outputs,
                                   RulesOrigin, tls_dir)
from falconer.shapes import encode

#: The ClusterRole every sensor is bound to (installed with the operator).
SENSOR_CLUSTER_ROLE = "falconer-sensor"
#: The label naming a sensor's FalcoInstance: its value is the instance's name, which the
#: CRD therefore bounds to a label value's 63 characters.
INSTANCE_LABEL = "falconer.io/instance"
#: The Prometheus Operator's scrape configuration kind (apiVersion, kind).
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("falconer.operator", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
# `tojson` must write characters, not `\uXXXX` escapes: a character outside the Basic
# Multilingual Plane would become a surrogate pair, which YAML (PyYAML here, the API
# server's parser for apply) decodes as two invalid code points.
_ENV.policies["json.dumps_kwargs"] = {"ensure_ascii": False, "sort_keys": True}


@dataclass(frozen=True)
class Names:
    """Names of the objects made for one instance."""

    configmap: str
    daemonset: str
    serviceaccount: str
    clusterrolebinding: str
    role: str                   # the Role (and RoleBinding) for the instance's status
    metrics_service: str        # the Service (and ServiceMonitor) of the sensors' /metrics

    @classmethod
    def for_instance(cls, namespace: str, name: str) -> Names:
        """Stable names derived from the instance's namespace and name."""
        return cls(
            configmap=f"{name}-rules",
            daemonset=f"{name}-sensor",
            serviceaccount=f"{name}-sensor",
            clusterrolebinding=f"falconer-sensor:{namespace}:{name}",
            role=f"{name}-sensor-status",
            metrics_service=f"{name}-sensor-metrics",
        )


@dataclass(frozen=True)
class Rendered:
    """The manifests for one instance, in the order they are applied."""

    serviceaccount: dict[str, Any]
    clusterrolebinding: dict[str, Any]
    role: dict[str, Any]
    rolebinding: dict[str, Any]
    configmap: dict[str, Any]
    daemonset: dict[str, Any]
    rules_hash: str
    config_hash: str
    service: dict[str, Any] | None = None          # spec.metrics.enabled
    servicemonitor: dict[str, Any] | None = None   # and spec.metrics.serviceMonitor

    def objects(self) -> list[dict[str, Any]]:
        """Apply order: identity first, then configuration, then the workload, then the
        metrics Service and ServiceMonitor when the instance has them."""
        extra = [o for o in (self.service, self.servicemonitor) if o is not None]
        return [self.serviceaccount, self.clusterrolebinding, self.role, self.rolebinding, self.configmap,
                self.daemonset, *extra]

    def absent(self, names: Names) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of the optional objects this rendering does not have,
        which the operator deletes if an earlier rendering made them."""
        out = []
        if self.service is None:
            out.append(("v1", "Service", names.metrics_service))
        if self.servicemonitor is None:
            out.append((*SERVICE_MONITOR, names.metrics_service))
        return out


#: ConfigMap keys are at most 253 characters of `[-._a-zA-Z0-9]` (Kubernetes API
#: reference, ConfigMap `data`); rules files get a prefix that no config key carries.
MAX_KEY = 253
RULES_KEY_PREFIX = "rules-"


def rule_file_key(label: str) -> str:
    """The ConfigMap key holding a FalcoRule's text, by its label (operator/tenancy.py):
    `rules-<name>.yaml` for one of the instance's namespace, `ns-<namespace>.<name>.yaml`
    for another namespace's, `cluster-<name>.yaml` for a ClusterFalcoRule.

    The prefixes keep every rules key apart from `falconer.yaml` (a FalcoRule may be
    named `falconer`) and from each other (namespaces have no dots); a name too long for
    a key (names go up to 253 characters) is cut and completed with a hash of the whole
    label, so distinct labels keep distinct keys.
    """
    ref = RuleRef.from_label(label, "")
    prefix, stem = (("cluster-", ref.name) if ref.kind == CLUSTER_FALCO_RULE else
                    (RULES_KEY_PREFIX, ref.name) if not ref.namespace else
                    ("ns-", f"{ref.namespace}.{ref.name}"))
    key = f"{prefix}{stem}.yaml"
    if len(key) <= MAX_KEY:
        return key
    tail = f"-{_digest(label)}.yaml"
    return f"{prefix}{stem[:MAX_KEY - len(prefix) - len(tail)]}{tail}"


def _digest(*parts: str) -> str:
    """A short content hash of `parts`, NUL-separated so that ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def sensor_config(namespace: str, name: str, spec: FalcoInstanceSpec, files: Sequence[RuleText],
                  generations: Mapping[str, int]) -> FalconerConfig:
    """The sensor's configuration file (falconer.yaml) for this instance, without its
    `rulesHash` (which covers this text; `render_instance` adds it). `generations` maps a
    FalcoRule's label to the generation whose text `files` holds (0 when unknown)."""
    return FalconerConfig(
        instance=InstanceRef(namespace, name),
        rules_files=tuple(rule_file_key(f.name) for f in files),
        falco_rules=tuple(_origin(namespace, f, generations) for f in files),
        tenant_max_priority=spec.tenants.max_priority if spec.tenants.enabled else None,
        engine=spec.engine,
        outputs=spec.outputs,
        buffer_size_bytes=spec.buffer_size_bytes,
        metrics=spec.metrics,
    )


def _origin(namespace: str, file: RuleText, generations: Mapping[str, int]) -> RulesOrigin:
    """Where a rules file of an instance of `namespace` came from, and its scope."""
    ref = RuleRef.from_label(file.name, namespace)
    return RulesOrigin(rule_file_key(file.name), ref.namespace, ref.name, generations.get(file.name, 0),
                       file.tenant or None)


def output_volumes(outputs: Outputs) -> list[dict[str, Any]]:
    """The sensor's volumes for its outputs, each `{name, mountPath, readOnly, source}`
    (`source`: the pod volume's source): each TLS Secret read-only (owner-only files) at
    `sensorconfig.tls_dir(TLS_ROOT, <output>)`, and the file output's host folder
    (read-write, created when missing)."""
    vols: list[dict[str, Any]] = []
    for output, settings in (("http", outputs.http), ("grpc", outputs.grpc)):
        if settings is not None and settings.tls_secret:
            vols.append({"name": f"tls-{output}", "mountPath": str(tls_dir(TLS_ROOT, output)), "readOnly": True,
                         "source": {"secret": {"secretName": settings.tls_secret, "defaultMode": 0o400}}})
    if outputs.file is not None:
        folder = posixpath.dirname(outputs.file.path)
        vols.append({"name": "file-output", "mountPath": folder, "readOnly": False,
                     "source": {"hostPath": {"path": folder, "type": "DirectoryOrCreate"}}})
    return vols


#: The most a ConfigMap's data may hold (Kubernetes' validation: 1 MiB for all keys and
#: values together, core/v1 ConfigMap and MaxSecretSize in the API's validation).
MAX_CONFIGMAP_DATA = 1 << 20


def configmap_too_large(configmap: dict[str, Any]) -> str | None:
    """Why the API server would refuse this ConfigMap for its size, or None: checked
    before the apply, so the refusal is named (and the last valid rules kept)."""
    data = configmap.get("data") or {}
    size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
    if size <= MAX_CONFIGMAP_DATA:
        return None
    return (f"ConfigMap {configmap['metadata']['name']} would hold {size} bytes of rules and "
            f"configuration, over Kubernetes' limit of {MAX_CONFIGMAP_DATA} bytes: select fewer "
            "FalcoRules for this instance (spec.ruleSelector) or split it into several instances")


def ships(config_text: str, namespace: str, falcorule: str, generation: int) -> bool:
    """Whether a rendered falconer.yaml carries that generation of the FalcoRule (its
    `falcoRules` origins); a text that is not such a config carries nothing."""
    try:
        return sensorconfig.load(config_text, CONFIG_FILE).ships(namespace, falcorule, generation)
    except sensorconfig.ConfigError:
        return False


def owner_reference(instance: dict[str, Any]) -> dict[str, Any]:
    """The controller reference to the instance, so deleting it deletes what it owns."""
    meta = instance["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "FalcoInstance",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def config_hash(spec: FalcoInstanceSpec) -> str:
    """Hash of the settings that need a sensor restart (everything but which rules load:
    the rule selector and the tenants, which change the ConfigMap only)."""
    settings = encode(dataclasses.replace(spec, rule_selector=None, tenants=Tenants()))
    return _digest(json.dumps(settings, sort_keys=True))


def render_instance(instance: dict[str, Any], spec: FalcoInstanceSpec, files: Sequence[RuleText],
                    generations: Mapping[str, int] | None = None, *, service_monitors: bool = False) -> Rendered:
    """All manifests for `instance` (its parsed `spec`) running `files` (FalcoRule texts
    in load order, each from the generation `generations` gives for its name). A
    ServiceMonitor is rendered only when the instance asks and `service_monitors` says
    the API server serves them."""
    meta = instance["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    names = Names.for_instance(namespace, name)
    config = sensor_config(namespace, name, spec, files, generations or {})
    rule_files = [{"key": rule_file_key(f.name), "text": f.text} for f in files]
    rules_hash = _digest(sensorconfig.dump(config), *(f"{r['key']}\0{r['text']}" for r in rule_files))
    config_text = sensorconfig.dump(dataclasses.replace(config, rules_hash=rules_hash))
    labels = {"app.kubernetes.io/name": "falconer-sensor", INSTANCE_LABEL: name, **MANAGED_BY}
    context = {
        "names": names,
        "namespace": namespace,
        "instance_name": name,
        "labels": labels,
        "selector": {"app.kubernetes.io/name": "falconer-sensor", INSTANCE_LABEL: name},
        "owner_references": [owner_reference(instance)],
        "spec": encode(spec),
        "config_text": config_text,
        "files": rule_files,
        "rules_hash": rules_hash,
        "config_hash": config_hash(spec),
        "grpc_port": spec.outputs.grpc.port if spec.outputs.grpc else None,
        "output_volumes": output_volumes(spec.outputs),
        "sensor_cluster_role": SENSOR_CLUSTER_ROLE,
        "config_file": CONFIG_FILE,
        "rules_hash_annotation": RULES_HASH_ANNOTATION,
        "metrics": encode(spec.metrics),
        "metrics_tls_mount": METRICS_TLS_MOUNT,
        "service_monitor": service_monitors and spec.metrics.service_monitor,
    }
    sa, crb, role, rolebinding = yaml.safe_load_all(_ENV.get_template("rbac.yaml.j2").render(context))
    service, monitor = _metrics_objects(context)
    return Rendered(
        serviceaccount=sa,
        clusterrolebinding=crb,
        role=role,
        rolebinding=rolebinding,
        configmap=yaml.safe_load(_ENV.get_template("configmap.yaml.j2").render(context)),
        daemonset=yaml.safe_load(_ENV.get_template("daemonset.yaml.j2").render(context)),
        rules_hash=rules_hash,
        config_hash=context["config_hash"],
        service=service,
        servicemonitor=monitor,
    )


def _metrics_objects(context: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The metrics Service and ServiceMonitor (None when the instance has none)."""
    if not context["metrics"]["enabled"]:
        return None, None
    docs = list(yaml.safe_load_all(_ENV.get_template("metrics.yaml.j2").render(context)))
    return docs[0], (docs[1] if len(docs) > 1 else None)
