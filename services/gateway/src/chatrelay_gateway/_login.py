"""``SITE_PASSWORD`` and accounts: the login that sets the cookie, logout that revokes it,
and the guard (shared with the web: ``chatrelay_litestar``)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any, Literal

import msgspec
from chatrelay_common import AUTH_COOKIE, LoginThrottle, LoginTokens, ServiceSettings
from chatrelay_common._users import USERNAME_PATTERN, InvalidCredentialError, check_password
from chatrelay_litestar import SIGN_IN_UNAVAILABLE, current_login, login_required, login_tokens
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import (
    NotAuthorizedException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_204_NO_CONTENT
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ._schemas import UnprocessableError, error_responses

__all__ = ["LoginController", "login_required"]  # the guard, for the routes that need it

# Litestar documents a ``Response[None]`` (needed to set the cookie) as a JSON ``null`` body;
# a 204 has none.
_NO_CONTENT = {HTTP_204_NO_CONTENT: ResponseSpec(None, description="Done; no body")}


class Login(msgspec.Struct, forbid_unknown_fields=True):
    password: str
    # Accounts only (then required).
    username: Annotated[str, msgspec.Meta(pattern=USERNAME_PATTERN)] | None = None


class AuthState(msgspec.Struct):
    required: bool
    authenticated: bool
    # ``open``, ``password`` (SITE_PASSWORD) or ``accounts``; and the account signed in.
    mode: Literal["open", "password", "accounts"]
    user: str | None


# Slows a single guesser down further.
_FAILED_LOGIN_DELAY = 0.5


async def _throttled(throttle: LoginThrottle, key: str) -> None:
    # A throttled address (or user) waits even with the right password: otherwise guessing
    # could go on, with only the right guess answered.
    wait = await throttle.take_attempt(key)
    if wait:
        raise TooManyRequestsException(
            detail=f"Too many failed sign-ins; retry in {wait} s",
            headers={"Retry-After": str(wait)},
        )


async def _site_login(settings: ServiceSettings, tokens: LoginTokens, data: Login) -> str:
    if data.username is not None:
        raise UnprocessableError(detail="This site has no accounts: send the password alone")
    assert settings.site_password is not None  # tokens exist without accounts only with it
    password = settings.site_password.get_secret_value()
    if not hmac.compare_digest(data.password.encode(), password.encode()):
        await asyncio.sleep(_FAILED_LOGIN_DELAY)
        raise NotAuthorizedException(detail="Wrong password")
    return await tokens.issue()


async def _account_login(
    settings: ServiceSettings, tokens: LoginTokens, data: Login, redis: Redis
) -> str:
    if data.username is None:
        raise UnprocessableError(detail="This site has accounts: send a username and password")
    try:
        check_password(data.password)
    except InvalidCredentialError as exc:
        raise UnprocessableError(detail=str(exc)) from None
    user_key = f"user:{data.username.lower()}"
    await _throttled(settings.user_login_throttle(redis), user_key)
    assert tokens.users is not None
    user = await tokens.users.verify(data.username, data.password)
    if user is None:  # the same answer, after the same work, for an unknown user
        await asyncio.sleep(_FAILED_LOGIN_DELAY)
        raise NotAuthorizedException(detail="Wrong username or password")
    await settings.user_login_throttle(redis).succeeded(user_key)
    return await tokens.issue(user)


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
        """``{"password"}`` with SITE_PASSWORD; ``{"username", "password"}`` with accounts."""
        settings: ServiceSettings = request.app.state.settings
        tokens = login_tokens(request.app.state)
        if tokens is None:
            return Response(None, status_code=HTTP_204_NO_CONTENT)
        redis = request.app.state.redis
        throttle: LoginThrottle = settings.login_throttle(redis)
        client = request.client.host if request.client else "unknown"
        try:
            await _throttled(throttle, client)
            if tokens.accounts:
                token = await _account_login(settings, tokens, data, redis)
            else:
                token = await _site_login(settings, tokens, data)
            await throttle.succeeded(client)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailableException(detail=SIGN_IN_UNAVAILABLE) from exc
        return Response(
            None,
            status_code=HTTP_204_NO_CONTENT,
            cookies=[_cookie(token, settings.login_max_age)],
        )

    @get("/auth", responses=error_responses())
    async def auth(self, request: Request[Any, Any, State]) -> AuthState:
        """Whether a login is required here, which kind, and whether this client has it."""
        settings: ServiceSettings = request.app.state.settings
        login = await current_login(request.app.state, request.cookies.get(AUTH_COOKIE))
        mode: Literal["open", "password", "accounts"] = (
            "accounts" if settings.accounts else "password" if settings.login_in_force else "open"
        )
        return AuthState(
            required=settings.login_in_force,
            authenticated=not settings.login_in_force or login is not None,
            mode=mode,
            user=None if login is None else login.user,
        )

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
