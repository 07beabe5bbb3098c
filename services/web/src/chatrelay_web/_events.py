"""The SSE stream of one session for one connection: gap-free resume, then live."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from chatrelay_common import (
    Reset,
    SessionKeys,
    SessionNotFoundError,
    SessionStore,
    encode_data,
    encode_sse,
)
from litestar.response import ServerSentEventMessage
from redis.exceptions import RedisError

from ._fanout import Fanout, FanoutUnavailableError, LiveEvent

__all__ = ["EncodedEvent", "session_stream"]

HEARTBEAT = b": ping\n\n"
# Reconnect after 1 s rather than the browser's default of about 3 s.
RETRY = b"retry: 1000\n\n"
_REPLAY_PAGE = 500

logger = logging.getLogger("chatrelay.web")


class EncodedEvent(ServerSentEventMessage):
    """Bytes already in SSE form, written as they are: an event is encoded once in the
    fan-out, not once per connection."""

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def encode(self) -> bytes:
        return self.frame


async def _snapshot_frame(store: SessionStore, session_id: str) -> tuple[int, bytes]:
    snapshot = await store.snapshot(session_id)
    return snapshot.seq, encode_sse(snapshot.seq, snapshot.name, encode_data(snapshot))


async def _replay(
    store: SessionStore, session_id: str, after: int
) -> AsyncIterator[tuple[int, bytes]]:
    """Every logged event after ``after``, as ``(seq, frame)``. When the log no longer holds
    them all (trimmed, or an id this session never had), a ``reset`` and a fresh snapshot."""
    while True:
        events = await store.events_after(session_id, after, limit=_REPLAY_PAGE)
        last_seq = await store.last_seq(session_id) if not events else None
        if (events and events[0].seq != after + 1) or (last_seq is not None and after > last_seq):
            reset = encode_sse(None, Reset.name, encode_data(Reset(last_event_id=after)))
            seq, frame = await _snapshot_frame(store, session_id)
            yield seq, reset + frame
            return
        for event in events:
            yield event.seq, encode_sse(event.seq, event.name, event.data)
        if len(events) < _REPLAY_PAGE:
            return
        after = events[-1].seq


async def session_stream(
    store: SessionStore,
    fanout: Fanout,
    session_id: str,
    last_event_id: int | None,
    heartbeat_seconds: float,
) -> AsyncIterator[EncodedEvent]:
    """Subscribe first, then send the snapshot (or the log after ``last_event_id``), then live
    events, skipping any the client already has. When Redis fails the stream just ends: the
    browser reconnects with ``Last-Event-ID`` and resumes without a gap."""
    try:
        async with fanout.subscribe(SessionKeys(session_id).channel) as subscriber:
            if last_event_id is None:
                last, frame = await _snapshot_frame(store, session_id)
                yield EncodedEvent(RETRY + frame)
            else:
                last = last_event_id
                yield EncodedEvent(RETRY)
                async for seq, frame in _replay(store, session_id, last_event_id):
                    yield EncodedEvent(frame)
                    last = seq
            async for frames in _live(store, session_id, subscriber.queue, last, heartbeat_seconds):
                yield EncodedEvent(frames)
    except SessionNotFoundError:
        return
    except (FanoutUnavailableError, RedisError, OSError) as exc:
        logger.warning("ending the events stream of a session: %s", exc)


async def _live(
    store: SessionStore,
    session_id: str,
    queue: asyncio.Queue[LiveEvent | None],
    last: int,
    heartbeat_seconds: float,
) -> AsyncIterator[bytes]:
    """Live events after ``last``; events that arrived together are written together."""
    while True:
        try:
            first = await asyncio.wait_for(queue.get(), heartbeat_seconds)
        except TimeoutError:
            yield HEARTBEAT
            continue
        batch: list[LiveEvent | None] = [first]
        while not queue.empty():
            batch.append(queue.get_nowait())
        frames: list[bytes] = []
        for event in batch:
            if event is None:  # closed by the fan-out: the client resumes from the log
                if frames:
                    yield b"".join(frames)
                return
            if event.seq <= last:
                continue
            if event.seq > last + 1:  # a gap in the live feed: fill it from the log
                async for seq, frame in _replay(store, session_id, last):
                    frames.append(frame)
                    last = seq
                continue
            frames.append(event.frame)
            last = event.seq
        if frames:
            yield b"".join(frames)
