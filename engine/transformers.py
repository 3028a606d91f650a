"""Field transformers: `tolower(f)`, `len(f)`, `join(sep, (a, b))`, `getopt(args, "ab:")[b]`...

An operand (a check's left side, a `val()`/transformer right side, an output token) is
compiled once into a getter plus what the checks need to know about its value: the
registry entry of the underlying field and the value type. Semantics and messages
follow libsinsp: sinsp_filter_transformers/* (single-value transformers, applied to
every element of a list) and sinsp_filtercheck_multivalue_transformer.cpp (`join`,
`concat`, `getopt`). A missing argument makes the result missing.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
from collections.abc import Callable

from falconer.engine import ast, timefields
from falconer.engine.fields import FieldInfo, FieldType, UnknownField, resolve
from falconer.engine.located import OffsetError

Getter = Callable[[object], object]


class CheckError(OffsetError):
    """A check that cannot compile; `offset` points at the offending node.

    `unknown_field` marks what skip-if-unknown-filter may drop (a field or event type
    this engine does not know) as opposed to a plain mistake.
    """

    def __init__(self, message: str, offset: int, unknown_field: bool = False) -> None:
        super().__init__(message, offset)
        self.unknown_field = unknown_field


def field_info(node: ast.Field) -> FieldInfo:
    """Resolve a field node, as a CheckError at its position."""
    try:
        return resolve(node.name, node.arg)
    except UnknownField as exc:
        raise CheckError(str(exc), node.pos, unknown_field=True) from None


def field_getter(node: ast.Field) -> Getter:
    """Read the field from an event the way the rule wrote it (`evt.arg.flags` as is)."""
    return timefields.getter(node.name, node.arg)


def _text(value: object) -> str:
    """A value as libsinsp renders it to a string argument."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _map_value(fn: Callable[[object], object], value: object) -> object:
    """A transformer applied to a value: missing stays missing, a list element-wise."""
    if value is None:
        return None
    if isinstance(value, list):
        return [fn(v) for v in value]
    return fn(value)


