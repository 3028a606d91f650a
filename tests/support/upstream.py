"""Where the upstream Falco rules files live for compatibility tests (`../shared`)."""

from pathlib import Path

from falconer.paths import ROOT

#: The folder of upstream rules files, kept unchanged beside the repository.
UPSTREAM_RULES_DIR = ROOT.parent / "shared" / "anchors" / "falco-rules"
STABLE = UPSTREAM_RULES_DIR / "falco_rules.yaml"
INCUBATING = UPSTREAM_RULES_DIR / "falco-incubating_rules.yaml"
SANDBOX = UPSTREAM_RULES_DIR / "falco-sandbox_rules.yaml"


def upstream_files() -> list[Path]:
    """The three upstream files in Falco's load order: stable, incubating, sandbox."""
    return [STABLE, INCUBATING, SANDBOX]
