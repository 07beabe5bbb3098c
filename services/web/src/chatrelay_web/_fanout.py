"""One Redis pub/sub connection per process, fanned out in memory to every SSE connection.

Each event arrives once from Redis, is encoded to SSE bytes once, and the same bytes go into
every subscriber's queue. A subscriber that falls too far behind, and every subscriber when
the Redis connection breaks, is closed: its browser reconnects with ``Last-Event-ID`` and
catches up from the session log, so nothing is lost and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatrelay_common import decode_wire, encode_sse, new_id
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

__all__ = ["Fanout", "FanoutUnavailableError", "LiveEvent", "Subscriber"]

logger = logging.getLogger("chatrelay.web")


@dataclass(frozen=True, slots=True)
class LiveEvent:
    seq: int
    frame: bytes


@dataclass(eq=False)
class Subscriber:
    # ``None`` closes the stream: the client reconnects and resumes from the log.
    queue: asyncio.Queue[LiveEvent | None] = field(default_factory=asyncio.Queue)


@dataclass(eq=False)
class _Channel:
    subscribers: set[Subscriber]
    confirmed: asyncio.Future[None]


class FanoutUnavailableError(RuntimeError):
    pass


class Fanout:
    def __init__(self, redis: Redis, *, max_backlog: int = 10_000, timeout: float = 5.0):
        self._redis = redis
        self._max_backlog = max_backlog
        self._timeout = timeout
        self._channels: dict[bytes, _Channel] = {}
        # Futures for SUBSCRIBE commands in flight, per channel, in the order they were sent.
        self._pending: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._pubsub: PubSub | None = None
        self._connected = asyncio.Event()
        # Subscribed for the process's lifetime so that `listen()` never runs dry.
        self._home = f"chatrelay:web:{new_id(8)}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    async def run(self) -> None:
        """Read the pub/sub connection forever, reconnecting while Redis is away."""
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._home)
                self._pubsub = pubsub
                self._connected.set()
                async for message in pubsub.listen():
                    self._dispatch(message)
            except (RedisError, OSError) as exc:
                logger.warning("fan-out lost Redis (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                self._pubsub = None
                self._close_all()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        """Yields once Redis has confirmed the subscription: every event published after
        that reaches the subscriber's queue."""
        key = channel.encode()
        subscriber = Subscriber()
        try:
            await asyncio.wait_for(self._connected.wait(), self._timeout)
            pubsub = self._pubsub
            assert pubsub is not None
            state = self._channels.get(key)
            if state is None:
                confirmed = asyncio.get_running_loop().create_future()
                state = self._channels[key] = _Channel({subscriber}, confirmed)
                self._pending.setdefault(key, deque()).append(confirmed)
                await pubsub.subscribe(key)
            else:
                state.subscribers.add(subscriber)
            await asyncio.wait_for(asyncio.shield(state.confirmed), self._timeout)
        except (TimeoutError, FanoutUnavailableError, RedisError, OSError) as exc:
            self._leave(key, subscriber)
            raise FanoutUnavailableError("Redis pub/sub is unavailable") from exc
        try:
            yield subscriber
        finally:
            self._leave(key, subscriber)

    def _leave(self, key: bytes, subscriber: Subscriber) -> None:
        state = self._channels.get(key)
        if state is None or subscriber not in state.subscribers:
            return
        state.subscribers.discard(subscriber)
        if not state.subscribers:
            del self._channels[key]
            if self._pubsub is not None:
                task = asyncio.ensure_future(self._unsubscribe(self._pubsub, key))
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

    @staticmethod
    async def _unsubscribe(pubsub: PubSub, key: bytes) -> None:
        with contextlib.suppress(RedisError, OSError):
            await pubsub.unsubscribe(key)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, key = message["type"], message["channel"]
        if kind == "subscribe":
            pending = self._pending.get(key)
            if pending:
                confirmed = pending.popleft()
                if not confirmed.done():
                    confirmed.set_result(None)
                if not pending:
                    del self._pending[key]
            return
        if kind != "message" or (state := self._channels.get(key)) is None:
            return
        seq, name, data = decode_wire(message["data"])
        event = LiveEvent(seq, encode_sse(seq, name, data))
        for subscriber in list(state.subscribers):
            if subscriber.queue.qsize() >= self._max_backlog:
                logger.warning("closing a subscriber %d events behind", self._max_backlog)
                self._leave(key, subscriber)
                subscriber.queue.put_nowait(None)
            else:
                subscriber.queue.put_nowait(event)

    def _close_all(self) -> None:
        for state in self._channels.values():
            for subscriber in state.subscribers:
                subscriber.queue.put_nowait(None)
            if not state.confirmed.done():
                state.confirmed.set_exception(FanoutUnavailableError("Redis connection lost"))
                state.confirmed.exception()  # retrieved: nobody else may await it
        self._channels.clear()
        self._pending.clear()
