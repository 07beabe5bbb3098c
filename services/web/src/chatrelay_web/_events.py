"""The SSE stream of one session for one connection: gap-free resume, then live."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import msgspec
from chatrelay_common import (
    STREAM_ENDING_EVENTS,
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

__all__ = ["EventStream", "SharedSnapshots", "StreamTiming"]

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


async def _snapshot_frame(store: SessionStore, session_id: str, public_id: str) -> _Frame:
    """``public_id`` is the ``id`` the snapshot shows: the session's, or a share token."""
    snapshot = await store.snapshot(session_id)
    in_flight = any(message.status == "streaming" for message in snapshot.messages)
    if public_id != session_id:
        snapshot = msgspec.structs.replace(snapshot, id=public_id)
    frame = encode_sse(snapshot.seq, snapshot.name, encode_data(snapshot))
    return _Frame(snapshot.seq, frame, in_flight)


class SharedSnapshots:
    """Tabs opening on one session at once share its snapshot read (the store's script, its
    decoding and the SSE frame's encoding), which was a third of the loop's work while
    thousands of tabs of one session connect at once.

    A tab may only share a read that started after its own subscription was confirmed: then
    every event the snapshot lacks reaches the tab live, exactly as with a read of its own.
    ``epoch`` (taken once subscribed) orders the two: each read takes a higher one.
    Reads are shared per ``public_id`` (the id the snapshot shows: a share link's viewers
    get the token there, never the session id)."""

    __slots__ = ("_epoch", "_reads", "_store")

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._epoch = 0
        self._reads: dict[str, tuple[int, asyncio.Future[_Frame]]] = {}

    @property
    def epoch(self) -> int:
        return self._epoch

    async def __call__(
        self, session_id: str, subscribed_at: int, public_id: str | None = None
    ) -> _Frame:
        """The snapshot of ``session_id`` from a read started after epoch ``subscribed_at``,
        showing ``public_id`` (default: the session id) as its ``id``."""
        public_id = session_id if public_id is None else public_id
        current = self._reads.get(public_id)
        if current is not None and current[0] > subscribed_at:
            return await asyncio.shield(current[1])
        self._epoch += 1
        read = asyncio.ensure_future(_snapshot_frame(self._store, session_id, public_id))
        self._reads[public_id] = (self._epoch, read)
        read.add_done_callback(lambda _: self._forget(public_id, read))
        return await asyncio.shield(read)

    def _forget(self, public_id: str, read: asyncio.Future[_Frame]) -> None:
        current = self._reads.get(public_id)
        if current is not None and current[1] is read:
            del self._reads[public_id]
        if not read.cancelled():
            read.exception()  # retrieved: every waiter may have left


async def _replay(
    store: SessionStore, session_id: str, after: int, in_flight: bool, public_id: str
) -> AsyncIterator[_Frame]:
    """Every logged event after ``after``. When the log no longer holds them all (trimmed, or
    an id this session never had), a ``reset`` and a fresh snapshot."""
    while True:
        events = await store.events_after(session_id, after, limit=_REPLAY_PAGE)
        last_seq = await store.last_seq(session_id) if not events else None
        if (events and events[0].seq != after + 1) or (last_seq is not None and after > last_seq):
            RESETS.inc()
            reset = encode_sse(None, Reset.name, encode_data(Reset(last_event_id=after)))
            snapshot = await _snapshot_frame(store, session_id, public_id)
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


