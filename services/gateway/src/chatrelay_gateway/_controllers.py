from __future__ import annotations

from typing import Any

import msgspec
from chatrelay_common import (
    NothingToRegenerateError,
    ReplyBusyError,
    SessionNotFoundError,
    SessionSettings,
    SessionStore,
    Snapshot,
    is_session_id,
)
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import ClientException, NotFoundException
from litestar.status_codes import HTTP_409_CONFLICT

from ._generation import Generations
from ._login import login_required
from ._schemas import CreateSession, PatchSettings, PostMessage, UnprocessableError, decode_body

__all__ = ["SessionController"]


class ConflictError(ClientException):
    status_code = HTTP_409_CONFLICT


def _checked(session_id: str) -> str:
    if not is_session_id(session_id):
        raise NotFoundException(detail="No such session")
    return session_id


class SessionController(Controller):
    path = "/api/sessions"
    guards = (login_required,)

    @post("/", status_code=201)
    async def create_session(
        self, request: Request[Any, Any, State], store: SessionStore, default_model: str
    ) -> dict[str, str]:
        body = decode_body(await request.body(), CreateSession, empty_ok=True)
        settings = SessionSettings(
            system=body.system, model=body.model or default_model, temperature=body.temperature
        )
        return {"id": await store.create(settings)}

    @get("/{session_id:str}")
    async def get_session(self, session_id: str, store: SessionStore) -> Snapshot:
        try:
            return await store.snapshot(_checked(session_id))
        except SessionNotFoundError:
            raise NotFoundException(detail="No such session") from None

    @patch("/{session_id:str}")
    async def patch_settings(
        self, session_id: str, request: Request[Any, Any, State], store: SessionStore
    ) -> dict[str, SessionSettings]:
        body = decode_body(await request.body(), PatchSettings)
        try:
            current = await store.settings(_checked(session_id))
            changes = {
                k: v for k, v in msgspec.structs.asdict(body).items() if v is not msgspec.UNSET
            }
            updated = msgspec.structs.replace(current, **changes)
            await store.set_settings(session_id, updated)
        except SessionNotFoundError:
            raise NotFoundException(detail="No such session") from None
        return {"settings": updated}

    @post("/{session_id:str}/messages", status_code=202)
    async def post_message(
        self,
        session_id: str,
        request: Request[Any, Any, State],
        store: SessionStore,
        generations: Generations,
    ) -> dict[str, str | None]:
        body = decode_body(await request.body(), PostMessage)
        if not body.content.strip():
            raise UnprocessableError(detail="Message content must not be blank")
        message_id, reply_id = await _begin(
            store, generations, _checked(session_id), body.content, body.replace_from
        )
        return {"message_id": message_id, "reply_id": reply_id}

    @post("/{session_id:str}/regenerate", status_code=202)
    async def regenerate(
        self, session_id: str, store: SessionStore, generations: Generations
    ) -> dict[str, str]:
        _, reply_id = await _begin(store, generations, _checked(session_id), None, None)
        return {"reply_id": reply_id}

    @delete("/{session_id:str}/messages", status_code=204)
    async def clear_messages(self, session_id: str, store: SessionStore) -> None:
        try:
            await store.clear(_checked(session_id))
        except SessionNotFoundError:
            raise NotFoundException(detail="No such session") from None
        except ReplyBusyError:
            raise ConflictError(detail="A reply is streaming; stop it first") from None

    @post("/{session_id:str}/stop", status_code=202)
    async def stop(self, session_id: str, store: SessionStore) -> dict[str, str | None]:
        """Idempotent: stopping when nothing streams is fine."""
        if not await store.exists(_checked(session_id)):
            raise NotFoundException(detail="No such session")
        return {"reply_id": await store.request_stop(session_id)}


async def _begin(
    store: SessionStore,
    generations: Generations,
    session_id: str,
    content: str | None,
    replace_from: str | None,
) -> tuple[str | None, str]:
    try:
        settings = await store.settings(session_id)
        ids = await store.begin_reply(
            session_id, model=settings.model, content=content, replace_from=replace_from
        )
    except SessionNotFoundError:
        raise NotFoundException(detail="No such session") from None
    except ReplyBusyError:
        raise ConflictError(detail="A reply is already streaming in this session") from None
    except NothingToRegenerateError:
        if content is None:
            raise ConflictError(detail="There is no answer to regenerate") from None
        raise UnprocessableError(detail="replace_from names no message of this session") from None
    generations.start(session_id, ids[1])
    return ids
