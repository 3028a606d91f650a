"""The protobuf wire format, as much as a small gRPC client needs: encode a message of
strings and booleans, decode any message into its fields by number.

Messages are read by field number (the `.proto` numbering), so a reader states the
numbers it needs and ignores the rest, as protobuf does for unknown fields. Source: the
protobuf encoding reference (varints, wire types 0 VARINT, 1 I64, 2 LEN, 5 I32).
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5

#: field number -> its values in wire order (varints as int; LEN, I64, I32 as bytes).
Fields = dict[int, list["int | bytes"]]


class WireError(ValueError):
    """Bytes that are not a protobuf message."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode(*fields: tuple[int, str | bool | bytes]) -> bytes:
    """A message of (number, value) pairs: str and bytes as LEN, bool as VARINT."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, bool):
            out += _varint(number << 3 | VARINT) + _varint(int(value))
        else:
            data = value.encode("utf-8") if isinstance(value, str) else value
            out += _varint(number << 3 | LEN) + _varint(len(data)) + data
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _items(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _read_varint(data, pos)
            yield number, value
            continue
        if wire == LEN:
            size, pos = _read_varint(data, pos)
        elif wire in (I64, I32):
            size = 8 if wire == I64 else 4
        else:
            raise WireError(f"unsupported wire type {wire} (field {number})")
        if pos + size > len(data):
            raise WireError(f"field {number} runs past the end")
        yield number, data[pos:pos + size]
        pos += size


def decode(data: bytes) -> Fields:
    """Every field of one message; raises WireError on malformed bytes."""
    out: Fields = {}
    for number, value in _items(data):
        out.setdefault(number, []).append(value)
    return out


def string(fields: Fields, number: int) -> str:
    """The last value of a string field ("" when absent, as proto3 defaults)."""
    values = fields.get(number)
    if not values or not isinstance(values[-1], bytes):
        return ""
    return values[-1].decode("utf-8", "replace")


def integer(fields: Fields, number: int) -> int:
    """The last value of a varint field (0 when absent), as a signed 64-bit value."""
    values = fields.get(number)
    if not values or not isinstance(values[-1], int):
        return 0
    value = values[-1]
    return value - (1 << 64) if value >= 1 << 63 else value


def message(fields: Fields, number: int) -> Fields:
    """The last value of an embedded-message field, decoded ({} when absent)."""
    values = fields.get(number)
    if not values or not isinstance(values[-1], bytes):
        return {}
    return decode(values[-1])


def messages(fields: Fields, number: int) -> list[Fields]:
    """Every value of a repeated embedded-message field, decoded."""
    return [decode(v) for v in fields.get(number, []) if isinstance(v, bytes)]


def string_map(fields: Fields, number: int) -> dict[str, str]:
    """A `map<string, string>` field (repeated entries of key = 1, value = 2)."""
    return {string(e, 1): string(e, 2) for e in messages(fields, number)}
