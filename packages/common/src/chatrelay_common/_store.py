"""The session store: every write is one Lua script, so an event's sequence number, its log
entry, its effect on the session and its pub/sub publication happen atomically and in order.

The gateway writes through it; the web service reads snapshots and the log through it.

Bounded and fault-tolerant by design:
- every key of a session expires after the session TTL without a write (reads do not count);
- the log is capped in events and in bytes, a session's text in bytes (``SessionFullError``);
- a streaming reply holds a lease (the ``lock`` key) listed in ``LEASES``, so that any
  gateway can close a reply whose gateway died (``reap_lapsed``);
- every write script may run twice (the client retries a command whose answer was lost):
  ``begin_reply`` is keyed by its new reply id, deltas by their batch number, and the other
  writes change nothing the second time.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

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
from ._keys import CONTROL_CHANNEL, LEASES, SessionKeys

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "DEFAULT_SESSION_MAX_BYTES",
    "DEFAULT_SESSION_TTL_SECONDS",
    "DeltaWrite",
    "LeaseState",
    "LoggedEvent",
    "NothingToRegenerateError",
    "ReplyBusyError",
    "SessionFullError",
    "SessionNotFoundError",
    "SessionStore",
    "is_session_id",
    "new_id",
]


def new_id(nbytes: int = 16) -> str:
    """URL-safe random id; 16 bytes = 128 bits."""
    return secrets.token_urlsafe(nbytes)


_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")

DEFAULT_LOG_MAX_EVENTS: Final = 10_000
DEFAULT_LOG_MAX_BYTES: Final = 8 * 1024 * 1024
# Bounds the one blocking Lua call that builds a snapshot.
DEFAULT_SESSION_MAX_BYTES: Final = 4 * 1024 * 1024
DEFAULT_SESSION_TTL_SECONDS: Final = 30 * 24 * 3600
DEFAULT_LEASE_SECONDS: Final = 6.0
# How far a session's ids jump at its first event after a restart of a Redis that may have
# lost its last writes: far more events than one session writes in the seconds lost.
SEQ_SKIP_AFTER_RESTART: Final = 1_000_000
# How long a store trusts what it learnt of Redis's persistence (CONFIG GET appendfsync).
_PERSISTENCE_CHECK_SECONDS: Final = 10.0


def is_session_id(text: str) -> bool:
    """Shaped like an id from :func:`new_id` (checked before it goes into a Redis key)."""
    return _SESSION_ID.fullmatch(text) is not None


class SessionNotFoundError(LookupError):
    pass


class ReplyBusyError(RuntimeError):
    """A reply is streaming in this session already."""


class NothingToRegenerateError(ValueError):
    pass


class SessionFullError(RuntimeError):
    """A new message would take the session's text over its size cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"This conversation has reached its size limit ({max_bytes} bytes of text): "
            "clear it or start a new one"
        )
        self.max_bytes = max_bytes


# One reply's text for :meth:`SessionStore.append_deltas`: session id, reply id, text, batch.
DeltaWrite = tuple[str, str, str, int | None]
LeaseState = Literal["kept", "stop", "lost"]
_LEASE_STATES: Final[tuple[LeaseState, ...]] = ("lost", "kept", "stop")


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    name: str
    data: bytes


