"""Compile FalcoRule specs through the rule engine and say where each problem is.

The engine reads YAML text and reports file/line/column in it. A FalcoRule's author
wrote structured items, so every diagnostic is mapped back to the item (index, kind,
name) and the field (`spec.items[3].condition`, line and column inside the condition).
Compilation is pure and cached by content: a restart or a repeated reconcile of the
same generation costs nothing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml

from falconer.engine import Diagnostic, Engine, EngineOptions, RulesSource
from falconer.engine.diagnostics import Code
from falconer.engine.scope import DEFAULT_TENANT_MAX_PRIORITY
from falconer.operator import ruleyaml
from falconer.operator.ruleyaml import RuleText
from falconer.operator.spec import FalcoRuleSpec
from falconer.shapes import ShapeError, dotted

#: Diagnostic messages are cut to this length in status (an API object has a size limit).
MAX_MESSAGE = 1024
#: At most this many errors and this many warnings are listed in a status.
MAX_FINDINGS = 50


@dataclass(frozen=True)
class Finding:
    """A diagnostic placed in a FalcoRule: which item, which field, where inside it."""

    code: Code
    message: str
    falco_rule: str
    path: str
    line: int | None = None
    column: int | None = None
    snippet: str | None = None
    item_index: int | None = None
    item_kind: str | None = None
    item_name: str | None = None

    def to_status(self, with_rule: bool = False) -> dict[str, Any]:
        """The status entry (FalcoRule status when with_rule is False, else instance status)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message[:MAX_MESSAGE], "path": self.path}
        if with_rule:
            out["falcoRule"] = self.falco_rule
        for key, value in (("line", self.line), ("column", self.column)):
            if value is not None:
                out[key] = value
        if not with_rule:
            if self.snippet:
                out["snippet"] = self.snippet[:MAX_MESSAGE]
            item = {"index": self.item_index, "kind": self.item_kind, "name": self.item_name}
            item = {k: v for k, v in item.items() if v is not None}
            if item:
                out["item"] = item
        return out

    def text(self) -> str:
        """One line for logs and Events: `<falcorule> <path>:<line>:<col>: <code>: <message>`."""
        where = self.path
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{self.falco_rule} {where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class Compiled:
    """The outcome of compiling one or more FalcoRules as one set."""

    counts: dict[str, int]
    errors: tuple[Finding, ...]
    warnings: tuple[Finding, ...]

    @property
    def valid(self) -> bool:
        """No errors (warnings do not block)."""
        return not self.errors


def render_text(name: str, spec: FalcoRuleSpec, tenant: str = "") -> RuleText:
    """The FalcoRule's rules file text (deterministic for equal specs), loaded in the
    scope of `tenant` ("" for the cluster's)."""
    return RuleText(name=name, text=ruleyaml.dump_items(list(spec.items)), tenant=tenant)


def engine_options(
    min_priority: str = "debug", rule_matching: str = "first", selection: Sequence[tuple[str, str, str]] = (),
    tenant_max_priority: str = DEFAULT_TENANT_MAX_PRIORITY,
) -> EngineOptions:
    """EngineOptions from a FalcoInstance's (or the default) settings."""
    return EngineOptions(min_priority=min_priority, rule_matching=rule_matching, selection=tuple(selection),
                         tenant_max_priority=tenant_max_priority)


#: Compilations by (source names and digests, options): handlers run in threads.
_CACHE: OrderedDict[tuple[Any, ...], Compiled] = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Two entries per FalcoRule an instance loads (it, and what loads before it): room for
#: thousands, so a reconcile never recompiles what did not change.
_CACHE_SIZE = 8192


def compile_texts(texts: Sequence[RuleText], options: EngineOptions | None = None) -> Compiled:
    """Compile the rule texts in order as one set, diagnostics mapped into the FalcoRules."""
    opts = options or engine_options()
    key = (tuple((t.name, t.digest, t.tenant) for t in texts), repr(opts))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    compiled = compile_uncached(texts, opts)
    with _CACHE_LOCK:
        _CACHE[key] = compiled
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return compiled


def compile_uncached(texts: Sequence[RuleText], opts: EngineOptions) -> Compiled:
    """Run the engine and map its diagnostics (what `compile_texts` caches)."""
    result = Engine(opts).load([RulesSource(name=t.name, text=t.text, namespace=t.tenant) for t in texts])
    by_name = {t.name: t for t in texts}
    maps: dict[str, ruleyaml.PositionMap] = {}

    errors = tuple(_place(d, by_name, maps) for d in result.errors[:MAX_FINDINGS])
    warnings = tuple(_place(d, by_name, maps) for d in result.warnings[:MAX_FINDINGS])
    return Compiled(counts=dict(result.counts), errors=errors, warnings=warnings)


#: The field of an item that a context location type points into.
_FIELD_OF_LOCATION = {"rule condition": "condition", "macro condition": "condition",
                      "rule output": "output", "rule priority": "priority",
                      "exception": "exceptions"}
#: Location types of a token inside a field, and the type of the field they are in.
_TOKEN_LOCATIONS = frozenset({"condition expression", "rule output expression"})


def _item_elsewhere(diag: Diagnostic) -> bool:
    """Whether the item being compiled lives in another FalcoRule than the diagnostic's
    token (a rule loaded before this FalcoRule that uses one of its macros)."""
    items = [loc for loc in diag.locations if loc.item_type in ("rule", "macro", "list")]
    return bool(items) and items[-1].name != diag.file


def _from_context(diag: Diagnostic) -> ruleyaml.FieldPosition | None:
    """The item, field and in-field position from the engine's context chain (no YAML
    parsing): the item's index, the field its value location names, and the token's
    line/column relative to the field's first character (fields are `|` blocks)."""
    if diag.item_index < 0:
        return None
    fields = [(i, loc) for i, loc in enumerate(diag.locations) if loc.item_type in _FIELD_OF_LOCATION]
    if not fields:
        return None
    i, value = fields[-1]
    if value.name != diag.file or _item_elsewhere(diag):
        # The item being compiled is in another FalcoRule than the token (a macro of this
        # one used by a rule loaded before it): place by the token's own position.
        return None
    key = _FIELD_OF_LOCATION[value.item_type]
    token = diag.locations[-1] if diag.locations[-1].item_type in _TOKEN_LOCATIONS else None
    if key in ("condition", "output") and token is not None and i == len(diag.locations) - 2:
        return ruleyaml.FieldPosition(diag.item_index, key, token.line - value.line + 1,
                                      token.column - value.column + 1)
    return ruleyaml.FieldPosition(diag.item_index, key, None, None)


def _place(diag: Diagnostic, texts: dict[str, RuleText], maps: dict[str, ruleyaml.PositionMap]) -> Finding:
    """Map an engine diagnostic (position in the generated text) onto the FalcoRule: from
    the diagnostic's context chain when it names the field, else by position."""
    base = Finding(
        code=diag.code,
        message=diag.message,
        falco_rule=diag.file or "",
        path="spec.items",
        snippet=diag.snippet or None,
        item_kind=None if _item_elsewhere(diag) else diag.item_kind or None,
        item_name=None if _item_elsewhere(diag) else diag.item_name or None,
    )
    text = texts.get(diag.file or "")
    if text is None:
        return base
    pos = _from_context(diag)
    if pos is None:
        if diag.file not in maps:
            maps[diag.file] = ruleyaml.PositionMap(text.text)
        pmap = maps[diag.file]
        pos = pmap.locate(diag.line, diag.column) if diag.line else None
    if pos is None:
        index = maps[diag.file].item_position(diag.item_kind, diag.item_name)
        if index is None:
            return base
        pos = ruleyaml.FieldPosition(index, None, None, None)
    return dataclasses.replace(
        base, path=pos.path(), line=pos.line, column=pos.column,
        snippet=_field_snippet(text, diag, pos) or base.snippet, item_index=pos.index,
    )


def _field_snippet(text: RuleText, diag: Diagnostic, pos: ruleyaml.FieldPosition) -> str | None:
    """The field's own line with a caret under the column, without the generated file's
    indentation (which the user never wrote); None without an in-field position."""
    if pos.line is None or pos.column is None or not diag.line:
        return None
    text_line = text.text.split("\n")[diag.line - 1]
    indent = (diag.column or 1) - pos.column
    return f"{text_line[indent:]}\n{' ' * (pos.column - 1)}^"


def compile_falcorule(name: str, spec: FalcoRuleSpec | ShapeError, before: Sequence[RuleText] = (),
                      options: EngineOptions | None = None, tenant: str = "") -> tuple[RuleText | None, Compiled]:
    """Compile one FalcoRule as it will be loaded: after the texts `before` it (the
    FalcoRules earlier in an instance's load order), so that an `append`/`override` of a
    rule defined in another FalcoRule compiles as Falco would load the files in sequence;
    in the scope of `tenant` when it is a tenant's (falconer.engine.scope: refusals are
    errors at the offending item).

    Only the findings in this FalcoRule's own text are returned (the earlier texts' are
    theirs), and the counts are those of its own items. A spec that did not parse
    (`spec.parse_rule`'s error) is one error at the field it names.
    """
    if isinstance(spec, ShapeError):
        finding = Finding(code=Code.LOAD_ERR_YAML_VALIDATE, message=spec.reason, falco_rule=name,
                          path=dotted(spec.path))
        return None, Compiled(counts={"rules": 0, "macros": 0, "lists": 0}, errors=(finding,), warnings=())
    text = render_text(name, spec, tenant)
    if not before:
        return text, compile_texts([text], options)
    whole = compile_texts([*before, text], options)
    prior = compile_texts(before, options)
    own = Compiled(
        counts={k: v - prior.counts.get(k, 0) for k, v in whole.counts.items()},
        errors=tuple(f for f in whole.errors if f.falco_rule == name),
        warnings=tuple(f for f in whole.warnings if f.falco_rule == name),
    )
    return text, own


@lru_cache(maxsize=256)
def _defined_rules(text: str) -> tuple[str, ...]:
    """Names of rules a rules text defines (not appends to, overrides or toggles).

    The text may be a last valid rendering read back from a ConfigMap, which anyone with
    access could have edited: what is not a YAML list of items defines nothing here (the
    engine reports it), rather than failing the reconcile."""
    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError:
        return ()
    if not isinstance(items, list):
        return ()
    return tuple(
        str(item["rule"])
        for item in items
        if isinstance(item, dict) and "rule" in item and "condition" in item
        and not item.get("append") and "override" not in item
    )


def redefinitions(texts: Sequence[tuple[str, RuleText]]) -> list[str]:
    """Rules defined by two FalcoRules of one set: the later one silently replaces the
    earlier one (Falco's semantics), which is worth telling the user."""
    first: dict[str, str] = {}
    found = []
    for falco_rule, text in texts:
        for rule in dict.fromkeys(_defined_rules(text.text)):
            if rule in first and first[rule] != falco_rule:
                found.append(
                    f"rule {rule!r} is defined by FalcoRules {first[rule]} and {falco_rule}; "
                    f"{falco_rule} (later in load order) replaces it"
                )
            first.setdefault(rule, falco_rule)
    return found


def merge_contexts(results: Sequence[Compiled]) -> Compiled:
    """One FalcoRule compiled in several instances' load orders: every distinct finding of
    any of them (a FalcoRule is valid only where every instance can load it)."""
    def distinct(findings: list[Finding]) -> tuple[Finding, ...]:
        return tuple(dict.fromkeys(findings))

    return Compiled(
        counts=results[0].counts,
        errors=distinct([f for r in results for f in r.errors]),
        warnings=distinct([f for r in results for f in r.warnings]),
    )
