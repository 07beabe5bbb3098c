from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from chatrelay_common import (
    TITLE_MAX_CHARS,
    SessionSettings,
    SessionStore,
    Snapshot,
    clean_title,
)
from chatrelay_common._store import ModelNotAllowedError
from chatrelay_litestar import identity_of
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotFoundException

from ._errors import checked_session_id
from ._generation import Generations, chat_body
from ._history import HistoryRoutes, history_of
from ._limits import ReplySlots
from ._login import login_required
from ._models import ModelCatalog
from ._schemas import (
    BeganReply,
    CreatedSession,
    CreateSession,
    ModelList,
    PatchSettings,
    PostMessage,
    StartedReply,
    StopResult,
    UnprocessableError,
    UpdatedSettings,
    error_responses,
)

__all__ = ["ModelsController", "SessionController"]


def _not_allowed(
    model: str, allowed_models: tuple[str, ...], *, stored: bool
) -> UnprocessableError:
    where = "This session's model" if stored else "Model"
    fix = "; pick another with PATCH" if stored else ""
    return UnprocessableError(
        detail=f"{where} {model!r} is not allowed here{fix}. Allowed: {', '.join(allowed_models)}"
    )


def _allowed(model: str, allowed_models: tuple[str, ...]) -> str:
    if model not in allowed_models:
        raise _not_allowed(model, allowed_models, stored=False)
    return model


class ModelsController(Controller):
    path = "/api/models"
    guards = (login_required,)

    @get("/", responses=error_responses())
    async def list_models(self, default_model: str, model_catalog: ModelCatalog) -> ModelList:
        """The models a session may use (those the upstream serves, when it says), and the
        one it gets by default."""
        return ModelList.of(await model_catalog.models(), default_model)


@dataclass(frozen=True, slots=True)
class _Reply:
    """What starting a reply needs, from the handler's dependencies."""

    store: SessionStore
    generations: Generations
    allowed_models: tuple[str, ...]
    slots: ReplySlots
    client: str


async def _replies(request: Request[Any, Any, State]) -> _Reply:
    # Read from the app state, not taken as four dependencies: Litestar resolves the
    # dependencies of one level in an anyio task group, a task each (py-spy: a tenth of the
    # gateway's CPU per POST when 100 arrive at once).
    state = request.app.state
    if state.settings.accounts:  # the reply cap is per account (the guard found who)
        client = (await identity_of(request)).owner
    else:
        # uvicorn sets the client from X-Forwarded-For when the peer is a trusted proxy.
        client = request.client.host if request.client else "unknown"
    return _Reply(state.store, state.generations, state.allowed_models, state.reply_slots, client)


class SessionController(HistoryRoutes):  # which is a Controller, with more of this path
    path = "/api/sessions"
    guards = (login_required,)
    # The reply-starting handlers share what starting a reply takes.
    dependencies = {"replies": Provide(_replies)}  # noqa: RUF012 (Litestar reads it per instance)

    @post("/", status_code=201, responses=error_responses(400, 413, 422))
    async def create_session(
        self,
        request: Request[Any, Any, State],
        store: SessionStore,
        default_model: str,
        allowed_models: tuple[str, ...],
        data: CreateSession | None = None,
    ) -> CreatedSession:
        body = data or CreateSession()
        settings = SessionSettings(
            system=body.system,
            model=_allowed(body.model or default_model, allowed_models),
            temperature=body.temperature,
        )
        owner = (await identity_of(request)).owner
        return CreatedSession(id=await store.create(settings, owner=owner))

    @get("/{session_id:str}", responses=error_responses(404))
    async def get_session(self, session_id: str, store: SessionStore) -> Snapshot:
        return await store.snapshot(checked_session_id(session_id))

    @patch("/{session_id:str}", responses=error_responses(400, 404, 413, 422))
    async def patch_settings(
        self,
        request: Request[Any, Any, State],
        session_id: str,
        data: PatchSettings,
        store: SessionStore,
        allowed_models: tuple[str, ...],
    ) -> UpdatedSettings:
        checked_session_id(session_id)
        title = None if isinstance(data.title, msgspec.UnsetType) else clean_title(data.title)
        if title is None and isinstance(data.title, str):
            raise UnprocessableError(
                detail=f"title must be 1 to {TITLE_MAX_CHARS} characters once trimmed (control "
                "characters count as spaces)"
            )
        if isinstance(data.model, str):
            _allowed(data.model, allowed_models)
        if title is not None:
            await history_of(request.app.state).set_title(session_id, title)
        # One atomic merge: two concurrent PATCHes of different fields both survive.
        settings = await store.update_settings(session_id, data.changes())
        return UpdatedSettings(settings, msgspec.UNSET if title is None else title)

    @post(
        "/{session_id:str}/messages",
        status_code=202,
        responses=error_responses(400, 404, 409, 413, 422),
    )
    async def post_message(
        self,
        session_id: str,
        data: PostMessage,
        replies: _Reply,
    ) -> BeganReply:
        if not data.content.strip():
            raise UnprocessableError(detail="Message content must not be blank")
        message_id, reply_id = await _begin(
            replies,
            checked_session_id(session_id),
            data.content,
            data.replace_from,
        )
        assert message_id is not None  # a sent message always has an id
        return BeganReply(message_id=message_id, reply_id=reply_id)

    @post(
        "/{session_id:str}/regenerate",
        status_code=202,
        responses=error_responses(404, 409, 413, 422),
    )
    async def regenerate(
        self,
        session_id: str,
        replies: _Reply,
    ) -> StartedReply:
        _, reply_id = await _begin(
            replies,
            checked_session_id(session_id),
            None,
            None,
        )
        return StartedReply(reply_id=reply_id)

    @delete("/{session_id:str}/messages", status_code=204, responses=error_responses(404, 409))
    async def clear_messages(self, session_id: str, store: SessionStore) -> None:
        await store.clear(checked_session_id(session_id))

    @post("/{session_id:str}/stop", status_code=202, responses=error_responses(404))
    async def stop(self, session_id: str, store: SessionStore) -> StopResult:
        """Idempotent: stopping when nothing streams is fine."""
        if not await store.exists(checked_session_id(session_id)):
            raise NotFoundException(detail="No such session")
        return StopResult(reply_id=await store.request_stop(session_id))


async def _begin(
    reply: _Reply, session_id: str, content: str | None, replace_from: str | None
) -> tuple[str | None, str]:
    reply.slots.take(reply.client)
    try:
        # One round trip: the store checks the session's model against the allowed ones
        # before it writes, and returns what the upstream request needs.
        try:
            began = await reply.store.start_reply(
                session_id,
                allowed_models=reply.allowed_models,
                content=content,
                replace_from=replace_from,
            )
        except ModelNotAllowedError as exc:
            # The operator may have narrowed OPENAI_MODELS since this session chose it.
            raise _not_allowed(exc.model, reply.allowed_models, stored=True) from None
        request = chat_body(began.settings, began.history)
        task = reply.generations.start(session_id, began.reply_id, request)
    except BaseException:
        reply.slots.release(reply.client)
        raise
    reply.slots.release_when_done(reply.client, task)
    return began.message_id, began.reply_id
