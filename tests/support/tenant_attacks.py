"""The cluster rules, a well-behaved tenant and the matrix of attempts by a tenant to
weaken, shadow, disable or escape the cluster's rules (falconer.engine.scope), shared by
the engine, operator, webhook and CLI tests. Each attempt is refused with
LOAD_ERR_VALIDATE at the offending item."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

CLUSTER = textwrap.dedent("""\
    - list: shell_binaries
      items: [bash, sh]
    - macro: spawned_process
      condition: evt.type = execve
    - macro: never_true
      condition: (evt.num = 0)
    - macro: user_known_shell_spawn
      condition: (never_true)
    - rule: Shell in container
      desc: a shell ran
      condition: spawned_process and proc.name in (shell_binaries) and not user_known_shell_spawn
      output: shell %proc.name
      priority: Warning
      exceptions:
        - name: known
          fields: [proc.pname]
          values: [[init]]
""")

TENANT_OK = textwrap.dedent("""\
    - list: my_tools
      items: [curl, wget]
    - macro: my_tool_run
      condition: spawned_process and proc.name in (my_tools)
    - rule: Tool run
      desc: a download tool ran
      condition: my_tool_run
      output: tool %proc.name
      priority: Notice
""")


@dataclass(frozen=True)
class Attack:
    """One attempt: the tenant's rules file, where the refusal points (line and column in
    the file; item index and field in a FalcoRule) and a part of its message."""

    name: str
    text: str
    line: int
    column: int
    message: str

    @property
    def items(self) -> list[dict[str, Any]]:
        """The file's items, as a FalcoRule's spec.items."""
        items: list[dict[str, Any]] = yaml.safe_load(self.text)
        return items

    @property
    def item(self) -> int:
        """The index of the offending item (the one starting at `line`)."""
        starts = [n for n, text in enumerate(self.text.splitlines(), 1) if text.startswith("- ")]
        return starts.index(max(n for n in starts if n <= self.line))

    @property
    def field(self) -> str:
        """The field the refusal points into: the priority for the ceiling, else the
        item's name (its `rule`, `list` or `macro` key)."""
        if "above" in self.message:
            return "priority"
        return self.text.splitlines()[self.line - 1][2:].split(":")[0]


ATTACKS = [Attack(*a) for a in [
    ("redefine a cluster rule",
     "- rule: Shell in container\n  desc: x\n  condition: evt.num = 0\n  output: x\n"
     "  priority: Debug\n", 1, 9, "cannot redefine it"),
    ("append to a cluster rule's condition",
     "- rule: Shell in container\n  condition: and evt.num = 0\n"
     "  override: {condition: append}\n", 1, 9, "cannot append to or override it"),
    ("add an exception to a cluster rule",
     "- rule: Shell in container\n  exceptions:\n  - name: mine\n    fields: [proc.name]\n"
     "    values: [[bash]]\n  override: {exceptions: append}\n", 1, 9,
     "cannot append to or override it"),
    ("extend an existing exception of a cluster rule",
     "- rule: Shell in container\n  exceptions:\n  - name: known\n    values: [[bash]]\n"
     "  append: true\n", 1, 9, "cannot append to or override it"),
    ("disable a cluster rule (old form)",
     "- rule: Shell in container\n  enabled: false\n", 1, 9, "cannot enable or disable it"),
    ("disable a cluster rule (override)",
     "- rule: Shell in container\n  enabled: false\n  override: {enabled: replace}\n", 1, 9,
     "cannot append to or override it"),
    ("lower a cluster rule's priority",
     "- rule: Shell in container\n  priority: Debug\n  override: {priority: replace}\n", 1, 9,
     "cannot append to or override it"),
    ("append to a cluster list",
     "- list: shell_binaries\n  items: [zsh]\n  override: {items: append}\n", 1, 9,
     "List 'shell_binaries' is defined by the cluster"),
    ("empty a cluster list",
     "- list: shell_binaries\n  items: []\n", 1, 9, "cannot redefine it"),
    ("redefine a cluster user_known macro to allow everything",
     "- macro: user_known_shell_spawn\n  condition: (evt.num > 0)\n", 1, 10,
     "cannot redefine it"),
    ("append to a cluster macro",
     "- macro: never_true\n  condition: or evt.num > 0\n  append: true\n", 1, 10,
     "cannot append to or override it"),
    ("shadow a cluster list with a macro",
     "- macro: shell_binaries\n  condition: evt.num > 0\n", 1, 10, "cannot shadow it"),
    ("shadow a cluster macro with a list",
     "- list: spawned_process\n  items: [x]\n", 1, 9, "cannot shadow it"),
    ("raise a rule above the ceiling",
     "- rule: Loud\n  desc: x\n  condition: evt.num = 0\n  output: x\n  priority: Critical\n",
     5, 13, "above 'Warning'"),
    ("raise an own rule above the ceiling by override",
     "- rule: Loud\n  desc: x\n  condition: evt.num = 0\n  output: x\n  priority: Notice\n"
     "- rule: Loud\n  priority: EMERGENCY\n  override: {priority: replace}\n", 7, 13,
     "above 'Warning'"),
    ("refuse after an item that was fine",
     TENANT_OK + "- macro: spawned_process\n  condition: evt.num > 0\n", 10, 10,
     "Macro 'spawned_process' is defined by the cluster"),
]]
