"""The SSE stream of one session for one connection: gap-free resume, then live."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from chatrelay_common import (
    Delta,
    Done,
    ErrorEvent,
    Reasoning,
    Reset,
    SessionKeys,
    SessionNotFoundError,
    SessionStore,
    Start,
    encode_data,
    encode_sse,
)
from litestar.types import Receive, Scope, Send
from redis.exceptions import RedisError

from ._fanout import Fanout, FanoutUnavailableError, LiveEvent, Subscriber
from ._metrics import RESETS, RESUMES, SSE_CONNECTIONS

__all__ = ["EventStream", "StreamTiming", "stream_session"]

HEARTBEAT = b": ping\n\n"
# Reconnect after 1 s rather than the browser's default of about 3 s.
RETRY = b"retry: 1000\n\n"
_REPLAY_PAGE = 500

logger = logging.getLogger("chatrelay.web")


# What Litestar's ServerSentEvent answered with before (the API names these headers).
_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"connection", b"keep-alive"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


_IN_FLIGHT_AFTER = {
    Start.name: True,
    Reasoning.name: True,
    Delta.name: True,
    Done.name: False,
    ErrorEvent.name: False,
}


def _in_flight_after(name: str, in_flight: bool) -> bool:
    """Whether a reply streams after an event named ``name``."""
    return _IN_FLIGHT_AFTER.get(name, in_flight)


async def _in_flight_at(store: SessionStore, session_id: str, seq: int) -> bool:
    """Whether a reply streamed right after event ``seq``, from that event's name (a resuming
    stream may replay nothing that tells). Gone from the log: assume so."""
    if seq <= 0:
        return False
    events = await store.events_after(session_id, seq - 1, limit=1)
    if not events or events[0].seq != seq:
        return True
    return _in_flight_after(events[0].name, False)


@dataclass(frozen=True, slots=True)
class _Frame:
    seq: int
    frame: bytes
    in_flight: bool


async def _snapshot_frame(store: SessionStore, session_id: str) -> _Frame:
    snapshot = await store.snapshot(session_id)
    in_flight = any(message.status == "streaming" for message in snapshot.messages)
    frame = encode_sse(snapshot.seq, snapshot.name, encode_data(snapshot))
    return _Frame(snapshot.seq, frame, in_flight)


async def _replay(
    store: SessionStore, session_id: str, after: int, in_flight: bool
) -> AsyncIterator[_Frame]:
    """Every logged event after ``after``. When the log no longer holds them all (trimmed, or
    an id this session never had), a ``reset`` and a fresh snapshot."""
    while True:
        events = await store.events_after(session_id, after, limit=_REPLAY_PAGE)
        last_seq = await store.last_seq(session_id) if not events else None
        if (events and events[0].seq != after + 1) or (last_seq is not None and after > last_seq):
            RESETS.inc()
            reset = encode_sse(None, Reset.name, encode_data(Reset(last_event_id=after)))
            snapshot = await _snapshot_frame(store, session_id)
            yield _Frame(snapshot.seq, reset + snapshot.frame, snapshot.in_flight)
            return
        for event in events:
            in_flight = _in_flight_after(event.name, in_flight)
            yield _Frame(event.seq, encode_sse(event.seq, event.name, event.data), in_flight)
        if len(events) < _REPLAY_PAGE:
            return
        after = events[-1].seq


@dataclass(frozen=True, slots=True)
class StreamTiming:
    heartbeat_seconds: float
    # With a reply in flight, this long without a live event makes the stream re-check the log.
    stall_seconds: float


Write = Callable[[bytes], Awaitable[None]]


async def stream_session(
    store: SessionStore,
    fanout: Fanout,
    session_id: str,
    last_event_id: int | None,
    timing: StreamTiming,
    gone: asyncio.Future[None],
    write: Write,
    opening: asyncio.Semaphore,
) -> None:
    """Subscribe first, then write the snapshot (or the log after ``last_event_id``), then
    live events, skipping any the client already has. When Redis fails the stream just ends:
    the browser reconnects with ``Last-Event-ID`` and resumes without a gap. It also ends
    once ``gone`` (the client disconnected) is done."""
    try:
        async with fanout.subscribe(SessionKeys(session_id).channel) as subscriber:
            gone.add_done_callback(subscriber.close)
            try:
                live = _Live(store, session_id, subscriber, write)
                await live.open(last_event_id, opening)
                await live.run(timing)
            finally:
                gone.remove_done_callback(subscriber.close)
    except SessionNotFoundError:
        return
    except (FanoutUnavailableError, RedisError, OSError) as exc:
        logger.warning("ending the events stream of a session: %s", exc)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class EventStream:
    """The events response as a bare ASGI app: the stream's bytes go to ``send`` as they
    are, with no per-write wrapping, and one small task per connection watches for the
    client leaving. Thousands of these stay open at once, so each costs little."""

    __slots__ = ("_fanout", "_last_event_id", "_opening", "_session_id", "_store", "_timing")

    def __init__(
        self,
        store: SessionStore,
        fanout: Fanout,
        session_id: str,
        last_event_id: int | None,
        timing: StreamTiming,
        opening: asyncio.Semaphore,
    ) -> None:
        self._opening = opening
        self._store = store
        self._fanout = fanout
        self._session_id = session_id
        self._last_event_id = last_event_id
        self._timing = timing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        gone = asyncio.ensure_future(_until_disconnect(receive))
        SSE_CONNECTIONS.inc()
        try:
            await stream_session(
                self._store,
                self._fanout,
                self._session_id,
                self._last_event_id,
                self._timing,
                gone,
                write,
                self._opening,
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            SSE_CONNECTIONS.dec()


class _Live:
    """One connection's stream: what the client lacks, then live events after ``_last``.
    Events that arrived together are written together.

    Written push-style (each step writes, then returns) so that no bytes stay referenced
    while the connection waits, which may be hours: a generator's locals would keep the last
    chunk, a snapshot of the whole conversation at first, alive for every idle connection."""

    def __init__(
        self, store: SessionStore, session_id: str, subscriber: Subscriber, write: Write
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._subscriber = subscriber
        self._write = write
        self._last = 0
        self._in_flight = False
        self._last_write = self._last_heard = 0.0

    async def open(self, last_event_id: int | None, opening: asyncio.Semaphore) -> None:
        """The snapshot, or ``retry`` and the log after ``last_event_id``. The first read holds
        ``opening`` (which bounds how many streams open at once), the writes do not: a client
        that does not read must not keep others from opening."""
        if last_event_id is None:
            async with opening:
                snapshot = await _snapshot_frame(self._store, self._session_id)
            self._last, self._in_flight = snapshot.seq, snapshot.in_flight
            await self._write(RETRY + snapshot.frame)
            return
        RESUMES.inc()
        await self._write(RETRY)
        self._last = last_event_id
        async with opening:
            self._in_flight = await _in_flight_at(self._store, self._session_id, last_event_id)
        async for replayed in _replay(self._store, self._session_id, self._last, self._in_flight):
            await self._write(replayed.frame)
            self._last, self._in_flight = replayed.seq, replayed.in_flight

    async def _catch_up(self, frames: list[bytes]) -> None:
        async for replayed in _replay(self._store, self._session_id, self._last, self._in_flight):
            frames.append(replayed.frame)
            self._last, self._in_flight = replayed.seq, replayed.in_flight

    async def _stalled(self) -> bytes:
        """The live feed went quiet mid-reply: whatever the log holds that it did not bring."""
        current = await self._store.last_seq(self._session_id)
        if current is None or current <= self._last:
            return b""
        logger.warning(
            "a live stream missed events %d..%d; replaying them from the log",
            self._last + 1,
            current,
        )
        frames: list[bytes] = []
        await self._catch_up(frames)
        return b"".join(frames)

    async def run(self, timing: StreamTiming) -> None:
        self._last_write = self._last_heard = asyncio.get_running_loop().time()
        while await self._step(timing):
            pass

    async def _step(self, timing: StreamTiming) -> bool:
        """Wait for live events (or a deadline) and write what is due. False: closed."""
        loop = asyncio.get_running_loop()
        deadline = self._last_write + timing.heartbeat_seconds
        if self._in_flight:
            deadline = min(deadline, self._last_heard + timing.stall_seconds)
        batch = await self._subscriber.take(deadline)
        if not batch:
            now = loop.time()
            if self._in_flight and now - self._last_heard >= timing.stall_seconds:
                self._last_heard = now
                if missed := await self._stalled():
                    self._last_write = now
                    await self._write(missed)
                    return True
            if now - self._last_write >= timing.heartbeat_seconds:
                self._last_write = now
                await self._write(HEARTBEAT)
            return True
        self._last_heard = loop.time()
        if None not in batch:  # the usual case: the next events in order, all written at once
            events = cast("list[LiveEvent]", batch)
            expected, in_flight = self._last + 1, self._in_flight
            for live in events:
                if live.seq != expected:
                    break
                expected, in_flight = expected + 1, _in_flight_after(live.name, in_flight)
            else:
                self._last, self._in_flight = expected - 1, in_flight
                self._last_write = self._last_heard
                await self._write(self._subscriber.join(events))
                return True
        frames: list[bytes] = []
        closed = False
        for event in batch:
            if event is None:  # closed by the fan-out, or the client left
                closed = True
                break
            if event.seq <= self._last:
                continue
            if event.seq > self._last + 1:  # a gap in the live feed: fill it from the log
                await self._catch_up(frames)
                continue
            frames.append(event.frame)
            self._last = event.seq
            self._in_flight = _in_flight_after(event.name, self._in_flight)
        if frames:
            self._last_write = self._last_heard
            await self._write(frames[0] if len(frames) == 1 else b"".join(frames))
        return not closed
