"""The kill/outage matrix's table: one row per checked fault (fault, promise, measured)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Matrix:
    """The rows of the fault matrix, in the order the tests ran."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def record(self, fault: str, promise: str, measured: str) -> None:
        """One checked fault: what was done, what is promised, what was measured."""
        self.rows.append((fault, promise, measured))

    def table(self) -> str:
        """The rows as a plain-text table (fault | promise | measured)."""
        header = ("fault", "promise", "measured")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(3)]
        lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in [header, *self.rows]]
        lines.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(lines)
