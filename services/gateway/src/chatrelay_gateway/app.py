"""The gateway: owns writes. ``create_app()`` reads settings from the environment."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
from chatrelay_common import store_lifespan
from chatrelay_litestar import (
    ErrorResponse,
    MetricsController,
    error_response,
    from_state,
    health_controller,
    owner_cookie_middleware,
    owner_for_api_calls,
    provide_value,
    request_metrics,
    session_owner_guard,
)
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE

from ._access import access_guards
from ._controllers import ModelsController, SessionController
from ._demo import demo_model_router
from ._errors import exception_handlers
from ._generation import Generations
from ._limits import ReplySlots
from ._login import LoginController
from ._models import ModelCatalog
from ._schemas import GatewayRequest
from ._settings import GatewaySettings
from ._share import ShareController
from ._transport import upstream_client
from ._upstream import UpstreamConfig

__all__ = ["create_app"]


def create_app(settings: GatewaySettings | None = None) -> Litestar:
    settings = settings or GatewaySettings()
    # httpx logs every upstream request at INFO ("HTTP Request: POST ..."), which Litestar's
    # queue handler hands to a logging thread: a wake-up per reply, a fifth of an upstream
    # request's CPU (py-spy). Its warnings still show; the gateway logs failures itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    @contextlib.asynccontextmanager
    async def generations_lifespan(app: Litestar) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.idle_timeout, connect=settings.connect_timeout)
        config = UpstreamConfig.from_settings(settings)
        # At most one idle keep-alive connection per reply slot.
        client = upstream_client(settings.upstream_base_url, timeout, max_idle=settings.max_replies)
        async with client:
            generations = Generations(
                app.state.store, client, config, flush_seconds=settings.flush_seconds
            )
            app.state.generations = generations
            app.state.model_catalog = ModelCatalog(
                client,
                config,
                settings.allowed_models,
                cache_seconds=settings.models_cache_seconds,
                timeout=settings.models_timeout,
                ask_upstream=not settings.demo,
            )
            listener = asyncio.create_task(generations.listen_for_stops())
            reaper = asyncio.create_task(generations.reap_lapsed())
            try:
                yield
            finally:
                listener.cancel()
                reaper.cancel()
                await generations.aclose()

    def too_large(request: Request[Any, Any, Any], __: Exception) -> ErrorResponse:
        limit = request.route_handler.resolve_request_max_body_size()
        detail = f"Request body is larger than {limit} bytes"
        return error_response(HTTP_413_REQUEST_ENTITY_TOO_LARGE, detail)

    return Litestar(
        route_handlers=[
            SessionController,
            ShareController,
            ModelsController,
            LoginController,
            health_controller(),
            MetricsController,
            demo_model_router(settings.demo_max_body_bytes),
        ],
        # Every route naming a session: with accounts, another account's is a 404.
        guards=[*access_guards(settings), session_owner_guard],
        # The open mode's owner cookie, on the answers that made one up.
        middleware=[request_metrics("gateway"), owner_cookie_middleware],
        before_request=owner_for_api_calls,
        lifespan=[store_lifespan(settings), generations_lifespan],
        dependencies={
            "store": from_state("store"),
            "generations": from_state("generations"),
            "model_catalog": from_state("model_catalog"),
            "default_model": provide_value(settings.default_model),
            "allowed_models": from_state("allowed_models"),
        },
        state=State(
            {
                "settings": settings,
                "demo_token_delay": settings.demo_token_delay,
                "allowed_models": settings.allowed_models,
                "reply_slots": ReplySlots(
                    per_client=settings.max_replies_per_ip,
                    total=settings.max_replies,
                    per_account=settings.accounts,
                ),
            }
        ),
        exception_handlers={**exception_handlers, HTTP_413_REQUEST_ENTITY_TOO_LARGE: too_large},
        request_max_body_size=settings.max_message_bytes,
        request_class=GatewayRequest,
        # Served at /schema/openapi.json (the gateway's port only; nginx does not route it).
        openapi_config=OpenAPIConfig(
            title="chatrelay gateway",
            version="1",
            path="/schema",
            create_examples=False,
            render_plugins=[JsonRenderPlugin()],  # the JSON only: no page pulling scripts
        ),
    )
