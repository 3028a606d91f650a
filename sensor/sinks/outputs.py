"""The ecosystem outputs (HTTP, gRPC, file, program): their settings, read from
falconer.yaml `outputs` or from falco.yaml-style `-o` keys, and their sinks.

falconer.yaml (the FalcoInstance's `spec.outputs`, as the operator renders it):
`http: {url, userAgent, tlsDir}`, `grpc: {address, tlsDir, threads}`,
`file: {path, keepAlive, format}`, `program: {program, keepAlive, format}`.
`-o` keys (Falco's names): `http_output.<key>`, `grpc.<key>` + `grpc_output.enabled`,
`file_output.<key>`, `program_output.<key>`, and `json_output` (file and program format).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, TextIO

from falconer.sensor.sinks.base import Sink
from falconer.sensor.sinks.file import FileOutput, FileSink
from falconer.sensor.sinks.grpc import GrpcOutput, GrpcSink
from falconer.sensor.sinks.http import HttpOutput, HttpSink
from falconer.sensor.sinks.program import ProgramOutput, ProgramSink
from falconer.sensor.sinks.stream import falco_bool

#: falconer.yaml `outputs` keys read here.
KEYS = frozenset({"http", "grpc", "file", "program"})
#: `-o` key prefixes read here (Falco's falco.yaml sections).
FALCO_SECTIONS = ("http_output", "grpc", "grpc_output", "file_output", "program_output")


@dataclass(frozen=True)
class Outputs:
    """The configured ecosystem outputs (None: not configured)."""

    http: HttpOutput | None = None
    grpc: GrpcOutput | None = None
    file: FileOutput | None = None
    program: ProgramOutput | None = None

    def configured(self) -> list[str]:
        """Names of the configured outputs."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


def from_falconer_yaml(raw: Mapping[str, Any], where: str) -> Outputs:
    """From falconer.yaml `outputs` (other keys are not read here); ValueError naming
    the setting when one is invalid. A key set to null or false is not configured."""
    parsers = {"http": HttpOutput.from_falconer_yaml, "grpc": GrpcOutput.from_falconer_yaml,
               "file": FileOutput.from_falconer_yaml, "program": ProgramOutput.from_falconer_yaml}
    out: dict[str, Any] = {}
    for key, parse in parsers.items():
        value = raw.get(key)
        if value in (None, False):
            continue
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}.{key}: expected a mapping, got {type(value).__name__}")
        out[key] = parse(value, f"{where}.{key}")
    return Outputs(**out)


def is_falco_key(key: str) -> bool:
    """Whether an `-o` key belongs to these outputs (or is `json_output`)."""
    return key == "json_output" or key.partition(".")[0] in FALCO_SECTIONS and "." in key


def from_falco_keys(pairs: Mapping[str, str]) -> Outputs:
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
    return Outputs(http=HttpOutput.from_falco_keys(sections["http_output"]),
                   grpc=GrpcOutput.from_falco_keys(grpc_keys),
                   file=FileOutput.from_falco_keys(sections["file_output"], json_output),
                   program=ProgramOutput.from_falco_keys(sections["program_output"], json_output))


def sinks(outputs: Outputs, hostname: str, err: TextIO) -> list[Sink]:
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
