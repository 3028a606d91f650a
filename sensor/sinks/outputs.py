"""The ecosystem outputs (HTTP, gRPC, file, program): the settings their sinks run with,
from falconer.yaml `outputs` (`falconer.sensorconfig.Outputs`, the FalcoInstance's
`spec.outputs`) or from falco.yaml-style `-o` keys, and their sinks.

`-o` keys (Falco's names): `http_output.<key>`, `grpc.<key>` + `grpc_output.enabled`,
`file_output.<key>`, `program_output.<key>`, and `json_output` (file and program format).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TextIO

from falconer import sensorconfig
from falconer.sensor.sinks.base import Sink
from falconer.sensor.sinks.file import FileSettings, FileSink
from falconer.sensor.sinks.grpc import GrpcSettings, GrpcSink
from falconer.sensor.sinks.http import HttpSettings, HttpSink
from falconer.sensor.sinks.program import ProgramSettings, ProgramSink
from falconer.sensor.sinks.stream import falco_bool

#: `-o` key prefixes read here (Falco's falco.yaml sections).
FALCO_SECTIONS = ("http_output", "grpc", "grpc_output", "file_output", "program_output")


@dataclass(frozen=True)
class OutputSettings:
    """The configured ecosystem outputs (None: not configured)."""

    http: HttpSettings | None = None
    grpc: GrpcSettings | None = None
    file: FileSettings | None = None
    program: ProgramSettings | None = None

    def configured(self) -> list[str]:
        """Names of the configured outputs."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def from_config(outputs: sensorconfig.Outputs, tls_root: Path) -> OutputSettings:
    """From falconer.yaml `outputs` (`sensorconfig.Outputs`); TLS Secrets are read from
    their folders under `tls_root` (where the operator mounts them). ValueError when a
    setting cannot be used (an http client certificate without its key)."""
    return OutputSettings(
        http=HttpSettings.from_config(outputs.http, tls_root) if outputs.http else None,
        grpc=GrpcSettings.from_config(outputs.grpc, tls_root) if outputs.grpc else None,
        file=FileSettings.from_config(outputs.file) if outputs.file else None,
        program=ProgramSettings.from_config(outputs.program) if outputs.program else None)


def is_falco_key(key: str) -> bool:
    """Whether an `-o` key belongs to these outputs (or is `json_output`)."""
    return key == "json_output" or key.partition(".")[0] in FALCO_SECTIONS and "." in key


def from_falco_keys(pairs: Mapping[str, str]) -> OutputSettings:
    """From `-o` keys (`http_output.url`, ..., `json_output`); ValueError when a value
    or key is invalid."""
    sections: dict[str, dict[str, str]] = {s: {} for s in FALCO_SECTIONS}
    for key, value in pairs.items():
        if key != "json_output":
            section, _, sub = key.partition(".")
            sections[section][sub] = value
    json_output = falco_bool(pairs.get("json_output", "false"), "json_output")
    grpc_keys = dict(sections["grpc"])
    if "enabled" in sections["grpc_output"] or "enabled" in grpc_keys:
        both = [falco_bool(v, "grpc enabled") for v in (grpc_keys.get("enabled", "true"),
                                                         sections["grpc_output"].get("enabled", "true"))]
        grpc_keys["enabled"] = "true" if all(both) else "false"
    if set(sections["grpc_output"]) - {"enabled"}:
        raise ValueError(f"grpc_output: only grpc_output.enabled exists, got {sorted(sections['grpc_output'])}")
    return OutputSettings(http=HttpSettings.from_falco_keys(sections["http_output"]),
                   grpc=GrpcSettings.from_falco_keys(grpc_keys),
                   file=FileSettings.from_falco_keys(sections["file_output"], json_output),
                   program=ProgramSettings.from_falco_keys(sections["program_output"], json_output))


def sinks(outputs: OutputSettings, hostname: str, err: TextIO) -> list[Sink]:
    """One sink per configured output, not yet started (ValueError when an output's TLS
    files cannot be loaded)."""
    out: list[Sink] = []
    if outputs.http is not None:
        out.append(HttpSink(outputs.http, hostname, err))
    if outputs.grpc is not None:
        out.append(GrpcSink(outputs.grpc, hostname, err))
    if outputs.file is not None:
        out.append(FileSink(outputs.file, hostname, err))
    if outputs.program is not None:
        out.append(ProgramSink(outputs.program, hostname, err))
    return out
