"""docs/interop.md's matrix, written from a test run (tests/interop/conftest.py).

The tests record what they saw (the cell's client version, negotiated protocol version and
carrier, and each scenario's outcome); when the run covered the whole matrix, the table
between the two markers of docs/interop.md is replaced. A partial run (`-k`, `-x`, a skipped
client) leaves the file alone, so the table always describes one complete run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.interop.matrix import (
    CLIENT_KINDS,
    CLIENT_SIDE_FAILURES,
    ROUTES,
    SCENARIO_TITLES,
    SCENARIOS,
    applies,
    carrier_label,
)

BEGIN = "<!-- interop-matrix:begin (written by tests/interop; do not edit by hand) -->"
END = "<!-- interop-matrix:end -->"
MARK = {"pass": "✅", "fail": "❌", "xfail": "⚠️ xfail", "xpass": "❗ xpass", "skip": "skip"}

Key = tuple[str, str, str]  # client id, route id, scenario


@dataclass
class CellFacts:
    version: str | None = None
    protocol: str | None = None


@dataclass
class Record:
    """What one pytest run saw of the matrix."""

    cells: dict[tuple[str, str], CellFacts] = field(default_factory=dict)
    outcomes: dict[Key, str] = field(default_factory=dict)
    notes: dict[Key, str] = field(default_factory=dict)

    def expected(self) -> list[Key]:
        return [
            (kind.id, route.id, scenario)
            for route in ROUTES
            for kind in CLIENT_KINDS
            for scenario in SCENARIOS
            if applies(kind, route, scenario)
        ]

    def complete(self) -> bool:
        """Every cell of the matrix ran (none skipped, none left out)."""
        return all(self.outcomes.get(key, "skip") != "skip" for key in self.expected())

    def render(self) -> str:
        header = ["client", "version", "protocol", "path", "session carrier"]
        header += [SCENARIO_TITLES[s] for s in SCENARIOS]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for route in ROUTES:
            for kind in CLIENT_KINDS:
                facts = self.cells.get((kind.id, route.id), CellFacts())
                row = [
                    f"`{kind.package}`",
                    facts.version or "?",
                    facts.protocol or "?",
                    route.label,
                    carrier_label(kind, route),
                ]
                for scenario in SCENARIOS:
                    if not applies(kind, route, scenario):
                        row.append("—")
                        continue
                    row.append(MARK[self.outcomes.get((kind.id, route.id, scenario), "skip")])
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        problems = [
            key for key in self.expected() if self.outcomes.get(key) in ("fail", "xfail", "xpass")
        ]
        if problems:
            lines.append("Cells that did not pass, and what the client saw:")
            lines.append("")
            for client, route, scenario in problems:
                note = self.notes.get((client, route, scenario), "").replace("\n", " ")
                why = CLIENT_SIDE_FAILURES.get((client, route, scenario))
                outcome = self.outcomes[client, route, scenario]
                text = f"- {client} · {route} · {scenario}: {outcome}"
                text += f" — {note[:300]}" if note else ""
                text += f" (client-side: {why})" if why else ""
                lines.append(text)
        else:
            lines.append("Every cell passed.")
        return "\n".join(lines)

    def write(self, doc: Path) -> bool:
        """Replace the table in `doc`; False when the markers are missing."""
        text = doc.read_text(encoding="utf-8")
        start, end = text.find(BEGIN), text.find(END)
        if start < 0 or end < start:
            return False
        new = text[: start + len(BEGIN)] + "\n" + self.render() + "\n" + text[end:]
        doc.write_text(new, encoding="utf-8")
        return True


RECORD = Record()
