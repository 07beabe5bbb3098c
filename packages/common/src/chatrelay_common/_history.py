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
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

import msgspec
from redis.asyncio import Redis

from ._events import Deleted, SessionSettings, TitleChanged, encode_data
from ._keys import CONTROL_CHANNEL, HASH_FIELDS, OWNER_INDEX_PREFIX, SessionKeys
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
_CURSOR: Final = re.compile(r"(\d{1,16})\.([A-Za-z0-9_-]{16,64})")

_LIST_SESSIONS: Final = _script("list_sessions")
_SET_TITLE: Final = _script("prelude", "set_title")
_DELETE: Final = _script("prelude", "delete_session")
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
        self._redis: Redis = store.redis
        self._search_max_sessions = search_max_sessions
        self._search_max_bytes = search_max_bytes
        self._list = self._redis.register_script(_LIST_SESSIONS)
        self._set_title = self._redis.register_script(_SET_TITLE)
        self._delete = self._redis.register_script(_DELETE)

    async def owner_of(self, session_id: str) -> str | None:
        """The owner that made the session (None: unknown session, or made before owners)."""
        key = SessionKeys(session_id).session
        raw = await cast("Any", self._redis.hget(key, _OWNER))
        return None if raw is None else cast("bytes", raw).decode()

    async def _read(
        self, owner: str, after: _Position | None, count: int, *, texts: bool, max_bytes: int
    ) -> tuple[bool, list[Any]]:
        oldest_live_ms = int(time.time() * 1000) - self._store._session_ttl * 1000
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

    async def delete(self, session_id: str) -> None:
        """Stop its reply, tell its tabs (``deleted``), and remove every key of the session."""
        result = await self._store._run(self._delete, session_id, CONTROL_CHANNEL, _DELETED_DATA)
        _raise_unless_done(int(result), session_id)
