"""The kubelet-style ConfigMap projection the all-in-one uses (no cluster needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from falconer_e2e import configmap_volume


def test_update_swaps_data_atomically_and_prunes(tmp_path: Path) -> None:
    assert configmap_volume.write(tmp_path, {"a.yaml": "1", "b.yaml": "2"})
    first = os.readlink(tmp_path / "..data")
    assert os.readlink(tmp_path / "a.yaml") == "..data/a.yaml"
    assert configmap_volume.write(tmp_path, {"a.yaml": "3"})
    assert os.readlink(tmp_path / "..data") != first
    assert not (tmp_path / first).exists()                 # the old data set is gone
    assert not (tmp_path / "b.yaml").is_symlink()          # so is the removed key
    assert (tmp_path / "a.yaml").read_text() == "3"
    assert configmap_volume.current(tmp_path) == {"a.yaml": "3"}
    assert not configmap_volume.write(tmp_path, {"a.yaml": "3"})


@pytest.mark.parametrize("key", ["..data", "../escape", "a/b", ""])
def test_keys_that_are_not_file_names_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(configmap_volume.VolumeError, match="cannot be a file name"):
        configmap_volume.write(tmp_path, {key: "x"})
    assert list(tmp_path.iterdir()) == []
