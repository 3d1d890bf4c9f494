"""docs/interop.md's table is written only from a complete run, and only between its markers."""

from __future__ import annotations

from pathlib import Path

from tests.interop.table import BEGIN, END, CellFacts, Record


def full_record(outcome: str = "pass") -> Record:
    record = Record()
    for key in record.expected():
        record.outcomes[key] = outcome
        record.cells[key[0], key[1]] = CellFacts("1.0.0", "2026-07-28")
    return record


def test_a_run_that_missed_or_skipped_a_cell_is_not_complete() -> None:
    record = full_record()
    assert record.complete()
    first = record.expected()[0]
    record.outcomes[first] = "skip"
    assert not record.complete()
    del record.outcomes[first]
    assert not record.complete()


def test_the_table_replaces_only_what_lies_between_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "interop.md"
    doc.write_text(f"# intro\n\n{BEGIN}\nold table\n{END}\n\ntrailer\n", encoding="utf-8")
    record = full_record()
    failed = record.expected()[1]
    record.outcomes[failed] = "fail"
    record.notes[failed] = (
        "McpError: MCP error -31002: needs a session-0123456789abcdef0123456789abcdef"
    )
    assert record.write(doc)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(f"# intro\n\n{BEGIN}\n") and text.endswith(f"{END}\n\ntrailer\n")
    assert "old table" not in text
    assert "| 1.0.0 | 2026-07-28 |" in text
    client, route, scenario = failed
    assert f"- {route} · {scenario} · {client}: fail — needs a session-…" in text


def test_a_doc_without_markers_is_left_alone(tmp_path: Path) -> None:
    doc = tmp_path / "interop.md"
    doc.write_text("# no table here\n", encoding="utf-8")
    assert not full_record().write(doc)
    assert doc.read_text(encoding="utf-8") == "# no table here\n"
