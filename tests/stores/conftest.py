"""The one store suite runs every test against each backend: memory, SQLite, real Redis, and
a real three-master Redis Cluster and a Sentinel-managed master (issue #15)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.fixtures.store_urls import store_url_for

from mcp_sessions.stores import Store, open_store

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    return store_url_for(backend, request, tmp_path)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def t0() -> float:
    """A base time near the real clock, so Redis TTLs derived from it are realistic."""
    return float(int(time.time()))
