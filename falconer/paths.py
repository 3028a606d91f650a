"""Where the data shipped with Falconer lives, so that no module guesses a path.

The default rules and the CRDs are package data (`falconer.rules` from rules/,
`falconer.crds` from crds/, see pyproject.toml), found with importlib.resources: the
same calls work in the source tree (an editable install maps the packages onto those
folders) and in an installed wheel. Wheels install unzipped, so each is a real folder.
"""

from importlib.resources import files
from pathlib import Path


def _package_dir(package: str) -> Path:
    """The folder holding a data package's files."""
    return Path(str(files(package)))


#: The source tree root (the parent of this package's folder): only meaningful in a
#: checkout (tests, image builds), never for shipped data.
ROOT = Path(__file__).resolve().parent.parent

#: Falconer's own default ruleset, written by this project and tagged with MITRE ATT&CK.
RULES_DIR = _package_dir("falconer.rules")

#: The CustomResourceDefinitions of group falconer.io.
CRDS_DIR = _package_dir("falconer.crds")


def default_rules_files() -> list[Path]:
    """The default rules files, in load order (sorted by name, as Falco loads a folder)."""
    return sorted(RULES_DIR.glob("*.yaml"))


def crd_files() -> list[Path]:
    """The CRD manifests, sorted by file name."""
    return sorted(CRDS_DIR.glob("*.yaml"))
