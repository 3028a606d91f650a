"""Rules bound to one kind of event: accessors, event-type constants, shared results, index.

The ruleset binds its rules the first time it meets an event of a given class, source
and type (a "bucket"); binding never changes what matches (the index property test,
tests/engine/test_index_property.py, compares it with evaluating every rule):
- **Accessors.** A check reads its field through the event class's accessor, a getter
  bound once (`Event.accessor(field, arg)`, optional: without one, `Event.get`);
- **Event-type constants.** A check on `evt.type` is a constant for a known type
  (`eventnames.EVENT_NAMES`), and `and`/`or`/`not` fold around it: `open_read` on an
  openat is three checks, not four;
- **Shared sub-expressions.** A composite node (a macro) several rules of the bucket
  use is evaluated once per event (`Memo`, reset by the ruleset for each event);
- **Literal index.** A rule whose condition implies `f in S` (S literal strings: `f =
  v`, `f in (...)`, through `and` and same-field `or`) is evaluated only for events whose
  `f` is in S. Fields are indexed per bucket when at least `INDEX_MIN_RULES` rules key
  on them (`fd.name`, `fd.directory`, `proc.name` preferred); the others are always
  evaluated. Candidates keep definition order (`rule_matching: first`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from falconer.engine.checks import Check
from falconer.engine.plan import AllOf, AnyOf, Leaf, Negation, Plan, children

if TYPE_CHECKING:
    from falconer.engine.compiler import CompiledRule

#: A field read bound to one event class: event -> value (None: missing).
Accessor = Callable[[Any], object]
#: An event class's accessor table: (field, arg) -> accessor, or None for `Event.get`.
Resolve = Callable[[str, "str | None"], "Accessor | None"]
#: A bound condition: a closure, or a constant once event-type checks are folded.
Bound = Check | bool
FieldKey = tuple[str, "str | None"]
#: Index fields, most preferred first: selective (a path, a program) and cheap to read.
INDEX_FIELDS = ("fd.name", "fd.directory", "proc.name")
#: A field is indexed in a bucket only when this many of its rules key on it (below,
#: reading it and merging costs about what the rules it would skip cost).
INDEX_MIN_RULES = 4


class Memo:
    """The results of shared nodes for the event being evaluated (uid -> bool)."""

    __slots__ = ("vals",)

    def __init__(self) -> None:
        self.vals: dict[int, bool] = {}


def bind_generic(node: Plan) -> Check:
    """The closure of a plan for any event: fields read through `Event.get`, nothing
    folded or shared (what `CompiledRule.check` is)."""
    bound = Binder(None, None).bind(node)
    assert not isinstance(bound, bool)
    return bound


class Binder:
    """Binds plan nodes for one bucket; bound nodes are cached by uid, so a node shared
    by several rules has one closure."""

    def __init__(self, resolve: Resolve | None, evt_type: str | None,
                 shared: frozenset[int] = frozenset(), memo: Memo | None = None) -> None:
        self.resolve = resolve
        self.evt_type = evt_type
        self.shared = shared
        self.memo = memo
        self._bound: dict[int, Bound] = {}

    def accessor(self, leaf: Leaf) -> Accessor | None:
        """The event class's getter of the leaf's field (None: read with `Event.get`)."""
        field = leaf.check.field
        if field is None or self.resolve is None:
            return None
        return self.resolve(field.name, field.arg)

    def constant(self, node: Plan) -> bool | None:
        """The node's value when the event type alone decides it, else None."""
        bound = self.bind(node)
        return bound if isinstance(bound, bool) else None

    def bind(self, node: Plan) -> Bound:
        """The node as a closure (or a constant)."""
        found = self._bound.get(node.uid)
        if found is None:
            found = self._bind(node)
            if (not isinstance(found, bool) and self.memo is not None
                    and node.uid in self.shared):
                found = _remembered(found, node.uid, self.memo)
            self._bound[node.uid] = found
        return found

    def _bind(self, node: Plan) -> Bound:
        if isinstance(node, Leaf):
            types = node.check.types
            if types is not None and self.evt_type is not None:
                return types.contains(self.evt_type)
            return node.check.bind(self.accessor(node))
        if isinstance(node, Negation):
            inner = self.bind(node.child)
            if isinstance(inner, bool):
                return not inner
            return lambda ev: not inner(ev)
        decisive = isinstance(node, AnyOf)   # the value that ends the loop
        checks: list[Check] = []
        for child in node.children:
            bound = self.bind(child)
            if bound is decisive:
                return decisive
            if not isinstance(bound, bool):
                checks.append(bound)
        if not checks:
            return not decisive
        if len(checks) == 1:
            return checks[0]
        return _any_of(checks) if decisive else _all_of(checks)


def _remembered(check: Check, uid: int, memo: Memo) -> Check:
    """`check`, evaluated at most once per event (the ruleset resets `memo`)."""
    def run(ev: object) -> bool:
        vals = memo.vals
        found = vals.get(uid)
        if found is None:
            found = vals[uid] = check(ev)
        return found
    return run


def _all_of(checks: list[Check]) -> Check:
    """`and` of checks. Kept apart from its mirror `_any_of` (rather than one function
    with a flag) so that the per-event loop tests each result directly."""
    if len(checks) == 2:
        a, b = checks
        return lambda ev: a(ev) and b(ev)
    if len(checks) == 3:
        a, b, c = checks
        return lambda ev: a(ev) and b(ev) and c(ev)

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
    if len(checks) == 3:
        a, b, c = checks
        return lambda ev: a(ev) or b(ev) or c(ev)

    def run(ev: object) -> bool:
        for c in checks:
            if c(ev):
                return True
        return False
    return run


