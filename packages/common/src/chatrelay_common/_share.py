"""Share links: a token that shows one session read-only and live, and never its id.

A session has at most one live token (``share`` in its hash); the token's key holds the
session id and lives as long as the session (its TTL is renewed to the session's whenever the
link is shared again or opened). Revoking deletes both and tells the link's viewers on its
own channel, not in the session's log: the log's ids and its owner's tabs are untouched.

On one Redis, sharing and revoking are one script each. On a Redis Cluster the session and the
link's key live in different slots, which no script spans, so they are steps, ordered so that
a crash between any two leaves nothing unsafe: a link's key is made before the session names
it and removed before the session forgets it, and a token resolves only while both hold
(``session_of``). The revocation notice goes to the link's sharded channel (SPUBLISH), which
the web's fan-out joins there."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

import msgspec
from redis.asyncio import Redis, RedisCluster

from ._events import encode_sse, encode_wire
from ._keys import HASH_FIELDS, SHARE_REVOKED_SUFFIX, SessionKeys, ShareKeys
from ._redis import AnyRedis
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
# Read by the web's fan-out as any pub/sub message is; only its arrival matters.
_REVOKED_WIRE: Final = encode_wire(0, Revoked.name, _REVOKED_DATA)

# Besides the store's (which has ``SHARE_PREFIX``: the delete script removes the link too).
_CONSTANTS: Final[dict[str, str | bytes]] = {
    "SHARE_REVOKED_SUFFIX": SHARE_REVOKED_SUFFIX,
    "REVOKED_WIRE": _REVOKED_WIRE,
}


@dataclass(frozen=True, slots=True)
class ShareLink:
    token: str
    # False: the session already had this token.
    created: bool


class ShareLinks:
    """Making, revoking and resolving share tokens. ``redis`` must not decode responses."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis
        self._cluster = isinstance(redis, RedisCluster)
        # The cluster client runs scripts too (routed by their first key); redis-py types the
        # method as the plain client's.
        register = cast("Redis", redis).register_script
        self._share = register(_script("share", constants=_CONSTANTS))
        self._revoke = register(_script("revoke_share", constants=_CONSTANTS))
        self._swap = register(_script("swap_share"))

    async def share(self, session_id: str) -> ShareLink:
        """The session's live token, made now unless it has one."""
        if self._cluster:
            return await self._share_in_steps(session_id)
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
        if self._cluster:
            await self._revoke_in_steps(session_id)
        elif not await self._revoke(keys=[SessionKeys(session_id).session]):
            raise SessionNotFoundError(session_id)

    async def _ttl_and_token(self, session_id: str) -> tuple[int, str]:
        """The session's TTL in ms (-2: no such session) and the token it names ('' none)."""
        session = SessionKeys(session_id).session
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.pttl(session)
            pipe.hget(session, _SHARE)
            ttl, token = await pipe.execute()
        return int(ttl), "" if token is None else token.decode()

    async def _outlive(self, link: str, ttl: int) -> bool:
        """The link's key lives as long as its session (``ttl`` ms, -1: for ever); False when
        the key is gone."""
        redis: Any = self._redis
        if ttl > 0:
            return bool(await redis.pexpire(link, ttl))
        if not await redis.exists(link):
            return False
        await redis.persist(link)
        return True

    async def _share_in_steps(self, session_id: str) -> ShareLink:
        """``share.lua`` on a Redis Cluster."""
        session = SessionKeys(session_id).session
        while True:  # again only when another call changed the session's link meanwhile
            ttl, current = await self._ttl_and_token(session_id)
            if ttl == -2:
                raise SessionNotFoundError(session_id)
            if current and await self._outlive(ShareKeys(current).link, ttl):
                return ShareLink(current, created=False)
            token = new_id(_TOKEN_BYTES)
            link = ShareKeys(token).link
            # The key first: it leads nowhere until the session names it (``session_of``),
            # so a crash before that leaves a dead key that expires with the session.
            expiry = ttl if ttl > 0 else None
            await cast("Awaitable[object]", self._redis.set(link, session_id, px=expiry))
            swapped = await self._swap(keys=[session], args=[current, token])
            if swapped and swapped[1] == 1:
                return ShareLink(token, created=True)
            await cast("Awaitable[int]", self._redis.delete(link))
            if not swapped:
                raise SessionNotFoundError(session_id)

    async def _revoke_in_steps(self, session_id: str) -> None:
        """``revoke_share.lua`` on a Redis Cluster. The link's key goes first, so the token
        resolves no more; then its viewers are told (they joined its channel before they
        resolved it: each either failed to resolve it or hears this); then the session
        forgets it. A crash between steps leaves the session naming a dead token, which a
        revoke done again finishes off (and a share replaces)."""
        ttl, token = await self._ttl_and_token(session_id)
        if ttl == -2:
            raise SessionNotFoundError(session_id)
        if not token:
            return
        keys = ShareKeys(token)
        await cast("Awaitable[int]", self._redis.delete(keys.link))
        await self._redis.execute_command("SPUBLISH", keys.revoked, _REVOKED_WIRE)
        await self._swap(keys=[SessionKeys(session_id).session], args=[token, ""])

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
