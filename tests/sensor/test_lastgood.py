"""The last good rules kept on disk (sensor/lastgood.py): what a clean load keeps is what
a restart reads back, a newer load replaces it, and what cannot be kept as it is stays
unkept."""

from __future__ import annotations

from pathlib import Path

from falconer.sensor import lastgood
from falconer.sensor.config import RulesInput

RULE = """- rule: Kept {n}
  desc: d
  condition: evt.type = openat and fd.name = /tmp/kept-{n}
  output: kept %fd.name
  priority: NOTICE
"""


def config(folder: Path, n: int, rules_file: str = "main.yaml") -> Path:
    """A falconer.yaml naming one rules file (relative to its folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rules_file).write_text(RULE.format(n=n))
    path = folder / "falconer.yaml"
    path.write_text(f"rulesHash: h{n}\nrulesFiles: [{rules_file}]\n")
    return path


def test_a_kept_load_reads_back_the_same(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert lastgood.kept_config(state) is None
    given = config(tmp_path / "cfg", 1)
    snap = RulesInput(config=given).read()
    assert lastgood.keep(state, given, snap)
    kept = lastgood.kept_config(state)
    assert kept is not None
    back = RulesInput(config=kept).read()
    assert back.config is not None and back.config.rules_hash == "h1"
    assert [s.text for s in back.sources] == [s.text for s in snap.sources]  # type: ignore[union-attr]


def test_a_newer_load_replaces_the_kept_one_and_its_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    for n in (1, 2):
        given = config(tmp_path / "cfg", n)
        assert lastgood.keep(state, given, RulesInput(config=given).read())
    kept = lastgood.kept_config(state)
    assert kept is not None and "Kept 2" in (kept.parent / "main.yaml").read_text()
    assert len([p for p in state.iterdir() if p.name.startswith(".")]) == 1, "the old copy is removed"
