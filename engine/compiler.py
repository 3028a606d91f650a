"""Stage 3, "compile": lists, then macros, then rules, into closures and an index.

- Lists: an item naming an earlier list is expanded into it.
- Conditions are parsed, list names standing as bare values are substituted (any
  list, regardless of order), and macro references expanded; a macro sees only the
  macros defined before it (its visibility), rules see all; loops are detected.
- Exceptions are compiled into `(cond) and not (...)` exactly as Falco builds them.
- The expanded tree becomes nested closures (no `eval`, no generated source) and the
  set of event types the rule can match.
Every problem is a positioned LoadError; unused lists and macros become warnings.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from falconer.engine import ast, fieldrefs
from falconer.engine.appendoutput import AppendOutput
from falconer.engine.binding import bind_generic
from falconer.engine.checks import Check
from falconer.engine.collector import Collector, ExceptionInfo, ListInfo, MacroInfo, Priority, RuleInfo
from falconer.engine.diagnostics import Code, LoadError, Position, Reporter, Step
from falconer.engine.evttypes import EvtSet, event_types
from falconer.engine.fields import FIELDS
from falconer.engine.lexer import ConditionSyntaxError, LIST_OPS
from falconer.engine.located import LocatedText
from falconer.engine.output import OutputFormat, OutputFormatError, compile_output
from falconer.engine.parser import parse_condition
from falconer.engine.plan import Plan, Planner
from falconer.engine.transformers import CheckError
from falconer.engine.valuewarnings import value_warnings

_EQUALITY_OPS = frozenset({"=", "==", "!=", "in", "intersects", "pmatch"})
#: Fields whose extractors print `<NA>` for a missing value (k8s audit): comparing them
#: to `<NA>` is what Falco flags as an unsafe check.
_UNSAFE_NA_PREFIXES = ("ka.", "jevt.")
#: Falco's old output shorthand, now dropped with Falco's deprecation warning
#: (rule_loader_compiler.cpp: replaced by the empty string, warned at the rule).
_CONTAINER_INFO = "%container.info"
_CONTAINER_INFO_DEPRECATED = ("%container.info is deprecated and no more useful, and will be "
                              "dropped by Falco 1.0.0. The container plugin will automatically "
                              "add required fields to the output message.")


@dataclass
class CompiledRule:
    """A rule ready to evaluate."""

    name: str
    order: int
    priority: Priority
    source: str
    desc: str
    tags: list[str]
    enabled: bool
    #: The condition compiled (engine/plan.py): what the ruleset binds and evaluates.
    plan: Plan
    #: The plan as one closure for any event (fields read through `Event.get`).
    check: Check
    evttypes: EvtSet
    output: OutputFormat
    #: The expanded condition (macros, lists, exceptions in): read by analyses such as
    #: the sensor's kernel-side filter (falconer.sensor.kfilter), never evaluated.
    condition: ast.Expr
    #: `append_output` extra fields: output_fields keys that are not in the text.
    extra_fields: tuple[ExtraOutputField, ...] = ()
    #: Base names of every field the rule uses (condition, exceptions, outputs).
    fields: frozenset[str] = frozenset()
    #: The tenant namespace whose rule this is (falconer.engine.scope); "" for a
    #: cluster rule. Rules are told apart by (namespace, name).
    namespace: str = ""

    def render(self, event: object) -> tuple[str, dict[str, object]]:
        """The output text and output_fields of an event that matched."""
        text, fields = self.output.render(event)
        for extra in self.extra_fields:
            extra_text, extra_values = extra.format.render(event)
            fields[extra.key] = extra_values.get(extra.key) if extra.raw else extra_text
        return text, fields


@dataclass(frozen=True)
class ExtraOutputField:
    """A compiled `append_output` extra field: `raw` gives the field's typed value, else
    the format's text (formats.cpp format_event)."""

    key: str
    format: OutputFormat
    raw: bool


@dataclass
class Compiled:
    """The output of one successful compile."""

    rules: list[CompiledRule]
    macros: int
    lists: int