# Shared by every write script. KEYS[1] session hash, KEYS[2] log, KEYS[3] the lease index;
# ARGV[1] key prefix of the session, [2] session id, [3] log cap in events, [4] log cap in
# bytes, [5] session TTL in seconds, [6] lease ms, [7] session size cap in bytes, [8] '1' when
# Redis has every write on disk before it answers (appendfsync always). A script's own
# arguments start at ARGV[9].
_PRELUDE = (
    """
local session_key, log_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local base, sid, ttl, lease_ms = ARGV[1], ARGV[2], ARGV[5], tonumber(ARGV[6])
-- This Redis's run id, read once per script call (INFO is costly to build).
local run_id = nil
-- Read once per script call: a call that writes many replies needs it for each.
local now = nil
local function now_ms()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
-- Drops the oldest entries while the log is over either cap (always keeping the newest, so a
-- resuming tab can tell where the session is).
local function trim_log(size)
  local max_events, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
  local count = redis.call('XLEN', log_key)
  if count <= max_events and size <= max_bytes then return end
  local cursor = '-'
  while count > 1 and (count > max_events or size > max_bytes) do
    local entries = redis.call('XRANGE', log_key, cursor, '+', 'COUNT', 64)
    for _, entry in ipairs(entries) do
      if count <= 1 or (count <= max_events and size <= max_bytes) then break end
      size = size - #entry[2][4]
      count = count - 1
    end
    cursor = '(' .. entries[#entries][1]
  end
  redis.call('XTRIM', log_key, 'MAXLEN', count)
  redis.call('HSET', session_key, 'log_bytes', size)
end
-- A restart of a Redis that may lose its last writes (fsync every second, or snapshots only)
-- may have lost events that tabs hold: new ids must not reuse theirs. So a session's first
-- event after a restart skips far ahead, and a tab resuming from any older id gets a reset
-- and a snapshot instead of events that are not the ones it missed.
local function skip_ids_after_a_lossy_restart()
  if ARGV[8] == '1' then return end
  run_id = run_id or string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if redis.call('HGET', session_key, 'run') == run_id then return end
  if tonumber(redis.call('HGET', session_key, 'seq') or '0') > 0 then
    redis.call('HINCRBY', session_key, 'seq', """
    + str(SEQ_SKIP_AFTER_RESTART)
    + """)
  end
  redis.call('HSET', session_key, 'run', run_id)
end
local function emit(name, data)
  skip_ids_after_a_lossy_restart()
  local seq = redis.call('HINCRBY', session_key, 'seq', 1)
  redis.call('XADD', log_key, seq .. '-0', 'e', name, 'd', data)
  trim_log(redis.call('HINCRBY', session_key, 'log_bytes', #data))
  redis.call('PUBLISH', base .. 'events', seq .. ' ' .. name .. ' ' .. data)
  return seq
end
-- Activity: every key of the session lives another TTL (lock and stop have their own).
local function touch_all()
  redis.call('EXPIRE', session_key, ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('EXPIRE', base .. 'order', ttl)
  for _, id in ipairs(redis.call('LRANGE', base .. 'order', 0, -1)) do
    redis.call('EXPIRE', base .. 'msg:' .. id, ttl)
    redis.call('EXPIRE', base .. 'text:' .. id, ttl)
  end
end
-- The cheap form for a delta: only the keys it writes (the others were touched at its start),
-- and only once the TTL has run down (a second at most): at the pace of tokens, five EXPIREs
-- per delta would be a good part of its cost.
local function touch_reply(id)
  if redis.call('TTL', session_key) >= tonumber(ttl) then return end
  redis.call('EXPIRE', session_key, ttl)
  redis.call('EXPIRE', log_key, ttl)
  redis.call('EXPIRE', base .. 'order', ttl)
  redis.call('EXPIRE', base .. 'msg:' .. id, ttl)
  redis.call('EXPIRE', base .. 'text:' .. id, ttl)
end
local function add_message(id, role, status, content)
  redis.call('RPUSH', base .. 'order', id)
  redis.call('HSET', base .. 'msg:' .. id, 'role', role, 'status', status)
  redis.call('SET', base .. 'text:' .. id, content)
  redis.call('HINCRBY', session_key, 'bytes', #content)
end
-- Removes message `from` and everything after it; false when `from` is not in the session.
local function truncate(from)
  local ids = redis.call('LRANGE', base .. 'order', 0, -1)
  local at = nil
  for i, id in ipairs(ids) do
    if from == '' or id == from then at = i break end
  end
  if at == nil then return from == '' end
  local freed = 0
  for i = at, #ids do
    freed = freed + redis.call('STRLEN', base .. 'text:' .. ids[i])
    redis.call('DEL', base .. 'msg:' .. ids[i], base .. 'text:' .. ids[i])
  end
  if freed > 0 then redis.call('HINCRBY', session_key, 'bytes', -freed) end
  if at == 1 then
    redis.call('DEL', base .. 'order')
  else
    redis.call('LTRIM', base .. 'order', 0, at - 2)
  end
  local json = from == '' and 'null' or ('"' .. from .. '"')
  emit('truncate', '{"from_message_id":' .. json .. '}')
  return true
end
-- Ends a reply whose gateway stopped refreshing its lease; its partial text is kept.
local function close_orphan(reply)
  redis.call('HSET', base .. 'msg:' .. reply, 'status', 'error')
  redis.call('HDEL', session_key, 'streaming')
  redis.call('DEL', base .. 'stop')
  redis.call('ZREM', leases_key, sid)
  emit('error', '{"reply_id":"' .. reply .. '","code":"interrupted",' ..
    '"message":"The gateway generating this reply stopped; the partial answer is kept."}')
  touch_all()
end
"""
)

