"""``SITE_PASSWORD``: whether a request carries a valid login cookie, and the route guard."""

from __future__ import annotations

from typing import Any

from chatrelay_common import AUTH_COOKIE, LoginTokens, ServiceSettings
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.handlers import BaseRouteHandler
from redis.exceptions import RedisError

__all__ = ["SIGN_IN_UNAVAILABLE", "authenticated", "login_required", "login_tokens"]

SIGN_IN_UNAVAILABLE = "Sign-in is unavailable right now (Redis is unreachable); retry soon"


def login_tokens(state: State) -> LoginTokens | None:
    """One signer per process, made on first use (it reads the shared secret from Redis)."""
    if "login_tokens" not in state:
        settings: ServiceSettings = state.settings
        state.login_tokens = settings.login_tokens(state.redis)
    tokens: LoginTokens | None = state.login_tokens
    return tokens


async def authenticated(state: State, cookie: str | None) -> bool:
    """No password set, or ``cookie`` is a valid login; 503 while Redis cannot tell."""
    tokens = login_tokens(state)
    if tokens is None:
        return True
    try:
        return await tokens.verify(cookie)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableException(detail=SIGN_IN_UNAVAILABLE) from exc


async def login_required(
    connection: ASGIConnection[Any, Any, Any, State], _: BaseRouteHandler
) -> None:
    if not await authenticated(connection.app.state, connection.cookies.get(AUTH_COOKIE)):
        raise NotAuthorizedException(detail="Login required")
