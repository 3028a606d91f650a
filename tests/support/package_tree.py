"""The product (`falconer`) and the test harness (`falconer_e2e`) as installed, laid out
as one folder tree for tools that read source files but not setuptools' package-dir
mapping (mypy, import-linter's grimp).

pyproject.toml maps `falconer.engine` to `engine/`, `falconer.sensor` to `sensor/`, ...,
and e2e/pyproject.toml maps `falconer_e2e` to `e2e/` itself. An import-reading tool run
on the checkout sees `engine/` as a top-level folder and no `falconer.engine`: every
arrow between components would vanish. `assemble` builds the tree
`dest/falconer/{engine,sensor,...}` and `dest/falconer_e2e` from those same mappings
(read from both pyproject.toml files, so a new component is picked up), either as
symbolic links to the checkout (mypy follows them and reports errors at the checkout's
files) or as a copy (grimp does not descend into linked folders, and a test may plant an
import in a copy).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from falconer.paths import ROOT

#: The product's distribution (`falconer`); also the mypy and import-linter settings.
PYPROJECT = ROOT / "pyproject.toml"
#: The test harness's distribution (`falconer-e2e`, import name `falconer_e2e`).
HARNESS_PYPROJECT = ROOT / "e2e" / "pyproject.toml"


def package_dirs() -> dict[str, Path]:
    """Import package name -> its folder in the checkout, from the package-dir tables of
    both distributions (each folder relative to its own pyproject.toml)."""
    dirs: dict[str, Path] = {}
    for pyproject in (PYPROJECT, HARNESS_PYPROJECT):
        with pyproject.open("rb") as f:
            mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
        dirs.update({name: (pyproject.parent / folder).resolve() for name, folder in mapping.items()})
    return dirs


def top_level_packages() -> list[str]:
    """The import roots laid out (`falconer`, `falconer_e2e`), sorted."""
    return sorted({name.partition(".")[0] for name in package_dirs()})


def assemble(dest: Path, *, copy: bool) -> Path:
    """Lay out the packages under `dest` (which must exist); returns `dest`, the folder
    to put on sys.path. `copy`: copy the files, else link to them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dirs = package_dirs()
    for name, folder in sorted(dirs.items()):
        target = dest.joinpath(*name.split("."))
        if any(other.startswith(name + ".") for other in dirs):
            # A folder whose subpackages are mapped elsewhere (the root `falconer/`)
            # holds only its own modules: never its subfolders.
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