# For writes that need the session idle: -1 unknown session, -2 a reply streams. A reply whose
# lease lapsed keeps status `streaming` until someone closes it: close it here.
_IDLE_SESSION = """
if redis.call('EXISTS', session_key) == 0 then return -1 end
if redis.call('EXISTS', base .. 'lock') == 1 then return -2 end
local orphan = redis.call('HGET', session_key, 'streaming')
if orphan then close_orphan(orphan) end
"""

# ARGV[9] mode (send|regenerate), [10] truncate-from id ('' none), [11] user message id,
# [12] user content, [13] user `message` event data, [14] reply id, [15] `start` data.
# Returns 1, or -1 unknown session, -2 busy, -3 nothing to regenerate / unknown message,
# -4 the session is full.
_BEGIN = (
    _PRELUDE
    + """
-- The reply id is new for each call: finding it means a retry of a call that ran.
if redis.call('EXISTS', base .. 'msg:' .. ARGV[14]) == 1 then return 1 end
"""
    + _IDLE_SESSION
    + """
local mode, from = ARGV[9], ARGV[10]
local size = tonumber(redis.call('HGET', session_key, 'bytes') or '0')
if size + #ARGV[12] > tonumber(ARGV[7]) then return -4 end
if mode == 'regenerate' then
  local last = redis.call('LINDEX', base .. 'order', -1)
  if not last then return -3 end
  if redis.call('HGET', base .. 'msg:' .. last, 'role') == 'assistant' then truncate(last) end
elseif from ~= '' then
  if not truncate(from) then return -3 end
end
if mode == 'send' then
  add_message(ARGV[11], 'user', 'complete', ARGV[12])
  emit('message', ARGV[13])
end
redis.call('SET', base .. 'lock', ARGV[14], 'PX', lease_ms)
redis.call('ZADD', leases_key, now_ms() + lease_ms, sid)
redis.call('DEL', base .. 'stop')
add_message(ARGV[14], 'assistant', 'streaming', '')
redis.call('HSET', session_key, 'streaming', ARGV[14], 'batch', 0)
emit('start', ARGV[15])
touch_all()
return 1
"""
)

# Text for the streaming replies of any number of sessions, in one call: a gateway's writer
# sends every reply's pending text together (one round trip, not one per reply per token).
# KEYS: (session hash, log) per write, then the lease index; ARGV[1] and [2] unused, [9..]
# six per write: key prefix, session id, reply id, text, `delta` data, batch number (1, 2, …
# per reply; '' for an unnumbered write). Writes to one reply go in batch order.
# Returns per write: its seq; -1 when this batch was applied already (a retried call that had
# run); 0 when the reply no longer streams (finished, or closed as an orphan).
_APPEND_DELTAS = (
    _PRELUDE
    + """
local function append(reply, text, data, batch)
  local state = redis.call('HMGET', session_key, 'streaming', 'batch')
  if state[1] ~= reply then return 0 end
  if batch ~= '' then
    if tonumber(batch) <= tonumber(state[2] or '0') then return -1 end
    redis.call('HSET', session_key, 'batch', batch)
  end
  redis.call('APPEND', base .. 'text:' .. reply, text)
  redis.call('HINCRBY', session_key, 'bytes', #text)
  -- The lease is extended as the keepalive does, once a third of it has passed.
  local lock = base .. 'lock'
  if redis.call('GET', lock) == reply and redis.call('PTTL', lock) < lease_ms * 2 / 3 then
    redis.call('PEXPIRE', lock, lease_ms)
    redis.call('ZADD', leases_key, now_ms() + lease_ms, sid)
  end
  touch_reply(reply)
  return emit('delta', data)
end
leases_key = KEYS[#KEYS]
local results = {}
for i = 1, (#KEYS - 1) / 2 do
  local at = 9 + (i - 1) * 6
  session_key, log_key = KEYS[2 * i - 1], KEYS[2 * i]
  base, sid = ARGV[at], ARGV[at + 1]
  results[i] = append(ARGV[at + 2], ARGV[at + 3], ARGV[at + 4], ARGV[at + 5])
end
return results
"""
)

