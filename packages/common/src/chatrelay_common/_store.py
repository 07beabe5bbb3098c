"""The session store: every write is one Lua script, so an event's sequence number, its log
entry, its effect on the session and its pub/sub publication happen atomically and in order.

The gateway writes through it; the web service reads snapshots and the log through it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import msgspec
from redis.asyncio import Redis

from ._events import (
    Delta,
    Done,
    ErrorEvent,
    Message,
    MessageAdded,
    SessionSettings,
    Snapshot,
    Start,
    encode_data,
)
from ._keys import CONTROL_CHANNEL, SessionKeys

__all__ = [
    "LoggedEvent",
    "NothingToRegenerateError",
    "ReplyBusyError",
    "SessionNotFoundError",
    "SessionStore",
    "is_session_id",
    "new_id",
]


def new_id(nbytes: int = 16) -> str:
    """URL-safe random id; 16 bytes = 128 bits."""
    return secrets.token_urlsafe(nbytes)


_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def is_session_id(text: str) -> bool:
    """Shaped like an id from :func:`new_id` (checked before it goes into a Redis key)."""
    return _SESSION_ID.match(text) is not None


class SessionNotFoundError(LookupError):
    pass


class ReplyBusyError(RuntimeError):
    """A reply is streaming in this session already."""


class NothingToRegenerateError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    name: str
    data: bytes


# Shared by every write script. KEYS[1] session hash, KEYS[2] log; ARGV[1] key prefix of the
# session, ARGV[2] log length cap.
_PRELUDE = """
local base = ARGV[1]
local function emit(name, data)
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'e', name, 'd', data)
  redis.call('PUBLISH', base .. 'events', seq .. ' ' .. name .. ' ' .. data)
  return seq
end
local function add_message(id, role, status, content)
  redis.call('RPUSH', base .. 'order', id)
  redis.call('HSET', base .. 'msg:' .. id, 'role', role, 'status', status)
  redis.call('SET', base .. 'text:' .. id, content)
end
-- Removes message `from` and everything after it; false when `from` is not in the session.
local function truncate(from)
  local ids = redis.call('LRANGE', base .. 'order', 0, -1)
  local at = nil
  for i, id in ipairs(ids) do
    if from == '' or id == from then at = i break end
  end
  if at == nil then return from == '' end
  for i = at, #ids do
    redis.call('DEL', base .. 'msg:' .. ids[i], base .. 'text:' .. ids[i])
  end
  if at == 1 then
    redis.call('DEL', base .. 'order')
  else
    redis.call('LTRIM', base .. 'order', 0, at - 2)
  end
  local json = from == '' and 'null' or ('"' .. from .. '"')
  emit('truncate', '{"from_message_id":' .. json .. '}')
  return true
end
"""

# For writes that need the session idle: -1 unknown session, -2 a reply streams. A reply whose
# gateway died keeps status `streaming` after its lock expired: close it.
_IDLE_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('EXISTS', base .. 'lock') == 1 then return -2 end
local orphan = redis.call('HGET', KEYS[1], 'streaming')
if orphan then
  redis.call('HSET', base .. 'msg:' .. orphan, 'status', 'error')
  redis.call('HDEL', KEYS[1], 'streaming')
  emit('error', '{"reply_id":"' .. orphan .. '","code":"interrupted",' ..
    '"message":"The gateway generating this reply stopped; the partial answer is kept."}')
end
"""

# ARGV[3] mode (send|regenerate), [4] truncate-from id ('' none), [5] user message id,
# [6] user content, [7] user `message` event data, [8] reply id, [9] `start` data, [10] lock ms.
# Returns 1, or -1 unknown session, -2 busy, -3 nothing to regenerate / unknown message.
_BEGIN = (
    _PRELUDE
    + _IDLE_SESSION
    + """
local mode, from = ARGV[3], ARGV[4]
if mode == 'regenerate' then
  local last = redis.call('LINDEX', base .. 'order', -1)
  if not last then return -3 end
  if redis.call('HGET', base .. 'msg:' .. last, 'role') == 'assistant' then truncate(last) end
elseif from ~= '' then
  if not truncate(from) then return -3 end
end
if mode == 'send' then
  add_message(ARGV[5], 'user', 'complete', ARGV[6])
  emit('message', ARGV[7])
end
redis.call('SET', base .. 'lock', ARGV[8], 'PX', ARGV[10])
redis.call('DEL', base .. 'stop')
add_message(ARGV[8], 'assistant', 'streaming', '')
redis.call('HSET', KEYS[1], 'streaming', ARGV[8])
emit('start', ARGV[9])
return 1
"""
)

