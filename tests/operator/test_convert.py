"""`falconer rules to-crd`: upstream files become FalcoRules that the schema accepts and
that compile to the same counts as the files themselves."""

from __future__ import annotations

from pathlib import Path

import crd_schema
import pytest
import upstream
import yaml

from falconer.cli import main
from falconer.engine import Engine, EngineOptions
from falconer.operator import convert, rules
from falconer.operator.spec import parse_rule


@pytest.mark.parametrize("path", upstream.upstream_files(), ids=lambda p: p.name)
def test_upstream_file_converts_without_edits(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "to-crd", str(path), "--name", "falco-rules", "--namespace", "sec", "--order", "3"]) == 0
    manifest = yaml.safe_load(capsys.readouterr().out)
    assert crd_schema.errors(manifest) == []
    assert manifest["metadata"] == {"name": "falco-rules", "namespace": "sec"}
    assert manifest["spec"]["order"] == 3
    assert manifest["spec"]["items"] == [i for d in yaml.safe_load_all(path.read_text()) for i in d]
    file_counts = Engine(EngineOptions()).load([path]).counts
    _, compiled = rules.compile_falcorule("falco-rules", parse_rule(manifest["spec"]))
    assert compiled.valid, [f.text() for f in compiled.errors]
    assert compiled.counts == file_counts
    assert compiled.counts["rules"] > 20


def test_bad_file_reports_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: a\n  condition: x\n- [1, 2\n")
    assert main(["rules", "to-crd", str(bad), "--name", "x"]) == 1
    assert capsys.readouterr().err.startswith(f"{bad}:4:1: ")


def test_item_that_is_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: a\n  condition: x\n- just a string\n")
    assert main(["rules", "to-crd", str(bad), "--name", "x"]) == 1
    assert "3:3: item 1 is a str, not a mapping" in capsys.readouterr().err


def test_missing_file_and_bad_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "to-crd", str(tmp_path / "nope.yaml"), "--name", "x"]) == 1
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "ok.yaml").write_text("[]\n")
    assert main(["rules", "to-crd", str(tmp_path / "ok.yaml"), "--name", "Bad_Name"]) == 2
    assert "invalid FalcoRule name" in capsys.readouterr().err


def test_empty_file_gives_empty_items() -> None:
    manifest = convert.falcorule_manifest("# nothing\n", "empty")
    assert manifest["spec"] == {"items": []}
    assert yaml.safe_load(convert.dump_manifest(manifest)) == manifest
