"""The caller's conversation list (``GET /api/sessions``), deleting a session, and exporting
one as Markdown or JSON. The owner comes from ``identity_of``; the store's ``History`` does
the Redis side."""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec
from chatrelay_common import (
    History,
    InvalidCursorError,
    Message,
    SessionStore,
    Snapshot,
)
from chatrelay_litestar import identity_of
from litestar import Controller, Request, Response, delete, get
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import Parameter

from ._errors import checked_session_id
from ._login import login_required
from ._schemas import UnprocessableError, error_responses
from ._settings import GatewaySettings

__all__ = [
    "HistoryRoutes",
    "SessionList",
    "SessionListItem",
    "history_of",
    "markdown",
]

DEFAULT_PAGE_SIZE: Final = 20


class SessionListItem(msgspec.Struct):
    id: str
    title: str
    updated_at: str
    message_count: int
    model: str


class SessionList(msgspec.Struct):
    sessions: list[SessionListItem]
    next: str | None


def _settings_of(state: State) -> GatewaySettings:
    settings: GatewaySettings = state.settings
    return settings


def history_of(state: State) -> History:
    """One per process, made on first use (after the store exists)."""
    if "history" not in state:
        settings = _settings_of(state)
        state.history = History(
            state.store,
            search_max_sessions=settings.search_max_sessions,
            search_max_bytes=settings.search_max_bytes,
        )
    history: History = state.history
    return history


_EXPORT_FORMATS: Final = ("markdown", "json")
_UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9 ._-]+")


def _filename(title: str, extension: str) -> str:
    """An ASCII file name from the title: other characters become ``_``."""
    safe = _UNSAFE_IN_FILENAME.sub("_", title).strip(" ._")[:80].strip(" ._")
    return f"{safe or 'conversation'}.{extension}"


def _markdown_heading(message: Message) -> str:
    heading = "## User" if message.role == "user" else "## Assistant"
    if isinstance(message.model, str) and message.model:
        heading += f" · {message.model}"
    if message.status != "complete":
        heading += f" ({message.status})"
    return heading


def markdown(snapshot: Snapshot) -> str:
    """``# title``, then per message: a heading with its role (and an assistant's model, and
    its status unless complete), its time in italics, then its text."""
    title = snapshot.title if isinstance(snapshot.title, str) else ""
    parts = [f"# {title or 'Untitled conversation'}\n"]
    for message in snapshot.messages:
        parts.append(f"\n{_markdown_heading(message)}\n")
        if message.created_at:
            parts.append(f"_{message.created_at}_\n")
        parts.append(f"\n{message.content}\n")
        if isinstance(message.error, msgspec.Struct):
            parts.append(f"\n> Error: {message.error.message}\n")
    return "".join(parts)


class HistoryRoutes(Controller):
    """The list, delete and export routes of ``/api/sessions``. ``SessionController`` (the
    path's other routes) inherits them: Litestar wants one controller per path."""

    path = "/api/sessions"
    guards = (login_required,)

    @get("/", responses=error_responses(422))
    async def list_sessions(
        self,
        request: Request[Any, Any, State],
        q: Annotated[str | None, Parameter(description="Search titles and message text")] = None,
        cursor: Annotated[str | None, Parameter(description="`next` of the last page")] = None,
        limit: Annotated[
            int | None, Parameter(description="Sessions per page (20, or the maximum if less)")
        ] = None,
    ) -> SessionList:
        """The caller's sessions, newest activity first; with ``q``, those whose title or
        message text holds it (case-insensitive), among the newest
        ``GATEWAY_SEARCH_MAX_SESSIONS``. Follow ``next`` until it is null; a search page may
        hold fewer than ``limit`` sessions (even none) while ``next`` is not null."""
        history, settings = history_of(request.app.state), _settings_of(request.app.state)
        if limit is None:
            limit = min(DEFAULT_PAGE_SIZE, settings.sessions_page_max)
        if not 1 <= limit <= settings.sessions_page_max:
            raise UnprocessableError(detail=f"limit must be 1 to {settings.sessions_page_max}")
        if q is not None and len(q) > settings.search_max_query_chars:
            raise UnprocessableError(
                detail=f"q must be at most {settings.search_max_query_chars} characters"
            )
        owner = (await identity_of(request)).owner
        try:
            page = await history.list(owner, limit=limit, cursor=cursor, query=q or None)
        except InvalidCursorError as exc:
            raise ValidationException(detail=f"Invalid cursor: {exc}") from None
        return SessionList(
            sessions=[
                SessionListItem(s.id, s.title, s.updated_at, s.message_count, s.model)
                for s in page.sessions
            ],
            next=page.next,
        )

    @delete("/{session_id:str}", status_code=204, responses=error_responses(404))
    async def delete_session(self, session_id: str, request: Request[Any, Any, State]) -> None:
        """Stops its reply, tells its tabs (``deleted``, then their streams end) and removes
        it from Redis at once; it is a 404 from then on."""
        await history_of(request.app.state).delete(checked_session_id(session_id))

    @get("/{session_id:str}/export", responses=error_responses(404, 422))
    async def export_session(
        self,
        session_id: str,
        store: SessionStore,
        export_format: Annotated[
            str, Parameter(query="format", description="markdown or json")
        ] = "markdown",
    ) -> Response[bytes]:
        """A download: ``markdown`` (title, then each message with its role, model and time)
        or ``json`` (exactly the snapshot)."""
        if export_format not in _EXPORT_FORMATS:
            raise UnprocessableError(detail="format must be markdown or json")
        snapshot = await store.snapshot(checked_session_id(session_id))
        title = snapshot.title if isinstance(snapshot.title, str) else ""
        if export_format == "json":
            body, media_type, extension = msgspec.json.encode(snapshot), "application/json", "json"
        else:
            body = markdown(snapshot).encode()
            media_type, extension = "text/markdown", "md"  # Litestar adds the charset
        disposition = f'attachment; filename="{_filename(title, extension)}"'
        return Response(body, media_type=media_type, headers={"Content-Disposition": disposition})