# ARGV[3] reply id, [4] text, [5] `delta` data, [6] lock ms. Returns the seq, or 0 when the
# reply is no longer the one streaming (finished, or closed as an orphan).
_APPEND_DELTA = (
    _PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'streaming') ~= ARGV[3] then return 0 end
redis.call('APPEND', base .. 'text:' .. ARGV[3], ARGV[4])
if redis.call('GET', base .. 'lock') == ARGV[3] then
  redis.call('PEXPIRE', base .. 'lock', ARGV[6])
end
return emit('delta', ARGV[5])
"""
)

# ARGV[3] reply id, [4] final status, [5] event name, [6] event data. Returns seq or 0.
_FINISH = (
    _PRELUDE
    + """
if redis.call('HGET', KEYS[1], 'streaming') ~= ARGV[3] then return 0 end
redis.call('HSET', base .. 'msg:' .. ARGV[3], 'status', ARGV[4])
redis.call('HDEL', KEYS[1], 'streaming')
if redis.call('GET', base .. 'lock') == ARGV[3] then redis.call('DEL', base .. 'lock') end
redis.call('DEL', base .. 'stop')
return emit(ARGV[5], ARGV[6])
"""
)

# ARGV[3] settings JSON. Returns seq, or -1 unknown session.
_SET_SETTINGS = (
    _PRELUDE
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
redis.call('HSET', KEYS[1], 'settings', ARGV[3])
return emit('settings', '{"settings":' .. ARGV[3] .. '}')
"""
)

# ARGV[3..] pairs of (field name, new JSON value or '' to keep the stored one), every field of
# SessionSettings in declaration order. Unchanged values are copied as raw JSON text from the
# stored object (flat, written by msgspec without spaces): re-encoding with cjson would turn
# 1.0 into 1 and "/" into "\/". Returns the merged settings JSON, or -1 unknown session.
_UPDATE_SETTINGS = (
    _PRELUDE
    + """
local stored = redis.call('HGET', KEYS[1], 'settings')
if not stored then return -1 end
local raw = {}
local i = 2
while i <= #stored and stored:sub(i, i) ~= '}' do
  local key_end = stored:find('"', i + 1, true)
  local v = key_end + 2
  local j
  if stored:sub(v, v) == '"' then
    j = v + 1
    while true do
      j = stored:find('["\\\\]', j)
      if stored:sub(j, j) == '"' then break end
      j = j + 2
    end
  else
    j = stored:find('[,}]', v) - 1
  end
  raw[stored:sub(i + 1, key_end - 1)] = stored:sub(v, j)
  i = j + 2
end
local parts = {}
for k = 3, #ARGV, 2 do
  local value = ARGV[k + 1]
  if value == '' then value = raw[ARGV[k]] or 'null' end
  parts[#parts + 1] = '"' .. ARGV[k] .. '":' .. value
end
local merged = '{' .. table.concat(parts, ',') .. '}'
redis.call('HSET', KEYS[1], 'settings', merged)
emit('settings', '{"settings":' .. merged .. '}')
return merged
"""
)

# Returns 1, -1 unknown session, -2 busy.
_CLEAR = (
    _PRELUDE
    + _IDLE_SESSION
    + """
if redis.call('LLEN', base .. 'order') > 0 then truncate('') end
return 1
"""
)

# ARGV[1] reply id, ARGV[2] lock ms. 1 while this reply holds the lock, else 0.
_REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1] lock, KEYS[2] stop; ARGV[1] session id, ARGV[2] stop-flag ms, ARGV[3] control channel.
_REQUEST_STOP = """
local reply = redis.call('GET', KEYS[1])
if not reply then return false end
redis.call('SET', KEYS[2], reply, 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' ' .. reply)
return reply
"""

