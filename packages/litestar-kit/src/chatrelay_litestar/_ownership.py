"""Accounts: a session belongs to the account that made it. To any other account it does not
exist: every route naming it answers 404 with the same body as an unknown session, so an id
alone tells nobody whether a conversation is there. Open and ``SITE_PASSWORD`` modes: the
session id is the key, as before (the lists are per owner, reading is not)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, cast

from chatrelay_common import ServiceSettings, SessionKeys
from chatrelay_common._keys import HASH_FIELDS
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.handlers import BaseRouteHandler
from redis.asyncio import Redis

from ._identity import Identity, identity_of

__all__ = ["NO_SUCH_SESSION", "may_use_session", "session_owner_guard"]

NO_SUCH_SESSION = "No such session"
_OWNER = HASH_FIELDS["OWNER"]


async def may_use_session(state: State, identity: Identity, session_id: str) -> bool:
    """Whether ``identity`` may read and write ``session_id``: always, but with accounts only
    its creator (a session made before owners were recorded has none: nobody)."""
    settings: ServiceSettings = state.settings
    if not settings.accounts:
        return True
    redis: Redis = state.redis
    owner = await cast(
        "Awaitable[bytes | None]", redis.hget(SessionKeys(session_id).session, _OWNER)
    )
    return owner is not None and owner.decode() == identity.owner


async def session_owner_guard(
    connection: ASGIConnection[Any, Any, Any, State], _: BaseRouteHandler
) -> None:
    """For every route with a ``session_id`` path parameter: 404 for another account's
    session (401 without a login, as ``login_required``)."""
    session_id = connection.path_params.get("session_id")
    state = connection.app.state
    if session_id is None or not state.settings.accounts:
        return
    if not await may_use_session(state, await identity_of(connection), session_id):
        raise NotFoundException(detail=NO_SUCH_SESSION)
