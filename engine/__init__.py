"""`falconer.engine`: Falco's rule language — load (read, collect, compile), evaluate.

The public contract every component codes against; nothing here imports bcc or a
Kubernetes client.
"""

from falconer.engine.appendoutput import (
    FALCO_DEFAULT as FALCO_DEFAULT_APPEND_OUTPUT,
)
from falconer.engine.appendoutput import AppendOutput, AppendOutputError, ExtraField, parse_append_output
from falconer.engine.collector import ENGINE_VERSION, Priority
from falconer.engine.diagnostics import Diagnostic, LoadResult, Location
from falconer.engine.engine import Engine, EngineOptions, RulesSource
from falconer.engine.events import Event, MappingEvent
from falconer.engine.ruleset import Alert, Ruleset

__all__ = [
    "ENGINE_VERSION", "FALCO_DEFAULT_APPEND_OUTPUT", "Alert", "AppendOutput", "AppendOutputError", "Diagnostic", "Engine", "EngineOptions", "Event",
    "ExtraField", "Location", "LoadResult", "parse_append_output",
    "MappingEvent", "Priority", "Ruleset", "RulesSource",
]
