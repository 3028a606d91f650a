"""The sensor's configuration file, `falconer.yaml`: one typed definition, one codec.

The operator renders it into each FalcoInstance's ConfigMap with `dump`; the sensor reads
it with `load`. Both import this module, which sits below both (it depends on the rule
engine and the standard library only), so the writer and the reader cannot disagree on a
key, a type, a default or a bound: `dump` checks its own output with `load`'s decoder.

The shape (keys camelCase as in the FalcoInstance spec they come from):

    rulesHash: <hash of this file without it and of the rules files>
    instance: {namespace, name}
    rulesFiles: [<ConfigMap key>, ...]          # load order; [] is "no rules"
    falcoRules: [{key, namespace, name, generation[, tenant]}, ...]
    tenantMaxPriority: <priority>                # only when some file is a tenant's
    engine: {minPriority, ruleMatching, selection, appendOutput}
    outputs: {stdout: {enabled, format}, kubernetesEvents, falcoAlerts, http, grpc, file, program, rateLimit}
    bufferSizeBytes: <bytes>
    clusterDomain: <DNS domain>
    metrics: {enabled, port, tlsSecret, podLabels, maxPodSeries, serviceMonitor}

`EngineSettings` and `Outputs` are also the FalcoInstance spec's own types
(`falconer.operator.spec`), so a spec field and its falconer.yaml entry share one
definition. Each output is its own dataclass, a field of `Outputs`. A TLS Secret an
output names (`tlsSecret`) is mounted by the operator at `tls_dir(<output>)`: the
ConfigMap carries the Secret's name, never its content.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from falconer.engine import AppendOutputError, EngineOptions, parse_append_output
from falconer.shapes import ShapeError, decode, dotted, encode, field

#: The ConfigMap key (and file name in /etc/falconer) of this file.
CONFIG_FILE = "falconer.yaml"
#: Keys of this file that other contracts name (the sensor's report echoes them).
RULES_HASH_KEY = "rulesHash"
FALCO_RULES_KEY = "falcoRules"
#: Falco's priority names, case-insensitive (falco_common.cpp priority_type parsing).
PRIORITY_PATTERN = "^(?i:emergency|alert|critical|error|warning|notice|informational|info|debug)$"
#: The ring buffer's bounds in bytes: a page, and Falco's largest buf_size_preset (512 MiB).
MIN_BUFFER_BYTES, MAX_BUFFER_BYTES = 4096, 512 << 20
DEFAULT_BUFFER_BYTES = 8 << 20
#: The cluster's DNS domain when none is given: kubelet's --cluster-domain as kubeadm sets it.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
#: A DNS domain: dot-separated labels, no leading, trailing or doubled dot.
DOMAIN_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$"


#: libyaml's safe loader when PyYAML was built with it (the operator reads every live
#: ConfigMap's file on each reconcile), else PyYAML's own. They do not accept exactly the
#: same texts (libyaml takes a tab PyYAML refuses), so positions are found with it too.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ConfigError(ValueError):
    """falconer.yaml is missing, unreadable or malformed; the message starts with
    `<path>:<line>:<column>:` (or `<path>:` when no position applies)."""


# ---- instance and rules ---------------------------------------------------------


@dataclass(frozen=True)
class InstanceRef:
    """The FalcoInstance this file was rendered for ("" when run by hand)."""

    namespace: str = field("namespace", "")
    name: str = field("name", "")

    def __str__(self) -> str:
        """`namespace/name`, or "" when either is missing."""
        return f"{self.namespace}/{self.name}" if self.namespace and self.name else ""


@dataclass(frozen=True)
class RulesOrigin:
    """A rules file of the ConfigMap (`key`) and the FalcoRule generation it holds
    (namespace "" for a ClusterFalcoRule); `tenant` names the namespace whose tenant scope
    it loads in (falconer.engine.scope; None: the cluster's)."""

    key: str = field("key")
    namespace: str = field("namespace")
    name: str = field("name")
    generation: int = field("generation", minimum=0)
    tenant: str | None = field("tenant", None, min_length=1)

    def to_status(self) -> dict[str, Any]:
        """The sensor report's entry: {namespace, name, generation} (the key is internal)."""
        return {"namespace": self.namespace, "name": self.name, "generation": self.generation}


# ---- engine ---------------------------------------------------------------------


@dataclass(frozen=True)
class SelectionAction:
    """One enable/disable action applied after loading, by rule name (`*` wildcards) or tag."""

    action: Literal["enable", "disable"] = field("action")
    rule: str | None = field("rule", None, min_length=1)
    tag: str | None = field("tag", None, min_length=1)

    def __post_init__(self) -> None:
        if (self.rule is None) == (self.tag is None):
            raise ShapeError((), "a selection action names exactly one of rule or tag")

    def triple(self) -> tuple[str, str, str]:
        """The engine's (action, "rule" | "tag", pattern)."""
        return (self.action, "rule", self.rule) if self.rule is not None else (self.action, "tag", self.tag or "")


@dataclass(frozen=True)
class AppendOutputMatch:
    """falco.yaml's `append_output[].match`: every key given must hold."""

    source: str | None = field("source", None)
    rule: str | None = field("rule", None)
    tags: tuple[str, ...] | None = field("tags", None)


@dataclass(frozen=True)
class AppendOutputEntry:
    """One falco.yaml `append_output` entry, in falco.yaml's own keys (the engine's
    `parse_append_output` reads it; see falconer.engine.appendoutput)."""

    match: AppendOutputMatch | None = field("match", None)
    extra_output: str | None = field("extra_output", None)
    suggested_output: bool | None = field("suggested_output", None)
    extra_fields: tuple[Any, ...] | None = field("extra_fields", None)   # names or {key: format}


@dataclass(frozen=True)
class EngineSettings:
    """How the rules are compiled, selected and matched (FalcoInstance spec, top level)."""

    min_priority: str = field("minPriority", "debug", pattern=PRIORITY_PATTERN)
    rule_matching: Literal["first", "all"] = field("ruleMatching", "first")
    selection: tuple[SelectionAction, ...] = field("selection", ())
    append_output: tuple[AppendOutputEntry, ...] = field(
        "appendOutput", (AppendOutputEntry(suggested_output=True),), max_items=64)

    def __post_init__(self) -> None:
        try:
            parse_append_output(encode(self.append_output))
        except AppendOutputError as exc:
            raise ShapeError(("appendOutput",), str(exc)) from None

    def options(self) -> EngineOptions:
        """The rule engine's options."""
        return EngineOptions(min_priority=self.min_priority, rule_matching=self.rule_matching,
                             selection=tuple(a.triple() for a in self.selection),
                             append_output=parse_append_output(encode(self.append_output)))


# ---- outputs --------------------------------------------------------------------


@dataclass(frozen=True)
class StdoutOutput:
    """Alerts on the sensor's standard output."""

    enabled: bool = field("enabled", True)
    format: Literal["text", "json"] = field("format", "json")


#: A Secret's name (a DNS subdomain, Kubernetes' object name rule).
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
#: Where the operator mounts the TLS Secret of an output, one folder per output
#: (outside /etc/falconer, the read-only ConfigMap volume); `falconer sensor --tls-root`.
TLS_ROOT = "/etc/falconer-tls"
#: File names in a TLS Secret: a kubernetes.io/tls Secret's keys, and cert-manager's CA.
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
#: A file output's path: below /var/log on the node (a hostPath), no `.`-led component.
LOG_PATH_PATTERN = r"^/var/log/([A-Za-z0-9_-][A-Za-z0-9._-]*/)*[A-Za-z0-9_-][A-Za-z0-9._-]*$"
#: An IP address to bind (v4 or v6 literal).
BIND_PATTERN = r"^[0-9A-Fa-f.:]+$"


def tls_dir(root: Path | str, output: str) -> Path:
    """The folder holding the TLS Secret of `output` (`http`, `grpc`) under `root`."""
    return Path(root) / output


@dataclass(frozen=True)
class HttpOutput:
    """POST each alert as Falco's JSON alert (falcosidekick-compatible). With `tlsSecret`:
    its ca.crt verifies the server (else the system CAs), tls.crt + tls.key (both or
    neither) are the client certificate for mutual TLS."""

    url: str = field("url", pattern="^https?://")
    user_agent: str | None = field("userAgent", None, min_length=1)
    tls_secret: str | None = field("tlsSecret", None, pattern=SECRET_NAME_PATTERN)


@dataclass(frozen=True)
class GrpcOutput:
    """Serve Falco's legacy gRPC outputs API on `bindAddress:port` over mutual TLS: the
    Secret's tls.crt + tls.key are the server's, its ca.crt verifies clients."""

    port: int = field("port", minimum=1, maximum=65535)
    tls_secret: str = field("tlsSecret", pattern=SECRET_NAME_PATTERN)
    bind_address: str = field("bindAddress", "0.0.0.0", pattern=BIND_PATTERN)
    threads: int = field("threads", 8, minimum=1, maximum=64)


@dataclass(frozen=True)
class FileOutput:
    """Append alerts to a file on the node (created 0600), as Falco's file_output:
    with keepAlive kept open, else reopened per alert (rotation-safe)."""

    path: str = field("path", pattern=LOG_PATH_PATTERN)
    keep_alive: bool = field("keepAlive", False)
    format: Literal["text", "json"] = field("format", "json")


@dataclass(frozen=True)
class ProgramOutput:
    """Write alerts to a program's standard input (`sh -c`, in the sensor container, with
    the sensor's privileges), as Falco's program_output: with keepAlive started once,
    else once per alert."""

    program: str = field("program", min_length=1)
    keep_alive: bool = field("keepAlive", False)
    format: Literal["text", "json"] = field("format", "json")


@dataclass(frozen=True)
class RateLimit:
    """Token bucket for each sensor's API writes (Events, FalcoAlerts); alerts beyond it
    wait in memory and are counted into the next write."""

    per_second: float = field("perSecond", 10.0, minimum=0)
    burst: int = field("burst", 100, minimum=1)


@dataclass(frozen=True)
class Outputs:
    """Where alerts go and how fast (FalcoInstance `spec.outputs`)."""

    stdout: StdoutOutput = field("stdout", StdoutOutput())
    kubernetes_events: bool = field("kubernetesEvents", False)
    falco_alerts: bool = field("falcoAlerts", True)
    http: HttpOutput | None = field("http", None)
    grpc: GrpcOutput | None = field("grpc", None)
    file: FileOutput | None = field("file", None)
    program: ProgramOutput | None = field("program", None)
    rate_limit: RateLimit = field("rateLimit", RateLimit())


# ---- metrics --------------------------------------------------------------------

#: Where a FalcoInstance's sensor pods mount the metrics Secret (its `tls.crt`, `tls.key`).
METRICS_TLS_MOUNT = "/etc/falconer/metrics-tls"
#: Falco's metrics port (falco.yaml `webserver.listen_port`).
DEFAULT_METRICS_PORT = 8765


@dataclass(frozen=True)
class Metrics:
    """The sensors' Prometheus /metrics (FalcoInstance `spec.metrics`, falconer.yaml
    `metrics`): served over TLS only, from the `kubernetes.io/tls` Secret `tlsSecret`
    mounted at METRICS_TLS_MOUNT; the operator adds a Service and, with `serviceMonitor`,
    a ServiceMonitor."""

    enabled: bool = field("enabled", False)
    port: int = field("port", DEFAULT_METRICS_PORT, minimum=1, maximum=65535)
    tls_secret: str | None = field("tlsSecret", None, min_length=1, max_length=253)
    pod_labels: bool = field("podLabels", False)
    max_pod_series: int = field("maxPodSeries", 500, minimum=0, maximum=100000)
    service_monitor: bool = field("serviceMonitor", False)

    def __post_init__(self) -> None:
        if self.enabled and self.tls_secret is None:
            raise ShapeError(("tlsSecret",), "metrics.enabled needs metrics.tlsSecret: /metrics is served "
                             "only over TLS")

    def tls_files(self) -> tuple[Path, Path]:
        """(certificate, key) as the sensor pod sees them."""
        return Path(METRICS_TLS_MOUNT, "tls.crt"), Path(METRICS_TLS_MOUNT, "tls.key")


# ---- the file -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FalconerConfig:
    """The whole of falconer.yaml."""

    rules_hash: str = field(RULES_HASH_KEY, "")
    instance: InstanceRef = field("instance", InstanceRef())
    # Required: a config that forgot its rules must not silently watch nothing; [] is
    # "no rules" (the instance selects no FalcoRule; the sensor runs with none, says so).
    rules_files: tuple[str, ...] = field("rulesFiles")
    falco_rules: tuple[RulesOrigin, ...] = field(FALCO_RULES_KEY, ())
    # The highest priority of a tenant's rule (falconer.engine.scope; None: the engine's default).
    tenant_max_priority: str | None = field("tenantMaxPriority", None, pattern=PRIORITY_PATTERN)
    engine: EngineSettings = field("engine", EngineSettings())
    outputs: Outputs = field("outputs", Outputs())
    buffer_size_bytes: int = field("bufferSizeBytes", DEFAULT_BUFFER_BYTES, minimum=MIN_BUFFER_BYTES,
                                   maximum=MAX_BUFFER_BYTES)
    cluster_domain: str = field("clusterDomain", DEFAULT_CLUSTER_DOMAIN, pattern=DOMAIN_PATTERN)
    metrics: Metrics = field("metrics", Metrics())

    def __post_init__(self) -> None:
        for i, name in enumerate(self.rules_files):
            if not name or "/" in name or name in (".", ".."):
                raise ShapeError(("rulesFiles", i), f"expected a file name in the config's folder, got {name!r}")

    def engine_options(self) -> EngineOptions:
        """The rule engine's options, the tenants' priority ceiling included."""
        options = self.engine.options()
        if self.tenant_max_priority is None:
            return options
        return dataclasses.replace(options, tenant_max_priority=self.tenant_max_priority)

    def generations(self) -> dict[str, int]:
        """The generation each rules file holds, by its ConfigMap key (a FalcoRule's name
        is not unique across namespaces and ClusterFalcoRules)."""
        return {o.key: o.generation for o in self.falco_rules}

    def ships(self, namespace: str, falcorule: str, generation: int) -> bool:
        """Whether this config carries that generation of the FalcoRule."""
        return any((o.namespace, o.name, o.generation) == (namespace, falcorule, generation)
                   for o in self.falco_rules)


def dump(config: FalconerConfig) -> str:
    """falconer.yaml's text (UTF-8 characters unescaped, keys in declaration order).
    Raises ShapeError if `config` holds what `load` would refuse (a bound the dataclass
    constructor does not check), so the operator never writes a file the sensor rejects."""
    plain = encode(config)
    decode(FalconerConfig, plain)
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)


def load(text: str, path: Path | str) -> FalconerConfig:
    """Parse falconer.yaml's text; ConfigError `<path>:<line>:<column>: <key path>: <why>`."""
    try:
        doc = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    try:
        return decode(FalconerConfig, doc)
    except ShapeError as exc:
        raise ConfigError(f"{_position(text, exc.path, path)}: {dotted(exc.path) or 'the document'}: "
                          f"{exc.reason}") from exc


def _position(text: str, at: tuple[str | int, ...], path: Path | str) -> str:
    """`<path>:<line>:<column>` of the node at key path `at` (its nearest existing parent)."""
    node: yaml.Node | None = yaml.compose(text, Loader=_LOADER)  # noqa: S506 - the loader `load` used
    for part in at:
        child = _child(node, part)
        if child is None:
            break
        node = child
    if node is None:
        return str(path)
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if getattr(k, "value", None) == part), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None