def shared_nodes(plans: Sequence[Plan]) -> frozenset[int]:
    """Uids of the composite nodes reached from more than one place in `plans` (a node
    inside a shared node counts once: its parent's result is remembered)."""
    counts: Counter[int] = Counter()

    def walk(node: Plan) -> None:
        if isinstance(node, Leaf):
            return
        counts[node.uid] += 1
        if counts[node.uid] == 1:
            for child in children(node):
                walk(child)
    for plan in plans:
        walk(plan)
    return frozenset(uid for uid, n in counts.items() if n > 1)


# -- the literal index ------------------------------------------------------------------

Literals = tuple[FieldKey, frozenset[str]]


def _rank(key: Literals) -> tuple[int, int]:
    """Preferred index keys first: by `INDEX_FIELDS` order, then the smaller set."""
    return INDEX_FIELDS.index(key[0][0]), len(key[1])


def literals(node: Plan, binder: Binder) -> Literals | None:
    """(field, S) when `node` can only be true on an event whose field is in S."""
    if isinstance(node, Leaf):
        check, field = node.check, node.check.field
        if check.literals is None or field is None or field.arg is not None \
                or field.name not in INDEX_FIELDS:
            return None
        return (field.name, None), check.literals
    if isinstance(node, AllOf):
        keys = [k for k in (literals(c, binder) for c in node.children) if k is not None]
        return min(keys, key=_rank) if keys else None
    if isinstance(node, AnyOf):
        union: Literals | None = None
        for child in node.children:
            if binder.constant(child) is False:
                continue
            key = literals(child, binder)
            if key is None or (union is not None and key[0] != union[0]):
                return None
            union = key if union is None else (key[0], union[1] | key[1])
        return union
    return None


@dataclass(frozen=True)
class FieldIndex:
    """One indexed field of a bucket: literal -> positions of the rules keyed on it."""

    read: Accessor
    table: dict[str, tuple[int, ...]]
    every: tuple[int, ...]

    def hits(self, ev: object) -> tuple[int, ...]:
        """Positions of the rules this event's value can match (all of them when the
        value is neither a string nor missing: it is compared as its text)."""
        v = self.read(ev)
        if v.__class__ is str:
            return self.table.get(v, ())
        return () if v is None else self.every


Entry = tuple["CompiledRule", Check]


@dataclass(frozen=True)
class Bucket:
    """The bound rules of one (event class, source, type), in definition order."""

    entries: tuple[Entry, ...]
    #: Positions (into `entries`) of the rules no index covers.
    always: tuple[int, ...]
    indexes: tuple[FieldIndex, ...]
    #: The entries of the rules no index covers (what an event no index hits meets).
    always_entries: tuple[Entry, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "always_entries", tuple(self.entries[i] for i in self.always))

    def candidates(self, ev: object) -> Sequence[Entry]:
        """The entries this event can match, in order."""
        if not self.indexes:
            return self.entries
        picked: tuple[int, ...] = ()
        for index in self.indexes:
            picked += index.hits(ev)
        if not picked:
            return self.always_entries
        entries = self.entries
        return [entries[i] for i in sorted(self.always + picked)]


def bind_bucket(rules: Sequence[CompiledRule], resolve: Resolve | None, evt_type: str | None,
                memo: Memo) -> Bucket:
    """Bind the rules an event of one class, source and type can match."""
    binder = Binder(resolve, evt_type, shared_nodes([r.plan for r in rules]), memo)
    entries: list[Entry] = []
    keys: list[Literals | None] = []
    for rule in rules:
        bound = binder.bind(rule.plan)
        if bound is False:
            continue
        entries.append((rule, bound if not isinstance(bound, bool) else _always))
        keys.append(literals(rule.plan, binder) if bound is not True else None)
    per_field = Counter(k[0] for k in keys if k is not None)
    indexed = {f for f, n in per_field.items() if n >= INDEX_MIN_RULES}
    tables: dict[FieldKey, dict[str, list[int]]] = {f: {} for f in indexed}
    always: list[int] = []
    for pos, key in enumerate(keys):
        if key is None or key[0] not in indexed:
            always.append(pos)
            continue
        table = tables[key[0]]
        for value in key[1]:
            table.setdefault(value, []).append(pos)
    indexes = tuple(_field_index(f, tables[f], binder) for f in sorted(indexed))
    return Bucket(tuple(entries), tuple(always), indexes)


def _field_index(field: FieldKey, table: dict[str, list[int]], binder: Binder) -> FieldIndex:
    name, arg = field
    read = binder.resolve(name, arg) if binder.resolve is not None else None
    if read is None:
        read = _generic_read(name, arg)
    every = tuple(sorted({p for ps in table.values() for p in ps}))
    return FieldIndex(read, {v: tuple(ps) for v, ps in table.items()}, every)


def _generic_read(name: str, arg: str | None) -> Accessor:
    """A field read through `Event.get` (an event class without accessors)."""
    return lambda ev: ev.get(name, arg)


def _always(ev: object) -> bool:
    """A condition the event type alone makes true."""
    return True
