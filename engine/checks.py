"""Compile one check (`field op value`) into a closure over an event.

The right-hand value is parsed once, at load time, for the field's type: numbers
compare numerically, IP fields as addresses and networks, strings as strings. Large
`in` lists become frozensets, `pmatch` a set of path prefixes, `glob`/`regex`
precompiled patterns. At run time a missing value makes every check false except
`exists` (libsinsp semantics, `!=` included); a list value (ancestors, list fields)
matches when any element does, except `in` on a list field, which needs all.

No rule text is ever evaluated as Python: closures capture parsed values only.
"""

from __future__ import annotations

import functools
import ipaddress
import operator
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from falconer.engine import ast, timefields
from falconer.engine.eventnames import EVENT_NAMES
from falconer.engine.evttypes import EvtSet
from falconer.engine.fields import FieldInfo
from falconer.engine.fnglob import glob_regex
from falconer.engine.pathprefix import PathPrefixes
from falconer.engine.posixregex import RegexError, compile_posix
from falconer.engine.transformers import CheckError, Getter, field_getter, field_info, operand

Check = Callable[[object], bool]
#: A predicate over one coerced event value (str, int, bool, address... per field type).
Pred = Callable[[Any], bool]
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

_STRING_OPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "contains", "in", "icontains",
                         "startswith", "glob", "pmatch", "endswith", "intersects", "iglob",
                         "regex"})
_BYTES_OPS = frozenset({"=", "==", "!=", "contains", "in", "startswith", "endswith",
                        "intersects", "bcontains", "bstartswith"})
_NUMBER_OPS = frozenset({"=", "==", "!=", "<", "<=", ">", ">=", "in", "intersects"})
_EQ_OPS = frozenset({"=", "==", "!=", "in", "intersects"})
_LIST_FIELD_OPS = frozenset({"in", "intersects"})
_ALLOWED_OPS: dict[str, frozenset[str]] = {
    "string": _STRING_OPS, "bytes": _BYTES_OPS, "number": _NUMBER_OPS, "port": _NUMBER_OPS,
    "bool": _EQ_OPS,
    "ipaddr": _EQ_OPS, "ipnet": _EQ_OPS, "any": _STRING_OPS | _NUMBER_OPS,
}
_TYPE_WORDS = {"string": "string", "bytes": "buffer", "number": "numeric", "port": "numeric",
               "bool": "numeric",
               "ipaddr": "ip address and network", "ipnet": "ip address and network",
               "any": "string"}
#: Comparisons between two fields (`field op val(other)`), applied to coerced values.
_FIELD_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "==": operator.eq, "!=": operator.ne, "<": operator.lt,
    "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "contains": lambda a, b: str(b) in str(a),
    "icontains": lambda a, b: str(b).lower() in str(a).lower(),
    "startswith": lambda a, b: str(a).startswith(str(b)),
    "endswith": lambda a, b: str(a).endswith(str(b)),
}


# -- value parsing ------------------------------------------------------------------------


_DECIMAL = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+")


def _number(text: str, pos: int) -> int:
    """A decimal integer, as libsinsp's numeric value parser (sscanf %ld) accepts it."""
    if not _DECIMAL.fullmatch(text):
        raise CheckError(f"{text} is not a valid number", pos)
    return int(text)


def _port(text: str, pos: int) -> int:
    """A port number or a service name (`http`), as libsinsp accepts for port fields."""
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text)
    except (OSError, ValueError):   # ValueError: a NUL or a character the C call cannot take
        raise CheckError(f"unrecognized protocol {text}", pos) from None


def parse_value(vtype: str, value: ast.Value, op: str) -> object:
    """The typed form of one right-hand literal, validated for the field's type."""
    text, pos = value.text, value.pos
    if vtype == "number":
        return _number(text, pos)
    if vtype == "port":
        return _port(text, pos)
    if vtype == "bool":
        if text in ("true", "false"):
            return text == "true"
        raise CheckError(f"filter error: unrecognized boolean value {text}", pos)
    if vtype == "ipaddr":
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            raise CheckError(f"'{text}' is not a valid IP address", pos) from None
    if vtype == "ipnet":
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise CheckError(f"'{text}' is not a valid IP network", pos) from None
    if vtype == "bytes" and op in ("bcontains", "bstartswith"):
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise CheckError(f"'{text}' is not a valid hex byte string", pos) from None
    return text


