from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

from chatrelay_common import AUTH_COOKIE, SessionStore, is_session_id
from chatrelay_litestar import (
    authenticated,
    identity_from_cookie_header,
    identity_of,
    may_use_session,
)
from litestar import Controller, MediaType, Request, Response, get
from litestar._parsers import parse_cookie_string
from litestar.datastructures import State
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    ServiceUnavailableException,
)
from litestar.response import File, Redirect
from litestar.types import HTTPScope, Send
from redis.exceptions import RedisError

from ._events import EventStream, SharedSnapshots, StreamTiming
from ._fanout import Fanout
from ._settings import WebSettings
from ._wire_module import WIRE_MODULE

__all__ = [
    "STATIC_DIR",
    "PageController",
    "admitted",
    "answer_error",
    "events_session_id",
    "open_events",
    "requested_event_id",
    "shared_snapshots",
]

logger = logging.getLogger("chatrelay")

_Stream = TypeVar("_Stream")

STATIC_DIR = Path(__file__).parent / "static"
_EVENT_ID = re.compile(r"^[0-9]{1,18}$")
_EVENTS_PATH = re.compile(r"^/api/sessions/([^/]+)/events/?$")  # Litestar ignored a trailing /


class _SharedExists:
    """Tabs asking whether the same session exists while a read is in flight share it: a
    burst of thousands of tabs on one session asks Redis a few times, not once per tab.
    Only a yes is shared (sessions are only ever created before their tabs connect, and
    leave by expiry): a no may predate the session, so the tab reads again itself."""

    __slots__ = ("_reads", "_store")

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._reads: dict[str, asyncio.Future[bool]] = {}

    async def __call__(self, session_id: str) -> bool:
        read = self._reads.get(session_id)
        if read is not None and await asyncio.shield(read):
            return True
        read = self._reads[session_id] = asyncio.ensure_future(self._store.exists(session_id))
        read.add_done_callback(lambda _: self._forget(session_id, read))
        return await asyncio.shield(read)

    def _forget(self, session_id: str, read: asyncio.Future[bool]) -> None:
        if self._reads.get(session_id) is read:
            del self._reads[session_id]
        if not read.cancelled():
            read.exception()  # retrieved: every waiter may have left


def _event_id(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    if not _EVENT_ID.match(raw.strip()):
        raise ClientException(detail="Last-Event-ID must be a non-negative integer event id")
    return int(raw)


def requested_event_id(scope: HTTPScope) -> int | None:
    """The ``Last-Event-ID`` header (EventSource sends it when it reconnects), else
    ``?last_event_id=`` (a first load may ask); 400 when malformed."""
    raw = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"last-event-id"), None)
    if raw is None:
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        raw = next((value for key, value in query if key == "last_event_id"), None)
    return _event_id(raw)


def shared_snapshots(state: State) -> SharedSnapshots:
    """The process's one ``SharedSnapshots``, made on first use."""
    if "shared_snapshots" not in state:
        state.shared_snapshots = SharedSnapshots(state.store)
    snapshots: SharedSnapshots = state.shared_snapshots
    return snapshots


def events_session_id(scope: HTTPScope) -> str | None:
    """The session of a ``GET /api/sessions/{session_id}/events``, else None."""
    if scope["method"] != "GET":
        return None
    found = _EVENTS_PATH.match(scope["path"])
    return None if found is None else found.group(1)


