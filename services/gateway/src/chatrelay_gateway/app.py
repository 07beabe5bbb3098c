"""The gateway: owns writes. ``create_app()`` reads settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from chatrelay_common import SessionStore, store_lifespan
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from redis.asyncio import Redis

from ._access import access_guards
from ._controllers import SessionController
from ._demo import DemoModelController
from ._errors import exception_handlers
from ._generation import Generations
from ._health import HealthController
from ._login import LoginController
from ._settings import GatewaySettings
from ._upstream import UpstreamConfig

__all__ = ["create_app"]


def create_app(settings: GatewaySettings | None = None) -> Litestar:
    settings = settings or GatewaySettings()

    @contextlib.asynccontextmanager
    async def generations_lifespan(app: Litestar) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.idle_timeout, connect=settings.connect_timeout)
        config = UpstreamConfig(
            base_url=settings.upstream_base_url,
            api_key=settings.api_key,
            first_byte_timeout=settings.first_byte_timeout,
        )
        async with httpx.AsyncClient(timeout=timeout) as client:
            generations = Generations(app.state.store, client, config)
            app.state.generations = generations
            listener = asyncio.create_task(generations.listen_for_stops())
            reaper = asyncio.create_task(generations.reap_lapsed())
            try:
                yield
            finally:
                listener.cancel()
                reaper.cancel()
                await generations.aclose()

    def provide_store(state: State) -> SessionStore:
        store: SessionStore = state.store
        return store

    def provide_redis(state: State) -> Redis:
        redis: Redis = state.redis
        return redis

    def provide_generations(state: State) -> Generations:
        generations: Generations = state.generations
        return generations

    def too_large(_: Request[Any, Any, Any], __: Exception) -> Response[dict[str, str]]:
        detail = f"Request body is larger than {settings.max_message_bytes} bytes"
        return Response({"detail": detail}, status_code=HTTP_413_REQUEST_ENTITY_TOO_LARGE)

    def provide_default_model() -> str:
        return settings.default_model

    return Litestar(
        route_handlers=[SessionController, LoginController, HealthController, DemoModelController],
        guards=access_guards(settings),
        lifespan=[store_lifespan(settings), generations_lifespan],
        dependencies={
            "store": Provide(provide_store, sync_to_thread=False),
            "redis": Provide(provide_redis, sync_to_thread=False),
            "generations": Provide(provide_generations, sync_to_thread=False),
            "default_model": Provide(provide_default_model, sync_to_thread=False),
        },
        state=State({"settings": settings, "demo_token_delay": settings.demo_token_delay}),
        exception_handlers={**exception_handlers, HTTP_413_REQUEST_ENTITY_TOO_LARGE: too_large},
        request_max_body_size=settings.max_message_bytes,
        openapi_config=None,
    )
