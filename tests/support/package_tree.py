"""The `falconer` package as installed, laid out as one folder tree for tools that read
source files but not setuptools' package-dir mapping (mypy, import-linter's grimp).

pyproject.toml maps `falconer.engine` to `engine/`, `falconer.sensor` to `sensor/`, ...
An import-reading tool run on the checkout sees `engine/` as a top-level folder and no
`falconer.engine`: every arrow between components would vanish. `assemble` builds the
tree `dest/falconer/{engine,sensor,...}` from that same mapping (read from pyproject.toml,
so a new component is picked up), either as symbolic links to the checkout (mypy follows
them and reports errors at the checkout's files) or as a copy (grimp does not descend
into linked folders, and a test may plant an import in a copy).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from falconer.paths import ROOT

PYPROJECT = ROOT / "pyproject.toml"


def package_dirs() -> dict[str, Path]:
    """Import package name -> its folder in the checkout (pyproject's package-dir)."""
    with PYPROJECT.open("rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def assemble(dest: Path, *, copy: bool) -> Path:
    """Lay out the package under `dest` (which must exist); returns `dest`, the folder
    to put on sys.path. `copy`: copy the files, else link to them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name, folder in sorted(package_dirs().items()):
        target = dest.joinpath(*name.split("."))
        if name == "falconer":
            # The root folder holds only the root package's modules: never its subfolders.
            target.mkdir(parents=True)
            for module in folder.glob("*.py"):
                _place(module, target / module.name, copy=copy)
        elif copy:
            shutil.copytree(folder, target, ignore=ignore)
        else:
            target.symlink_to(folder, target_is_directory=True)
    return dest


def _place(source: Path, target: Path, *, copy: bool) -> None:
    if copy:
        shutil.copy(source, target)
    else:
        target.symlink_to(source)