# ARGV[1] key prefix. Returns {seq, settings, id1, role1, status1, text1, ...} or nil.
_SNAPSHOT = """
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return false end
local out = {seq, redis.call('HGET', KEYS[1], 'settings')}
for _, id in ipairs(redis.call('LRANGE', ARGV[1] .. 'order', 0, -1)) do
  local m = redis.call('HMGET', ARGV[1] .. 'msg:' .. id, 'role', 'status')
  out[#out + 1] = id
  out[#out + 1] = m[1]
  out[#out + 1] = m[2]
  out[#out + 1] = redis.call('GET', ARGV[1] .. 'text:' .. id) or ''
end
return out
"""

_settings_decoder = msgspec.json.Decoder(SessionSettings)


class SessionStore:
    """Async access to sessions in Redis. ``redis`` must not decode responses."""

    LOCK_MS: Final = 30_000
    STOP_FLAG_MS: Final = 60_000

    def __init__(self, redis: Redis, *, log_max_events: int = 10_000) -> None:
        self._redis = redis
        self._log_max = str(log_max_events)
        register = redis.register_script
        self._begin = register(_BEGIN)
        self._append_delta = register(_APPEND_DELTA)
        self._finish = register(_FINISH)
        self._set_settings = register(_SET_SETTINGS)
        self._update_settings = register(_UPDATE_SETTINGS)
        self._clear = register(_CLEAR)
        self._refresh_lock = register(_REFRESH_LOCK)
        self._request_stop = register(_REQUEST_STOP)
        self._snapshot = register(_SNAPSHOT)

    @property
    def redis(self) -> Redis:
        return self._redis

    async def _write(self, script: Any, keys: SessionKeys, *args: str | bytes) -> int:
        result = await script(keys=[keys.session, keys.log], args=[keys.base, self._log_max, *args])
        return int(result)

    async def create(self, settings: SessionSettings) -> str:
        session_id = new_id()
        # redis-py types hash commands as sync-or-async; this client is async.
        await cast(
            "Awaitable[int]",
            self._redis.hset(
                SessionKeys(session_id).session,
                mapping={"settings": msgspec.json.encode(settings), "seq": 0},
            ),
        )
        return session_id

    async def _session_field(self, session_id: str, field: str) -> bytes | None:
        key = SessionKeys(session_id).session
        return await cast("Awaitable[bytes | None]", self._redis.hget(key, field))

    async def exists(self, session_id: str) -> bool:
        return bool(await self._redis.exists(SessionKeys(session_id).session))

    async def settings(self, session_id: str) -> SessionSettings:
        raw = await self._session_field(session_id, "settings")
        if raw is None:
            raise SessionNotFoundError(session_id)
        return _settings_decoder.decode(raw)

    async def snapshot(self, session_id: str) -> Snapshot:
        keys = SessionKeys(session_id)
        out = await self._snapshot(keys=[keys.session], args=[keys.base])
        if not out:
            raise SessionNotFoundError(session_id)
        seq, settings, *flat = out
        messages = [
            Message(
                id=flat[i].decode(),
                role=flat[i + 1].decode(),
                status=flat[i + 2].decode(),
                content=flat[i + 3].decode(),
            )
            for i in range(0, len(flat), 4)
        ]
        return Snapshot(
            id=session_id,
            settings=_settings_decoder.decode(settings),
            messages=messages,
            seq=int(seq),
        )

    async def begin_reply(
        self,
        session_id: str,
        *,
        model: str,
        content: str | None,
        replace_from: str | None = None,
    ) -> tuple[str | None, str]:
        """Add the user's message (``content``; None regenerates the last reply) and open a
        streaming reply. Returns ``(message_id, reply_id)``."""
        keys = SessionKeys(session_id)
        reply_id = new_id(12)
        message_id = new_id(12) if content is not None else None
        message = MessageAdded(
            Message(id=message_id or "", role="user", content=content or "", status="complete")
        )
        result = await self._write(
            self._begin,
            keys,
            "send" if content is not None else "regenerate",
            replace_from or "",
            message_id or "",
            content or "",
            encode_data(message),
            reply_id,
            encode_data(Start(reply_id=reply_id, model=model)),
            str(self.LOCK_MS),
        )
        if result == -1:
            raise SessionNotFoundError(session_id)
        if result == -2:
            raise ReplyBusyError(session_id)
        if result == -3:
            raise NothingToRegenerateError(replace_from or "")
        return message_id, reply_id

    async def append_delta(self, session_id: str, reply_id: str, text: str) -> bool:
        """False when the reply no longer streams (then the caller should stop)."""
        data = encode_data(Delta(reply_id=reply_id, text=text))
        seq = await self._write(
            self._append_delta, SessionKeys(session_id), reply_id, text, data, str(self.LOCK_MS)
        )
        return seq > 0

    async def finish_reply(self, session_id: str, reply_id: str, event: Done | ErrorEvent) -> bool:
        if isinstance(event, ErrorEvent):
            status = "error"
        else:
            status = "stopped" if event.finish_reason == "stopped" else "complete"
        seq = await self._write(
            self._finish, SessionKeys(session_id), reply_id, status, event.name, encode_data(event)
        )
        return seq > 0

    async def refresh_lock(self, session_id: str, reply_id: str) -> bool:
        keys = SessionKeys(session_id)
        return bool(await self._refresh_lock(keys=[keys.lock], args=[reply_id, self.LOCK_MS]))

    async def stop_requested(self, session_id: str, reply_id: str) -> bool:
        flag = cast("bytes | None", await self._redis.get(SessionKeys(session_id).stop))
        return flag is not None and flag.decode() == reply_id

    async def request_stop(self, session_id: str) -> str | None:
        """Flag the streaming reply (if any) to stop and tell every gateway. Idempotent."""
        keys = SessionKeys(session_id)
        reply = await self._request_stop(
            keys=[keys.lock, keys.stop], args=[session_id, self.STOP_FLAG_MS, CONTROL_CHANNEL]
        )
        return reply.decode() if reply else None

    async def set_settings(self, session_id: str, settings: SessionSettings) -> None:
        seq = await self._write(
            self._set_settings, SessionKeys(session_id), msgspec.json.encode(settings)
        )
        if seq == -1:
            raise SessionNotFoundError(session_id)

    async def update_settings(
        self, session_id: str, changes: Mapping[str, object]
    ) -> SessionSettings:
        """Merge ``changes`` into the stored settings in one atomic step (two concurrent
        updates of different fields both survive), emit ``settings``; returns the merge."""
        unknown = set(changes) - set(SessionSettings.__struct_fields__)
        if unknown:
            raise ValueError(f"not a session setting: {', '.join(sorted(unknown))}")
        args: list[str | bytes] = []
        for name in SessionSettings.__struct_fields__:
            args += [name, msgspec.json.encode(changes[name]) if name in changes else b""]
        keys = SessionKeys(session_id)
        merged = await self._update_settings(
            keys=[keys.session, keys.log], args=[keys.base, self._log_max, *args]
        )
        if merged == -1:
            raise SessionNotFoundError(session_id)
        return _settings_decoder.decode(merged)

    async def clear(self, session_id: str) -> None:
        result = await self._write(self._clear, SessionKeys(session_id))
        if result == -1:
            raise SessionNotFoundError(session_id)
        if result == -2:
            raise ReplyBusyError(session_id)

    async def last_seq(self, session_id: str) -> int | None:
        raw = await self._session_field(session_id, "seq")
        return None if raw is None else int(raw)

    async def events_after(
        self, session_id: str, after: int, *, limit: int = 500
    ) -> list[LoggedEvent]:
        """Logged events with seq > ``after``, oldest first, at most ``limit``."""
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await self._redis.xrange(
                SessionKeys(session_id).log, min=f"{after}-1", max="+", count=limit
            ),
        )
        return [
            LoggedEvent(
                seq=int(entry_id.split(b"-", 1)[0]), name=fields[b"e"].decode(), data=fields[b"d"]
            )
            for entry_id, fields in entries
        ]
