from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

from litestar import Controller, Response, get
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ._fanout import Fanout

__all__ = ["HealthController"]


class HealthController(Controller):
    include_in_schema = False

    @get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz(self, redis: Redis, fanout: Fanout) -> Response[dict[str, str]]:
        try:
            await cast("Awaitable[bool]", redis.ping())
        except (RedisError, OSError):
            return Response({"detail": "Redis is unreachable"}, status_code=503)
        if not fanout.connected:
            return Response({"detail": "Live events are not connected to Redis"}, status_code=503)
        return Response({"status": "ok"})
