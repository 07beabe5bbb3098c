"""Each owner's conversation list: the sessions they made, newest activity first, paged and
searchable; and the writes that change a session as a whole (rename, delete).

A session joins its creator's index (``OWNER_INDEX_PREFIX`` + owner, a sorted set scored by
last activity) when it is made; the store's write scripts move it to the top on each message,
reply end, rename, clear or settings change (never per token). The index lives as long as its
newest session; entries of sessions that expired are pruned as the list is read.

Search is a bounded scan: the owner's newest ``search_max_sessions`` sessions at most, and at
most about ``search_max_bytes`` of text read per request (titles and message text, matched
case-insensitively in Python). A request that reached that byte bound returns what it found
with a ``next`` cursor to go on from, however few its results.

On one Redis a page is read by one script (``list_sessions.lua``). On a Redis Cluster an
owner's index and each of their sessions live in different slots, which no script spans: the
index is read with plain commands, then the sessions with one small script each
(``summarize_session.lua``), concurrently; the same ``summary_of`` (``summary.lua``) reads a
session either way, and the results, cursors, pruning and bounds are the same.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import msgspec
from redis.asyncio import Redis

from ._events import Deleted, SessionSettings, TitleChanged, encode_data
from ._keys import CONTROL_CHANNEL, HASH_FIELDS, OWNER_INDEX_PREFIX, SessionKeys, ShareKeys
from ._redis import AnyRedis
from ._store import SessionStore, _raise_unless_done, _script

__all__ = [
    "DEFAULT_SEARCH_MAX_BYTES",
    "DEFAULT_SEARCH_MAX_SESSIONS",
    "History",
    "InvalidCursorError",
    "SessionPage",
    "SessionSummary",
]

DEFAULT_SEARCH_MAX_SESSIONS: Final = 500
DEFAULT_SEARCH_MAX_BYTES: Final = 8 * 1024 * 1024
# A search reads this many sessions per Lua call: each call stays short for Redis.
_SEARCH_CHUNK: Final = 50
# On a cluster: the index is read this many entries at a time (as list_sessions.lua does),
# and a search reads at most this many sessions at once (more would read text past its
# byte bound for nothing).
_INDEX_PAGE: Final = 64
_SEARCH_READ_AHEAD: Final = 8
_CURSOR: Final = re.compile(r"(\d{1,16})\.([A-Za-z0-9_-]{16,64})")

_LIST_SESSIONS: Final = _script("summary", "list_sessions")
_SUMMARIZE: Final = _script("summary", "summarize_session")
_DELETED_DATA: Final = encode_data(Deleted())
_OWNER: Final = HASH_FIELDS["OWNER"]
_settings_decoder = msgspec.json.Decoder(SessionSettings)


class InvalidCursorError(ValueError):
    """A ``cursor`` this service did not make."""


@dataclass(frozen=True, slots=True)
class SessionSummary:
    id: str
    title: str
    updated_at: str  # RFC 3339, UTC, to the millisecond
    message_count: int
    model: str


@dataclass(frozen=True, slots=True)
class SessionPage:
    sessions: list[SessionSummary]
    next: str | None


@dataclass(frozen=True, slots=True)
class _Position:
    score: int
    session_id: str

    def before(self, other: _Position) -> bool:
        """Listed before ``other`` (newer; on a tie, the greater id: ZREVRANGE's order)."""
        return (self.score, self.session_id) > (other.score, other.session_id)


def _encode_cursor(position: _Position) -> str:
    raw = f"{position.score}.{position.session_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> _Position:
    if len(cursor) > 200:
        raise InvalidCursorError("cursor is too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidCursorError("cursor is not one this service made") from exc
    found = _CURSOR.fullmatch(raw)
    if found is None:
        raise InvalidCursorError("cursor is not one this service made")
    return _Position(int(found.group(1)), found.group(2))


def _updated_at(score_ms: int) -> str:
    when = datetime.fromtimestamp(score_ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(row: Sequence[Any]) -> tuple[SessionSummary, _Position]:
    session_id, score, title, settings, count = (
        row[0].decode(),
        int(float(row[1])),
        row[2].decode(),
        row[3],
        int(row[4]),
    )
    summary = SessionSummary(
        id=session_id,
        title=title,
        updated_at=_updated_at(score),
        message_count=count,
        model=_settings_decoder.decode(settings).model,
    )
    return summary, _Position(score, session_id)


def _matches(texts: Sequence[bytes], needle: str) -> bool:
    return any(needle in text.decode(errors="replace").casefold() for text in texts)


class History:
    """The owners' lists over a ``SessionStore`` (its Redis, TTL and write path)."""

    def __init__(
        self,
        store: SessionStore,
        *,
        search_max_sessions: int = DEFAULT_SEARCH_MAX_SESSIONS,
        search_max_bytes: int = DEFAULT_SEARCH_MAX_BYTES,
    ) -> None:
        self._store = store
        self._redis: AnyRedis = store.redis
        self._search_max_sessions = search_max_sessions
        self._search_max_bytes = search_max_bytes
        # The cluster client runs scripts too (routed by their first key); redis-py types the
        # method as the plain client's.
        register, cluster = cast("Redis", self._redis).register_script, store.cluster
        self._list = register(_LIST_SESSIONS)
        self._summarize = register(_SUMMARIZE)
        self._set_title = register(_script("prelude", "set_title", cluster=cluster))
        self._delete = register(_script("prelude", "delete_session", cluster=cluster))

    async def owner_of(self, session_id: str) -> str | None:
        """The owner that made the session (None: unknown session, or made before owners)."""
        key = SessionKeys(session_id).session
        raw = await cast("Any", self._redis.hget(key, _OWNER))
        return None if raw is None else cast("bytes", raw).decode()

    async def _read(
        self, owner: str, after: _Position | None, count: int, *, texts: bool, max_bytes: int
    ) -> tuple[bool, list[Any]]:
        """Up to ``count`` sessions after ``after`` (with ``texts``, until ``max_bytes`` of
        text were read), and whether any remain: as ``list_sessions.lua`` returns them."""
        oldest_live_ms = int(time.time() * 1000) - self._store._session_ttl * 1000
        if self._store.cluster:
            return await self._read_by_parts(
                owner, oldest_live_ms, after, count, texts=texts, max_bytes=max_bytes
            )
        more, *rows = await self._list(
            keys=[OWNER_INDEX_PREFIX + owner],
            args=[
                oldest_live_ms,
                "" if after is None else after.score,
                "" if after is None else after.session_id,
                count,
                "1" if texts else "0",
                max_bytes,
                self._search_max_sessions if texts else 0,
            ],
        )
        return bool(int(more)), rows

    async def _read_by_parts(
        self,
        owner: str,
        oldest_live_ms: int,
        after: _Position | None,
        count: int,
        *,
        texts: bool,
        max_bytes: int,
    ) -> tuple[bool, list[Any]]:
        """``_read`` on a Redis Cluster: ``list_sessions.lua``'s walk, step by step."""
        index = OWNER_INDEX_PREFIX + owner
        redis: Any = self._redis
        await redis.zremrangebyscore(index, "-inf", f"({oldest_live_ms}")
        floor = None  # a search looks no further than the owner's newest sessions
        if texts and self._search_max_sessions > 0:
            last = self._search_max_sessions - 1
            oldest_searched = await redis.zrevrange(index, last, last, withscores=True)
            if oldest_searched:
                member, score = oldest_searched[0]
                floor = _Position(int(score), member.decode())
        rows: list[Any] = []
        read = 0
        # Each index page starts after what was walked: below `top`, past `ties` entries at
        # `top` (a page by position, not by offset, as other writers move sessions meanwhile).
        top: int | str = "+inf" if after is None else after.score
        ties = 0
        while True:
            page = await redis.zrevrangebyscore(
                index, top, "-inf", start=ties, num=_INDEX_PAGE, withscores=True
            )
            walked = [_Position(int(score), member.decode()) for member, score in page]
            ahead = [p for p in walked if after is None or after.before(p)]
            past_floor = floor is not None and any(floor.before(p) for p in ahead)
            if floor is not None:
                ahead = [p for p in ahead if not floor.before(p)]
            gone: list[_Position] = []
            # As in the script: `more` once full (or at the byte bound) with a session ahead.
            more, at = False, 0
            while at < len(ahead) and not more:
                if len(rows) == count or (texts and read >= max_bytes):
                    more = True
                    break
                room = count - len(rows)
                group = ahead[at : at + (min(room, _SEARCH_READ_AHEAD) if texts else room)]
                at += len(group)
                summaries = await asyncio.gather(
                    *(self._summary_of(position.session_id, texts) for position in group)
                )
                for position, summary in zip(group, summaries, strict=True):
                    if texts and read >= max_bytes:
                        more = True
                        break
                    if summary is None:
                        gone.append(position)
                        continue
                    rows.append([position.session_id.encode(), position.score, *summary])
                    read += sum(len(text) for text in summary[3][1:])
            if gone:
                await redis.zrem(index, *(position.session_id for position in gone))
            if more:
                return True, rows
            if past_floor or len(walked) < _INDEX_PAGE:
                return False, rows
            bottom = walked[-1].score
            at_bottom = sum(1 for p in walked if p.score == bottom and p not in gone)
            ties = ties + at_bottom if bottom == top else at_bottom
            top = bottom

    async def _summary_of(self, session_id: str, texts: bool) -> list[Any] | None:
        """``summary_of`` (summary.lua) of one session, in its slot; None when it is gone.
        Its keys are declared as the store's scripts declare them, so that a slot migrating
        key by key answers TRYAGAIN (retried) rather than half a session."""
        summary: list[Any] | None = await self._summarize(
            keys=SessionKeys(session_id).declared(), args=[session_id, "1" if texts else "0"]
        )
        return summary

    async def list(
        self, owner: str, *, limit: int, cursor: str | None = None, query: str | None = None
    ) -> SessionPage:
        """A page of ``owner``'s sessions after ``cursor`` (raises ``InvalidCursorError`` for
        a cursor not from ``next``); with ``query``, only those whose title or message text
        holds it, case-insensitively."""
        after = None if cursor is None else _decode_cursor(cursor)
        if not query:
            more, rows = await self._read(owner, after, limit, texts=False, max_bytes=0)
            summaries = [_summary(row) for row in rows]
            last = summaries[-1][1] if summaries and more else None
            return SessionPage(
                [summary for summary, _ in summaries],
                None if last is None else _encode_cursor(last),
            )
        needle = query.casefold()
        found: list[SessionSummary] = []
        budget = self._search_max_bytes
        while True:
            more, rows = await self._read(owner, after, _SEARCH_CHUNK, texts=True, max_bytes=budget)
            for row in rows:
                summary, position = _summary(row)
                after = position
                budget -= sum(len(text) for text in row[5][1:])
                if _matches(row[5], needle):
                    found.append(summary)
                    if len(found) == limit:
                        return SessionPage(found, _encode_cursor(position))
            if not more:
                return SessionPage(found, None)
            if budget <= 0:
                return SessionPage(found, None if after is None else _encode_cursor(after))

    async def set_title(self, session_id: str, title: str) -> None:
        """Rename the session (the caller cleaned ``title``); every tab gets ``title``."""
        data = encode_data(TitleChanged(title=title))
        result = await self._store._run(self._set_title, session_id, title, data)
        _raise_unless_done(int(result), session_id)
        await self._store._touch_outside(session_id)

    async def delete(self, session_id: str) -> None:
        """Stop its reply, tell its tabs (``deleted``), and remove every key of the session,
        its owner's index entry and its share link."""
        result, *found = await self._store._run(
            self._delete, session_id, CONTROL_CHANNEL, _DELETED_DATA
        )
        _raise_unless_done(int(result), session_id)
        if self._store.cluster:  # the script removed neither: they live in other slots
            # After the session: an entry or a link left behind by a crash here leads to no
            # session (the list prunes the one; ``ShareLinks.session_of`` refuses the other).
            owner, share = (value.decode() for value in found)
            if owner:
                index = OWNER_INDEX_PREFIX + owner
                await cast("Awaitable[int]", self._redis.zrem(index, session_id))
            if share:
                await cast("Awaitable[int]", self._redis.delete(ShareKeys(share).link))
