from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from chatrelay_common import AUTH_COOKIE, LoginTokens, SessionStore, is_session_id
from litestar import Controller, MediaType, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    NotAuthorizedException,
    NotFoundException,
    ServiceUnavailableException,
)
from litestar.handlers import BaseRouteHandler
from litestar.response import File, Redirect
from redis.exceptions import RedisError

from ._events import EventStream, StreamTiming
from ._fanout import Fanout
from ._settings import WebSettings

__all__ = ["EventsController", "PageController"]

STATIC_DIR = Path(__file__).parent / "static"
_EVENT_ID = re.compile(r"^[0-9]{1,18}$")


async def _authenticated(connection: ASGIConnection[Any, Any, Any, State]) -> bool:
    """No password set, or a valid login cookie (one signer per process, made on first use)."""
    state = connection.app.state
    if "login_tokens" not in state:
        settings: WebSettings = state.settings
        state.login_tokens = settings.login_tokens(state.redis)
    tokens: LoginTokens | None = state.login_tokens
    if tokens is None:
        return True
    try:
        return await tokens.verify(connection.cookies.get(AUTH_COOKIE))
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableException(detail="Sign-in check unavailable; retry soon") from exc


async def login_required(
    connection: ASGIConnection[Any, Any, Any, State], _: BaseRouteHandler
) -> None:
    if not await _authenticated(connection):
        raise NotAuthorizedException(detail="Login required")


def _last_event_id(request: Request[Any, Any, State]) -> int | None:
    """From the ``Last-Event-ID`` header (EventSource's reconnect), else ``?last_event_id=``."""
    raw = request.headers.get("last-event-id")
    if raw is None:
        raw = request.query_params.get("last_event_id")
    if raw is None or raw == "":
        return None
    if not _EVENT_ID.match(raw.strip()):
        raise ClientException(detail="Last-Event-ID must be a non-negative integer event id")
    return int(raw)


class EventsController(Controller):
    path = "/api/sessions"
    guards = (login_required,)

    @get("/{session_id:str}/events")
    async def events(
        self,
        session_id: str,
        request: Request[Any, Any, State],
        store: SessionStore,
        fanout: Fanout,
        settings: WebSettings,
    ) -> EventStream:
        last_event_id = _last_event_id(request)
        unavailable = ServiceUnavailableException(detail="Live events are unavailable; retry soon")
        if not is_session_id(session_id):
            raise NotFoundException(detail="No such session")
        try:
            exists = await store.exists(session_id)
        except (RedisError, OSError) as exc:
            raise unavailable from exc
        if not exists:
            raise NotFoundException(detail="No such session")
        if not fanout.connected:
            raise unavailable
        timing = StreamTiming(settings.heartbeat_seconds, settings.stall_seconds)
        return EventStream(store, fanout, session_id, last_event_id, timing)


class PageController(Controller):
    include_in_schema = False

    @get(["/", "/s/{session_id:str}"])
    async def page(self, request: Request[Any, Any, State], settings: WebSettings) -> Response[Any]:
        if not await _authenticated(request):
            return Redirect(f"/login?{urlencode({'next': request.url.path})}")
        return File(
            STATIC_DIR / "index.html", content_disposition_type="inline", media_type=MediaType.HTML
        )

    @get("/login")
    async def login(self) -> File:
        return File(
            STATIC_DIR / "login.html", content_disposition_type="inline", media_type=MediaType.HTML
        )
