"""docs/interop.md's matrix, written from a test run (tests/interop/conftest.py).

The tests record what they saw (the cell's client version, negotiated protocol version and
carrier, and each scenario's outcome); when the run covered the whole matrix, the table
between the two markers of docs/interop.md is replaced. A partial run (`-k`, `-x`, a skipped
client) leaves the file alone, so the table always describes one complete run.
"""

from __future__ import annotations

import re
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
        problems: dict[tuple[str, str, str, str], list[str]] = {}
        for client, route, scenario in self.expected():
            outcome = self.outcomes.get((client, route, scenario), "skip")
            if outcome in ("fail", "xfail", "xpass"):
                note = _plain(self.notes.get((client, route, scenario), ""))
                problems.setdefault((route, scenario, outcome, note), []).append(client)
        if problems:
            lines.append("Cells that did not pass, and what the client saw:")
            lines.append("")
            for (route, scenario, outcome, note), clients in problems.items():
                text = f"- {route} · {scenario} · {', '.join(clients)}: {outcome}"
                text += f" — {note}" if note else ""
                reasons = {CLIENT_SIDE_FAILURES.get((c, route, scenario)) for c in clients}
                text += "".join(f" (client-side: {why})" for why in sorted(reasons - {None}))
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


def _plain(note: str) -> str:
    """A note as the table shows it: one line, without the exception's class name that each
    client library wraps the same server error in, ids masked, at most 240 characters."""
    note = " ".join(note.split())
    note = re.sub(r"^(\w+Error: )?(MCP error -?\d+: )?", "", note)
    note = re.sub(r"\b([a-z]+)-[0-9a-f]{32}\b", r"\1-…", note)
    note = re.sub(r"\b[0-9a-f]{8}-[0-9a-f-]{27}\b", "…", note)
    return note if len(note) <= 240 else note[:239] + "…"


RECORD = Record()