class EventStream:
    """One connection's events response, as a bare ASGI app: subscribe first, then write the
    snapshot (or the log after ``last_event_id``), then live events after ``_last``,
    skipping any the client already has; events that arrived together are written together.
    When Redis fails the stream just ends: the browser reconnects with ``Last-Event-ID`` and
    resumes without a gap. It also ends once the client disconnects, which one small task
    per connection (the server's ``receive``, awaited) watches for.

    Thousands of these stay open for hours, so each keeps little alive while it waits: one
    object (slots) and, besides the server's, three coroutine frames (``__call__``,
    ``_step``, the subscriber's ``take``). Written push-style (each step writes, then
    returns) so that no bytes stay referenced while the connection waits: a generator's
    locals would keep the last chunk, a snapshot of the whole conversation at first, alive
    for every idle connection.

    A share link's viewer gets the same stream with two differences: ``public_id`` (the
    token) stands in for the session id in every snapshot, and ``ends`` (the link's
    revocation) ends the stream once it resolves, after writing the frame it resolves to."""

    __slots__ = (
        "_ends",
        "_fanout",
        "_in_flight",
        "_last",
        "_last_event_id",
        "_last_heard",
        "_last_write",
        "_opening",
        "_public_id",
        "_send",
        "_session_id",
        "_snapshots",
        "_store",
        "_subscriber",
        "_timing",
    )
    _send: Send
    _subscriber: Subscriber

    def __init__(
        self,
        store: SessionStore,
        fanout: Fanout,
        session_id: str,
        last_event_id: int | None,
        timing: StreamTiming,
        opening: asyncio.Semaphore,
        snapshots: SharedSnapshots,
        *,
        public_id: str | None = None,
        ends: asyncio.Future[bytes] | None = None,
    ) -> None:
        self._public_id = session_id if public_id is None else public_id
        self._ends = ends
        self._opening = opening
        self._snapshots = snapshots
        self._store = store
        self._fanout = fanout
        self._session_id = session_id
        self._last_event_id = last_event_id
        self._timing = timing
        self._last = 0
        self._in_flight = False
        self._last_write = self._last_heard = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        while (await receive()).get("more_body", False):
            pass  # the request's body (a GET's is empty): after it, only the disconnect is left
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        gone = asyncio.ensure_future(receive())
        SSE_CONNECTIONS.inc()
        channel = SessionKeys(self._session_id).channel
        try:
            try:
                subscriber = self._subscriber = await self._fanout.join(channel)
                try:
                    gone.add_done_callback(subscriber.close)
                    if self._ends is not None:
                        self._ends.add_done_callback(subscriber.close)
                    await self._open(self._snapshots.epoch)
                    self._last_write = self._last_heard = asyncio.get_running_loop().time()
                    while await self._step():
                        pass
                    ends = self._ends
                    if ends is not None and ends.done() and not gone.done() and ends.result():
                        await self._write(ends.result())
                finally:
                    gone.remove_done_callback(subscriber.close)
                    if self._ends is not None:
                        self._ends.remove_done_callback(subscriber.close)
                    self._fanout.leave(channel, subscriber)
            except SessionNotFoundError:
                pass
            except (FanoutUnavailableError, RedisError, OSError) as exc:
                logger.warning("ending the events stream of a session: %s", exc)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            SSE_CONNECTIONS.dec()

    async def _write(self, chunk: bytes) -> None:
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _open(self, subscribed_at: int) -> None:
        """The snapshot (read after ``subscribed_at``, see ``SharedSnapshots``), or ``retry``
        and the log after ``last_event_id``. The first read holds ``opening`` (which bounds
        how many streams open at once), the writes do not: a client that does not read must
        not keep others from opening."""
        if self._last_event_id is None:
            async with self._opening:
                snapshot = await self._snapshots(self._session_id, subscribed_at, self._public_id)
            self._last, self._in_flight = snapshot.seq, snapshot.in_flight
            await self._write(RETRY + snapshot.frame)
            return
        RESUMES.inc()
        await self._write(RETRY)
        self._last = self._last_event_id
        async with self._opening:
            self._in_flight = await _in_flight_at(self._store, self._session_id, self._last)
        async for replayed in self._replay():
            await self._write(replayed.frame)
            self._last, self._in_flight = replayed.seq, replayed.in_flight

    def _replay(self) -> AsyncIterator[_Frame]:
        return _replay(self._store, self._session_id, self._last, self._in_flight, self._public_id)

    async def _catch_up(self, frames: list[bytes]) -> None:
        async for replayed in self._replay():
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

    async def _step(self) -> bool:
        """Wait for live events (or a deadline) and write what is due. False: closed."""
        loop = asyncio.get_running_loop()
        timing = self._timing
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
                # Nothing follows a session's last event (`deleted`): its streams end.
                return events[-1].name not in STREAM_ENDING_EVENTS
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
            if event.name in STREAM_ENDING_EVENTS:
                closed = True
                break
        if frames:
            self._last_write = self._last_heard
            await self._write(frames[0] if len(frames) == 1 else b"".join(frames))
        return not closed
