"""Frozen dataclasses as the typed form of YAML/JSON documents: `decode` plain data into
them (every error names its path), `encode` them back.

A document's shape is declared once, as dataclasses whose fields say their key
(`field("minPriority", ...)`), default and bounds. Field types may be `str`, `int`,
`float`, `bool`, `Literal[...]` of strings, `tuple[T, ...]`, `dict[str, T]`, another
such dataclass, `T | None`, `int | str`, or `Any` (data passed on as it is, e.g. a
value another parser reads). A field marked `inline=True` reads its dataclass's keys from
the enclosing mapping (the FalcoInstance spec holds the engine settings at its top level,
falconer.yaml under `engine:`). A dataclass checks what its types cannot say in
`__post_init__`, raising `ShapeError` with a path relative to itself.

Decoding is strict: an unknown key is an error (the CRD prunes unknown fields, so a
stray key means the two disagree or the file was hand-edited). `describe(cls)` lists
each key with its type, default and bounds: what the CRD agreement test compares.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")
#: Where a value is in a document: mapping keys and list indexes from the top.
Path = tuple[str | int, ...]


class ShapeError(ValueError):
    """A value that does not fit its declared shape; `path` is where, `reason` is why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{dotted(path)}: {reason}" if path else reason)
        self.path = path
        self.reason = reason

    def within(self, prefix: Path) -> ShapeError:
        """The same error, its path below `prefix`."""
        return ShapeError((*prefix, *self.path), self.reason)