# -- coercion of event values ---------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> IpAddr | None:
    """Parse an address once: the same few addresses recur event after event."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _to_number(v: object) -> object:
    """A number from a producer's value, text included (`0x10` too); None if it is none."""
    if isinstance(v, (int, float)):
        return v
    try:
        return int(str(v), 0)
    except ValueError:
        try:
            return float(str(v))
        except ValueError:
            return None


def _to_str(v: object) -> object:
    """Text as libsinsp renders it (booleans as `true`/`false`, bytes decoded)."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def _to_bool(v: object) -> object:
    """A boolean from a bool, a number (non-zero) or `true`/`false`; None otherwise."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    s = str(v).lower()
    return True if s == "true" else False if s == "false" else None


def _to_ip(v: object) -> object:
    """An address object from its text (None when it is not an address)."""
    return v if isinstance(v, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else _ip(str(v))


def _to_bytes(v: object) -> bytes:
    """Bytes for the `b*` operators; text round-trips undecodable bytes unchanged."""
    return v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogateescape")


_COERCE: dict[str, Callable[[object], object]] = {
    "string": _to_str, "number": _to_number, "port": _to_number, "bool": _to_bool,
    "ipaddr": _to_ip,
    "ipnet": _to_ip, "bytes": _to_str, "any": lambda v: v,
}


# -- predicates ---------------------------------------------------------------------------


def _in_network(net: Any) -> Pred:
    """Address-in-network, never across IP versions (Python would mix their integers)."""
    version = net.version
    return lambda v: v is not None and v.version == version and v in net


#: String operators whose predicate is a C-level callable over the event's text (no
#: Python frame per check): the argument is always a str for a string-typed check.
_STRING_METHODS: dict[str, Callable[[str], Pred]] = {
    "=": lambda rhs: rhs.__eq__, "==": lambda rhs: rhs.__eq__, "!=": lambda rhs: rhs.__ne__,
    "startswith": lambda rhs: operator.methodcaller("startswith", rhs),
    "endswith": lambda rhs: operator.methodcaller("endswith", rhs),
    "contains": lambda rhs: operator.methodcaller("__contains__", rhs),
}
#: `value op rhs` as a method of rhs, for a value of rhs's own class (see `_lift`).
_REFLECTED = {"=": "__eq__", "==": "__eq__", "!=": "__ne__", "<": "__gt__", "<=": "__ge__",
              ">": "__lt__", ">=": "__le__"}


def _scalar_pred(op: str, vtype: str, rhs: Any, pos: int) -> Pred:
    """The predicate of a single-valued operator against one parsed value."""
    if vtype == "string" and op in _STRING_METHODS:
        return _STRING_METHODS[op](rhs)
    if vtype == "ipnet" and op in ("=", "==", "!="):
        inside = _in_network(rhs)
        if op == "!=":
            return lambda v: v is not None and not inside(v)
        return inside
    if vtype == "any":
        return _any_pred(op, rhs, pos)
    match op:
        case "=" | "==":
            return lambda v: v == rhs
        case "!=":
            return lambda v: v is not None and v != rhs
        case "<":
            return lambda v: v is not None and v < rhs
        case "<=":
            return lambda v: v is not None and v <= rhs
        case ">":
            return lambda v: v is not None and v > rhs
        case ">=":
            return lambda v: v is not None and v >= rhs
        case "contains":
            return lambda v: rhs in v
        case "icontains":
            low = str(rhs).lower()
            return lambda v: low in v.lower()
        case "startswith":
            return lambda v: v.startswith(rhs)
        case "endswith":
            return lambda v: v.endswith(rhs)
        case "bcontains":
            return lambda v: rhs in _to_bytes(v)
        case "bstartswith":
            return lambda v: _to_bytes(v).startswith(rhs)
        case "glob" | "iglob":
            rx = glob_regex(str(rhs), op == "iglob")
            return lambda v: rx.fullmatch(v) is not None
        case "regex":
            try:
                rx = compile_posix(str(rhs))
            except RegexError as exc:
                raise CheckError(f"invalid regex pattern: {exc}", pos) from None
            return lambda v: rx.fullmatch(v) is not None
    raise CheckError(f"operator '{op}' is not supported", pos)


def _any_pred(op: str, rhs: object, pos: int) -> Pred:
    """Raw event arguments: numeric comparison when both sides are numbers."""
    text = str(rhs)
    num = _to_number(text)
    str_pred = _scalar_pred(op, "string", text, pos)
    num_pred = _scalar_pred(op, "number", num, pos) if num is not None and op in _NUMBER_OPS \
        else None

    def pred(v: object) -> bool:
        if num_pred is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
            return num_pred(v)
        return str_pred(_to_str(v))
    return pred


def _set_pred(op: str, vtype: str, values: list[object]) -> Pred:
    """Membership for `in`/`intersects`/`pmatch` against a literal list."""
    if op == "pmatch":
        prefixes = PathPrefixes(str(v) for v in values)
        return lambda v: prefixes.match(v)
    if vtype == "ipnet":
        tests = [_in_network(n) for n in values]
        return lambda v: any(t(v) for t in tests)
    if vtype == "any":
        members = frozenset(str(v) for v in values)
        return lambda v: _to_str(v) in members
    members_set = frozenset(values)
    if vtype == "string":
        return members_set.__contains__
    return lambda v: v in members_set


def _modifier_pred(op: str, vtype: str, values: list[object], pos: int) -> Pred:
    """`op oneof|anyof|allof (list)`: exactly one, at least one, or every element matches;
    an empty list never matches."""
    base, modifier = op.split(" ", 1)
    preds = [_scalar_pred(base, vtype, v, pos) for v in values]
    if not preds:
        return lambda v: False
    if base == "startswith" and modifier == "anyof" and vtype == "string":
        return operator.methodcaller("startswith", tuple(str(v) for v in values))
    if modifier == "allof":
        return lambda v: all(p(v) for p in preds)
    if modifier == "oneof":
        return lambda v: sum(1 for p in preds if p(v)) == 1
    return lambda v: any(p(v) for p in preds)


# -- assembling a check ---------------------------------------------------------------------


def _validate_op(op: str, info: FieldInfo, vtype: str, pos: int) -> None:
    """Reject at load time an operator the field's type (or list-ness) can't support,
    with libsinsp's messages (filter_compare.cpp flt_is_comparable: the operator is
    named without its modifier)."""
    base, _, modifier = op.partition(" ")
    if info.is_list and base not in _LIST_FIELD_OPS:
        raise CheckError(f"filter error: '{base}' operator not supported list filters", pos)
    if base not in _ALLOWED_OPS[vtype]:
        if modifier and vtype in ("ipaddr", "ipnet"):
            raise CheckError(f"filter error: '{base}' with modifier not supported for ip "
                             "address and network filters", pos)
        raise CheckError(f"filter error: '{base}' operator not supported for "
                         f"{_TYPE_WORDS[vtype]} filters", pos)


def _right_values(node: ast.BinaryCheck, vtype: str) -> list[object]:
    """The right-hand literal(s), each parsed once for the field's type."""
    right = node.right
    if isinstance(right, ast.ListValue):
        return [parse_value(vtype, v, node.op) for v in right.values]
    assert isinstance(right, ast.Value)
    return [parse_value(vtype, right, node.op)]


def _lift(getter: Getter, coerce: Callable[[object], object], pred: Pred,
          all_elements: bool, native: type | None, native_pred: Pred) -> Check:
    """Apply `pred` to the event value: missing -> False, list -> any (or all) element.
    A value already of the field's `native` class (bool for a bool field, int for a
    number) needs no coercion and is tested with `native_pred` first (the common case)."""
    def check(ev: object) -> bool:
        v = getter(ev)
        if v.__class__ is native:
            return native_pred(v)
        if v is None:
            return False
        if v.__class__ is list:
            items = [coerce(x) for x in v]
            if all_elements:
                return bool(items) and all(x is not None and pred(x) for x in items)
            return any(x is not None and pred(x) for x in items)
        x = coerce(v)
        return x is not None and pred(x)
    return check


def _string_matches(v: object, pred: Pred) -> bool:
    """`pred` on a value that is present but not a str: a list matches when any element
    does (each as text), anything else is tested as its text."""
    if v.__class__ is list:
        return any(x is not None and pred(_to_str(x)) for x in v)
    return pred(_to_str(v))


def _lift_string_field(name: str, arg: str | None, pred: Pred) -> Check:
    """The hottest generic path: a plain string field read with `Event.get`. The read,
    the str case and the missing case are inline rather than behind a getter or helper
    call (an extra call per check costs ~5-7% of throughput)."""
    def check(ev: Any) -> bool:
        v = ev.get(name, arg)
        if v.__class__ is str:
            return pred(v)
        return v is not None and _string_matches(v, pred)
    return check


def _lift_string(getter: Getter, pred: Pred) -> Check:
    """String values from a getter (a bound accessor, a transformer, a time field)."""
    def check(ev: object) -> bool:
        v = getter(ev)
        if v.__class__ is str:
            return pred(v)
        return v is not None and _string_matches(v, pred)
    return check


def _field_vs_field(node: ast.BinaryCheck, vtype: str) -> Callable[[Getter], Check]:
    """`field op val(other)`: both sides read from the event at evaluation time (the
    right side always through `Event.get`); returns the check made from a left getter."""
    assert isinstance(node.right, ast.Transformer)
    if node.right.name != "val":
        right_get, _, _ = operand(node.right)
    else:
        (inner,) = node.right.args
        if not isinstance(inner, ast.Field):
            raise CheckError("expected a field within 'val' transformer", node.right.pos)
        if field_info(inner).no_rhs:
            raise CheckError(f"field '{inner.name}' can't be used as a right-hand side value",
                             inner.pos)
        right_get = field_getter(inner)
    compare = _FIELD_COMPARATORS.get(node.op)
    if compare is None:
        raise CheckError(f"operator '{node.op}' can't compare two fields", node.pos)
    coerce = _COERCE[vtype]

    def make(getter: Getter) -> Check:
        def check(ev: object) -> bool:
            a, b = getter(ev), right_get(ev)
            if a is None or b is None:
                return False
            a, b = coerce(a), coerce(b)
            if a is None or b is None:
                return False
            try:
                return compare(a, b)
            except TypeError:
                return False
        return check
    return make


def _exists(getter: Getter) -> Check:
    """A value is there (an empty ancestor list is no value)."""
    def check(ev: object) -> bool:
        v = getter(ev)
        return v is not None and v != []
    return check


def _check_event_names(node: ast.BinaryCheck) -> None:
    """`evt.type` values must name an event type (a typo would never match)."""
    right = node.right
    values = right.values if isinstance(right, ast.ListValue) else (right,)
    for value in values:
        if isinstance(value, ast.Value) and value.text not in EVENT_NAMES:
            raise CheckError(f"unknown event type {value.text}", value.pos, unknown_field=True)


#: Classes a field type's values usually arrive as, tested before any coercion.
_NATIVE: dict[str, type] = {"bool": bool, "number": int, "port": int}
#: Operators whose truth is membership of the value in the literal set (`literals`).
_MEMBERSHIP_OPS = frozenset({"=", "==", "in"})


@dataclass(frozen=True, eq=False)
class PreparedCheck:
    """One check with its literal parsed, its predicate built and its operand resolved,
    not yet bound to how events are read.

    - `field`: the plain field the check reads (None: a transformer or a time field,
      always read through its own getter);
    - `literals`: for `field = v` / `field in (...)` on a single-valued string field,
      the strings that make the check true (the rule index keys on them), else None;
    - `types`: for a check on `evt.type`, the event types it is true for (specialized
      to a constant once the event type is known), else None.
    `bind(accessor)` gives the closure: with an accessor (a getter of `field` bound to
    one event class) or the generic `Event.get` read when None.
    """

    field: ast.Field | None
    getter: Getter
    make: Callable[[Getter], Check]
    string_pred: Pred | None = None
    literals: frozenset[str] | None = None
    types: EvtSet | None = None

    def bind(self, accessor: Getter | None = None) -> Check:
        """The closure reading the field with `accessor` (None: `Event.get`)."""
        field = self.field
        if field is None or accessor is None:
            if field is not None and self.string_pred is not None:
                return _lift_string_field(field.name, field.arg, self.string_pred)
            return self.make(self.getter)
        return self.make(accessor)


def _type_set(node: ast.BinaryCheck) -> EvtSet | None:
    """The event types an `evt.type` check is true for (None: not such a check)."""
    left, right = node.left, node.right
    if not isinstance(left, ast.Field) or left.name != "evt.type" or left.arg is not None:
        return None
    if node.op not in ("=", "==", "!=", "in") or isinstance(right, ast.Transformer):
        return None
    values = right.values if isinstance(right, ast.ListValue) else (right,)
    names = EvtSet(frozenset(v.text for v in values), False)
    return names.complement() if node.op == "!=" else names


def prepare_check(node: ast.BinaryCheck | ast.UnaryCheck) -> PreparedCheck:
    """Validate one check and build everything it needs but the field read; raises
    CheckError (positioned) when the check cannot compile."""
    getter, info, vtype = operand(node.left)
    if info.print_only:
        raise CheckError(f"field '{info.name}' can only be printed, not filtered on", node.pos)
    left = node.left
    plain = left if isinstance(left, ast.Field) and left.name not in timefields.TIME_FIELDS \
        else None
    if isinstance(node, ast.UnaryCheck):
        return PreparedCheck(plain, getter, _exists)
    _validate_op(node.op, info, vtype, node.pos)
    if isinstance(node.right, ast.Transformer):
        if (isinstance(left, ast.Field) and left.name in ("evt.type", "syscall.type")
                and node.op in ("=", "==", "!=", "in")):
            raise CheckError("right-hand field comparisons on `evt.type`/`syscall.type` checks "
                             "are not supported by event code search", node.right.pos)
        return PreparedCheck(plain, getter, _field_vs_field(node, vtype))
    values = _right_values(node, vtype)
    if isinstance(left, ast.Field) and left.name == "evt.type":
        _check_event_names(node)
    op = node.op
    all_elements = False
    if op in ("in", "intersects", "pmatch"):
        pred = _set_pred(op, vtype, values)
        all_elements = op == "in" and info.is_list
    elif " " in op:
        pred = _modifier_pred(op, vtype, values, node.pos)
    else:
        if len(values) != 1:
            raise CheckError(f"operator '{op}' expects a single value", node.pos)
        pred = _scalar_pred(op, vtype, values[0], node.right.pos)
    if vtype == "string" and not all_elements:
        literals = frozenset(str(v) for v in values) \
            if op in _MEMBERSHIP_OPS and plain is not None and not info.is_list else None
        return PreparedCheck(plain, getter, lambda g: _lift_string(g, pred), pred, literals,
                             _type_set(node))
    coerce, native = _COERCE[vtype], _NATIVE.get(vtype)
    native_pred = pred
    if native is not None and op in _REFLECTED and values[0].__class__ is native:
        native_pred = getattr(values[0], _REFLECTED[op])   # v op rhs, as rhs's method
    return PreparedCheck(plain, getter,
                         lambda g: _lift(g, coerce, pred, all_elements, native, native_pred))


def compile_check(node: ast.BinaryCheck | ast.UnaryCheck) -> Check:
    """The closure evaluating one check against any event (read through `Event.get`)."""
    return prepare_check(node).bind()
