"""A ConfigMap volume on disk, laid out and updated the way kubelet does it.

Kubelet never rewrites a projected file in place. Each update writes the whole data set
into a new hidden folder `..<timestamp>`, points a temporary symlink at it, renames that
symlink over `..data` (one atomic rename), makes sure every key has a top-level symlink
`<key> -> ..data/<key>`, removes symlinks of keys that went away, and deletes the old
folder. A reader that opens `<dir>/<key>` therefore sees either the old or the new data
set, never a mix of one file, and the top-level entries' own mtimes never change.

Falconer's all-in-one uses this to play the kubelet's part for the sensor's ConfigMap,
and the sensor's tests use it to reproduce a kubelet update exactly.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DATA_LINK = "..data"
_TMP_LINK = "..data_tmp"


class VolumeError(ValueError):
    """A key cannot be projected (it would escape the folder or clash with ours)."""


def _check_key(key: str) -> None:
    """Keys are file names: ConfigMap keys allow [-._a-zA-Z0-9]+, never a path or `..*`."""
    if not key or "/" in key or key.startswith("..") or key == ".":
        raise VolumeError(f"ConfigMap key {key!r} cannot be a file name in a volume")


def current(folder: Path) -> dict[str, str]:
    """The data set the volume shows now (key -> text); empty before the first write."""
    data = folder / DATA_LINK
    if not data.is_dir():
        return {}
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(data.iterdir()) if p.is_file()}


def write(folder: Path, files: Mapping[str, str]) -> bool:
    """Project `files` into `folder` atomically; False (nothing touched) when unchanged."""
    for key in files:
        _check_key(key)
    folder.mkdir(parents=True, exist_ok=True)
    if current(folder) == dict(files):
        return False
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S.", time.gmtime())
    new_dir = Path(tempfile.mkdtemp(prefix=f"..{stamp}", dir=folder))
    for key, text in files.items():
        (new_dir / key).write_text(text, encoding="utf-8")
    new_dir.chmod(0o755)
    old_target = os.readlink(folder / DATA_LINK) if (folder / DATA_LINK).is_symlink() else None
    tmp_link = folder / _TMP_LINK
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(new_dir.name)
    tmp_link.replace(folder / DATA_LINK)
    for key in files:
        link = folder / key
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{key}")
    for entry in folder.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    if old_target is not None and old_target != new_dir.name:
        shutil.rmtree(folder / old_target, ignore_errors=True)
    return True
