"""Share links, read-only: ``GET /api/shared/{token}`` (the snapshot),
``GET /api/shared/{token}/events`` (the session's own stream, through ``EventStream``) and
the page at ``GET /r/{token}``. No login in any mode: the token is the permission, and it
never reveals the session id (the token stands in for it as the snapshot's ``id``; no other
event carries a session id).

Revocation is told on the link's own channel (``ShareKeys.revoked``), which only its viewers
join, and not in the session's log: the log's ids stay as the API defines them, and the
owner's tabs never hear of it. A viewer joins that channel before it resolves the token, so
a revocation either makes the resolution fail (404) or reaches the viewer, which then writes
``revoked`` and ends its stream."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
from chatrelay_common import (
    REVOKED_FRAME,
    SessionNotFoundError,
    SessionStore,
    ShareKeys,
    ShareLinks,
    Snapshot,
    is_share_token,
)
from litestar import Controller, MediaType, Request, get
from litestar.datastructures import State
from litestar.exceptions import (
    NotFoundException,
    ServiceUnavailableException,
    TooManyRequestsException,
)
from litestar.response import File
from litestar.types import HTTPScope, Receive, Scope, Send
from redis.exceptions import RedisError

from ._controllers import STATIC_DIR, admitted, requested_event_id, shared_snapshots
from ._events import EventStream, StreamTiming
from ._fanout import Fanout, FanoutUnavailableError, Subscriber

__all__ = [
    "ShareViewers",
    "SharedController",
    "open_shared_events",
    "shared_events_token",
]


_EVENTS_PATH = re.compile(r"^/api/shared/([^/]+)/events/?$")
_NO_SUCH_LINK = "No such share link (it may have been revoked)"
# A viewer over the cap is told to come back in this many seconds.
_VIEWERS_RETRY_AFTER = 10


class ShareViewers:
    """How many viewer streams each share link has open in this process."""

    __slots__ = ("_counts", "_max")

    def __init__(self, max_viewers: int) -> None:
        self._max = max_viewers
        self._counts: dict[str, int] = {}

    def take(self, token: str) -> None:
        count = self._counts.get(token, 0)
        if count >= self._max:
            raise TooManyRequestsException(
                detail=f"This share link has {count} viewers here already; retry later",
                headers={"Retry-After": str(_VIEWERS_RETRY_AFTER)},
            )
        self._counts[token] = count + 1

    def release(self, token: str) -> None:
        count = self._counts.pop(token) - 1
        if count:
            self._counts[token] = count


def _links(state: State) -> ShareLinks:
    if "share_links" not in state:
        state.share_links = ShareLinks(state.redis)
    links: ShareLinks = state.share_links
    return links


async def _session_of(state: State, token: str) -> str:
    """The session a live token shows; 404 otherwise, 503 while Redis cannot tell."""
    try:
        session_id = await _links(state).session_of(token)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableException(detail="Share links are unavailable; retry soon") from exc
    if session_id is None:
        raise NotFoundException(detail=_NO_SUCH_LINK)
    return session_id


def shared_events_token(scope: HTTPScope) -> str | None:
    """The token of a ``GET /api/shared/{token}/events``, else None."""
    if scope["method"] != "GET":
        return None
    found = _EVENTS_PATH.match(scope["path"])
    return None if found is None else found.group(1)


async def _revocation(revocations: Subscriber) -> bytes:
    """Resolves once the link is revoked (to the frame that tells the viewer), or to b""
    when the fan-out closed the subscription (Redis lost, or shutting down)."""
    while not (batch := await revocations.take()):
        pass
    return REVOKED_FRAME if any(event is not None for event in batch) else b""


class _ViewerStream:
    """A viewer's ``EventStream``, and what it holds besides: its place under the viewer
    cap and its subscription to the link's revocation."""

    __slots__ = ("_ends", "_fanout", "_revocations", "_stream", "_token", "_viewers")

    def __init__(
        self,
        stream: EventStream,
        fanout: Fanout,
        revocations: Subscriber,
        ends: asyncio.Future[bytes],
        viewers: ShareViewers,
        token: str,
    ) -> None:
        self._stream = stream
        self._fanout = fanout
        self._revocations = revocations
        self._ends = ends
        self._viewers = viewers
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            self._ends.cancel()
            self._fanout.leave(ShareKeys(self._token).revoked, self._revocations)
            self._viewers.release(self._token)


async def _open_shared_events(state: State, scope: HTTPScope, token: str) -> _ViewerStream:
    """The checks: the event id (400), the token's shape (404), the fan-out (503), the
    viewer cap (429), then, subscribed to its revocation, the token itself (404)."""
    after = requested_event_id(scope)
    if not is_share_token(token):
        raise NotFoundException(detail=_NO_SUCH_LINK)
    unavailable = ServiceUnavailableException(detail="Live events are unavailable; retry soon")
    fanout: Fanout = state.fanout
    if not fanout.connected or fanout.draining:
        raise unavailable
    viewers: ShareViewers = state.share_viewers
    viewers.take(token)
    channel = ShareKeys(token).revoked
    try:
        try:
            revocations = await fanout.join(channel)
        except FanoutUnavailableError as exc:
            raise unavailable from exc
        try:
            session_id = await _session_of(state, token)
        except BaseException:
            fanout.leave(channel, revocations)
            raise
    except BaseException:
        viewers.release(token)
        raise
    ends = asyncio.ensure_future(_revocation(revocations))
    timing: StreamTiming = state.stream_timing
    stream = EventStream(
        state.store,
        fanout,
        session_id,
        after,
        timing,
        state.opening,
        shared_snapshots(state),
        public_id=token,
        ends=ends,
    )
    return _ViewerStream(stream, fanout, revocations, ends, viewers, token)


async def open_shared_events(
    state: State, scope: HTTPScope, send: Send, token: str
) -> _ViewerStream | None:
    """``GET /api/shared/{token}/events`` as a bare ASGI endpoint, as ``open_events`` is
    for a session (and for the same reasons): the stream to run, else None once the error
    is answered."""
    return await admitted(
        state, send, "a share link", lambda: _open_shared_events(state, scope, token)
    )


class SharedController(Controller):
    """Reads only: there is no write under ``/api/shared/``, and no login in any mode."""

    include_in_schema = False

    @get("/api/shared/{token:str}")
    async def snapshot(self, token: str, request: Request[Any, Any, State]) -> Snapshot:
        """The session's snapshot, with the token as its ``id``."""
        state = request.app.state
        session_id = await _session_of(state, token)
        store: SessionStore = state.store
        try:
            snapshot = await store.snapshot(session_id)
        except SessionNotFoundError as exc:  # deleted since the token was read
            raise NotFoundException(detail=_NO_SUCH_LINK) from exc
        return msgspec.structs.replace(snapshot, id=token)

    @get("/r/{token:str}")
    async def page(self, token: str) -> File:
        """The page, which shows the link read-only (it reads the token from its path).
        A token is checked when the page asks for the conversation, not here: the page
        explains a revoked link itself."""
        if not is_share_token(token):
            raise NotFoundException(detail=_NO_SUCH_LINK)
        return File(
            STATIC_DIR / "index.html", content_disposition_type="inline", media_type=MediaType.HTML
        )