async def _open_events(
    state: State, scope: HTTPScope, session_id: str, opening: asyncio.Semaphore
) -> EventStream:
    """The checks, in the order (and with the answers) the API gives: login (401), the
    ``Last-Event-ID`` header or ``?last_event_id=`` (400), the session (404), Redis (503)."""
    cookies = [value.decode("latin-1") for name, value in scope["headers"] if name == b"cookie"]
    cookie = parse_cookie_string("; ".join(cookies)).get(AUTH_COOKIE) if cookies else None
    if not await authenticated(state, cookie):
        raise NotAuthorizedException(detail="Login required")
    after = requested_event_id(scope)
    unavailable = ServiceUnavailableException(detail="Live events are unavailable; retry soon")
    if not is_session_id(session_id):
        raise NotFoundException(detail="No such session")
    store: SessionStore = state.store
    if "shared_exists" not in state:
        state.shared_exists = _SharedExists(store)
    shared_exists: _SharedExists = state.shared_exists
    try:
        exists = await shared_exists(session_id)
    except (RedisError, OSError) as exc:
        raise unavailable from exc
    if not exists:
        raise NotFoundException(detail="No such session")
    if state.settings.accounts:  # another account's session: the same 404
        identity = await identity_from_cookie_header(state, "; ".join(cookies))
        try:
            mine = await may_use_session(state, identity, session_id)
        except (RedisError, OSError) as exc:
            raise unavailable from exc
        if not mine:
            raise NotFoundException(detail="No such session")
    fanout: Fanout = state.fanout
    if not fanout.connected or fanout.draining:
        raise unavailable
    timing: StreamTiming = state.stream_timing
    return EventStream(store, fanout, session_id, after, timing, opening, shared_snapshots(state))


async def answer_error(
    send: Send, status: int, detail: str, extra_headers: Mapping[str, str] | None = None
) -> None:
    """An error as the API gives them (``{"detail": ...}``), from a bare ASGI endpoint."""
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def open_events(
    state: State, scope: HTTPScope, send: Send, session_id: str
) -> EventStream | None:
    """``GET /api/sessions/{session_id}/events`` as a bare ASGI endpoint, in front of
    Litestar's router: thousands of these stay open for hours, and Litestar's request,
    middleware and handler frames (several KiB each) would stay alive with every one; its
    per-request setup was also most of the loop's stall while thousands connect at once.
    Returns the stream to run once its checks pass, else answers the error and returns None
    (the caller awaits the stream itself: one frame fewer alive per open stream).

    At most ``WEB_MAX_OPENING_STREAMS`` streams run their checks (and, later, their first
    read) at once; the rest wait their turn. A burst of thousands of tabs then costs a few
    small loop turns instead of one long one, and Redis reads go out over a few pooled
    connections instead of a new connection per tab."""
    opening: asyncio.Semaphore = state.opening
    return await admitted(
        state, send, "a session", lambda: _open_events(state, scope, session_id, opening)
    )


async def admitted(
    state: State, send: Send, what: str, open_stream: Callable[[], Awaitable[_Stream]]
) -> _Stream | None:
    """``open_stream()`` once one of the ``WEB_MAX_OPENING_STREAMS`` places is free: the
    stream, or None once its error is answered (an HTTP exception as the API gives it, any
    other as a logged 500)."""
    opening: asyncio.Semaphore = state.opening
    try:
        async with opening:
            return await open_stream()
    except HTTPException as exc:
        await answer_error(send, exc.status_code, exc.detail, exc.headers)
    except Exception:
        logger.exception("unhandled error opening the events of %s", what)
        await answer_error(send, 500, "Internal server error")
    return None


class PageController(Controller):
    include_in_schema = False

    @get(["/", "/s/{session_id:str}"])
    async def page(self, request: Request[Any, Any, State], settings: WebSettings) -> Response[Any]:
        if not await authenticated(request.app.state, request.cookies.get(AUTH_COOKIE)):
            return Redirect(f"/login?{urlencode({'next': request.url.path})}")
        await identity_of(request)  # a browser's first visit gets its owner cookie here
        return File(
            STATIC_DIR / "index.html", content_disposition_type="inline", media_type=MediaType.HTML
        )

    @get("/wire.js", media_type="text/javascript; charset=utf-8")
    async def wire_module(self) -> str:
        """The event names the page's modules import (see ``_wire_module``)."""
        return WIRE_MODULE

    @get("/login")
    async def login(self) -> File:
        return File(
            STATIC_DIR / "login.html", content_disposition_type="inline", media_type=MediaType.HTML
        )
