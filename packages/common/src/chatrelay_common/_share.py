"""Share links: a token that shows one session read-only and live, and never its id.

A session has at most one live token (``share`` in its hash); the token's key holds the
session id and lives as long as the session (its TTL is renewed to the session's whenever the
link is shared again or opened). Revoking deletes both and tells the link's viewers on its
own channel, not in the session's log: the log's ids and its owner's tabs are untouched."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar, Final, cast

import msgspec
from redis.asyncio import Redis

from ._events import encode_sse, encode_wire
from ._keys import HASH_FIELDS, SHARE_REVOKED_SUFFIX, SessionKeys, ShareKeys
from ._store import SessionNotFoundError, _script, new_id

__all__ = ["REVOKED_FRAME", "Revoked", "ShareLink", "ShareLinks", "is_share_token"]

# 192 bits: 32 characters, never the length of a session id (22), so neither passes for the
# other.
_TOKEN_BYTES: Final = 24
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32}")
_SHARE = HASH_FIELDS["SHARE"]


def is_share_token(text: str) -> bool:
    """Shaped like a token from ``ShareLinks.share`` (checked before it goes into a key)."""
    return _TOKEN.fullmatch(text) is not None


class Revoked(msgspec.Struct):
    """Viewer-only: the share link was revoked, and the stream ends after this. It is not in
    the session's log and has no id (a viewer has nothing to resume)."""

    name: ClassVar[str] = "revoked"


# What a viewer's stream writes last (no ``id:`` line, like ``reset``).
_REVOKED_DATA: Final = msgspec.json.encode(Revoked())
REVOKED_FRAME: Final = encode_sse(None, Revoked.name, _REVOKED_DATA)

# Besides the store's (which has ``SHARE_PREFIX``: the delete script removes the link too).
_CONSTANTS: Final[dict[str, str | bytes]] = {
    "SHARE_REVOKED_SUFFIX": SHARE_REVOKED_SUFFIX,
    # Read by the web's fan-out as any pub/sub message is; only its arrival matters.
    "REVOKED_WIRE": encode_wire(0, Revoked.name, _REVOKED_DATA),
}


@dataclass(frozen=True, slots=True)
class ShareLink:
    token: str
    # False: the session already had this token.
    created: bool


class ShareLinks:
    """Making, revoking and resolving share tokens. ``redis`` must not decode responses."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._share = redis.register_script(_script("share", constants=_CONSTANTS))
        self._revoke = redis.register_script(_script("revoke_share", constants=_CONSTANTS))

    async def share(self, session_id: str) -> ShareLink:
        """The session's live token, made now unless it has one."""
        token = new_id(_TOKEN_BYTES)
        out = await self._share(
            keys=[SessionKeys(session_id).session, ShareKeys(token).link],
            args=[token, session_id],
        )
        if not out:
            raise SessionNotFoundError(session_id)
        current, created = out
        return ShareLink(current.decode(), created == 1)

    async def revoke(self, session_id: str) -> None:
        """Idempotent: a session without a link is fine."""
        if not await self._revoke(keys=[SessionKeys(session_id).session]):
            raise SessionNotFoundError(session_id)

    async def session_of(self, token: str) -> str | None:
        """The session a live token shows, else None; renews the token's TTL to the
        session's, so that a link opened now and then lives as long as its session."""
        if not is_share_token(token):
            return None
        link = ShareKeys(token).link
        raw = await cast("Awaitable[bytes | None]", self._redis.get(link))
        if raw is None:
            return None
        session_id = raw.decode()
        session = SessionKeys(session_id).session
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(session, _SHARE)
            pipe.pttl(session)
            current, ttl = await pipe.execute()
        if current is None or current.decode() != token:
            return None  # revoked (or its session is gone) since the key was read
        if ttl > 0:
            await self._redis.pexpire(link, ttl)
        return session_id
