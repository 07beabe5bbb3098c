"""The one way both services open Redis: a lifespan-friendly async context manager."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

__all__ = ["open_redis"]


@asynccontextmanager
async def open_redis(url: str) -> AsyncIterator[Redis]:
    """A client returning bytes; connecting is lazy, so a service starts while Redis is down
    (``/readyz`` reports it)."""
    client = Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
    try:
        yield client
    finally:
        await client.aclose()
