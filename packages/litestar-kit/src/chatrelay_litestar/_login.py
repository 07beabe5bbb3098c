"""``SITE_PASSWORD`` and accounts: whether a request carries a valid login cookie (and whose),
and the route guard."""

from __future__ import annotations

from typing import Any

from chatrelay_common import AUTH_COOKIE, Login, LoginTokens, ServiceSettings
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, ServiceUnavailableException
from litestar.handlers import BaseRouteHandler
from redis.exceptions import RedisError

__all__ = [
    "SIGN_IN_UNAVAILABLE",
    "authenticated",
    "current_login",
    "login_required",
    "login_tokens",
]

SIGN_IN_UNAVAILABLE = "Sign-in is unavailable right now (Redis is unreachable); retry soon"


def login_tokens(state: State) -> LoginTokens | None:
    """One signer per process, made on first use (it reads the shared secret from Redis)."""
    if "login_tokens" not in state:
        settings: ServiceSettings = state.settings
        state.login_tokens = settings.login_tokens(state.redis)
    tokens: LoginTokens | None = state.login_tokens
    return tokens


async def current_login(state: State, cookie: str | None) -> Login | None:
    """The valid login ``cookie`` holds (its ``user`` with accounts); None without one, or
    when no login is in force. 503 while Redis cannot tell."""
    tokens = login_tokens(state)
    if tokens is None:
        return None
    try:
        return await tokens.login(cookie)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableException(detail=SIGN_IN_UNAVAILABLE) from exc


async def authenticated(state: State, cookie: str | None) -> bool:
    """No login in force, or ``cookie`` is a valid login; 503 while Redis cannot tell."""
    if login_tokens(state) is None:
        return True
    return await current_login(state, cookie) is not None


async def login_required(
    connection: ASGIConnection[Any, Any, Any, State], _: BaseRouteHandler
) -> None:
    if not await authenticated(connection.app.state, connection.cookies.get(AUTH_COOKIE)):
        raise NotAuthorizedException(detail="Login required")