class _Failure(Exception):
    """Carries a LoadError out of deep recursion; `unknown_field` marks what
    skip-if-unknown-filter may turn into a warning that drops the rule."""

    def __init__(self, error: LoadError, unknown_field: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.unknown_field = unknown_field


_Own = TypeVar("_Own", bound=ListInfo | MacroInfo)


def _item_value(text: str) -> ast.Value:
    """A list item as the value Falco's textual substitution would have parsed."""
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        return ast.Value(text[1:-1], True, 0)
    return ast.Value(text, " " in text, 0)


class Compiler:
    """Compiles one collection; diagnostics go to the reporter."""

    def __init__(self, collector: Collector, reporter: Reporter,
                 answered_fields: frozenset[str] | None = None,
                 append_output: tuple[AppendOutput, ...] = ()) -> None:
        self.col = collector
        self.reporter = reporter
        self.answered_fields = answered_fields
        self.append_output = append_output
        self.lists: dict[str, list[str]] = {}
        self.used_lists: set[str] = set()
        self.macro_asts: dict[str, ast.Expr] = {}
        self.used_macros: set[str] = set()
        # Every parsed text gets a distinct range of node positions, so a node expanded
        # from a macro into a rule still knows which text (and file line) it came from.
        self._bases: list[int] = []
        self._texts: list[LocatedText] = []
        self._owners: list[str] = []  # the item kind each text is the condition of
        # Lists and macros compiled by the compiler this one is layered on (`layered`).
        self._inherited: frozenset[str] = frozenset()
        self.planner = Planner()

    def layered(self, collector: Collector) -> Compiler:
        """A compiler for `collector`, a layer over this compiler's collection (a
        tenant's items over the cluster's, see falconer.engine.scope): this compiler's
        lists and macros are taken as compiled, so nothing the layer defines can change
        their meaning, and only the layer's own items are compiled and warned about.
        The layer shares this compiler's planner, so common sub-expressions stay shared."""
        layer = Compiler(collector, self.reporter, self.answered_fields, self.append_output)
        layer.lists = dict(self.lists)
        layer.macro_asts = dict(self.macro_asts)
        layer._inherited = frozenset(self.lists) | frozenset(self.macro_asts)
        layer._bases, layer._texts = list(self._bases), list(self._texts)
        layer._owners = list(self._owners)
        layer.planner = self.planner
        return layer

    def _own(self, infos: Iterable[_Own]) -> list[_Own]:
        """The infos this compiler compiles (not inherited), in definition order."""
        return sorted((i for i in infos if i.name not in self._inherited),
                      key=lambda info: info.index)

    # -- lists ------------------------------------------------------------------------------

    def compile_lists(self) -> None:
        """Resolve items naming an earlier list into that list's items."""
        for info in self._own(self.col.lists.values()):
            items: list[str] = []
            for item in info.items:
                ref = self.col.lists.get(item)
                if ref is not None and ref.index < info.visibility and ref.name != info.name:
                    self.used_lists.add(ref.name)
                    items.extend(ref.items)
                else:
                    items.append(item)
            self.lists[info.name] = items

    # -- conditions ---------------------------------------------------------------------------

    def where(self, pos: int) -> Position | None:
        """The file position of a node position (see `parse`)."""
        i = bisect.bisect_right(self._bases, pos) - 1
        if i < 0:
            return None
        return self._texts[i].position(pos - self._bases[i])

    def _error(self, code: Code, message: str, pos: int, kind: str, name: str) -> LoadError:
        """A LoadError at the file position of node position `pos`."""
        return LoadError(code, message, self.where(pos), kind, name, self.steps(pos))

    def steps(self, pos: int) -> tuple[Step, ...]:
        """The context below the item of node position `pos`: the condition it is in
        (`rule condition`/`macro condition`), then the `condition expression` token."""
        i = bisect.bisect_right(self._bases, pos) - 1
        if i < 0:
            return ()
        return _condition_steps(self._texts[i], self._owners[i], pos - self._bases[i])

    def parse(self, text: LocatedText, kind: str, name: str) -> ast.Expr:
        """Parse and substitute lists; syntax errors are positioned."""
        try:
            tree = parse_condition(text.text)
        except ConditionSyntaxError as exc:
            raise _Failure(LoadError(Code.LOAD_ERR_COMPILE_CONDITION, exc.message,
                                     text.position(exc.offset), kind, name,
                                     _condition_steps(text, kind, exc.offset))) from None
        base = self._bases[-1] + len(self._texts[-1].text) + 1 if self._bases else 0
        self._bases.append(base)
        self._texts.append(text)
        self._owners.append(kind)
        return self._substitute(ast.shifted(tree, base), kind, name)

    def _list_values(self, value: ast.Value, after: int = -1) -> tuple[ast.Value, ...] | None:
        """The items of the list a bare value names, or None.

        Falco substitutes list names textually, list after list in definition order,
        so an item naming a *later* list is itself substituted; `after` is the index of
        the list being expanded.
        """
        info = self.col.lists.get(value.text)
        if value.quoted or info is None or info.index <= after:
            return None
        self.used_lists.add(value.text)
        out: list[ast.Value] = []
        for item in map(_item_value, self.lists[value.text]):
            item = ast.Value(item.text, item.quoted, value.pos)
            nested = self._list_values(item, info.index)
            out.extend(nested if nested is not None else (item,))
        return tuple(out)

    def _substitute(self, node: ast.Expr, kind: str, name: str) -> ast.Expr:
        """Replace list names standing as bare values by the lists' items."""
        if isinstance(node, ast.BOOLEAN):
            return ast.with_operands(node, [self._substitute(c, kind, name)
                                            for c in ast.operands(node)])
        if not isinstance(node, ast.BinaryCheck):
            return node
        right = node.right
        if isinstance(right, ast.ListValue):
            values: list[ast.Value] = []
            for v in right.values:
                expanded = self._list_values(v)
                values.extend(expanded if expanded is not None else (v,))
            return ast.BinaryCheck(node.left, node.op, ast.ListValue(tuple(values), right.pos),
                                   node.pos)
        if isinstance(right, ast.Value):
            expanded = self._list_values(right)
            if expanded is None:
                return node
            if node.op in LIST_OPS or " " in node.op:
                return ast.BinaryCheck(node.left, node.op, ast.ListValue(expanded, right.pos),
                                       node.pos)
            if len(expanded) != 1:
                raise _Failure(self._error(
                    Code.LOAD_ERR_COMPILE_CONDITION,
                    f"list '{right.text}' used as a single value with operator '{node.op}'",
                    right.pos, kind, name))
            return ast.BinaryCheck(node.left, node.op, expanded[0], node.pos)
        return node

    def expand(self, node: ast.Expr, visible: Callable[[str], bool], kind: str, name: str,
               path: tuple[str, ...] = ()) -> ast.Expr:
        """Replace macro references by their (expanded) conditions."""
        if isinstance(node, ast.BOOLEAN):
            return ast.with_operands(node, [self.expand(c, visible, kind, name, path)
                                            for c in ast.operands(node)])
        if not isinstance(node, ast.Identifier):
            return node
        ref = node.name
        if ref not in self.macro_asts or not visible(ref):
            raise _Failure(self._error(Code.LOAD_ERR_VALIDATE,
                                       f"Undefined macro '{ref}' used in filter.", node.pos,
                                       kind, name))
        if ref in path:
            raise _Failure(self._error(Code.LOAD_ERR_VALIDATE, f"reference loop in macro '{ref}'",
                                       node.pos, kind, name))
        self.used_macros.add(ref)
        return self.expand(self.macro_asts[ref], visible, kind, name, (*path, ref))

    def compile_macros(self) -> None:
        """Parse every macro, then expand each against the macros it can see (those
        defined before it); the first failure ends the compile (raised)."""
        ordered = self._own(self.col.macros.values())
        for info in ordered:
            self.macro_asts[info.name] = self.parse(info.cond, "macro", info.name)
        for info in ordered:
            limit = info.visibility
            macros = self.col.macros

            def visible(ref: str, limit: int = limit) -> bool:
                return macros[ref].index < limit
            self.macro_asts[info.name] = self.expand(self.macro_asts[info.name], visible,
                                                     "macro", info.name)

    # -- rules ------------------------------------------------------------------------------

    def compile_rules(self) -> list[CompiledRule]:
        """Compile every rule of a known source, in order; the first failure ends the
        compile (raised), except an unknown field under skip-if-unknown-filter, which
        drops the rule with a LOAD_UNKNOWN_FILTER warning."""
        out: list[CompiledRule] = []
        for info in sorted(self.col.rules.values(), key=lambda r: r.index):
            if info.unknown_source:
                continue
            try:
                out.append(self._compile_rule(info))
            except _Failure as failure:
                if not (failure.unknown_field and info.skip_if_unknown_filter):
                    raise
                err = failure.error
                self.reporter.add(Code.LOAD_UNKNOWN_FILTER, err.message, err.position, "rule",
                                  info.name, err.steps)
        return out

    def _output_text(self, info: RuleInfo) -> LocatedText:
        """The rule's output with every matching `append_output` text after a blank."""
        text = info.output
        for entry in self.append_output:
            if entry.matches(info.name, info.source, info.tags):
                for fmt in entry.formats(info.source):
                    text = text + LocatedText.synthetic(" " + fmt, info.position)
        return text

    def _compile_output(self, info: RuleInfo) -> tuple[OutputFormat, LocatedText]:
        """The rule's output format (with appended output) and the text it was compiled
        from; deprecated tokens and fields are warned about."""
        located = self._output_text(info)
        text = located.text
        if _CONTAINER_INFO in text:
            self.reporter.add(Code.LOAD_DEPRECATED_ITEM, _CONTAINER_INFO_DEPRECATED,
                              info.position, "rule", info.name)
            text = text.replace(_CONTAINER_INFO, "")
        try:
            output = compile_output(text)
        except OutputFormatError as exc:
            pos, start = located.position(exc.offset), located.position(0)
            steps = (Step("rule output", "", start), Step("rule output expression", "", pos)) \
                if pos is not None and start is not None else ()
            raise _Failure(LoadError(Code.LOAD_ERR_COMPILE_OUTPUT, exc.message, pos, "rule",
                                     info.name, steps),
                           unknown_field=exc.message.startswith("unknown filter")) from None
        for token in output.tokens:
            if token.info.deprecated:
                name = token.info.name
                self.reporter.add(Code.LOAD_DEPRECATED_ITEM, f"usage of deprecated field "
                                  f"'{name}' has been detected in the rule output",
                                  located.position(max(text.find(name) - 1, 0)), "rule",
                                  info.name)
        return output, located

    def _extra_fields(self, info: RuleInfo) -> dict[str, ExtraOutputField]:
        """The `extra_fields` of the matching `append_output` entries, compiled; a later
        entry's key replaces an earlier one's (Falco keeps them in a map)."""
        out: dict[str, ExtraOutputField] = {}
        for entry in self.append_output:
            if not entry.matches(info.name, info.source, info.tags):
                continue
            for extra in entry.extra_fields:
                try:
                    out[extra.key] = ExtraOutputField(extra.key, compile_output(extra.format),
                                                      extra.raw)
                except OutputFormatError as exc:
                    raise _Failure(LoadError(Code.LOAD_ERR_COMPILE_OUTPUT, exc.message,
                                             info.output.position(0), "rule",
                                             info.name)) from None
        return out

    def _compile_rule(self, info: RuleInfo) -> CompiledRule:
        """Exceptions, output, then the condition expanded, checked and closed over (the
        order of Falco's compile_rule_infos, so the first error is the same)."""
        cond = with_exceptions(info)
        output, output_text = self._compile_output(info)
        extra_fields = self._extra_fields(info)
        tree = self.parse(cond, "rule", info.name)
        tree = self.expand(tree, lambda ref: True, "rule", info.name)
        self._warn_condition(tree, info.name)
        plan = self._plan(tree, info.name)
        self._warn_values(tree, info.name)
        types = event_types(tree)
        if types.is_all_but and info.warn_evttypes:
            self.reporter.add(Code.LOAD_NO_EVTTYPE, "Rule matches too many evt.type values. This "
                              "has a significant performance penalty.", info.position,
                              "rule", info.name)
        used = [(node, self.where(node.pos)) for node in fieldrefs.fields_of(tree)]
        used += [(node, output_text.position(node.pos)) for token in output.tokens
                 for node in fieldrefs.fields_of(token.node)]
        used += [(node, info.output.position(0)) for extra in extra_fields.values()
                 for token in extra.format.tokens for node in fieldrefs.fields_of(token.node)]
        self._warn_unanswered(info.name, used)
        names = frozenset(n for n in (fieldrefs.base_name(node) for node, _ in used) if n)
        return CompiledRule(info.name, info.index, info.priority, info.source, info.desc,
                            sorted(info.tags), info.enabled, plan, bind_generic(plan), types,
                            output, tree,
                            tuple(extra_fields.values()), names)

    def _warn_unanswered(self, rule: str, used: list[tuple[ast.Field, Position | None]]) -> None:
        """`LOAD_UNANSWERED_FIELD` at the first use of each field the source does not
        answer (only when the engine was told what the source answers)."""
        if self.answered_fields is None:
            return
        where = {id(node): pos for node, pos in used}
        for node in fieldrefs.unanswered([node for node, _ in used], self.answered_fields):
            self.reporter.add(Code.LOAD_UNANSWERED_FIELD,
                              f"field '{fieldrefs.base_name(node)}' is not answered by the event "
                              "source: it always reads as missing", where[id(node)], "rule",
                              rule)

    def _warn_condition(self, tree: ast.Expr, name: str) -> None:
        """Deprecated fields, and `<NA>` comparisons on fields that print `<NA>` when missing."""
        for node in _checks(tree):
            left = node.left
            if isinstance(left, ast.Field) and left.name in FIELDS and FIELDS[left.name].deprecated:
                self.reporter.add(Code.LOAD_DEPRECATED_ITEM,
                                  f"usage of deprecated field '{left.name}'",
                                  self.where(left.pos), "rule", name)
            unsafe = isinstance(left, ast.Field) and left.name.startswith(_UNSAFE_NA_PREFIXES)
            if unsafe and isinstance(node, ast.BinaryCheck) and node.op in _EQUALITY_OPS:
                right = node.right
                values = right.values if isinstance(right, ast.ListValue) else (right,)
                if any(isinstance(v, ast.Value) and v.text == "<NA>" for v in values):
                    self.reporter.add(Code.LOAD_UNSAFE_NA_CHECK,
                                      "comparing a field to '<NA>' is unsafe: it does not tell "
                                      "a missing value from a present one",
                                      self.where(node.pos), "rule", name)
                    break

    def _warn_values(self, tree: ast.Expr, name: str) -> None:
        """LOAD_COMPILE_CONDITION warnings about the constants of a compiled rule's checks
        (values from lists and exceptions included), at each check's right side."""
        for node in _checks(tree):
            if not isinstance(node, ast.BinaryCheck) or isinstance(node.right, ast.Transformer):
                continue
            right = node.right
            values = right.values if isinstance(right, ast.ListValue) else (right,)
            for value in values:
                for message in value_warnings(node.op, value.text):
                    self.reporter.add(Code.LOAD_COMPILE_CONDITION, message, self.where(right.pos),
                                      "rule", name, self.steps(right.pos))

    def _plan(self, node: ast.Expr, name: str) -> Plan:
        """The expanded tree as a plan; a check that cannot compile is a positioned error."""
        try:
            return self.planner.plan(node)
        except CheckError as exc:
            raise _Failure(self._error(Code.LOAD_ERR_COMPILE_CONDITION, exc.message,
                                       exc.offset, "rule", name),
                           unknown_field=exc.unknown_field) from None

    def run(self) -> Compiled:
        """Lists, macros, rules, then the unused warnings; the first error ends the run
        (reported; no rules are returned)."""
        try:
            self.compile_lists()
            self.compile_macros()
            rules = self.compile_rules()
        except _Failure as failure:
            self.reporter.add_error(failure.error)
            return Compiled([], len(self.col.macros), len(self.col.lists))
        self.warn_unused()
        return Compiled(rules, len(self.col.macros), len(self.col.lists))

    def warn_unused(self) -> None:
        """Warn about macros, then lists, that nothing refers to (often a typo elsewhere)."""
        unused: tuple[tuple[str, Iterable[MacroInfo | ListInfo], set[str]], ...] = (
            ("macro", self.col.macros.values(), self.used_macros),
            ("list", self.col.lists.values(), self.used_lists))
        for kind, infos, used in unused:
            for info in self._own(infos):
                if info.name not in used:
                    self.reporter.add(Code(f"LOAD_UNUSED_{kind.upper()}"),
                                      f"{kind.capitalize()} not referred to by any other "
                                      "rule/macro", info.position, kind, info.name)


def _checks(node: ast.Expr) -> list[ast.BinaryCheck | ast.UnaryCheck]:
    """Every check of a condition, in order."""
    if isinstance(node, ast.BOOLEAN):
        return [c for child in ast.operands(node) for c in _checks(child)]
    if isinstance(node, (ast.BinaryCheck, ast.UnaryCheck)):
        return [node]
    return []


def _quote(item: str) -> str:
    """An exception value as Falco writes it into the condition: quoted if it has a blank."""
    if " " in item and item[:1] not in ("'", '"'):
        return f'"{item}"'
    return item


def _exception_clause(ex: ExceptionInfo) -> str:
    """One exception as Falco writes it into the condition (empty when no values)."""
    if not isinstance(ex.fields, list):
        items = []
        for value in ex.values:
            if isinstance(value, list):
                raise _Failure(LoadError(Code.LOAD_ERR_VALIDATE, "Expected values array to contain "
                                         "a list of strings", ex.position, "exception", ex.name))
            items.append(_quote(value))
        return f"({ex.fields} {ex.comps} ({', '.join(items)}))" if items else ""
    assert isinstance(ex.comps, list)
    tuples = []
    for value in ex.values:
        row = value if isinstance(value, list) else [value]
        if len(row) != len(ex.fields):
            raise _Failure(LoadError(Code.LOAD_ERR_VALIDATE, "Fields and values lists must have "
                                     "equal length", ex.position, "exception", ex.name))
        parts = []
        for fld, comp, val in zip(ex.fields, ex.comps, row):
            if isinstance(val, list):
                rendered = "(" + ", ".join(_quote(str(v)) for v in val) + ")"
            elif comp in LIST_OPS or " " in comp:
                rendered = val if val.startswith("(") else f"({val})"
            else:
                rendered = _quote(val)
            parts.append(f"{fld} {comp} {rendered}")
        tuples.append("(" + " and ".join(parts) + ")")
    return "(" + " or ".join(tuples) + ")" if tuples else ""


def with_exceptions(info: RuleInfo) -> LocatedText:
    """The rule's condition with each exception appended as `and not (...)`."""
    if not info.exceptions:
        return info.cond
    cond = "(" + info.cond + ")"
    for ex in info.exceptions:
        clause = _exception_clause(ex)
        if clause:
            cond = cond + LocatedText.synthetic(" and not " + clause, ex.position)
    return cond


def _condition_steps(text: LocatedText, kind: str, offset: int) -> tuple[Step, ...]:
    """`<kind> condition` at the text's start, then the `condition expression` at
    `offset`, named as Falco names it: the condition's first characters, quoted."""
    start, token = text.position(0), text.position(offset)
    if start is None or token is None:
        return ()
    cond = text.text if len(text.text) <= 20 else text.text[:17] + "..."
    content = '"' + cond.replace("\n", " ").replace("\r", " ") + '"'
    return (Step(f"{kind} condition", "", start),
            Step("condition expression", "", token, content))
