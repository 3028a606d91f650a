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

from falconer import sensorconfig
from falconer.engine import EngineOptions, RulesSource
from falconer.sensorconfig import DEFAULT_CLUSTER_DOMAIN, ConfigError, RulesOrigin

__all__ = ["DEFAULT_CLUSTER_DOMAIN", "ConfigError", "RulesInput", "SensorConfig", "Snapshot", "parse"]


@dataclass(frozen=True)
class SensorConfig:
    """falconer.yaml (`sensorconfig.FalconerConfig`) resolved for this sensor: rules
    files made absolute, engine options built, the buffer size in pages."""

    file: sensorconfig.FalconerConfig
    rules_files: tuple[Path, ...]          # absolute, in load order
    engine: EngineOptions
    buffer_pages: int

    @property
    def instance(self) -> str:
        """The FalcoInstance as "namespace/name", or "" when not given."""
        return str(self.file.instance)

    @property
    def instance_namespace(self) -> str:
        """The FalcoInstance's namespace ("" when not given)."""
        return self.file.instance.namespace if self.instance else ""

    @property
    def instance_name(self) -> str:
        """The FalcoInstance's name ("" when not given)."""
        return self.file.instance.name if self.instance else ""

    @property
    def outputs(self) -> sensorconfig.Outputs:
        """Where alerts go (`outputs`)."""
        return self.file.outputs

    @property
    def stdout_enabled(self) -> bool:
        """outputs.stdout.enabled."""
        return self.file.outputs.stdout.enabled

    @property
    def json_output(self) -> bool:
        """outputs.stdout.format is json."""
        return self.file.outputs.stdout.format == "json"

    @property
    def unsupported_outputs(self) -> tuple[str, ...]:
        """Configured outputs this sensor does not deliver."""
        return self.file.outputs.undelivered()

    @property
    def kubernetes_events(self) -> bool:
        """outputs.kubernetesEvents."""
        return self.file.outputs.kubernetes_events

    @property
    def falco_alerts(self) -> bool:
        """outputs.falcoAlerts."""
        return self.file.outputs.falco_alerts

    @property
    def rate_per_second(self) -> float:
        """outputs.rateLimit.perSecond (API writes per second)."""
        return self.file.outputs.rate_limit.per_second

    @property
    def rate_burst(self) -> int:
        """outputs.rateLimit.burst."""
        return self.file.outputs.rate_limit.burst

    @property
    def rules_hash(self) -> str:
        """The ConfigMap's falconer.io/rules-hash ("" when run by hand)."""
        return self.file.rules_hash

    @property
    def falco_rules(self) -> tuple[RulesOrigin, ...]:
        """Where each rules file came from."""
        return self.file.falco_rules

    @property
    def cluster_domain(self) -> str:
        """The cluster's DNS domain (fd.*ip.name of Services)."""
        return self.file.cluster_domain


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


def parse(text: str, path: Path) -> SensorConfig:
    """Parse falconer.yaml's text (`sensorconfig.load`, ConfigError when malformed); rules
    files are resolved against `path`'s folder."""
    file = sensorconfig.load(text, path)
    return SensorConfig(
        file=file,
        rules_files=tuple(path.parent / f for f in file.rules_files),
        engine=file.engine.options(),
        buffer_pages=buffer_pages(file.buffer_size_bytes),
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
