"""``/healthz`` (the process answers) and ``/readyz`` (Redis answers, and whatever else the
service needs before it can serve)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from redis.asyncio import Redis
from redis.exceptions import RedisError

__all__ = ["NotReady", "health_controller"]

# Given the app state: why the service is not ready, or None when it is.
NotReady = Callable[[State], str | None]


def health_controller(*not_ready: NotReady) -> type[Controller]:
    """The health routes; ``not_ready`` checks run after Redis answers, in order."""

    class HealthController(Controller):
        include_in_schema = False

        @get("/healthz")
        async def healthz(self) -> dict[str, str]:
            return {"status": "ok"}

        @get("/readyz")
        async def readyz(self, state: State) -> Response[dict[str, str]]:
            redis: Redis = state.redis
            try:
                await cast("Awaitable[bool]", redis.ping())
            except (RedisError, OSError):
                return _unready("Redis is unreachable")
            for check in not_ready:
                if (reason := check(state)) is not None:
                    return _unready(reason)
            return Response({"status": "ok"})

    return HealthController


def _unready(reason: str) -> Response[dict[str, str]]:
    return Response({"detail": reason}, status_code=HTTP_503_SERVICE_UNAVAILABLE)
