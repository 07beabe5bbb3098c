"""The one way both services open Redis: a lifespan-friendly async context manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["open_redis"]


@asynccontextmanager
async def open_redis(url: str, *, retry: bool = True) -> AsyncIterator[Redis]:
    """A client returning bytes; connecting is lazy, so a service starts while Redis is down
    (``/readyz`` reports it). ``retry=False`` makes a broken connection surface at once: a
    pub/sub reader must know, since a silent reconnect would skip what was published meanwhile.
    """
    client = Redis.from_url(
        url,
        health_check_interval=30,
        socket_keepalive=True,
        retry=None if retry else Retry(NoBackoff(), 0),
    )
    try:
        yield client
    finally:
        await client.aclose()
