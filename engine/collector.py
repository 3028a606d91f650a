"""Stage 2, "collect": turn positioned YAML items into list, macro and rule definitions.

This is where the rules-file semantics live: redefinition (new content, original
position, so a redefined rule keeps its evaluation order), `append: true` and
`override: {key: append|replace}`, the deprecated enabled-only rule form, exceptions,
required_engine_version and required_plugin_versions. Shapes are validated here with
Falco's messages; conditions are only compiled in stage 3.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from falconer.engine import ast
from falconer.engine.checks import compile_check
from falconer.engine.diagnostics import Code, LoadError, Position, Reporter, Step
from falconer.engine.fields import UnknownField, resolve
from falconer.engine.lexer import (
    LIST_OPS, NUM_OPS, STR_OP_MODIFIERS, STR_OPS, UNARY_OPS, ConditionSyntaxError,
)
from falconer.engine.located import LocatedText
from falconer.engine.parser import parse_condition
from falconer.engine.reader import Item, is_null, node_position
from falconer.engine.transformers import CheckError

#: The engine version Falconer implements (the upstream files require 0.57.0).
ENGINE_VERSION = "0.58.0"

#: Plugins whose fields Falconer provides natively.
NATIVE_PLUGINS = frozenset({"container"})

#: Event sources Falconer evaluates.
KNOWN_SOURCES = frozenset({"syscall"})

class Priority(StrEnum):
    """A rule's priority (Falco's names, which are the wire values), most severe first."""

    EMERGENCY = "Emergency"
    ALERT = "Alert"
    CRITICAL = "Critical"
    ERROR = "Error"
    WARNING = "Warning"
    NOTICE = "Notice"
    INFORMATIONAL = "Informational"
    DEBUG = "Debug"


#: Priorities, most severe first; the index is the severity rank.
PRIORITIES: tuple[Priority, ...] = tuple(Priority)
_PRIORITY_ALIASES = {p.lower(): p for p in PRIORITIES} | {"info": Priority.INFORMATIONAL}

_RULE_APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
_RULE_REPLACEABLE = ("condition", "output", "desc", "priority", "capture", "capture_duration",
                     "tags", "exceptions", "enabled", "warn_evttypes", "skip-if-unknown-filter")
_RULE_KEYS = frozenset({"rule", "condition", "output", "desc", "priority", "source", "enabled",
                        "capture", "capture_duration", "warn_evttypes", "skip-if-unknown-filter",
                        "tags", "exceptions", "override", "append"})
_MACRO_KEYS = frozenset({"macro", "condition", "append", "override"})
_LIST_KEYS = frozenset({"list", "items", "append", "override"})
#: Rule keys whose override is a plain read of the item's value: key -> (RuleInfo
#: attribute, reader). The texts among them are the ones `append` joins with a blank.
_RULE_READS: dict[str, tuple[str, Callable[[Item, str], object]]] = {
    "condition": ("cond", Item.located),
    "output": ("output", Item.located),
    "desc": ("desc", Item.string),
    "enabled": ("enabled", Item.boolean),
    "warn_evttypes": ("warn_evttypes", Item.boolean),
    "skip-if-unknown-filter": ("skip_if_unknown_filter", Item.boolean),
    "capture": ("capture", Item.boolean),
    "capture_duration": ("capture_duration", Item.integer),
}
_RULE_TEXTS = ("condition", "output", "desc")
_OVERRIDE_APPEND_ERROR = ("Keys 'override' and 'append: true' cannot be used together. Add an "
                          "'append' entry (e.g. 'condition: append') under 'override' instead.")
_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_priority(text: str) -> Priority | None:
    """The priority of a case-insensitive spelling ("info" for Informational), or None."""
    return _PRIORITY_ALIASES.get(text.lower())


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`x.y.z` as a tuple; an integer N means 0.N.0."""
    text = text.strip()
    if text.isdigit():
        return (0, int(text), 0)
    m = _SEMVER.match(text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


ExceptionValue = str | list["ExceptionValue"]


@dataclass
class ExceptionInfo:
    """One `exceptions:` entry of a rule."""

    name: str
    fields: str | list[str] | None
    comps: str | list[str] | None
    values: list[ExceptionValue]
    position: Position


@dataclass
class ListInfo:
    """A collected list."""

    name: str
    items: list[str]
    index: int
    visibility: int
    position: Position


@dataclass
class MacroInfo:
    """A collected macro; it sees macros whose index is below its visibility."""

    name: str
    cond: LocatedText
    index: int
    visibility: int
    position: Position


@dataclass
class RuleInfo:
    """A collected rule, before compilation."""

    name: str
    cond: LocatedText
    output: LocatedText
    desc: str
    priority: Priority
    source: str
    position: Position
    index: int = 0
    enabled: bool = True
    tags: list[str] = field(default_factory=list)
    exceptions: list[ExceptionInfo] = field(default_factory=list)
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    capture: bool = False
    capture_duration: int = 0
    unknown_source: bool = False


_ListOrMacro = TypeVar("_ListOrMacro", ListInfo, MacroInfo)
_Info = TypeVar("_Info", ListInfo, MacroInfo, RuleInfo)


class Collector:
    """Accumulates the definitions of all files of one load, in order."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.lists: dict[str, ListInfo] = {}
        self.macros: dict[str, MacroInfo] = {}
        self.rules: dict[str, RuleInfo] = {}
        self._index = 0

    @property
    def next_index(self) -> int:
        """The index the next definition will get (a layered collection starts there)."""
        return self._index

    def _next_index(self) -> int:
        """The next definition index: it orders rules and bounds what a macro sees."""
        self._index += 1
        return self._index - 1

    def collect(self, item: Item) -> None:
        """Collect one item; raises LoadError for a bad one."""
        if item.kind:
            item.name = item.string(item.kind) if item.kind in ("list", "macro", "rule") else ""
        match item.kind:
            case "required_engine_version":
                self._engine_version(item)
            case "required_plugin_versions":
                self._plugin_versions(item)
            case "list":
                self._list(item)
            case "macro":
                self._macro(item)
            case "rule":
                self._rule(item)
            case _:
                self.reporter.add(Code.LOAD_UNKNOWN_ITEM, "Unknown top level item", item.position)

    def _warn_unknown_keys(self, item: Item, expected: frozenset[str]) -> None:
        """Unknown keys are a LOAD_UNKNOWN_KEY warning at the item, and ignored
        (rule_loader_reader.cpp warn_unknown_keys)."""
        for key in item.keys:
            if key not in expected:
                self.reporter.add(Code.LOAD_UNKNOWN_KEY,
                                  f"Unknown key '{key}'. The key will be ignored.",
                                  item.position, item.kind, item.name)

    def _validate_error(self, item: Item, message: str, pos: Position | None = None,
                        steps: tuple[Step, ...] = ()) -> LoadError:
        """A LOAD_ERR_VALIDATE error: the item is well-formed but means something invalid."""
        return LoadError(Code.LOAD_ERR_VALIDATE, message, pos or item.position, item.kind, item.name,
                         steps)

    # -- version requirements ---------------------------------------------------------------

    def _engine_version(self, item: Item) -> None:
        """Files written for a newer engine (or another major version) are refused."""
        text = item.string("required_engine_version")
        required = parse_version(text)
        if required is None:
            raise item.error(f"Unable to parse engine version '{text}'",
                             item.key_position("required_engine_version"))
        engine = parse_version(ENGINE_VERSION)
        assert engine is not None
        if required[0] != engine[0] or required > engine:
            raise self._validate_error(
                item, f"Rules require engine version {'.'.join(map(str, required))}, but engine "
                      f"version is {ENGINE_VERSION}", item.key_position("required_engine_version"))
        self._warn_unknown_keys(item, frozenset({"required_engine_version"}))

    def _plugin_versions(self, item: Item) -> None:
        """A required plugin (or one of its alternatives) must be one Falconer provides
        natively; otherwise its rules would silently see no fields, hence the warning."""
        node = item.value_node("required_plugin_versions")
        if not isinstance(node, SequenceNode):
            raise item.error("Value of required_plugin_versions must be a sequence",
                             item.key_position("required_plugin_versions"))
        for plugin in node.value:
            names = [self._plugin_requirement(item, plugin)]
            sub = _mapping_value(plugin, "alternatives")
            if sub is not None:
                if not isinstance(sub, SequenceNode):
                    raise item.error("Value of plugin version alternatives must be a sequence",
                                     node_position(item.source.name, sub))
                names += [self._plugin_requirement(item, alt) for alt in sub.value]
            if not NATIVE_PLUGINS.intersection(names):
                self.reporter.add(Code.LOAD_UNKNOWN_PLUGIN,
                                  f"Plugin '{names[0]}' is required but Falconer does not "
                                  "provide it", node_position(item.source.name, plugin),
                                  "required_plugin_versions", names[0])
        self._warn_unknown_keys(item, frozenset({"required_plugin_versions"}))

    def _plugin_requirement(self, item: Item, node: object) -> str:
        """The plugin name of one `{name, version}` requirement (the version must parse)."""
        if not isinstance(node, MappingNode):
            raise item.error("Plugin version must be a mapping")
        pos = node_position(item.source.name, node)
        name = _required_scalar(item, node, "name", pos)
        version = _required_scalar(item, node, "version", pos)
        if parse_version(version) is None:
            raise self._validate_error(
                item, f"Invalid required version '{version}' for plugin '{name}'", pos)
        return name

    # -- append and override (lists, macros, rules) -----------------------------------------

    def _append_and_overrides(self, item: Item, appendable: tuple[str, ...],
                              replaceable: tuple[str, ...]) -> tuple[bool, dict[str, str]]:
        """The deprecated `append: true` flag (warned about) and the `override` mapping;
        an item may use one or the other, not both."""
        append = item.optional_boolean("append", False)
        if append:
            self.reporter.add(Code.LOAD_DEPRECATED_ITEM,
                              "The 'append' key is deprecated. Add an 'append' entry (e.g. "
                              "'condition: append') under 'override' instead.",
                              item.position, item.kind, item.name)
        overrides = self._overrides(item, appendable, replaceable)
        if append and overrides:
            raise item.error(_OVERRIDE_APPEND_ERROR)
        return append, overrides

    def _overrides(self, item: Item, appendable: tuple[str, ...],
                   replaceable: tuple[str, ...]) -> dict[str, str]:
        """The `override: {key: append|replace}` mapping, checked against what each key
        allows and against the keys the item actually gives (each needs an entry)."""
        if not item.has("override"):
            return {}
        node = item.value_node("override")
        if not isinstance(node, MappingNode):
            raise item.error("The 'override' key must be a mapping",
                             item.key_position("override"))
        out: dict[str, str] = {}
        for key_node, value_node in node.value:
            key, op = str(key_node.value), str(getattr(value_node, "value", ""))
            pos = node_position(item.source.name, value_node)
            if op == "append":
                if key not in appendable:
                    raise item.error(f"Key '{key}' cannot be appended to, it can be replaced "
                                     "instead" if key in replaceable else
                                     f"Unexpected key '{key}': it can't be overridden", pos)
            elif op == "replace":
                if key not in replaceable:
                    raise item.error(f"Key '{key}' cannot be replaced", pos)
            else:
                raise item.error(f"Invalid override operation for key '{key}': '{op}'. "
                                 "Allowed values are: append, replace", pos)
            out[key] = op
        expected = {k for k in (*appendable, *replaceable) if item.has(k)}
        for key in out:
            if key not in expected:
                raise item.error(f"An {out[key]} override for '{key}' was specified but "
                                 f"'{key}' is not defined", item.key_position("override"))
        for key in sorted(expected - set(out), key=list(item.keys).index):
            raise item.error(f"Unexpected key '{key}': no corresponding entry under 'override' "
                             "is defined.", item.key_position(key))
        return out

    # -- lists and macros ---------------------------------------------------------------------

    def _append_target(self, item: Item, table: dict[str, _ListOrMacro], key: str,
                       known_keys: frozenset[str]) -> _ListOrMacro | None:
        """For a list/macro item that appends (`append: true` or `override: {key:
        append}`), the earlier definition it extends, whose visibility moves here (it now
        sees what was defined before this item); None when the item (re)defines."""
        append, overrides = self._append_and_overrides(item, (key,), (key,))
        self._warn_unknown_keys(item, known_keys)
        if not append and "append" not in overrides.values():
            return None
        prev = table.get(item.name)
        if prev is None:
            raise self._validate_error(item, f"{item.kind.capitalize()} has 'append' key but no "
                                             f"{item.kind} by that name already exists")
        prev.visibility = self._next_index()
        return prev

    def _list(self, item: Item) -> None:
        """Define a list, or append items to an earlier one."""
        items = [text for text, _ in item.string_list("items")]
        prev = self._append_target(item, self.lists, "items", _LIST_KEYS)
        if prev is None:
            self._define(self.lists, ListInfo(item.name, items, 0, 0, item.position))
        else:
            prev.items.extend(items)

    def _macro(self, item: Item) -> None:
        """Define a macro, or append to an earlier one's condition."""
        cond = item.located("condition")
        prev = self._append_target(item, self.macros, "condition", _MACRO_KEYS)
        if prev is None:
            self._define(self.macros, MacroInfo(item.name, cond, 0, 0, item.position))
        else:
            prev.cond = prev.cond + " " + cond

    def _define(self, table: dict[str, _Info], info: _Info) -> None:
        """Insert or redefine: a redefinition keeps the original index (order)."""
        index = self._next_index()
        prev = table.get(info.name)
        info.index = prev.index if prev is not None else index
        if not isinstance(info, RuleInfo):
            info.visibility = index
        table[info.name] = info

    # -- rules --------------------------------------------------------------------------------

    def _rule(self, item: Item) -> None:
        """Define, redefine, append to or override a rule (or the old enabled-only form)."""
        source = item.optional_string("source")
        has_append, overrides = self._append_and_overrides(item, _RULE_APPENDABLE,
                                                           _RULE_REPLACEABLE)
        self._warn_unknown_keys(item, _RULE_KEYS)
        if overrides:
            appended = [k for k, op in overrides.items() if op == "append"]
            replaced = [k for k, op in overrides.items() if op == "replace"]
            if appended:
                self._update_rule(item, source, appended, append=True)
            if replaced:
                self._update_rule(item, source, replaced, append=False)
        elif has_append:
            self._update_rule(item, source, [k for k in ("condition", "exceptions")
                                             if item.has(k)], append=True)
        elif not any(item.has(k) for k in ("condition", "output", "desc", "priority")):
            enabled = item.boolean("enabled")
            self.reporter.add(Code.LOAD_DEPRECATED_ITEM,
                              "The rule has only the 'enabled' key: use 'override' with "
                              "'enabled: replace' instead", item.position, "rule", item.name)
            prev = self.rules.get(item.name)
            if prev is None:
                raise self._validate_error(item, "Rule has 'enabled' key but no rule by that "
                                                 "name already exists")
            prev.enabled = enabled
        else:
            self._define_rule(item, item.string("source") if item.has("source") else "syscall")

    def _priority(self, item: Item) -> Priority:
        """The priority (any case of Falco's names, or `info`)."""
        text = item.string("priority")
        priority = parse_priority(text)
        if priority is None:
            pos = item.key_position("priority")
            raise LoadError(Code.LOAD_ERR_YAML_VALIDATE, "Invalid priority", pos, item.kind,
                            item.name, (Step("rule priority", "", pos),))
        return priority

    def _define_rule(self, item: Item, source: str) -> None:
        """A full rule definition (or redefinition, which keeps the original order)."""
        rule = RuleInfo(
            name=item.name,
            cond=item.located("condition"),
            output=item.located("output").strip(),
            desc=item.string("desc"),
            priority=self._priority(item),
            source=source,
            position=item.position,
            enabled=item.optional_boolean("enabled", True),
            tags=_unique([t for t, _ in item.string_list("tags")]) if item.has("tags") else [],
            exceptions=self._exceptions(item, appending=False),
            warn_evttypes=item.optional_boolean("warn_evttypes", True),
            skip_if_unknown_filter=item.optional_boolean("skip-if-unknown-filter", False),
            capture=item.optional_boolean("capture", False),
            capture_duration=item.integer("capture_duration") if item.has("capture_duration")
            else 0,
        )
        prev = self.rules.get(rule.name)
        if prev is not None and prev.source != rule.source:
            raise self._validate_error(item, "Rule has been re-defined with a different source")
        if rule.source not in KNOWN_SOURCES:
            rule.unknown_source = True
            self.reporter.add(Code.LOAD_UNKNOWN_SOURCE, f"Unknown source {rule.source}, skipping",
                              item.position, "rule", rule.name)
        for ex in rule.exceptions:
            self._validate_exception(item, ex)
        self._define(self.rules, rule)

    def _update_rule(self, item: Item, source: str, keys: list[str], append: bool) -> None:
        """Append to or replace `keys` of an earlier rule of the same source."""
        prev = self.rules.get(item.name)
        if prev is None:
            verb = "append to" if append else "replace"
            raise self._validate_error(item, f"Rule has 'override'/'append' to {verb} but no "
                                             "rule by that name already exists")
        if source and prev.source != source:
            raise self._validate_error(item, "Rule has been re-defined with a different source")
        if not keys:
            raise self._validate_error(item, "Appended rule must have exceptions or condition "
                                             "property")
        for key in keys:
            if append:
                self._append_key(item, prev, key)
            else:
                self._replace_key(item, prev, key)

    def _append_key(self, item: Item, prev: RuleInfo, key: str) -> None:
        """Append one key's new value to the rule, as Falco does: texts joined by a blank,
        tags and exceptions added (an existing exception only gains values)."""
        if key in _RULE_TEXTS:
            attr, read = _RULE_READS[key]
            setattr(prev, attr, getattr(prev, attr) + " " + read(item, key))
        elif key == "tags":
            prev.tags = _unique(prev.tags + [t for t, _ in item.string_list("tags")])
        elif key == "exceptions":
            for ex in self._exceptions(item, appending=True):
                self._append_exception(item, prev, ex)

    def _append_exception(self, item: Item, prev: RuleInfo, ex: ExceptionInfo) -> None:
        """A new exception must be complete; one named like an existing exception may only
        bring more values."""
        existing = next((e for e in prev.exceptions if e.name == ex.name), None)
        if existing is None:
            for key, missing in (("fields", ex.fields is None), ("values", not ex.values)):
                if missing:
                    raise self._validate_error(item, f"Rule exception must have {key} property "
                                                     f"with a list of {key}", ex.position,
                _exception_steps(ex))
            self._validate_exception(item, ex)
            prev.exceptions.append(ex)
            return
        for key, given in (("fields", ex.fields), ("comps", ex.comps)):
            if given is not None:
                raise self._validate_error(item, f"Can not append exception {key} to existing "
                                                 "exception, only values", ex.position,
                _exception_steps(ex))
        existing.values.extend(ex.values)

    def _replace_key(self, item: Item, prev: RuleInfo, key: str) -> None:
        """Replace one key of the rule by the item's value."""
        if key in _RULE_READS:
            attr, read = _RULE_READS[key]
            setattr(prev, attr, read(item, key))
        elif key == "tags":
            prev.tags = _unique([t for t, _ in item.string_list("tags")])
        elif key == "exceptions":
            prev.exceptions = self._exceptions(item, appending=False)
            for ex in prev.exceptions:
                self._validate_exception(item, ex)
        elif key == "priority":
            prev.priority = self._priority(item)

    # -- exceptions ---------------------------------------------------------------------------

    def _exceptions(self, item: Item, appending: bool) -> list[ExceptionInfo]:
        """The item's `exceptions:` entries, shape-checked; when appending, `fields` may be
        left out (an existing exception is extended)."""
        if not item.has("exceptions") or is_null(item.keys["exceptions"][1]):
            return []
        node = item.keys["exceptions"][1]
        if not isinstance(node, SequenceNode):
            raise item.error("Rule exceptions must be a sequence",
                             item.key_position("exceptions"))
        out: list[ExceptionInfo] = []
        for ex_node in node.value:
            pos = node_position(item.source.name, ex_node)
            if not isinstance(ex_node, MappingNode):
                raise item.error("Rule exception must be a mapping", pos)
            name = _required_scalar(item, ex_node, "name", pos)
            if any(e.name == name for e in out):
                self.reporter.add(Code.LOAD_EXCEPTION_NAME_NOT_UNIQUE,
                                  f"Multiple definitions of exception '{name}' in the same rule",
                                  pos, "rule", item.name)
            fields = _entry(item, _mapping_value(ex_node, "fields"), "fields", pos)
            if fields is None and not appending:
                raise item.error("Item has no mapping for key 'fields'", pos)
            comps = _entry(item, _mapping_value(ex_node, "comps"), "comps", pos)
            values_node = _mapping_value(ex_node, "values")
            values: list[ExceptionValue] = []
            if values_node is not None and not is_null(values_node):
                if not isinstance(values_node, SequenceNode):
                    raise item.error("Rule exception values must be a sequence",
                                     node_position(item.source.name, values_node))
                values = [_exception_value(item, v) for v in values_node.value]
            elif appending:
                self.reporter.add(Code.LOAD_APPEND_NO_VALUES,
                                  "Overriding/appending exception with no values", pos,
                                  "rule", item.name)
            out.append(ExceptionInfo(name, fields, comps, values, pos))
        return out

    def _validate_exception(self, item: Item, ex: ExceptionInfo) -> None:
        """Fields must exist and comps be operators, consistent in shape; comps default to
        `=` per field (list form) or `in` (single field), as in Falco."""
        ops = {o.strip() for o in (*UNARY_OPS, *NUM_OPS, *STR_OPS, *LIST_OPS)}
        modifier_ops = {f"{o.strip()} {m.strip()}" for o in STR_OPS for m in STR_OP_MODIFIERS}
        if ex.fields is None:
            raise self._validate_error(item, "Rule exception item must have fields property "
                                       "with a list of fields", ex.position,
                _exception_steps(ex))
        fields = ex.fields if isinstance(ex.fields, list) else [ex.fields]
        if isinstance(ex.fields, list):
            if ex.comps is None:
                ex.comps = ["="] * len(ex.fields)
            if not isinstance(ex.comps, list) or len(ex.comps) != len(ex.fields):
                raise self._validate_error(item, "Fields and comps lists must have equal length",
                                           ex.position,
                _exception_steps(ex))
            ex.comps = [c.strip() for c in ex.comps]
            for comp in ex.comps:
                if comp not in ops and comp not in modifier_ops:
                    raise self._validate_error(
                        item, f"'{comp}' is not a supported comparison operator", ex.position,
                _exception_steps(ex))
        else:
            if ex.comps is None:
                ex.comps = "in"
            if isinstance(ex.comps, list):
                raise self._validate_error(item, "Fields and comps must both be strings",
                                           ex.position,
                _exception_steps(ex))
            ex.comps = ex.comps.strip()
            if ex.comps not in ("in", "pmatch", "intersects") and ex.comps not in modifier_ops:
                raise self._validate_error(
                    item, "When fields is a single value, comps must be one of (in, pmatch, "
                          "intersects) or a modifier operator (e.g. startswith oneof)",
                    ex.position,
                _exception_steps(ex))
        for name in fields:
            if not is_valid_lhs_field(name):
                raise self._validate_error(item, f"'{name}' is not a supported filter field",
                                           ex.position,
                _exception_steps(ex))


def is_valid_lhs_field(text: str) -> bool:
    """Whether an exception's field can stand on the left of a check: a known field, or
    (with a parenthesis) a transformer expression that compiles as `<text> exists`
    (falco_source.h is_valid_lhs_field)."""
    if "(" in text:
        try:
            node = parse_condition(f"{text} exists")
            if not isinstance(node, ast.UnaryCheck):
                return False
            compile_check(node)
        except (ConditionSyntaxError, CheckError):
            return False
        return True
    m = re.fullmatch(r"([a-zA-Z0-9_.]+)(?:\[([^\]]*)\])?", text)
    if m is None:
        return False
    try:
        resolve(m.group(1), m.group(2))
    except UnknownField:
        return False
    return True


def _exception_steps(ex: ExceptionInfo) -> tuple[Step, ...]:
    """The `exception` location of an error about one of a rule's exceptions."""
    return (Step("exception", ex.name, ex.position),)


def _mapping_value(node: object, key: str) -> Node | None:
    """The value node under `key` in a mapping node, or None."""
    if not isinstance(node, MappingNode):
        return None
    pairs: list[tuple[Node, Node]] = node.value
    for k, v in pairs:
        if isinstance(k, ScalarNode) and k.value == key:
            return v
    return None


def _required_scalar(item: Item, node: MappingNode, key: str, pos: Position) -> str:
    """The non-empty scalar under `key` in a nested mapping (an error at `pos` otherwise)."""
    value = _mapping_value(node, key)
    if not isinstance(value, ScalarNode) or not value.value:
        raise item.error(f"Item has no mapping for key '{key}'", pos)
    return str(value.value)


def _entry(item: Item, node: object, key: str, pos: Position) -> str | list[str] | None:
    """An exception's `fields`/`comps`: a string or a list of strings."""
    if node is None or (isinstance(node, Node) and is_null(node)):
        return None
    if isinstance(node, ScalarNode):
        if not node.value:
            raise item.error("Value must be non-empty", pos)
        return str(node.value)
    if isinstance(node, SequenceNode):
        out: list[str] = []
        for child in node.value:
            if not isinstance(child, ScalarNode):
                raise item.error(f"Rule exception {key} must be strings",
                                 node_position(item.source.name, child))
            out.append(str(child.value))
        return out
    raise item.error(f"Rule exception {key} must be a string or a list of strings", pos)


def _exception_value(item: Item, node: Node) -> ExceptionValue:
    """A value (a string, or a list for a tuple or an `in` list), nested as written."""
    if isinstance(node, ScalarNode):
        return str(node.value)
    if isinstance(node, SequenceNode):
        return [_exception_value(item, child) for child in node.value]
    raise item.error("Rule exception values must be strings or lists",
                     node_position(item.source.name, node))


def _unique(tags: list[str]) -> list[str]:
    """Tags without repeats, first occurrence order kept (Falco keeps a set of them)."""
    return list(dict.fromkeys(tags))