# ARGV[9] reply id, [10] final status, [11] event name, [12] event data. Returns seq or 0.
_FINISH = (
    _PRELUDE
    + """
local reply = ARGV[9]
if redis.call('HGET', session_key, 'streaming') ~= reply then return 0 end
redis.call('HSET', base .. 'msg:' .. reply, 'status', ARGV[10])
redis.call('HDEL', session_key, 'streaming')
if redis.call('GET', base .. 'lock') == reply then redis.call('DEL', base .. 'lock') end
redis.call('DEL', base .. 'stop')
redis.call('ZREM', leases_key, sid)
local seq = emit(ARGV[11], ARGV[12])
touch_all()
return seq
"""
)

# ARGV[9..] pairs of (field name, new JSON value or '' to keep the stored one), every field of
# SessionSettings in declaration order. Unchanged values are copied as raw JSON text from the
# stored object (flat, written by msgspec without spaces): re-encoding with cjson would turn
# 1.0 into 1 and "/" into "\/". Returns the merged settings JSON, or -1 unknown session.
_UPDATE_SETTINGS = (
    _PRELUDE
    + """
local stored = redis.call('HGET', session_key, 'settings')
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
for k = 9, #ARGV, 2 do
  local value = ARGV[k + 1]
  if value == '' then value = raw[ARGV[k]] or 'null' end
  parts[#parts + 1] = '"' .. ARGV[k] .. '":' .. value
end
local merged = '{' .. table.concat(parts, ',') .. '}'
-- Nothing changed (as when a call that ran is retried): no event.
if merged ~= stored then
  redis.call('HSET', session_key, 'settings', merged)
  emit('settings', '{"settings":' .. merged .. '}')
end
touch_all()
return merged
"""
)

# Returns 1, -1 unknown session, -2 busy.
_CLEAR = (
    _PRELUDE
    + _IDLE_SESSION
    + """
if redis.call('LLEN', base .. 'order') > 0 then truncate('') end
touch_all()
return 1
"""
)

# Extends the leases of any number of replies (of any sessions) in one call. KEYS: (session
# hash, log) per reply, then the lease index; ARGV[1] and [2] unused, [9..] three per reply:
# key prefix, session id, reply id. Returns per reply: 0 when it no longer streams or another
# holds its lease, else 1, or 2 when a client asked it to stop. A lapsed lease is taken back:
# safe, since nobody else writes a streaming reply.
_KEEP_LEASES = (
    _PRELUDE
    + """
local function keep(reply)
  if redis.call('HGET', session_key, 'streaming') ~= reply then return 0 end
  local holder = redis.call('GET', base .. 'lock')
  if holder and holder ~= reply then return 0 end
  redis.call('SET', base .. 'lock', reply, 'PX', lease_ms)
  redis.call('ZADD', leases_key, now_ms() + lease_ms, sid)
  if redis.call('GET', base .. 'stop') == reply then return 2 end
  return 1
end
leases_key = KEYS[#KEYS]
local results = {}
for i = 1, (#KEYS - 1) / 2 do
  local at = 9 + (i - 1) * 3
  session_key, log_key = KEYS[2 * i - 1], KEYS[2 * i]
  base, sid = ARGV[at], ARGV[at + 1]
  results[i] = keep(ARGV[at + 2])
end
return results
"""
)

# ARGV[9] stop-flag ms, [10] control channel. Flags the streaming reply to stop and tells every
# gateway; a reply whose lease lapsed has no gateway to tell, so it is closed here. Returns
# the reply id, or false when nothing streams.
_REQUEST_STOP = (
    _PRELUDE
    + """
local reply = redis.call('HGET', session_key, 'streaming')
if not reply then return false end
if redis.call('EXISTS', base .. 'lock') == 0 then
  close_orphan(reply)
  return reply
end
redis.call('SET', base .. 'stop', reply, 'PX', ARGV[9])
redis.call('PUBLISH', ARGV[10], sid .. ' ' .. reply)
touch_all()
return reply
"""
)

# Closes the session's reply when its lease lapsed; keeps the index to running replies.
# Returns the closed reply id, or false.
_REAP = (
    _PRELUDE
    + """
local reply = redis.call('HGET', session_key, 'streaming')
if not reply then
  redis.call('ZREM', leases_key, sid)
  return false
end
local left = redis.call('PTTL', base .. 'lock')
if left > 0 then
  redis.call('ZADD', leases_key, now_ms() + left, sid)
  return false
end
close_orphan(reply)
return reply
"""
)

