"""Shared pytest setup. Keep it small: fixtures live in tests/fixtures/ and are registered here."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.redis_server", "tests.fixtures.redis_topologies"]


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the anyio pytest plugin; no pytest-asyncio)."""
    return "asyncio"
