"""The live output tests' rule, `Marked file opened`: an alert (tagged `test`, with the
file and the command line) when a file named `<folder>/m_*` is opened, written to
`<folder>/rules.yaml`; and the write that raises one for a test's marker.
"""

from __future__ import annotations

from pathlib import Path

#: The rule's name, as alerts carry it.
NAME = "Marked file opened"

_RULE = """
- rule: Marked file opened
  desc: a test rule
  condition: evt.type in (open, openat, openat2) and fd.name startswith {prefix}
  output: "marked file opened (file=%fd.name command=%proc.cmdline)"
  priority: {priority}
  tags: [test]
"""


def write_rules(folder: Path, priority: str = "WARNING") -> Path:
    """Write `folder/rules.yaml` holding the rule for the files `folder/m_*` at
    `priority` (a Falco priority name); its path."""
    rules = folder / "rules.yaml"
    rules.write_text(_RULE.format(prefix=folder / "m_", priority=priority))
    return rules


def open_marked(folder: Path, marker: str) -> Path:
    """Create `folder/m_<marker>` (opening it raises one alert); its path, the alert's
    `fd.name`."""
    path = folder / f"m_{marker}"
    path.write_text("x")
    return path
