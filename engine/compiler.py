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
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from falconer.engine import ast
from falconer.engine.checks import Check, CheckError, compile_check
from falconer.engine.collector import Collector, ExceptionInfo, ListInfo, MacroInfo, RuleInfo
from falconer.engine.diagnostics import LoadError, Position, Reporter
from falconer.engine.evttypes import EvtSet, event_types
from falconer.engine.fields import FIELDS
from falconer.engine.lexer import ConditionSyntaxError, LIST_OPS
from falconer.engine.located import LocatedText
from falconer.engine.output import OutputFormat, OutputFormatError, compile_output
from falconer.engine.parser import parse_condition

_EQUALITY_OPS = frozenset({"=", "==", "!=", "in", "intersects", "pmatch"})
#: Fields whose extractors print `<NA>` for a missing value (k8s audit): comparing them
#: to `<NA>` is what Falco flags as an unsafe check.
_UNSAFE_NA_PREFIXES = ("ka.", "jevt.")
#: Falco's old output shorthand, now dropped with a deprecation warning.
_CONTAINER_INFO = "%container.info"


@dataclass
class CompiledRule:
    """A rule ready to evaluate."""

    name: str
    order: int
    priority: str
    source: str
    desc: str
    tags: list[str]
    enabled: bool
    check: Check
    evttypes: EvtSet
    output: OutputFormat
    #: The expanded condition (macros, lists, exceptions in): read by analyses such as
    #: the sensor's kernel-side filter (falconer.sensor.kfilter), never evaluated.
    condition: ast.Expr


@dataclass
class Compiled:
    """The output of one successful compile."""

    rules: list[CompiledRule]
    macros: int
    lists: int


