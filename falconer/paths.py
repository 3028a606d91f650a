"""Where the data shipped with Falconer lives, so that no module guesses a path."""

from pathlib import Path

#: The repository (or source tree) root: the parent of this package's folder.
ROOT = Path(__file__).resolve().parent.parent

#: Falconer's own default ruleset, written by this project and tagged with MITRE ATT&CK.
RULES_DIR = ROOT / "rules"

#: The CustomResourceDefinitions of group falconer.io.
CRDS_DIR = ROOT / "crds"


def default_rules_files() -> list[Path]:
    """The default rules files, in load order (sorted by name, as Falco loads a folder)."""
    return sorted(RULES_DIR.glob("*.yaml"))
