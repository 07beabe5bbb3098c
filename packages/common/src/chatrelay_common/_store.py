"""The session store: every write is one Lua script, so an event's sequence number, its log
entry, its effect on the session and its pub/sub publication happen atomically and in order.

The scripts live in ``lua/*.lua``; each starts with constants composed in from Python (key
suffixes from ``_keys.py``, return codes, event names and msgspec-encoded event templates),
so that the Lua spells none of them itself.

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

import asyncio
import functools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from importlib import resources
from typing import Any, Final, Literal, TypeVar, cast

import msgspec
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from ._events import (
    WIRE_SEPARATOR,
    Deleted,
    Delta,
    Done,
    ErrorEvent,
    Event,
    Message,
    MessageAdded,
    Reasoning,
    ReplyError,
    Role,
    SessionSettings,
    SettingsChanged,
    Snapshot,
    Start,
    Status,
    Timing,
    TitleChanged,
    Truncate,
    Usage,
    encode_data,
)
from ._keys import (
    CONTROL_CHANNEL,
    HASH_FIELDS,
    LEASES,
    LOG_FIELDS,
    OWNER_INDEX_PREFIX,
    SESSION_KEY_SUFFIXES,
    SHARE_PREFIX,
    SessionKeys,
)
from ._redis import AnyRedis
from ._titles import default_title

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_LOG_MAX_BYTES",
    "DEFAULT_LOG_MAX_EVENTS",
    "DEFAULT_SESSION_MAX_BYTES",
    "DEFAULT_SESSION_TTL_SECONDS",
    "DeltaWrite",
    "LeaseState",
    "LoggedEvent",
    "ModelNotAllowedError",
    "NothingToRegenerateError",
    "ReplyBusyError",
    "ReplyStart",
    "SessionFullError",
    "SessionNotFoundError",
    "SessionStore",
    "SlotsUnavailableError",
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


class ModelNotAllowedError(ValueError):
    """The session's model is not one of those the caller allows (any more)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.model = model


class SlotsUnavailableError(RedisError):
    """On a Redis Cluster, a many-session call reached some slots and not others (their
    primary is down, say, until its replica takes over): ``results`` has each item's result,
    or None for an item of a slot that failed (all the items of one session fail together:
    they share a slot)."""

    def __init__(self, results: Sequence[object | None], error: BaseException) -> None:
        super().__init__(f"some slots failed: {error}")
        self.results = list(results)


