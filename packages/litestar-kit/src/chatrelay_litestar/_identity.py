"""Who is asking: the owner whose conversation list a request reads and adds to.

- Open mode (no login in force): an anonymous owner ``o:<22 random characters>`` kept in the
  ``chatrelay_owner`` cookie. A request without a valid one gets a fresh owner, and
  ``owner_cookie_middleware`` sets it on that response.
- ``SITE_PASSWORD``: every login is the one shared owner ``site``.
- Accounts: the owner ``u:<username>`` of the user the login token carries; the one place
  that learns it is ``login_user`` (the accounts mode fills it in).

Services call ``identity_of(connection)`` after the ``login_required`` guard; a bare ASGI
endpoint (the web's events) calls ``identity_from_cookie_header``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any, cast

from chatrelay_common import AUTH_COOKIE
from litestar import Request
from litestar._parsers import parse_cookie_string
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ._login import current_login, login_tokens

__all__ = [
    "OWNER_COOKIE",
    "OWNER_COOKIE_MAX_AGE",
    "SITE_OWNER",
    "Identity",
    "identity_from_cookie_header",
    "identity_of",
    "is_anonymous_owner",
    "login_user",
    "owner_cookie_middleware",
    "owner_for_api_calls",
    "user_owner",
]

OWNER_COOKIE = "chatrelay_owner"
# Browsers cap a cookie's lifetime at 400 days.
OWNER_COOKIE_MAX_AGE = 400 * 24 * 3600
SITE_OWNER = "site"
_ANONYMOUS_PREFIX = "o:"
_ANONYMOUS_OWNER = re.compile(r"o:[A-Za-z0-9_-]{22}")
# Where ``identity_of`` leaves an owner it made up, for the middleware to set on the response.
_MINTED_SCOPE_KEY = "chatrelay_minted_owner"
# Where ``identity_of`` keeps the identity it found, for the rest of the request.
_IDENTITY_SCOPE_KEY = "chatrelay_identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """``owner`` keys the owner's session index; ``user`` is the account name, if any."""

    owner: str
    user: str | None = None


def user_owner(user: str) -> str:
    return f"u:{user}"


def is_anonymous_owner(value: str | None) -> bool:
    return value is not None and _ANONYMOUS_OWNER.fullmatch(value) is not None


def _new_anonymous_owner() -> str:
    return _ANONYMOUS_PREFIX + secrets.token_urlsafe(16)  # 16 bytes: 22 characters


async def login_user(state: State, auth_cookie: str | None) -> str | None:
    """The user a valid login cookie carries; None for ``SITE_PASSWORD``'s shared login (or
    no valid login)."""
    login = await current_login(state, auth_cookie)
    return None if login is None else login.user


async def _identity(state: State, cookies: Mapping[str, str]) -> tuple[Identity, bool]:
    """The identity and whether its owner was made up just now (open mode, no cookie)."""
    if login_tokens(state) is not None:
        login = await current_login(state, cookies.get(AUTH_COOKIE))
        if login is None:
            raise NotAuthorizedException(detail="Login required")
        if login.user is None:
            return Identity(SITE_OWNER), False
        return Identity(user_owner(login.user), login.user), False
    owner = cookies.get(OWNER_COOKIE)
    if owner is not None and is_anonymous_owner(owner):
        return Identity(owner), False
    return Identity(_new_anonymous_owner()), True


async def identity_of(connection: ASGIConnection[Any, Any, Any, State]) -> Identity:
    """The caller's identity (401 when a login is in force and missing). A new anonymous
    owner is set as a cookie on this response by ``owner_cookie_middleware``."""
    scope = cast("MutableMapping[str, Any]", connection.scope)
    known: Identity | None = scope.get(_IDENTITY_SCOPE_KEY)
    if known is not None:  # asked twice in one request: one owner, and one login check
        return known
    identity, is_new = await _identity(connection.app.state, connection.cookies)
    scope[_IDENTITY_SCOPE_KEY] = identity
    if is_new:
        scope[_MINTED_SCOPE_KEY] = identity.owner
    return identity


async def owner_for_api_calls(request: Request[Any, Any, State]) -> None:
    """A ``before_request`` hook: in open mode, an API call from a browser without an owner
    cookie gets one, whatever the route (reading the cookie costs no Redis call). With a
    login in force the owner comes from the login: nothing to do."""
    if request.url.path.startswith("/api/") and login_tokens(request.app.state) is None:
        await identity_of(request)


async def identity_from_cookie_header(state: State, cookie_header: str | None) -> Identity:
    """``identity_of`` for a bare ASGI endpoint, from its ``Cookie`` header. A made-up owner
    is not remembered: such an endpoint only reads."""
    cookies = parse_cookie_string(cookie_header) if cookie_header else {}
    identity, _ = await _identity(state, cookies)
    return identity


def _secure(scope: Scope) -> bool:
    """Sent over HTTPS, to us or to the edge (nginx passes ``X-Forwarded-Proto``). Trusting
    the header can only hurt a client that lies: its browser then drops the cookie."""
    if scope.get("scheme") == "https":
        return True
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-proto":
            return bytes(value).split(b",")[0].strip().lower() == b"https"
    return False


def _set_cookie_header(owner: str, *, secure: bool) -> bytes:
    cookie: SimpleCookie = SimpleCookie()
    cookie[OWNER_COOKIE] = owner
    morsel = cookie[OWNER_COOKIE]
    morsel["path"] = "/"
    morsel["max-age"] = OWNER_COOKIE_MAX_AGE
    morsel["httponly"] = True
    morsel["samesite"] = "Lax"  # sent when following a link here, unlike the login's Strict
    if secure:
        morsel["secure"] = True
    return morsel.OutputString().encode("latin-1")


def owner_cookie_middleware(app: ASGIApp) -> ASGIApp:
    """Sets the ``chatrelay_owner`` cookie on a response whose request got a new owner."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                owner = cast("Mapping[str, Any]", scope).get(_MINTED_SCOPE_KEY)
                if owner is not None:
                    header = _set_cookie_header(owner, secure=_secure(scope))
                    headers = [*message.get("headers", ()), (b"set-cookie", header)]
                    message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_with_cookie)

    return middleware