def dotted(path: Path) -> str:
    """A path as written in messages and Kubernetes field paths: `outputs.http.url`,
    `selection[2].rule`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


@dataclasses.dataclass(frozen=True)
class Bounds:
    """OpenAPI-style limits of a value (the CRD's keywords of the same names)."""

    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None       # searched, not anchored (as OpenAPI's `pattern`)
    min_length: int | None = None
    max_length: int | None = None
    max_items: int | None = None
    each: Bounds | None = None       # bounds of each item of a list, each value of a mapping

    def check(self, value: Any, path: Path) -> None:
        """Raise ShapeError when `value` (or, with `each`, one of its items) is outside
        these bounds."""
        if self.each is not None and isinstance(value, (tuple, dict)):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for at, item in items:
                self.each.check(item, (*path, at))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                raise ShapeError(path, f"must be at least {_number(self.minimum)}, got {value}")
            if self.maximum is not None and value > self.maximum:
                raise ShapeError(path, f"must be at most {_number(self.maximum)}, got {value}")
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                raise ShapeError(path, f"must be at least {self.min_length} characters long")
            if self.max_length is not None and len(value) > self.max_length:
                raise ShapeError(path, f"must be at most {self.max_length} characters long")
            if self.pattern is not None and not re.search(self.pattern, value):
                raise ShapeError(path, f"must match {self.pattern}, got {value!r}")
        if isinstance(value, tuple) and self.max_items is not None and len(value) > self.max_items:
            raise ShapeError(path, f"must have at most {self.max_items} items, got {len(value)}")


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a mapping shape, as `describe` lists it."""

    key: str
    attribute: str
    type: Any
    required: bool
    default: Any               # encoded (plain data); None when there is none
    bounds: Bounds


def field(key: str, default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
          inline: bool = False, minimum: float | None = None, maximum: float | None = None,
          pattern: str | None = None, min_length: int | None = None, max_length: int | None = None,
          max_items: int | None = None, each: Bounds | None = None) -> Any:
    """A dataclass field read from `key` (no default: the key is required); `each`
    bounds every item of a list or value of a mapping."""
    metadata = {"key": key, "inline": inline,
                "bounds": Bounds(minimum, maximum, pattern, min_length, max_length, max_items, each)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _meta(f: dataclasses.Field[Any]) -> tuple[str, bool, Bounds]:
    return f.metadata.get("key", f.name), bool(f.metadata.get("inline")), f.metadata.get("bounds", Bounds())


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@functools.cache
def describe(cls: type) -> Mapping[str, Key]:
    """The keys of a mapping shape (inline fields' keys included), by key (cached: do
    not change the result)."""
    out: dict[str, Key] = {}
    for f in dataclasses.fields(cls):
        key, inline, bounds = _meta(f)
        tp = _hints(cls)[f.name]
        if inline:
            out.update(describe(tp))
            continue
        default = _default(f)
        out[key] = Key(key, f.name, tp, default is dataclasses.MISSING, None if default is dataclasses.MISSING
                       else encode(default), bounds)
    return out


def decode(tp: type[T], raw: Any, path: Path = ()) -> T:
    """`raw` (plain YAML/JSON data) as `tp`; ShapeError naming the path when it does not fit."""
    value: T = _value(tp, raw, path)
    return value


def _value(tp: Any, raw: Any, path: Path) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return raw
    if dataclasses.is_dataclass(tp):
        return _object(tp, raw, path)
    if origin in (Union, types.UnionType):
        return _union(get_args(tp), raw, path)
    if origin is Literal:
        if raw not in get_args(tp) or isinstance(raw, bool):
            raise ShapeError(path, f"expected one of {', '.join(map(str, get_args(tp)))}, got {raw!r}")
        return raw
    if origin is tuple:
        if not isinstance(raw, list):
            raise ShapeError(path, f"expected a list, got {_kind(raw)}")
        return tuple(_value(get_args(tp)[0], item, (*path, i)) for i, item in enumerate(raw))
    if origin in (dict, Mapping):
        if not isinstance(raw, dict):
            raise ShapeError(path, f"expected a mapping, got {_kind(raw)}")
        return {str(k): _value(get_args(tp)[1], v, (*path, str(k))) for k, v in raw.items()}
    return _scalar(tp, raw, path)


def _scalar(tp: Any, raw: Any, path: Path) -> Any:
    if tp is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if tp in (str, int, bool) and isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
        return raw
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    raise ShapeError(path, f"expected {names.get(tp, tp)}, got {_kind(raw)}")


def _union(options: tuple[Any, ...], raw: Any, path: Path) -> Any:
    if raw is None and type(None) in options:
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _value(option, raw, path)
        except ShapeError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise ShapeError(path, " or ".join(e.reason.partition(", got")[0] for e in errors) + f", got {_kind(raw)}")


def _object(cls: Any, raw: Any, path: Path) -> Any:
    if not isinstance(raw, dict):
        raise ShapeError(path, f"expected a mapping, got {_kind(raw)}")
    known = describe(cls)
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ShapeError((*path, unknown[0]), f"unknown key (known: {', '.join(known)})")
    values = {}
    for f in dataclasses.fields(cls):
        key, inline, bounds = _meta(f)
        tp = _hints(cls)[f.name]
        if inline:
            values[f.name] = _object(tp, {k: v for k, v in raw.items() if k in describe(tp)}, path)
            continue
        if raw.get(key) is None:
            if _default(f) is dataclasses.MISSING:
                raise ShapeError((*path, key), "required")
            continue
        values[f.name] = _value(tp, raw[key], (*path, key))
        bounds.check(values[f.name], (*path, key))
    try:
        return cls(**values)
    except ShapeError as exc:
        raise exc.within(path) from None


def encode(value: Any) -> Any:
    """A shaped value as plain data (mappings, lists, scalars); None fields are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            key, inline, _ = _meta(f)
            item = getattr(value, f.name)
            if inline:
                out.update(encode(item))
            elif item is not None:
                out[key] = encode(item)
        return out
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def _number(bound: float) -> int | float:
    """A bound as written in the schema (4096, not 4096.0)."""
    return int(bound) if float(bound).is_integer() else bound


def _kind(raw: Any) -> str:
    """A YAML-ish name of a value's type, for messages."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return f"boolean {str(raw).lower()}"
    if isinstance(raw, (dict, list)):
        return "a mapping" if isinstance(raw, dict) else "a list"
    return f"{type(raw).__name__} {raw!r}"