def _b64(value: object) -> object:
    """`b64()`: text that is not valid base64 decodes to a missing value, not an error."""
    try:
        return base64.b64decode(_text(value), validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return None


_SINGLE: dict[str, Callable[[object], object]] = {
    "tolower": lambda v: _text(v).lower(),
    "toupper": lambda v: _text(v).upper(),
    "basename": lambda v: posixpath.basename(_text(v)),
    "b64": _b64,
    "len": lambda v: len(v) if isinstance(v, (str, bytes)) else len(_text(v)),
}
_MULTI = ("join", "concat", "getopt")


def _result_info(node: ast.Transformer, is_list: bool) -> FieldInfo:
    """The registry-like entry of a multi-value transformer's (string) result."""
    return FieldInfo(node.name, FieldType.STRING, "none", is_list, False, f"{node.name}() result",
                     no_rhs=True)


def operand(node: ast.Expr) -> tuple[Getter, FieldInfo, str]:
    """A getter for a field or transformer, the underlying field and the value type."""
    if isinstance(node, ast.Field):
        info = field_info(node)
        return field_getter(node), info, info.type
    if isinstance(node, ast.Transformer) and node.name in _SINGLE:
        return _single(node)
    if isinstance(node, ast.Transformer) and node.name in _MULTI:
        return _multi(node)
    if isinstance(node, ast.Transformer):
        raise CheckError(f"transformer '{node.name}' is not supported", node.pos)
    raise CheckError("expected a field or a transformer", getattr(node, "pos", 0))


def _single(node: ast.Transformer) -> tuple[Getter, FieldInfo, str]:
    """`tolower`, `toupper`, `basename`, `b64`, `len` over one field or transformer."""
    if len(node.args) != 1 or not isinstance(node.args[0], (ast.Field, ast.Transformer)):
        raise CheckError(f"transformer '{node.name}' takes exactly one field", node.pos)
    if node.arg is not None:
        raise CheckError(f"transformer '{node.name}' does not support field arguments",
                         node.pos)
    inner, info, inner_type = operand(node.args[0])
    if info.no_transformer and isinstance(node.args[0], ast.Field):
        raise CheckError(f"field '{info.name}' does not support transformers", node.pos)
    if inner_type not in ("string", "bytes", "any"):
        raise CheckError(f"can't add field transformer: type '{inner_type}' is not supported "
                         f"by '{node.name}' transformer applied on field '{info.name}'", node.pos)
    fn = _SINGLE[node.name]
    out_type = "number" if node.name == "len" else "string"

    def get(ev: object) -> object:
        return _map_value(fn, inner(ev))
    return get, info, out_type


def _argument(node: ast.Expr) -> tuple[Getter, bool, str]:
    """A multi-value transformer argument: its getter, whether it is a list, its type."""
    if isinstance(node, ast.Value):
        text = node.text
        return (lambda ev: text), False, "string"
    if isinstance(node, ast.TransformerList):
        getters = [_argument(child)[0] for child in node.children]

        def get_list(ev: object) -> object:
            values = [g(ev) for g in getters]
            return None if any(v is None for v in values) else values
        return get_list, True, "string"
    get, info, vtype = operand(node)
    return get, info.is_list, vtype


def _multi(node: ast.Transformer) -> tuple[Getter, FieldInfo, str]:
    """`join`, `concat` and `getopt`, with libsinsp's argument checks and messages."""
    args = [_argument(a) for a in node.args]
    if node.name == "join":
        get, is_list = _join(node, args), False
    elif node.name == "concat":
        get, is_list = _concat(node, args), False
    else:
        get, is_list = _getopt(node, args)
    if node.name != "getopt" and node.arg is not None:
        raise CheckError(f"transformer '{node.name}' does not support field arguments",
                         node.pos)
    return get, _result_info(node, is_list), "string"


def _join(node: ast.Transformer, args: list[tuple[Getter, bool, str]]) -> Getter:
    """`join(sep, list)`: the list's elements as text, separated by `sep`."""
    if len(args) != 2:
        raise CheckError("join() requires exactly 2 arguments: separator and list", node.pos)
    (sep_get, sep_list, _), (list_get, is_list, _) = args
    if sep_list:
        raise CheckError("join() first argument (separator) must be a single value, not a list",
                         node.pos)
    if not is_list:
        raise CheckError("join() second argument must be a list", node.pos)

    def get(ev: object) -> object:
        sep, values = sep_get(ev), list_get(ev)
        if sep is None or values is None:
            return None
        items = values if isinstance(values, list) else [values]
        return _text(sep).join(_text(v) for v in items)
    return get


def _concat(node: ast.Transformer, args: list[tuple[Getter, bool, str]]) -> Getter:
    """`concat(a, b, ...)`: two or more single strings, joined."""
    if len(args) < 2:
        raise CheckError("concat() requires at least 2 arguments", node.pos)
    if any(is_list or vtype != "string" for _, is_list, vtype in args):
        raise CheckError("concat() arguments must be strings", node.pos)
    getters = [g for g, _, _ in args]

    def get(ev: object) -> object:
        values = [g(ev) for g in getters]
        return None if any(v is None for v in values) else "".join(map(_text, values))
    return get


def _getopt(node: ast.Transformer,
            args: list[tuple[Getter, bool, str]]) -> tuple[Getter, bool]:
    """`getopt(args, optstring)`: POSIX getopt over an argument list. Without a field
    argument, the list of options met, each followed by its argument (`?` for an
    invalid option); with `[o]`, the argument of option `o` (its name if it takes
    none), missing when absent."""
    if len(args) != 2:
        raise CheckError("getopt() requires exactly 2 arguments: args list and optstring",
                         node.pos)
    (args_get, args_list, args_type), (opt_get, opt_list, opt_type) = args
    if not args_list:
        raise CheckError("getopt() first argument must be a list", node.pos)
    if opt_list:
        raise CheckError("getopt() second argument (optstring) must be a single value",
                         node.pos)
    if args_type != "string" or opt_type != "string":
        raise CheckError("getopt() arguments must be strings", node.pos)
    selector = node.arg
    if selector is not None and len(selector) != 1:
        raise CheckError("getopt() field argument must be a single option character", node.pos)

    def get(ev: object) -> object:
        values, optstring = args_get(ev), opt_get(ev)
        if values is None or optstring is None:
            return None
        items = [_text(v) for v in (values if isinstance(values, list) else [values])]
        return getopt_scan(items, _text(optstring), selector)
    return get, selector is None


def _parse_optstring(optstring: str) -> tuple[set[str], set[str]]:
    """Valid options and those taking an argument (`b:`); a leading `:` is ignored."""
    valid: set[str] = set()
    with_arg: set[str] = set()
    i = 1 if optstring.startswith(":") else 0
    while i < len(optstring):
        opt = optstring[i]
        if opt != ":":
            valid.add(opt)
            if optstring[i + 1:i + 2] == ":":
                with_arg.add(opt)
                i += 1
        i += 1
    return valid, with_arg


def getopt_scan(args: list[str], optstring: str, selector: str | None) -> object:
    """The getopt() transformer on one argument list (see `_getopt`)."""
    valid, with_arg = _parse_optstring(optstring)
    results: list[str] = []
    selected: str | None = None
    idx = 0
    while idx < len(args):
        arg = args[idx]
        if arg == "--":
            break
        if len(arg) > 2 and arg.startswith("--"):
            idx += 1
            continue
        if len(arg) < 2 or arg[0] != "-":
            break
        for i in range(1, len(arg)):
            opt = arg[i]
            if opt == ":" or opt not in valid:
                if selector is None:
                    results.append("?")
                continue
            match = selector is None or opt == selector
            if opt not in with_arg:
                if match:
                    selected, results = _emit(results, selected, selector, opt, None)
                continue
            if i + 1 < len(arg):
                value: str | None = arg[i + 1:]
            elif idx + 1 < len(args):
                idx += 1
                value = args[idx]
            else:
                value = None
            if match:
                selected, results = _emit(results, selected, selector,
                                          opt if value is not None else "", value)
            break
        idx += 1
    if selector is not None:
        return selected
    return results


def _emit(results: list[str], selected: str | None, selector: str | None, name: str,
          value: str | None) -> tuple[str | None, list[str]]:
    """Record one option: the selected value, or the name (and value) in the list."""
    if selector is not None:
        return (value if value is not None else name), results
    return selected, results + [name] + ([value] if value is not None else [])
