"""The one way both services open Redis: a lifespan-friendly async context manager."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_SOCKET_TIMEOUT", "open_redis"]

DEFAULT_SOCKET_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
# A command failing on a broken connection or a timeout is sent again after 0.05, 0.1, 0.2
# and 0.4 s (with jitter): a blip of under a second is ridden out. Every write script is safe
# to run twice (see _store.py), since a command whose answer was lost may have run.
_RETRIES: Final = 4
_BACKOFF: Final = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
# A pub/sub connection has no read timeout (it is idle between messages), so TCP keepalive
# is what notices a peer that vanished: probes after 10 s idle, every 5 s, 3 of them.
_KEEPALIVE: Final = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


class _CancelSafeWrites(AbstractConnection):
    """redis-py bounds a socket write with ``asyncio.wait_for``, which on Python 3.11 drops a
    cancellation that arrives as the write completes: the cancelled task runs on (a reply's
    keepalive that never stops). ``asyncio.timeout`` has no such race."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout, self.socket_timeout = self.socket_timeout, None
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


def _cancel_safe(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    name = f"CancelSafe{connection_class.__name__}"
    return type(name, (_CancelSafeWrites, connection_class), {})


@asynccontextmanager
async def open_redis(
    url: str,
    *,
    retry: bool = True,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncIterator[Redis]:
    """A client returning bytes; connecting is lazy, so a service starts while Redis is down
    (``/readyz`` reports it). Commands time out after ``socket_timeout`` and are retried
    briefly with backoff.

    ``retry=False`` is for a long-lived pub/sub connection: a broken connection surfaces at
    once (a pub/sub reader must know, since a silent reconnect would skip what was published
    meanwhile), and reads have no timeout, so an idle subscription stays up.
    """
    client = Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout if retry else None,
        socket_keepalive=True,
        socket_keepalive_options=_KEEPALIVE,
        retry=Retry(_BACKOFF, _RETRIES) if retry else Retry(NoBackoff(), 0),
    )
    pool: Any = client.connection_pool
    pool.connection_class = _cancel_safe(pool.connection_class)
    try:
        yield client
    finally:
        await client.aclose()