class _Failure(Exception):
    """Carries a LoadError out of deep recursion, or a skip-if-unknown-filter drop."""

    def __init__(self, error: LoadError, unknown_field: bool = False,
                 cascade: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.unknown_field = unknown_field
        #: The failure comes from a macro already reported broken: don't report it again.
        self.cascade = cascade


def _item_value(text: str) -> ast.Value:
    """A list item as the value Falco's textual substitution would have parsed."""
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:
        return ast.Value(text[1:-1], True, 0)
    return ast.Value(text, " " in text, 0)


class Compiler:
    """Compiles one collection; diagnostics go to the reporter."""

    def __init__(self, collector: Collector, reporter: Reporter) -> None:
        self.col = collector
        self.reporter = reporter
        self.lists: dict[str, list[str]] = {}
        self.used_lists: set[str] = set()
        self.macro_asts: dict[str, ast.Expr] = {}
        self.used_macros: set[str] = set()
        self.broken_macros: set[str] = set()
        # Every parsed text gets a distinct range of node positions, so a node expanded
        # from a macro into a rule still knows which text (and file line) it came from.
        self._bases: list[int] = []
        self._texts: list[LocatedText] = []

    # -- lists ------------------------------------------------------------------------------

    def compile_lists(self) -> None:
        """Resolve items naming an earlier list into that list's items."""
        by_order = sorted(self.col.lists.values(), key=lambda info: info.index)
        for info in by_order:
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

    def _error(self, code: str, message: str, pos: int, kind: str, name: str) -> LoadError:
        """A LoadError at the file position of node position `pos`."""
        return LoadError(code, message, self.where(pos), kind, name)

    def parse(self, text: LocatedText, kind: str, name: str) -> ast.Expr:
        """Parse and substitute lists; syntax errors are positioned."""
        try:
            tree = parse_condition(text.text)
        except ConditionSyntaxError as exc:
            raise _Failure(LoadError("LOAD_ERR_COMPILE_CONDITION", exc.message,
                                     text.position(exc.offset), kind, name)) from None
        base = self._bases[-1] + len(self._texts[-1].text) + 1 if self._bases else 0
        self._bases.append(base)
        self._texts.append(text)
        return self._substitute(_shifted(tree, base), kind, name)

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
                    "LOAD_ERR_COMPILE_CONDITION",
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
        if ref in self.broken_macros and visible(ref):
            self.used_macros.add(ref)
            raise _Failure(self._error("LOAD_ERR_COMPILE_CONDITION", f"macro '{ref}' is invalid",
                                       node.pos, kind, name), cascade=True)
        if ref not in self.macro_asts or not visible(ref):
            raise _Failure(self._error("LOAD_ERR_COMPILE_CONDITION",
                                       f"Undefined macro '{ref}' used in filter.", node.pos,
                                       kind, name))
        if ref in path:
            raise _Failure(self._error("LOAD_ERR_COMPILE_CONDITION",
                                       f"reference loop in macro '{ref}'", node.pos, kind,
                                       name))
        self.used_macros.add(ref)
        return self.expand(self.macro_asts[ref], visible, kind, name, (*path, ref))

    def compile_macros(self) -> None:
        """Parse every macro, then expand each against the macros it can see; a broken
        macro is reported once, and rules using it fail silently (cascade)."""
        ordered = sorted(self.col.macros.values(), key=lambda info: info.index)
        for info in ordered:
            try:
                self.macro_asts[info.name] = self.parse(info.cond, "macro", info.name)
            except _Failure as failure:
                self.broken_macros.add(info.name)
                self.reporter.add_error(failure.error)
        for info in ordered:
            if info.name not in self.macro_asts:
                continue
            limit = info.visibility
            macros = self.col.macros

            def visible(ref: str, limit: int = limit) -> bool:
                return macros[ref].index < limit
            try:
                self.macro_asts[info.name] = self.expand(self.macro_asts[info.name], visible,
                                                         "macro", info.name, (info.name,))
            except _Failure as failure:
                del self.macro_asts[info.name]
                self.broken_macros.add(info.name)
                if not failure.cascade:
                    self.reporter.add_error(failure.error)

    # -- rules ------------------------------------------------------------------------------

    def compile_rules(self) -> list[CompiledRule]:
        """Compile every rule of a known source; a failing rule is reported (or, with
        skip-if-unknown-filter and an unknown field, dropped with a warning)."""
        out: list[CompiledRule] = []
        for info in sorted(self.col.rules.values(), key=lambda r: r.index):
            if info.unknown_source:
                continue
            try:
                out.append(self._compile_rule(info))
            except _Failure as failure:
                if failure.cascade:
                    continue
                if failure.unknown_field and info.skip_if_unknown_filter:
                    err = failure.error
                    self.reporter.add("LOAD_UNKNOWN_FILTER", err.message, err.position,
                                      "rule", info.name)
                else:
                    self.reporter.add_error(failure.error)
        return out

    def _compile_output(self, info: RuleInfo) -> OutputFormat:
        """The rule's output format; deprecated tokens and fields are warned about."""
        text = info.output.text
        if _CONTAINER_INFO in text:
            self.reporter.add("LOAD_DEPRECATED_ITEM",
                              f"{_CONTAINER_INFO} is deprecated: container fields are added to "
                              "outputs by the engine; the token is dropped",
                              info.output.position(text.index(_CONTAINER_INFO)), "rule",
                              info.name)
            text = text.replace(_CONTAINER_INFO, "")
        try:
            output = compile_output(text)
        except OutputFormatError as exc:
            raise _Failure(LoadError("LOAD_ERR_COMPILE_OUTPUT", exc.message,
                                     info.output.position(exc.offset), "rule", info.name),
                           unknown_field=exc.message.startswith("unknown filter")) from None
        for token in output.tokens:
            if token.info.deprecated:
                name = token.info.name
                self.reporter.add("LOAD_DEPRECATED_ITEM", f"usage of deprecated field "
                                  f"'{name}' has been detected in the rule output",
                                  info.output.position(max(text.find(name) - 1, 0)), "rule",
                                  info.name)
        return output

    def _compile_rule(self, info: RuleInfo) -> CompiledRule:
        """Output, then condition with exceptions, expanded, checked and closed over."""
        output = self._compile_output(info)
        cond = with_exceptions(info)
        tree = self.parse(cond, "rule", info.name)
        tree = self.expand(tree, lambda ref: True, "rule", info.name)
        self._warn_condition(tree, info.name)
        check = self._closure(tree, info.name)
        types = event_types(tree)
        if types.is_all_but and info.warn_evttypes:
            self.reporter.add("LOAD_NO_EVTTYPE", "Rule matches too many evt.type values. This "
                              "has a significant performance penalty.", info.position,
                              "rule", info.name)
        return CompiledRule(info.name, info.index, info.priority, info.source, info.desc,
                            sorted(info.tags), info.enabled, check, types, output, tree)

    def _warn_condition(self, tree: ast.Expr, name: str) -> None:
        """Deprecated fields, and `<NA>` comparisons on fields that print `<NA>` when missing."""
        for node in _checks(tree):
            left = node.left
            if isinstance(left, ast.Field) and left.name in FIELDS and FIELDS[left.name].deprecated:
                self.reporter.add("LOAD_DEPRECATED_ITEM",
                                  f"usage of deprecated field '{left.name}'",
                                  self.where(left.pos), "rule", name)
            unsafe = isinstance(left, ast.Field) and left.name.startswith(_UNSAFE_NA_PREFIXES)
            if unsafe and isinstance(node, ast.BinaryCheck) and node.op in _EQUALITY_OPS:
                right = node.right
                values = right.values if isinstance(right, ast.ListValue) else (right,)
                if any(isinstance(v, ast.Value) and v.text == "<NA>" for v in values):
                    self.reporter.add("LOAD_UNSAFE_NA_CHECK",
                                      "comparing a field to '<NA>' is unsafe: it does not tell "
                                      "a missing value from a present one",
                                      self.where(node.pos), "rule", name)
                    break

    def _closure(self, node: ast.Expr, name: str) -> Check:
        """The expanded tree as nested closures."""
        if isinstance(node, ast.And):
            return _all_of([self._closure(c, name) for c in node.children])
        if isinstance(node, ast.Or):
            checks = [self._closure(c, name) for c in node.children]
            return _any_of(_merge_alternatives(node.children, checks))
        if isinstance(node, ast.Not):
            inner = self._closure(node.child, name)
            return lambda ev: not inner(ev)
        if isinstance(node, (ast.BinaryCheck, ast.UnaryCheck)):
            try:
                return compile_check(node)
            except CheckError as exc:
                raise _Failure(self._error("LOAD_ERR_COMPILE_CONDITION", exc.message,
                                           exc.offset, "rule", name),
                               unknown_field=exc.unknown_field) from None
        raise _Failure(self._error("LOAD_ERR_COMPILE_CONDITION", "unexpected expression",
                                   getattr(node, "pos", 0), "rule", name))

    def warn_unused(self) -> None:
        """Warn about macros, then lists, that nothing refers to (often a typo elsewhere)."""
        unused: tuple[tuple[str, Iterable[MacroInfo | ListInfo], set[str]], ...] = (
            ("macro", self.col.macros.values(), self.used_macros),
            ("list", self.col.lists.values(), self.used_lists))
        for kind, infos, used in unused:
            for info in sorted(infos, key=lambda i: i.index):
                if info.name not in used:
                    self.reporter.add(f"LOAD_UNUSED_{kind.upper()}",
                                      f"{kind.capitalize()} not referred to by any other "
                                      "rule/macro", info.position, kind, info.name)


def _shifted(node: ast.Expr, delta: int) -> ast.Expr:
    """The same tree with every position moved by `delta`."""
    if delta == 0:
        return node
    changes: dict[str, object] = {"pos": node.pos + delta}
    for attr in ("children", "args", "values"):
        if hasattr(node, attr):
            changes[attr] = tuple(_shifted(c, delta) for c in getattr(node, attr))
    for attr in ("child", "left", "right"):
        if hasattr(node, attr):
            changes[attr] = _shifted(getattr(node, attr), delta)
    return dataclasses.replace(node, **changes)  # type: ignore[arg-type]


def _checks(node: ast.Expr) -> list[ast.BinaryCheck | ast.UnaryCheck]:
    """Every check of a condition, in order."""
    if isinstance(node, ast.BOOLEAN):
        return [c for child in ast.operands(node) for c in _checks(child)]
    if isinstance(node, (ast.BinaryCheck, ast.UnaryCheck)):
        return [node]
    return []


#: `f = a or f = b` is `f in (a, b)`; `f startswith a or f startswith b` is one
#: `str.startswith((a, b))`: same truth, one field read instead of many.
_MERGED_OPS = {"=": "in", "==": "in", "startswith": "startswith anyof"}


def _merge_alternatives(children: tuple[ast.Expr, ...], checks: list[Check]) -> list[Check]:
    """The `or` alternatives with same-field string equalities/prefixes merged.

    Each child was already compiled on its own (so errors are reported as written);
    merging only replaces closures by an equivalent, faster one.
    """
    groups: dict[tuple[str, str | None, str], list[tuple[int, ast.Field, ast.Value]]] = {}
    for i, child in enumerate(children):
        if (isinstance(child, ast.BinaryCheck) and child.op in _MERGED_OPS
                and isinstance(child.left, ast.Field) and isinstance(child.right, ast.Value)):
            info = FIELDS.get(child.left.name)
            if info is not None and info.type == "string" and not info.is_list:
                key = (child.left.name, child.left.arg, _MERGED_OPS[child.op])
                groups.setdefault(key, []).append((i, child.left, child.right))
    merged: list[Check | None] = list(checks)
    for (_, _, op), members in groups.items():
        if len(members) < 2:
            continue
        first, left, _ = members[0]
        values = ast.ListValue(tuple(v for _, _, v in members), left.pos)
        merged[first] = compile_check(ast.BinaryCheck(left, op, values, left.pos))
        for i, _, _ in members[1:]:
            merged[i] = None
    return [c for c in merged if c is not None]


def _all_of(checks: list[Check]) -> Check:
    """`and` of checks. Kept apart from its mirror `_any_of` (rather than one function
    with a flag) so that the per-event loop tests each result directly."""
    if len(checks) == 2:
        a, b = checks
        return lambda ev: a(ev) and b(ev)

    def run(ev: object) -> bool:
        for c in checks:
            if not c(ev):
                return False
        return True
    return run


def _any_of(checks: list[Check]) -> Check:
    """`or` of checks (see `_all_of`)."""
    if len(checks) == 2:
        a, b = checks
        return lambda ev: a(ev) or b(ev)

    def run(ev: object) -> bool:
        for c in checks:
            if c(ev):
                return True
        return False
    return run


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
                raise _Failure(LoadError("LOAD_ERR_VALIDATE", "Expected values array to contain "
                                         "a list of strings", ex.position, "exception", ex.name))
            items.append(_quote(value))
        return f"({ex.fields} {ex.comps} ({', '.join(items)}))" if items else ""
    assert isinstance(ex.comps, list)
    tuples = []
    for value in ex.values:
        row = value if isinstance(value, list) else [value]
        if len(row) != len(ex.fields):
            raise _Failure(LoadError("LOAD_ERR_VALIDATE", "Fields and values lists must have "
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


def compile_collection(collector: Collector, reporter: Reporter) -> Compiled:
    """Run stage 3 over everything collected."""
    compiler = Compiler(collector, reporter)
    compiler.compile_lists()
    compiler.compile_macros()
    rules = compiler.compile_rules()
    compiler.warn_unused()
    return Compiled(rules, len(collector.macros), len(collector.lists))
