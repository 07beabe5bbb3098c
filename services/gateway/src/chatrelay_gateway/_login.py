"""``SITE_PASSWORD``: the login that sets the cookie, and the guard that checks it."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import msgspec
from chatrelay_common import AUTH_COOKIE, ServiceSettings, auth_token
from litestar import Controller, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.status_codes import HTTP_204_NO_CONTENT

from ._schemas import decode_body

__all__ = ["LoginController", "login_required"]

_MONTH = 30 * 24 * 3600


class Login(msgspec.Struct, forbid_unknown_fields=True):
    password: str


def login_required(connection: ASGIConnection[Any, Any, Any, State], _: BaseRouteHandler) -> None:
    settings: ServiceSettings = connection.app.state.settings
    if not settings.is_authorized(connection.cookies.get(AUTH_COOKIE)):
        raise NotAuthorizedException(detail="Login required")


class LoginController(Controller):
    path = "/api"

    @post("/login", status_code=HTTP_204_NO_CONTENT)
    async def login(self, request: Request[Any, Any, State]) -> Response[None]:
        body = decode_body(await request.body(), Login)
        settings: ServiceSettings = request.app.state.settings
        if settings.site_password is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        password = settings.site_password.get_secret_value()
        if not hmac.compare_digest(body.password.encode(), password.encode()):
            await asyncio.sleep(0.5)  # slows guessing down
            raise NotAuthorizedException(detail="Wrong password")
        cookie = Cookie(
            key=AUTH_COOKIE,
            value=auth_token(password),
            max_age=_MONTH,
            path="/",
            httponly=True,
            secure=True,
            samesite="strict",
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[cookie])

    @get("/auth")
    async def auth(self, request: Request[Any, Any, State]) -> dict[str, bool]:
        """Whether a login is required here, and whether this client has it."""
        settings: ServiceSettings = request.app.state.settings
        return {
            "required": settings.site_password is not None,
            "authenticated": settings.is_authorized(request.cookies.get(AUTH_COOKIE)),
        }

    @post("/logout", status_code=HTTP_204_NO_CONTENT)
    async def logout(self) -> Response[None]:
        expired = Cookie(
            key=AUTH_COOKIE,
            value="",
            max_age=0,
            path="/",
            httponly=True,
            secure=True,
            samesite="strict",
        )
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[expired])
