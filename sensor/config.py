"""Where the sensor's rules come from, read as one consistent snapshot.

Two inputs exist: a list of rules files (`--rules`), or the configuration file the
operator renders into a FalcoInstance's ConfigMap (`--config falconer.yaml`), which
names the rules files (relative to its own folder), the engine options, the stdout
format and the ring buffer size.

Kubelet updates a ConfigMap volume by writing a new timestamped folder and swapping the
`..data` symlink, so the visible files change without their own mtime meaning anything.
A snapshot therefore reads every byte it uses and carries a digest of that content:
the sensor compares digests to decide whether to reload, and loads exactly the text it
hashed (a swap between two reads shows up as a new digest on the next check).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from falconer.engine import AppendOutputError, Engine, EngineOptions, RulesSource, parse_append_output
from falconer.sensorreport import FALCO_RULES_KEY, RULES_HASH_KEY, RulesOrigin

#: Outputs of FalcoInstance.spec.outputs this sensor delivers (the operator names the
#: others in a status condition).
SUPPORTED_OUTPUTS = frozenset({"stdout", "kubernetesEvents", "falcoAlerts"})
#: outputs.rateLimit defaults (the FalcoInstance CRD's): API writes per second, burst.
DEFAULT_RATE = (10.0, 100)
#: The cluster's DNS domain when the config names none (`clusterDomain`): kubelet's
#: --cluster-domain as kubeadm sets it. Service names end in `.svc.<domain>`.
DEFAULT_CLUSTER_DOMAIN = "cluster.local"
#: engine.appendOutput when falconer.yaml has none: Falco's shipped falco.yaml setting
#: (the raw entries, in falco.yaml's own keys).
APPEND_OUTPUT_DEFAULT: list[dict[str, object]] = [{"suggested_output": True}]
#: The ring buffer size when neither the config nor the command line gives one.
DEFAULT_BUFFER_BYTES = 8 << 20


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or malformed (message says where)."""


@dataclass(frozen=True)
class SensorConfig:
    """The parts of falconer.yaml the sensor acts on."""

    instance: str                          # "namespace/name", or "" when not given
    rules_files: tuple[Path, ...]          # absolute, in load order
    engine: EngineOptions
    stdout_enabled: bool
    json_output: bool
    buffer_pages: int
    unsupported_outputs: tuple[str, ...]   # configured outputs this sensor does not deliver
    kubernetes_events: bool = False        # outputs.kubernetesEvents
    falco_alerts: bool = False             # outputs.falcoAlerts
    rate_per_second: float = DEFAULT_RATE[0]   # outputs.rateLimit.perSecond (API writes)
    rate_burst: int = DEFAULT_RATE[1]          # outputs.rateLimit.burst
    rules_hash: str = ""                   # the ConfigMap's falconer.io/rules-hash
    falco_rules: tuple[RulesOrigin, ...] = ()  # where each rules file came from
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN   # clusterDomain (fd.*ip.name of Services)

    @property
    def instance_namespace(self) -> str:
        """The FalcoInstance's namespace ("" when not given)."""
        return self.instance.partition("/")[0] if "/" in self.instance else ""

    @property
    def instance_name(self) -> str:
        """The FalcoInstance's name ("" when not given)."""
        return self.instance.partition("/")[2]


@dataclass(frozen=True)
class Snapshot:
    """Everything one load uses, read at one time, and the digest of those bytes."""

    config: SensorConfig | None            # None in --rules mode
    engine: EngineOptions
    sources: tuple[RulesSource | Path, ...]  # a Path is a file that could not be read
    digest: str


def buffer_pages(size_bytes: int) -> int:
    """A byte size -> ring buffer pages: the largest power of two that fits (at least 1)."""
    pages = max(1, size_bytes // os.sysconf("SC_PAGE_SIZE"))
    return 1 << (pages.bit_length() - 1)


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}{key}: expected {names}, got {type(value).__name__}")
    return value


def _selection(raw: list[Any], path: str) -> tuple[tuple[str, str, str], ...]:
    out = []
    for i, entry in enumerate(raw):
        ok = (isinstance(entry, list) and len(entry) == 3 and all(isinstance(x, str) for x in entry)
              and entry[0] in ("enable", "disable") and entry[1] in ("rule", "tag"))
        if not ok:
            raise ConfigError(f"{path}: engine.selection[{i}]: expected [enable|disable, rule|tag, "
                              f"pattern], got {entry!r}")
        out.append((entry[0], entry[1], entry[2]))
    return tuple(out)


def _engine_options(raw: dict[str, Any], path: str) -> EngineOptions:
    where = f"{path}: engine."
    try:
        append = parse_append_output(raw.get("appendOutput", APPEND_OUTPUT_DEFAULT))
    except AppendOutputError as exc:
        raise ConfigError(f"{where}appendOutput: {exc}") from exc
    opts = EngineOptions(
        min_priority=_field(raw, "minPriority", str, where, "debug"),
        rule_matching=_field(raw, "ruleMatching", str, where, "first"),
        selection=_selection(_field(raw, "selection", list, where, []), path),
        append_output=append,
    )
    try:
        Engine(opts)  # checks the priority name and the matching mode now
    except ValueError as exc:
        raise ConfigError(f"{path}: engine: {exc}") from exc
    return opts


