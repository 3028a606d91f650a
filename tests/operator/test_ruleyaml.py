"""FalcoRule items <-> rules YAML: lossless round trip, positions mapped into fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import upstream

from falconer.operator import ruleyaml


@pytest.mark.parametrize("path", upstream.upstream_files(), ids=lambda p: p.name)
def test_upstream_files_round_trip(path: Path) -> None:
    items = ruleyaml.load_items(path.read_text())
    text = ruleyaml.dump_items(items)
    assert ruleyaml.load_items(text) == items
    assert ruleyaml.dump_items(ruleyaml.load_items(text)) == text  # deterministic


ITEMS = [
    {"macro": "m", "condition": "proc.name = x and\n  fd.name = y"},
    {"rule": "r", "desc": "d", "condition": "evt.type = open and m", "output": "x %proc.name",
     "priority": "WARNING", "tags": ["a"]},
    {"list": "l", "items": [1, "a b"]},
    {"macro": "trailing", "condition": "a = b  \nor c"},
]


def position_of(text: str, needle: str, nth_line_match: int = 0) -> tuple[int, int]:
    hits = [(n, line.index(needle)) for n, line in enumerate(text.split("\n"), 1) if needle in line]
    line, col = hits[nth_line_match]
    return line, col + 1


def test_conditions_are_literal_blocks() -> None:
    text = ruleyaml.dump_items(ITEMS)
    assert "condition: |-\n    evt.type = open and m\n" in text


@pytest.mark.parametrize(
    ("needle", "index", "key", "line", "column"),
    [
        ("fd.name = y", 0, "condition", 2, 3),
        ("proc.name = x", 0, "condition", 1, 1),
        ("open and m", 1, "condition", 1, 12),
        ("%proc.name", 1, "output", 1, 3),
        ("WARNING", 1, "priority", 1, 1),
        ("or c", 3, "condition", None, None),  # trailing spaces: quoted, no in-field position
    ],
)
def test_positions_map_into_fields(needle: str, index: int, key: str, line: int | None, column: int | None) -> None:
    text = ruleyaml.dump_items(ITEMS)
    pos = ruleyaml.PositionMap(text).locate(*position_of(text, needle))
    assert pos == ruleyaml.FieldPosition(index, key, line, column)
    assert pos.path() == f"spec.items[{index}].{key}"


def test_position_on_a_key_names_the_key_only() -> None:
    text = ruleyaml.dump_items(ITEMS)
    line, col = position_of(text, "tags:")
    assert ruleyaml.PositionMap(text).locate(line, col) == ruleyaml.FieldPosition(1, "tags", None, None)


def test_item_position_by_name() -> None:
    pmap = ruleyaml.PositionMap(ruleyaml.dump_items(ITEMS))
    assert pmap.item_position("list", "l") == 2
    assert pmap.item_position("rule", "nope") is None


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [("- a: [1\n", 2, 1), ("a: 1\n", 1, 1), ("- x: 1\n---\nfoo\n", 3, 1), ("- {y: 1\n", 2, 1)],
)
def test_load_errors_have_positions(text: str, line: int, column: int) -> None:
    with pytest.raises(ruleyaml.RulesFileError) as err:
        ruleyaml.load_items(text)
    assert (err.value.line, err.value.column) == (line, column)


def test_several_documents_concatenate() -> None:
    assert ruleyaml.load_items("- {list: a, items: []}\n---\n---\n- {list: b, items: []}\n") == [
        {"list": "a", "items": []}, {"list": "b", "items": []}]


def test_empty_items_dump() -> None:
    assert ruleyaml.load_items(ruleyaml.dump_items([])) == []
