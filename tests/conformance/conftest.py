"""Fixtures of the conformance legs; the helpers live in tests/conformance/harness.py."""

from __future__ import annotations

import pytest
from tests.conformance.harness import ConformanceCLI, conformance_cli


@pytest.fixture(scope="session")
def conformance() -> ConformanceCLI:
    """`conformance` under Node 22, from .tools/ (skips with a hint when not installed)."""
    return conformance_cli()