# KEYS[1] the lease index; ARGV[1] how many. Session ids whose lease deadline has passed.
_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
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


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SessionStore:
    """Async access to sessions in Redis. ``redis`` must not decode responses."""

    STOP_FLAG_MS: Final = 60_000

    def __init__(
        self,
        redis: Redis,
        *,
        log_max_events: int = DEFAULT_LOG_MAX_EVENTS,
        log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        session_max_bytes: int = DEFAULT_SESSION_MAX_BYTES,
        session_ttl_seconds: int = DEFAULT_SESSION_TTL_SECONDS,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self._redis = redis
        self._session_max_bytes = session_max_bytes
        self._session_ttl = session_ttl_seconds
        self._lease_seconds = lease_seconds
        self._durable = False
        self._durable_checked_at: float | None = None
        self._limits = [
            str(log_max_events),
            str(log_max_bytes),
            str(session_ttl_seconds),
            str(round(lease_seconds * 1000)),
            str(session_max_bytes),
        ]
        register = redis.register_script
        self._begin = register(_BEGIN)
        self._append_deltas = register(_APPEND_DELTAS)
        self._finish = register(_FINISH)
        self._update_settings = register(_UPDATE_SETTINGS)
        self._clear = register(_CLEAR)
        self._keep_leases = register(_KEEP_LEASES)
        self._request_stop = register(_REQUEST_STOP)
        self._reap = register(_REAP)
        self._due = register(_DUE)
        self._snapshot = register(_SNAPSHOT)

    @property
    def redis(self) -> Redis:
        return self._redis

    @property
    def lease_seconds(self) -> float:
        """How long a reply stays open without its gateway refreshing the lease."""
        return self._lease_seconds

    async def _run(self, script: Any, session_id: str, *args: str | bytes) -> Any:
        keys = SessionKeys(session_id)
        durable = await self._durable_flag()
        return await script(
            keys=[keys.session, keys.log, LEASES],
            args=[keys.base, session_id, *self._limits, durable, *args],
        )

    async def _durable_flag(self) -> str:
        """ARGV[8] of the write scripts."""
        return "1" if await self._writes_are_durable() else "0"

    async def _writes_are_durable(self) -> bool:
        """Whether Redis puts each write in its append-only file, on disk, before answering:
        then a restart loses nothing that was acknowledged, and ids simply go on."""
        now = time.monotonic()
        if self._durable_checked_at is None or now - self._durable_checked_at > (
            _PERSISTENCE_CHECK_SECONDS
        ):
            try:
                config = await self._redis.config_get("append*")
            except ResponseError:  # CONFIG is disabled (as on managed Redis): assume not
                config = {}
            values = {_text(k): _text(v) for k, v in config.items()}
            self._durable = values.get("appendonly") == "yes" and (
                values.get("appendfsync") == "always"
            )
            self._durable_checked_at = now
        return self._durable

    async def _write(self, script: Any, session_id: str, *args: str | bytes) -> int:
        return int(await self._run(script, session_id, *args))

    async def create(self, settings: SessionSettings) -> str:
        session_id = new_id()
        key = SessionKeys(session_id).session
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"settings": msgspec.json.encode(settings), "seq": 0})
            pipe.expire(key, self._session_ttl)
            await pipe.execute()
        return session_id

    async def _session_field(self, session_id: str, field: str) -> bytes | None:
        key = SessionKeys(session_id).session
        # redis-py types hash commands as sync-or-async; this client is async.
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
        streaming reply holding a lease. Returns ``(message_id, reply_id)``."""
        reply_id = new_id(12)
        message_id = new_id(12) if content is not None else None
        message = MessageAdded(
            Message(id=message_id or "", role="user", content=content or "", status="complete")
        )
        result = await self._write(
            self._begin,
            session_id,
            "send" if content is not None else "regenerate",
            replace_from or "",
            message_id or "",
            content or "",
            encode_data(message),
            reply_id,
            encode_data(Start(reply_id=reply_id, model=model)),
        )
        if result == -1:
            raise SessionNotFoundError(session_id)
        if result == -2:
            raise ReplyBusyError(session_id)
        if result == -3:
            raise NothingToRegenerateError(replace_from or "")
        if result == -4:
            raise SessionFullError(self._session_max_bytes)
        return message_id, reply_id

    async def append_delta(
        self, session_id: str, reply_id: str, text: str, *, batch: int | None = None
    ) -> bool:
        """Append text to the streaming reply. A writer that may retry numbers its batches
        (1, 2, … per reply): a batch number already applied is skipped, so a call retried
        after its answer was lost never doubles text. False when the reply no longer streams
        (then the caller should stop)."""
        [streaming] = await self.append_deltas([(session_id, reply_id, text, batch)])
        return streaming

    async def append_deltas(self, writes: Sequence[DeltaWrite]) -> list[bool]:
        """:meth:`append_delta` for many replies (of any sessions) in one Redis call, in
        order: ``(session_id, reply_id, text, batch)`` each. Returns, per write, False when
        its reply no longer streams. (One script touches several sessions' keys: fine on one
        Redis, not on a Redis Cluster.)"""
        keys: list[str] = []
        args: list[str | bytes] = ["", "", *self._limits, await self._durable_flag()]
        for session_id, reply_id, text, batch in writes:
            session = SessionKeys(session_id)
            keys += [session.session, session.log]
            data = encode_data(Delta(reply_id=reply_id, text=text))
            number = "" if batch is None else str(batch)
            args += [session.base, session_id, reply_id, text, data, number]
        if not keys:
            return []
        results = await self._append_deltas(keys=[*keys, LEASES], args=args)
        return [int(result) != 0 for result in results]

    async def finish_reply(self, session_id: str, reply_id: str, event: Done | ErrorEvent) -> bool:
        """False when the reply was not streaming any more (closed already)."""
        if isinstance(event, ErrorEvent):
            status = "error"
        else:
            status = "stopped" if event.finish_reason == "stopped" else "complete"
        seq = await self._write(
            self._finish, session_id, reply_id, status, event.name, encode_data(event)
        )
        return seq > 0

    async def refresh_lease(self, session_id: str, reply_id: str) -> bool:
        """Extend the reply's lease; False when the reply no longer streams."""
        [state] = await self.keep_leases([(session_id, reply_id)])
        return state != "lost"

    async def keep_leases(self, replies: Sequence[tuple[str, str]]) -> list[LeaseState]:
        """Extend the leases of many streaming replies ``(session_id, reply_id)`` in one Redis
        call. Per reply: ``"kept"``; ``"stop"`` when a client asked it to stop (its stop flag:
        seen even when the stop's publication was missed); ``"lost"`` when it no longer
        streams (then its writer should stop)."""
        keys: list[str] = []
        args: list[str | bytes] = ["", "", *self._limits, await self._durable_flag()]
        for session_id, reply_id in replies:
            session = SessionKeys(session_id)
            keys += [session.session, session.log]
            args += [session.base, session_id, reply_id]
        if not keys:
            return []
        results = await self._keep_leases(keys=[*keys, LEASES], args=args)
        return [_LEASE_STATES[int(result)] for result in results]

    async def stop_requested(self, session_id: str, reply_id: str) -> bool:
        flag = cast("bytes | None", await self._redis.get(SessionKeys(session_id).stop))
        return flag is not None and flag.decode() == reply_id

    async def request_stop(self, session_id: str) -> str | None:
        """Flag the streaming reply (if any) to stop and tell every gateway; a reply whose
        lease lapsed is closed at once. Returns its id. Idempotent."""
        reply = await self._run(
            self._request_stop, session_id, str(self.STOP_FLAG_MS), CONTROL_CHANNEL
        )
        return reply.decode() if reply else None

    async def reap_lapsed(self, *, limit: int = 100) -> list[str]:
        """Close every reply whose lease lapsed (its gateway died) with an ``interrupted``
        error. Returns the ids of the replies closed."""
        due = cast("list[bytes]", await self._due(keys=[LEASES], args=[limit]))
        closed = []
        for session_id in due:
            reply = await self._run(self._reap, session_id.decode())
            if reply:
                closed.append(reply.decode())
        return closed

    async def update_settings(
        self, session_id: str, changes: Mapping[str, object]
    ) -> SessionSettings:
        """Merge ``changes`` into the stored settings in one atomic step (two concurrent
        updates of different fields both survive) and emit ``settings`` unless nothing
        changed; returns the merge."""
        unknown = set(changes) - set(SessionSettings.__struct_fields__)
        if unknown:
            raise ValueError(f"not a session setting: {', '.join(sorted(unknown))}")
        args: list[str | bytes] = []
        for name in SessionSettings.__struct_fields__:
            args += [name, msgspec.json.encode(changes[name]) if name in changes else b""]
        merged = await self._run(self._update_settings, session_id, *args)
        if merged == -1:
            raise SessionNotFoundError(session_id)
        return _settings_decoder.decode(merged)

    async def clear(self, session_id: str) -> None:
        result = await self._write(self._clear, session_id)
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
