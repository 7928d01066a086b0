"""Fixtures: a gateway on real PostgreSQL and Redis (see ``cofounder_gateway.testing``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cofounder_gateway.testing import Running, start_gateway


@pytest.fixture
async def gateway(redis_url: str, migrated_database_url: str) -> AsyncIterator[Running]:
    async for running in start_gateway(redis_url, migrated_database_url):
        yield running