def _outputs(raw: dict[str, Any], path: str) -> dict[str, Any]:
    """SensorConfig's output fields from `outputs` (the instance's spec.outputs)."""
    stdout = _field(raw, "stdout", dict, f"{path}: outputs.", {})
    enabled = _field(stdout, "enabled", bool, f"{path}: outputs.stdout.", True)
    fmt = _field(stdout, "format", str, f"{path}: outputs.stdout.", "json")
    if fmt not in ("json", "text"):
        raise ConfigError(f"{path}: outputs.stdout.format: expected json or text, got {fmt!r}")
    unsupported = tuple(sorted(k for k, v in raw.items()
                               if k not in SUPPORTED_OUTPUTS and k != "rateLimit" and v not in (False, None)))
    limit = _field(raw, "rateLimit", dict, f"{path}: outputs.", {})
    rate = float(_field(limit, "perSecond", (int, float), f"{path}: outputs.rateLimit.", DEFAULT_RATE[0]))
    burst = _field(limit, "burst", int, f"{path}: outputs.rateLimit.", DEFAULT_RATE[1])
    if rate < 0 or burst < 1:
        raise ConfigError(f"{path}: outputs.rateLimit: perSecond must be >= 0 and burst >= 1, "
                          f"got {rate} and {burst}")
    return {
        "stdout_enabled": enabled, "json_output": fmt == "json", "unsupported_outputs": unsupported,
        "kubernetes_events": _field(raw, "kubernetesEvents", bool, f"{path}: outputs.", False),
        "falco_alerts": _field(raw, "falcoAlerts", bool, f"{path}: outputs.", True),
        "rate_per_second": rate, "rate_burst": burst,
    }


def _origins(raw: list[Any], path: str) -> tuple[RulesOrigin, ...]:
    try:
        return tuple(RulesOrigin.from_config(o, f"{path}: {FALCO_RULES_KEY}[{i}]") for i, o in enumerate(raw))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def parse(text: str, path: Path) -> SensorConfig:
    """Parse falconer.yaml's text; rules files are resolved against `path`'s folder."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    files = _field(doc, "rulesFiles", list, f"{path}: ", None)
    # An empty list is "no rules": the instance selects no FalcoRule (the operator says
    # so in its status), and the sensor runs with none and says so. A missing key is an
    # error: a config that forgot its rules must not silently watch nothing.
    if files is None or not all(isinstance(f, str) and f for f in files):
        raise ConfigError(f"{path}: rulesFiles: expected a list of file names ([] for no rules)")
    instance = _field(doc, "instance", dict, f"{path}: ", {})
    outputs = _outputs(_field(doc, "outputs", dict, f"{path}: ", {}), str(path))
    size = _field(doc, "bufferSizeBytes", int, f"{path}: ", DEFAULT_BUFFER_BYTES)
    if size < 4096:
        raise ConfigError(f"{path}: bufferSizeBytes: must be at least 4096, got {size}")
    domain = _field(doc, "clusterDomain", str, f"{path}: ", DEFAULT_CLUSTER_DOMAIN)
    if not domain or domain.startswith(".") or domain.endswith(".") or " " in domain:
        raise ConfigError(f"{path}: clusterDomain: expected a DNS domain such as "
                          f"{DEFAULT_CLUSTER_DOMAIN}, got {domain!r}")
    return SensorConfig(
        instance="/".join(str(instance[k]) for k in ("namespace", "name") if instance.get(k)),
        rules_files=tuple(path.parent / f for f in files),
        engine=_engine_options(_field(doc, "engine", dict, f"{path}: ", {}), str(path)),
        buffer_pages=buffer_pages(size),
        rules_hash=_field(doc, RULES_HASH_KEY, str, f"{path}: ", ""),
        falco_rules=_origins(_field(doc, FALCO_RULES_KEY, list, f"{path}: ", []), str(path)),
        cluster_domain=domain,
        **outputs,
    )


def _read(path: Path, digest: hashlib._Hash) -> str | None:
    """The file's text (fed into `digest`), or None when it cannot be read."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        digest.update(f"{path}\0unreadable\0{exc}\0".encode())
        return None
    digest.update(f"{path}\0{len(data)}\0".encode())
    digest.update(data)
    return text


def _rules(files: tuple[Path, ...] | list[Path], digest: hashlib._Hash) -> tuple[RulesSource | Path, ...]:
    """Unreadable files stay Paths: the engine reports them as LOAD_ERR_FILE_READ."""
    out: list[RulesSource | Path] = []
    for path in files:
        text = _read(path, digest)
        out.append(path if text is None else RulesSource(str(path), text))
    return tuple(out)


class RulesInput:
    """Reads snapshots from `--rules` files or from a `--config` file."""

    def __init__(self, *, rules: list[Path] | None = None, config: Path | None = None,
                 engine: EngineOptions | None = None) -> None:
        if (rules is None) == (config is None):
            raise ValueError("give exactly one of rules or config")
        self.rules = list(rules or ())
        self.config = config
        self.engine = engine or EngineOptions()

    def describe(self) -> str:
        """What is watched, for messages."""
        return str(self.config) if self.config else ", ".join(str(p) for p in self.rules)

    def read(self) -> Snapshot:
        """Read everything now. Raises ConfigError for a missing or bad config file."""
        digest = hashlib.sha256()
        if self.config is None:
            sources = _rules(self.rules, digest)
            return Snapshot(None, self.engine, sources, digest.hexdigest())
        text = _read(self.config, digest)
        if text is None:
            reason = "does not exist" if not self.config.exists() else "cannot be read"
            raise ConfigError(f"{self.config}: {reason}")
        config = parse(text, self.config)
        sources = _rules(config.rules_files, digest)
        return Snapshot(config, config.engine, sources, digest.hexdigest())
