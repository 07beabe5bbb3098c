"""``SITE_PASSWORD``: the login that sets the cookie, logout that revokes it, and the guard
(shared with the web: ``chatrelay_litestar``)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import msgspec
from chatrelay_common import AUTH_COOKIE, LoginThrottle, ServiceSettings
from chatrelay_litestar import SIGN_IN_UNAVAILABLE, authenticated, login_required, login_tokens
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import (
    NotAuthorizedException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_204_NO_CONTENT
from redis.exceptions import RedisError

from ._schemas import error_responses

__all__ = ["LoginController", "login_required"]  # the guard, for the routes that need it

# Litestar documents a ``Response[None]`` (needed to set the cookie) as a JSON ``null`` body;
# a 204 has none.
_NO_CONTENT = {HTTP_204_NO_CONTENT: ResponseSpec(None, description="Done; no body")}


class Login(msgspec.Struct, forbid_unknown_fields=True):
    password: str


def _cookie(value: str, max_age: int) -> Cookie:
    return Cookie(
        key=AUTH_COOKIE,
        value=value,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=True,
        samesite="strict",
    )


class LoginController(Controller):
    path = "/api"

    @post(
        "/login",
        status_code=HTTP_204_NO_CONTENT,
        responses={**error_responses(401, 422), **_NO_CONTENT},
    )
    async def login(self, request: Request[Any, Any, State], data: Login) -> Response[None]:
        settings: ServiceSettings = request.app.state.settings
        tokens = login_tokens(request.app.state)
        if settings.site_password is None or tokens is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        throttle: LoginThrottle = settings.login_throttle(request.app.state.redis)
        client = request.client.host if request.client else "unknown"
        try:
            # A throttled address waits even with the right password: otherwise guessing
            # could go on, with only the right guess answered.
            wait = await throttle.take_attempt(client)
            if wait:
                raise TooManyRequestsException(
                    detail=f"Too many failed sign-ins; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
            password = settings.site_password.get_secret_value()
            if not hmac.compare_digest(data.password.encode(), password.encode()):
                await asyncio.sleep(0.5)  # slows a single guesser down further
                raise NotAuthorizedException(detail="Wrong password")
            await throttle.succeeded(client)
            token = await tokens.issue()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailableException(detail=SIGN_IN_UNAVAILABLE) from exc
        return Response(
            None,
            status_code=HTTP_204_NO_CONTENT,
            cookies=[_cookie(token, settings.login_max_age)],
        )

    @get("/auth", responses=error_responses())
    async def auth(self, request: Request[Any, Any, State]) -> dict[str, bool]:
        """Whether a login is required here, and whether this client has it."""
        settings: ServiceSettings = request.app.state.settings
        return {
            "required": settings.site_password is not None,
            "authenticated": await authenticated(
                request.app.state, request.cookies.get(AUTH_COOKIE)
            ),
        }

    @post(
        "/logout", status_code=HTTP_204_NO_CONTENT, responses={**error_responses(), **_NO_CONTENT}
    )
    async def logout(self, request: Request[Any, Any, State]) -> Response[None]:
        """Ends this login everywhere: a copy of the cookie kept from before stops working."""
        tokens = login_tokens(request.app.state)
        if tokens is not None:
            try:
                await tokens.revoke(request.cookies.get(AUTH_COOKIE))
            except (RedisError, OSError) as exc:
                raise ServiceUnavailableException(detail=SIGN_IN_UNAVAILABLE) from exc
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[_cookie("", 0)])
