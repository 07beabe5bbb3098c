"""A small app that answers who is asking, served by uvicorn for ``test_identity.py`` (open
mode, or ``SITE_PASSWORD`` mode when the environment sets it)."""

from __future__ import annotations

from typing import Any

from chatrelay_common import ServiceSettings, store_lifespan
from chatrelay_litestar import (
    exception_handlers,
    health_controller,
    identity_from_cookie_header,
    identity_of,
    login_required,
    owner_cookie_middleware,
)
from litestar import Litestar, Request, get
from litestar.datastructures import State

__all__ = ["create_app"]


@get("/who", guards=[login_required])
async def who(request: Request[Any, Any, State]) -> dict[str, str | None]:
    first = await identity_of(request)
    again = await identity_of(request)
    assert again == first, "one request, one owner"
    return {"owner": first.owner, "user": first.user}


@get("/who/bare", guards=[login_required])
async def who_bare(request: Request[Any, Any, State]) -> dict[str, str | None]:
    identity = await identity_from_cookie_header(request.app.state, request.headers.get("cookie"))
    return {"owner": identity.owner, "user": identity.user}


@get("/anonymous")
async def anonymous() -> dict[str, str]:
    return {"asked": "nobody"}


def create_app() -> Litestar:
    settings = ServiceSettings()
    return Litestar(
        route_handlers=[health_controller(), who, who_bare, anonymous],
        middleware=[owner_cookie_middleware],
        lifespan=[store_lifespan(settings)],
        state=State({"settings": settings}),
        exception_handlers=exception_handlers(),
        openapi_config=None,
    )
