from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from chatrelay_common import SessionStore, open_redis
from tests.support.redis_server import redis_url


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """One real Redis for the whole run."""
    with redis_url() as url:
        yield url


@pytest.fixture
async def redis(redis_server_url: str) -> AsyncIterator[Redis]:
    async with open_redis(redis_server_url) as client:
        yield client


@pytest.fixture
def store(redis: Redis) -> SessionStore:
    return SessionStore(redis, log_max_events=100)