class SessionFullError(RuntimeError):
    """A new message would take the session's text over its size cap."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"This conversation has reached its size limit ({max_bytes} bytes of text): "
            "clear it or start a new one"
        )
        self.max_bytes = max_bytes


# One run of a reply's text for :meth:`SessionStore.append_deltas`: session id, reply id, kind
# (``Delta.name`` for the answer, ``Reasoning.name`` for its thinking), text, batch.
DeltaWrite = tuple[str, str, str, str, int | None]
# The events whose text a reply's writer appends, by name.
_TEXT_EVENTS: Final[dict[str, type[Delta | Reasoning]]] = {
    Delta.name: Delta,
    Reasoning.name: Reasoning,
}
LeaseState = Literal["kept", "stop", "lost"]
# What the many-session calls take per item (its session id first) and give back.
_Item = TypeVar("_Item", DeltaWrite, tuple[str, str])
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class ReplyStart:
    """A reply just opened, with what its upstream request needs: the session's settings
    and its conversation as ``(role, text)`` (the reply's own, and empty messages, left out;
    text only: a reply's reasoning is never sent back)."""

    message_id: str | None  # the user's message; None when regenerating
    reply_id: str
    settings: SessionSettings
    history: list[tuple[Role, str]]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    name: str
    data: bytes


class _Outcome(IntEnum):
    """What a write script returns (``begin_reply``, ``clear``, ``update_settings``)."""

    DONE = 1
    UNKNOWN_SESSION = -1
    BUSY = -2  # a reply streams
    NOTHING_TO_REGENERATE = -3  # or the message to replace is not in the session
    SESSION_FULL = -4
    SETTINGS_MOVED = -5  # another update came in since the caller read the settings
    MODEL_NOT_ALLOWED = -6  # the session's model is not one the caller allows (any more)


class _Delta(IntEnum):
    """What ``append_deltas`` returns for a write, besides its positive seq (and
    ``finish_reply`` when the reply was closed already)."""

    NOT_STREAMING = 0
    APPLIED_ALREADY = -1


class _Lease(IntEnum):
    """What ``keep_leases`` returns per reply."""

    LEASE_LOST = 0
    LEASE_KEPT = 1
    STOP_ASKED = 2


_LEASE_STATES: Final[dict[_Lease, LeaseState]] = {
    _Lease.LEASE_LOST: "lost",
    _Lease.LEASE_KEPT: "kept",
    _Lease.STOP_ASKED: "stop",
}

_INTERRUPTED_MESSAGE: Final = (
    "The gateway generating this reply stopped; the partial answer is kept."
)
# Stands for a reply or message id that only the script knows: it fills it into the JSON
# that msgspec encoded around this mark.
_ID_SLOT: Final = "<id>"


class _Ending(msgspec.Struct):
    """How a reply ended, kept in its message hash for snapshots: what its ``done`` or
    ``error`` event said."""

    finish_reason: str | None = None
    usage: Usage | None = None
    error: ReplyError | None = None
    timing: Timing | None = None


_ending_decoder = msgspec.json.Decoder(_Ending)
_STILL_STREAMING: Final = _Ending()


def _ending_of(event: Done | ErrorEvent) -> _Ending:
    if isinstance(event, ErrorEvent):
        return _Ending(error=ReplyError(event.code, event.message))
    return _Ending(finish_reason=event.finish_reason, usage=event.usage, timing=event.timing)


def utc_now() -> str:
    """The time now in RFC 3339, UTC, to the millisecond: ``2025-01-31T12:00:00.123Z``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _around_slot(event: Event) -> tuple[bytes, bytes]:
    head, tail = encode_data(event).split(_ID_SLOT.encode())
    return head, tail


def _around_id(text: str) -> tuple[bytes, bytes]:
    head, tail = text.encode().split(_ID_SLOT.encode())
    return head, tail


def _lua_literal(value: int | str | bytes | tuple[bytes, bytes]) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):
        return "{" + ", ".join(_lua_literal(part) for part in value) + "}"
    raw = value.encode() if isinstance(value, str) else value
    return '"' + "".join(_lua_char(byte) for byte in raw) + '"'


def _lua_char(byte: int) -> str:
    if byte in b'"\\':
        return "\\" + chr(byte)
    return chr(byte) if 0x20 <= byte < 0x7F else f"\\{byte:03d}"


# The constants every script starts with: Python is their one source.
_LUA_CONSTANTS: Final[dict[str, int | str | bytes | tuple[bytes, bytes]]] = {
    **{f"KEY_{name}": suffix for name, suffix in SESSION_KEY_SUFFIXES.items()},
    **{f"FIELD_{name}": field for name, field in HASH_FIELDS.items()},
    **{f"LOG_{name}": field for name, field in LOG_FIELDS.items()},
    **{code.name: int(code) for codes in (_Outcome, _Delta, _Lease) for code in codes},
    "SEQ_SKIP_AFTER_RESTART": SEQ_SKIP_AFTER_RESTART,
    "OWNER_INDEX_PREFIX": OWNER_INDEX_PREFIX,
    "SHARE_PREFIX": SHARE_PREFIX,
    # A session's keys from its id alone (the owner index lists ids): prefix and hash.
    "SESSION_BASE": _around_id(SessionKeys(_ID_SLOT).base),
    "SESSION_HASH": SessionKeys(_ID_SLOT).session.removeprefix(SessionKeys(_ID_SLOT).base),
    "SETTINGS_MODEL": next(
        f.encode_name for f in msgspec.structs.fields(SessionSettings) if f.name == "model"
    ),
    "WIRE_SEPARATOR": WIRE_SEPARATOR,
    **{
        f"{event.name.upper()}_EVENT": event.name
        for event in (
            MessageAdded,
            Start,
            Delta,
            Reasoning,
            ErrorEvent,
            SettingsChanged,
            Truncate,
            TitleChanged,
            Deleted,
        )
    },
    "TRUNCATE_ALL_DATA": encode_data(Truncate(from_message_id=None)),
    "TRUNCATE_FROM_DATA": _around_slot(Truncate(from_message_id=_ID_SLOT)),
    "INTERRUPTED_DATA": _around_slot(
        ErrorEvent(reply_id=_ID_SLOT, code="interrupted", message=_INTERRUPTED_MESSAGE)
    ),
    "INTERRUPTED_ENDING": msgspec.json.encode(
        _ending_of(ErrorEvent(reply_id="", code="interrupted", message=_INTERRUPTED_MESSAGE))
    ),
}
_LUA_HEADER: Final = "".join(
    f"local {name} = {_lua_literal(value)}\n" for name, value in _LUA_CONSTANTS.items()
)


def _script(
    *parts: str, constants: Mapping[str, str | bytes] | None = None, cluster: bool = False
) -> str:
    """A script from the files ``lua/<part>.lua``, after the constants (the store's, then
    ``constants``: a module's own). ``cluster``: for a Redis Cluster, where a script touches
    the keys of one slot only and publishes to sharded channels (Lua ``CLUSTER``, 1 or 0, and
    ``PUBLISH_COMMAND``)."""
    folder = resources.files("chatrelay_common") / "lua"
    mode: dict[str, int | str] = {
        "CLUSTER": int(cluster),
        "PUBLISH_COMMAND": "SPUBLISH" if cluster else "PUBLISH",
    }
    own = "".join(
        f"local {k} = {_lua_literal(v)}\n" for k, v in {**mode, **(constants or {})}.items()
    )
    return _LUA_HEADER + own + "".join((folder / f"{part}.lua").read_text() for part in parts)


@dataclass(frozen=True, slots=True)
class _Scripts:
    begin: str
    append_deltas: str
    finish: str
    update_settings: str
    clear: str
    keep_leases: str
    request_stop: str
    reap: str
    due: str
    snapshot: str
    unlist_if_due: str


@functools.cache
def _scripts(cluster: bool) -> _Scripts:
    return _Scripts(
        begin=_script("prelude", "begin_reply", cluster=cluster),
        append_deltas=_script("prelude", "append_deltas", cluster=cluster),
        finish=_script("prelude", "finish_reply", cluster=cluster),
        update_settings=_script("prelude", "update_settings", cluster=cluster),
        clear=_script("prelude", "clear", cluster=cluster),
        keep_leases=_script("prelude", "keep_leases", cluster=cluster),
        request_stop=_script("prelude", "request_stop", cluster=cluster),
        reap=_script("prelude", "reap", cluster=cluster),
        due=_script("due", cluster=cluster),
        snapshot=_script("snapshot", cluster=cluster),
        unlist_if_due=_script("unlist_if_due", cluster=cluster),
    )


_settings_decoder = msgspec.json.Decoder(SessionSettings)
_SETTINGS, _SEQ = HASH_FIELDS["SETTINGS"], HASH_FIELDS["SEQ"]
_OWNER, _SHARE = HASH_FIELDS["OWNER"], HASH_FIELDS["SHARE"]
_LOG_NAME, _LOG_DATA = LOG_FIELDS["NAME"].encode(), LOG_FIELDS["DATA"].encode()
_encoder = msgspec.json.Encoder()


def _raise_unless_done(result: int, session_id: str) -> None:
    if result == _Outcome.UNKNOWN_SESSION:
        raise SessionNotFoundError(session_id)
    if result == _Outcome.BUSY:
        raise ReplyBusyError(session_id)
    if result != _Outcome.DONE:
        raise RuntimeError(f"unexpected script result {result}")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message(
    message_id: bytes,
    role: bytes,
    status: bytes,
    created: bytes | None,
    model: bytes | None,
    ending: bytes | None,
    text: bytes,
    reasoning: bytes,
) -> Message:
    """One message from what ``snapshot.lua`` returns for it."""
    message = Message(
        id=message_id.decode(),
        role=cast("Role", role.decode()),
        status=cast("Status", status.decode()),
        content=text.decode(),
        created_at=None if created is None else created.decode(),
    )
    if message.role == "assistant":
        how = _STILL_STREAMING if ending is None else _ending_decoder.decode(ending)
        message.model = "" if model is None else model.decode()
        message.reasoning = reasoning.decode()
        message.finish_reason = how.finish_reason
        message.usage = how.usage
        message.error = how.error
        message.timing = how.timing
    return message


class SessionStore:
    """Async access to sessions in Redis. ``redis`` must not decode responses."""

    STOP_FLAG_MS: Final = 60_000

    def __init__(
        self,
        redis: AnyRedis,
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
        self.cluster = isinstance(redis, RedisCluster)
        scripts = _scripts(self.cluster)
        # redis-py types its script commands for the plain client only; the cluster client
        # has them too (routed by a script's first key).
        register = cast("Redis", redis).register_script
        self._begin = register(scripts.begin)
        self._append_deltas = register(scripts.append_deltas)
        self._finish = register(scripts.finish)
        self._update_settings = register(scripts.update_settings)
        self._clear = register(scripts.clear)
        self._keep_leases = register(scripts.keep_leases)
        self._request_stop = register(scripts.request_stop)
        self._reap = register(scripts.reap)
        self._due = register(scripts.due)
        self._snapshot = register(scripts.snapshot)
        self._unlist_if_due = register(scripts.unlist_if_due)

    @property
    def redis(self) -> AnyRedis:
        return self._redis

    @property
    def lease_seconds(self) -> float:
        """How long a reply stays open without its gateway refreshing the lease."""
        return self._lease_seconds

    async def _run(
        self, script: Any, session_id: str, *args: str | bytes, reply_id: str | None = None
    ) -> Any:
        """A write script on one session (of one reply, when ``reply_id`` is known: its keys
        are declared too)."""
        keys = SessionKeys(session_id)
        durable = await self._durable_flag()
        return await script(
            keys=[*self._declared(keys, reply_id), *self._lease_index],
            args=[keys.base, session_id, *self._limits, durable, *args],
        )

    def _declared(self, keys: SessionKeys, reply_id: str | None) -> list[str]:
        """A script's KEYS for a session: on a cluster, every key the store can name (see
        ``SessionKeys.declared``); on one Redis the two the scripts read from KEYS, which
        keeps the hot path's calls as small as they were."""
        return keys.declared(reply_id) if self.cluster else [keys.session, keys.log]

    async def _many_replies_args(self) -> list[str | bytes]:
        """ARGV[1..8] of the scripts on many replies: [1] how many KEYS each reply has."""
        per_reply = str(len(self._declared(SessionKeys(""), "")))
        return [per_reply, "", *self._limits, await self._durable_flag()]

    @property
    def _lease_index(self) -> list[str]:
        """The lease index as the last KEYS of a write script: not on a cluster (another
        slot), where the store keeps it with commands of its own."""
        return [] if self.cluster else [LEASES]

    async def _durable_flag(self) -> str:
        """ARGV[8] of the write scripts. (On a cluster unused: a failover may lose writes
        whatever the nodes' fsync, and the scripts look at replication ids instead.)"""
        if self.cluster:
            return "0"
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

    async def _write(
        self, script: Any, session_id: str, *args: str | bytes, reply_id: str | None = None
    ) -> int:
        return int(await self._run(script, session_id, *args, reply_id=reply_id))

    async def create(self, settings: SessionSettings, *, owner: str | None = None) -> str:
        """A new session; with ``owner`` it is recorded as its creator's and joins that
        owner's index (``chatrelay_common.History``)."""
        session_id = new_id()
        key = SessionKeys(session_id).session
        fields: dict[str, bytes | str | int] = {_SETTINGS: msgspec.json.encode(settings), _SEQ: 0}
        if owner is not None:
            fields[_OWNER] = owner
        # One Redis: the session and its place in its owner's index in one transaction. On a
        # cluster they are in different slots (an index entry whose session is missing is
        # pruned by the list).
        async with self._redis.pipeline(transaction=not self.cluster) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, self._session_ttl)
            if owner is not None:
                self._list_for_owner(pipe, owner, session_id)
            await pipe.execute()
        return session_id

    def _list_for_owner(
        self, pipe: Pipeline | ClusterPipeline, owner: str, session_id: str
    ) -> None:
        """Queue the session's move to the top of its owner's index, which lives as long as
        its newest session."""
        index = OWNER_INDEX_PREFIX + owner
        pipe.zadd(index, {session_id: int(time.time() * 1000)})
        pipe.expire(index, self._session_ttl)

    async def _touch_outside(self, session_id: str) -> None:
        """On a cluster, after a write that was activity: what ``touch_all`` leaves to the
        store there (the owner's index and the share link live in other slots)."""
        if not self.cluster:
            return
        owner, share = await cast(
            "Awaitable[list[bytes | None]]",
            self._redis.hmget(SessionKeys(session_id).session, [_OWNER, _SHARE]),
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            if owner is not None:
                self._list_for_owner(pipe, owner.decode(), session_id)
            if share is not None:
                pipe.expire(SHARE_PREFIX + share.decode(), self._session_ttl)
            await pipe.execute()

    async def _session_field(self, session_id: str, field: str) -> bytes | None:
        key = SessionKeys(session_id).session
        # redis-py types hash commands as sync-or-async; this client is async.
        return await cast("Awaitable[bytes | None]", self._redis.hget(key, field))

    async def exists(self, session_id: str) -> bool:
        return bool(await self._redis.exists(SessionKeys(session_id).session))

    async def settings(self, session_id: str) -> SessionSettings:
        raw = await self._session_field(session_id, _SETTINGS)
        if raw is None:
            raise SessionNotFoundError(session_id)
        return _settings_decoder.decode(raw)

    async def snapshot(self, session_id: str) -> Snapshot:
        keys = SessionKeys(session_id)
        out = await self._snapshot(keys=[keys.session], args=[keys.base])
        if not out:
            raise SessionNotFoundError(session_id)
        seq, settings, title, *flat = out
        messages = [_message(*flat[i : i + 8]) for i in range(0, len(flat), 8)]
        return Snapshot(
            id=session_id,
            settings=_settings_decoder.decode(settings),
            messages=messages,
            seq=int(seq),
            title=msgspec.UNSET if title is None else title.decode(),
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
        streaming reply of ``model`` holding a lease. Returns ``(message_id, reply_id)``."""
        began = await self._begin_reply(session_id, (model,), content, replace_from, fixed=True)
        return began.message_id, began.reply_id

    async def start_reply(
        self,
        session_id: str,
        *,
        allowed_models: Sequence[str],
        content: str | None,
        replace_from: str | None = None,
    ) -> ReplyStart:
        """``begin_reply`` with the session's own model, which must be one of
        ``allowed_models`` (else ``ModelNotAllowedError``, before anything is written), in one
        round trip that also returns what the upstream request needs."""
        return await self._begin_reply(
            session_id, allowed_models, content, replace_from, fixed=False
        )

    async def _begin_reply(
        self,
        session_id: str,
        models: Sequence[str],
        content: str | None,
        replace_from: str | None,
        *,
        fixed: bool,
    ) -> ReplyStart:
        reply_id = new_id(12)
        message_id = new_id(12) if content is not None else None
        created_at = utc_now()
        message = MessageAdded(
            Message(
                id=message_id or "",
                role="user",
                content=content or "",
                status="complete",
                created_at=created_at,
            )
        )
        # Each model the reply may use, with its `start` event: the script picks the
        # session's, or (fixed) takes the one given; see begin_reply.lua.
        choices: list[str | bytes] = [] if fixed else ["", ""]
        for model in models:
            start = Start(reply_id=reply_id, model=model, created_at=created_at)
            choices += [model, encode_data(start)]
        if self.cluster:
            # Listed before it exists: an entry without a reply is dropped by the reaper, a
            # reply without an entry would never be.
            await self._index_leases([(session_id, self._lease_seconds)])
        out = await self._run(
            self._begin,
            session_id,
            "send" if content is not None else "regenerate",
            replace_from or "",
            message_id or "",
            content or "",
            encode_data(message),
            reply_id,
            created_at,
            "" if content is None else default_title(content),
            *choices,
            reply_id=reply_id,
        )
        result, *rest = out
        if result == _Outcome.MODEL_NOT_ALLOWED:
            raise ModelNotAllowedError(rest[0].decode() if rest else "")
        if result == _Outcome.NOTHING_TO_REGENERATE:
            raise NothingToRegenerateError(replace_from or "")
        if result == _Outcome.SESSION_FULL:
            raise SessionFullError(self._session_max_bytes)
        _raise_unless_done(result, session_id)
        await self._touch_outside(session_id)
        settings, *flat = rest
        history = [
            (cast("Role", flat[i].decode()), flat[i + 1].decode()) for i in range(0, len(flat), 2)
        ]
        return ReplyStart(message_id, reply_id, _settings_decoder.decode(settings), history)

    async def append_delta(
        self,
        session_id: str,
        reply_id: str,
        text: str,
        *,
        batch: int | None = None,
        kind: str = Delta.name,
    ) -> bool:
        """Append text to the streaming reply: to its answer (a ``delta`` event), or with
        ``kind=Reasoning.name`` to its reasoning (a ``reasoning`` event). A writer that may
        retry numbers its batches (1, 2, … per reply, across both kinds): a batch number
        already applied is skipped, so a call retried after its answer was lost never doubles
        text. False when the reply no longer streams (then the caller should stop)."""
        [streaming] = await self.append_deltas([(session_id, reply_id, kind, text, batch)])
        return streaming

    async def append_deltas(self, writes: Sequence[DeltaWrite]) -> list[bool]:
        """:meth:`append_delta` for many replies (of any sessions) in one Redis call, in
        order: ``(session_id, reply_id, text, batch)`` each. Returns, per write, False when
        its reply no longer streams. On a cluster, one call per slot, all at once."""
        prefix = await self._many_replies_args()

        async def run(part: Sequence[DeltaWrite]) -> list[bool]:
            keys: list[str] = []
            args = list(prefix)
            for session_id, reply_id, kind, text, batch in part:
                session = SessionKeys(session_id)
                keys += self._declared(session, reply_id)
                data = encode_data(_TEXT_EVENTS[kind](reply_id=reply_id, text=text))
                number = "" if batch is None else str(batch)
                args += [session.base, session_id, reply_id, kind, text, data, number]
            results = await self._append_deltas(keys=[*keys, *self._lease_index], args=args)
            return [int(result) != _Delta.NOT_STREAMING for result in results]

        return await self._per_slot(writes, run)

    async def _per_slot(
        self, items: Sequence[_Item], run: Callable[[Sequence[_Item]], Awaitable[list[_R]]]
    ) -> list[_R]:
        """``run`` over every item (``(session_id, …)``) in one call on one Redis; on a
        cluster, where a script touches one slot, one call per slot, concurrently, each in
        the items' order. The results in the items' order."""
        if not items:
            return []
        if not self.cluster:
            return await run(items)
        slots: dict[int, list[int]] = {}
        for at, item in enumerate(items):
            slot = key_slot(SessionKeys(item[0]).session.encode())
            slots.setdefault(slot, []).append(at)
        parts = list(slots.values())
        outcomes = await asyncio.gather(
            *(run([items[at] for at in part]) for part in parts), return_exceptions=True
        )
        results: list[_R | None] = [None] * len(items)
        failed: BaseException | None = None
        for part, outcome in zip(parts, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                failed = failed or outcome
                continue
            for at, result in zip(part, outcome, strict=True):
                results[at] = result
        if failed is not None:
            if not isinstance(failed, RedisError | OSError) or all(r is None for r in results):
                raise failed
            raise SlotsUnavailableError(results, failed) from failed
        return cast("list[_R]", results)

    async def finish_reply(self, session_id: str, reply_id: str, event: Done | ErrorEvent) -> bool:
        """False when the reply was not streaming any more (closed already)."""
        if isinstance(event, ErrorEvent):
            status = "error"
        else:
            status = "stopped" if event.finish_reason == "stopped" else "complete"
        ending = _encoder.encode(_ending_of(event))
        seq = await self._write(
            self._finish,
            session_id,
            reply_id,
            status,
            event.name,
            encode_data(event),
            ending,
            reply_id=reply_id,
        )
        if seq == _Delta.NOT_STREAMING:
            return False
        await self._touch_outside(session_id)
        return True

    async def refresh_lease(self, session_id: str, reply_id: str) -> bool:
        """Extend the reply's lease; False when the reply no longer streams."""
        [state] = await self.keep_leases([(session_id, reply_id)])
        return state != "lost"

    async def keep_leases(self, replies: Sequence[tuple[str, str]]) -> list[LeaseState]:
        """Extend the leases of many streaming replies ``(session_id, reply_id)`` in one Redis
        call. Per reply: ``"kept"``; ``"stop"`` when a client asked it to stop (its stop flag:
        seen even when the stop's publication was missed); ``"lost"`` when it no longer
        streams (then its writer should stop)."""
        prefix = await self._many_replies_args()

        async def run(part: Sequence[tuple[str, str]]) -> list[LeaseState]:
            keys: list[str] = []
            args = list(prefix)
            for session_id, reply_id in part:
                session = SessionKeys(session_id)
                keys += self._declared(session, reply_id)
                args += [session.base, session_id, reply_id]
            results = await self._keep_leases(keys=[*keys, *self._lease_index], args=args)
            return [_LEASE_STATES[_Lease(int(result))] for result in results]

        try:
            kept = await self._per_slot(replies, run)
        except SlotsUnavailableError as partial:  # index those kept, then tell the caller
            await self._index_kept(replies, cast("list[LeaseState | None]", partial.results))
            raise
        await self._index_kept(replies, kept)
        return kept

    async def _index_kept(
        self, replies: Sequence[tuple[str, str]], states: Sequence[LeaseState | None]
    ) -> None:
        if self.cluster:
            await self._index_leases(
                [
                    (session_id, self._lease_seconds)
                    for (session_id, _), state in zip(replies, states, strict=True)
                    if state in ("kept", "stop")
                ]
            )

    async def _index_leases(self, leases: Sequence[tuple[str, float]]) -> None:
        """On a cluster: list sessions ``(id, seconds their lease has left)`` in the lease
        index (a script does it on one Redis)."""
        if leases:
            now_ms = time.time() * 1000
            await self._redis.zadd(
                LEASES, {session_id: int(now_ms + left * 1000) for session_id, left in leases}
            )

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
        flat = cast("list[bytes]", await self._due(keys=[LEASES], args=[limit]))
        due = zip(flat[::2], flat[1::2], strict=True)
        closed = []
        alive: list[tuple[str, float]] = []
        gone: list[bytes] = []
        for session_id, deadline in due:
            reply, left_ms = await self._run(self._reap, session_id.decode())
            if reply:
                closed.append(reply.decode())
            if int(left_ms) > 0:
                alive.append((session_id.decode(), int(left_ms) / 1000))
            else:
                gone += [session_id, deadline]
        if self.cluster:  # what reap.lua does to the index on one Redis
            await self._index_leases(alive)
            if gone:
                await self._unlist_if_due(keys=[LEASES], args=gone)
        return closed

    async def update_settings(
        self, session_id: str, changes: Mapping[str, object]
    ) -> SessionSettings:
        """Merge ``changes`` into the stored settings (two concurrent updates of different
        fields both survive) and emit ``settings`` unless nothing changed; returns the
        merge."""
        unknown = set(changes) - set(SessionSettings.__struct_fields__)
        if unknown:
            raise ValueError(f"not a session setting: {', '.join(sorted(unknown))}")
        # Merged here, set in Redis only if nobody changed the settings in between: else again.
        while True:
            stored = await self._session_field(session_id, _SETTINGS)
            if stored is None:
                raise SessionNotFoundError(session_id)
            merged = msgspec.structs.replace(_settings_decoder.decode(stored), **changes)
            merged_json = _encoder.encode(merged)
            data = encode_data(SettingsChanged(merged))
            result = await self._write(self._update_settings, session_id, stored, merged_json, data)
            if result != _Outcome.SETTINGS_MOVED:
                _raise_unless_done(result, session_id)
                await self._touch_outside(session_id)
                return _settings_decoder.decode(merged_json)

    async def clear(self, session_id: str) -> None:
        _raise_unless_done(await self._write(self._clear, session_id), session_id)
        await self._touch_outside(session_id)

    async def last_seq(self, session_id: str) -> int | None:
        raw = await self._session_field(session_id, _SEQ)
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
                seq=int(entry_id.split(b"-", 1)[0]),
                name=fields[_LOG_NAME].decode(),
                data=fields[_LOG_DATA],
            )
            for entry_id, fields in entries
        ]
