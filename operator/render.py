"""Render a FalcoInstance into the objects that run its sensors (jinja2 templates).

Rendering is a pure function of the instance and the rule texts it selected: equal
inputs give byte-equal manifests, so re-applying them changes nothing. Two hashes tell
changes apart: `rules_hash` covers everything in the ConfigMap (rules are reloaded in
place by the sensor), `config_hash` covers the instance's settings and goes into the pod
template, so only a changed instance rolls the DaemonSet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from falconer.operator.api import API_VERSION, MANAGED_BY, RULES_HASH_ANNOTATION
from falconer.operator.ruleyaml import RuleText
from falconer.sensorreport import FALCO_RULES_KEY, RULES_HASH_KEY, RulesOrigin

#: The ClusterRole every sensor is bound to (installed with the operator).
SENSOR_CLUSTER_ROLE = "falconer-sensor"
INSTANCE_LABEL = "falconer.io/instance"
#: The ConfigMap key of the sensor's configuration, mounted in /etc/falconer.
CONFIG_FILE = "falconer.yaml"

#: Defaults of FalcoInstance.spec (the CRD's defaults, for objects written without them).
SPEC_DEFAULTS: dict[str, Any] = {
    "image": "ghcr.io/falconer/falconer:0.1.0",
    "imagePullPolicy": "IfNotPresent",
    "criSocket": "/run/containerd/containerd.sock",
    "appendOutput": [{"suggested_output": True}],
    "minPriority": "debug",
    "ruleMatching": "first",
    "bufferSizeBytes": 8 << 20,
}

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

    @classmethod
    def for_instance(cls, namespace: str, name: str) -> Names:
        """Stable names derived from the instance's namespace and name."""
        return cls(
            configmap=f"{name}-rules",
            daemonset=f"{name}-sensor",
            serviceaccount=f"{name}-sensor",
            clusterrolebinding=f"falconer-sensor:{namespace}:{name}",
            role=f"{name}-sensor-status",
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

    def objects(self) -> list[dict[str, Any]]:
        """Apply order: identity first, then configuration, then the workload."""
        return [self.serviceaccount, self.clusterrolebinding, self.role, self.rolebinding, self.configmap,
                self.daemonset]


def with_defaults(spec: dict[str, Any] | None) -> dict[str, Any]:
    """The instance spec with the CRD's defaults filled in."""
    return {**SPEC_DEFAULTS, **(spec or {})}


def selection_actions(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    """spec.selection as the engine's ordered (action, kind, pattern) triples."""
    out = []
    for entry in spec.get("selection") or ():
        kind = "rule" if "rule" in entry else "tag"
        out.append((str(entry["action"]), kind, str(entry[kind])))
    return out


#: ConfigMap keys are at most 253 characters of `[-._a-zA-Z0-9]` (Kubernetes API
#: reference, ConfigMap `data`); rules files get a prefix that no config key carries.
MAX_KEY = 253
RULES_KEY_PREFIX = "rules-"


def rule_file_key(falcorule: str) -> str:
    """The ConfigMap key holding a FalcoRule's text: `rules-<name>.yaml`.

    The prefix keeps every rules key apart from `falconer.yaml` (a FalcoRule may be named
    `falconer`); a name too long for a key (FalcoRule names go up to 253 characters) is
    cut and completed with a hash of the whole name, so distinct names keep distinct keys.
    """
    key = f"{RULES_KEY_PREFIX}{falcorule}.yaml"
    if len(key) <= MAX_KEY:
        return key
    tail = f"-{_digest(falcorule)}.yaml"
    return f"{RULES_KEY_PREFIX}{falcorule[:MAX_KEY - len(RULES_KEY_PREFIX) - len(tail)]}{tail}"


def _digest(*parts: str) -> str:
    """A short content hash of `parts`, NUL-separated so that ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def sensor_config(namespace: str, name: str, spec: dict[str, Any], files: Sequence[RuleText],
                  generations: Mapping[str, int]) -> dict[str, Any]:
    """The sensor's configuration file (falconer.yaml) for this instance, without its
    `rulesHash` (which covers this text; `render_instance` adds it). `generations` maps a
    FalcoRule's name to the generation whose text `files` holds (0 when unknown)."""
    return {
        "instance": {"namespace": namespace, "name": name},
        "rulesFiles": [rule_file_key(f.name) for f in files],
        FALCO_RULES_KEY: [RulesOrigin(rule_file_key(f.name), namespace, f.name, generations.get(f.name, 0)).to_config()
                          for f in files],
        "engine": {
            "minPriority": spec["minPriority"],
            "ruleMatching": spec["ruleMatching"],
            "selection": [list(a) for a in selection_actions(spec)],
            "appendOutput": spec["appendOutput"],
        },
        "outputs": spec.get("outputs") or {},
        "bufferSizeBytes": spec["bufferSizeBytes"],
    }


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
        config = yaml.safe_load(config_text)
    except yaml.YAMLError:
        return False
    origins = config.get(FALCO_RULES_KEY) if isinstance(config, dict) else None
    return any(isinstance(o, dict) and (o.get("namespace"), o.get("name"), o.get("generation"))
               == (namespace, falcorule, generation) for o in origins or ())


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


def config_hash(spec: dict[str, Any]) -> str:
    """Hash of the settings that need a sensor restart (everything but the rule selector)."""
    settings = {k: v for k, v in spec.items() if k != "ruleSelector"}
    return _digest(json.dumps(settings, sort_keys=True))


def render_instance(instance: dict[str, Any], files: Sequence[RuleText],
                    generations: Mapping[str, int] | None = None) -> Rendered:
    """All manifests for `instance` running `files` (FalcoRule texts in load order, each
    from the generation `generations` gives for its name)."""
    meta = instance["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    spec = with_defaults(instance.get("spec"))
    names = Names.for_instance(namespace, name)
    config = sensor_config(namespace, name, spec, files, generations or {})
    rule_files = [{"key": rule_file_key(f.name), "text": f.text} for f in files]
    rules_hash = _digest(yaml.safe_dump(config, sort_keys=False),
                         *(f"{r['key']}\0{r['text']}" for r in rule_files))
    config_text = yaml.safe_dump({RULES_HASH_KEY: rules_hash, **config}, sort_keys=False)
    labels = {"app.kubernetes.io/name": "falconer-sensor", INSTANCE_LABEL: name, **MANAGED_BY}
    context = {
        "names": names,
        "namespace": namespace,
        "instance_name": name,
        "labels": labels,
        "selector": {"app.kubernetes.io/name": "falconer-sensor", INSTANCE_LABEL: name},
        "owner_references": [owner_reference(instance)],
        "spec": spec,
        "config_text": config_text,
        "files": rule_files,
        "rules_hash": rules_hash,
        "config_hash": config_hash(spec),
        "grpc_port": ((spec.get("outputs") or {}).get("grpc") or {}).get("port"),
        "sensor_cluster_role": SENSOR_CLUSTER_ROLE,
        "config_file": CONFIG_FILE,
        "rules_hash_annotation": RULES_HASH_ANNOTATION,
    }
    sa, crb, role, rolebinding = yaml.safe_load_all(_ENV.get_template("rbac.yaml.j2").render(context))
    return Rendered(
        serviceaccount=sa,
        clusterrolebinding=crb,
        role=role,
        rolebinding=rolebinding,
        configmap=yaml.safe_load(_ENV.get_template("configmap.yaml.j2").render(context)),
        daemonset=yaml.safe_load(_ENV.get_template("daemonset.yaml.j2").render(context)),
        rules_hash=rules_hash,
        config_hash=context["config_hash"],
    )
