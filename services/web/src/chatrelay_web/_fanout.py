"""One Redis pub/sub connection per process, fanned out in memory to every SSE connection.

Each event arrives once from Redis, is encoded to SSE bytes once, and the same bytes are
appended to every subscriber's pending list. Waking is separate from appending: the events
read from Redis in one go (one loop turn) wake each of their subscribers once, in one flush
scheduled for the next turn, so a connection writes everything that came in one write
instead of waking once per event. A channel's flushes are also spaced by its connection
count (``flush_spacing`` each): a flush costs about one socket write per connection, so on a
channel with thousands of tabs, events arriving faster than that are written together, which
bounds the fan-out's CPU; with a few tabs the spacing is microseconds and adds nothing.

A subscriber that falls too far behind (in events or in bytes), and every subscriber when
the Redis connection breaks, is closed: its browser reconnects with ``Last-Event-ID`` and
catches up from the session log, so nothing is lost and nothing is sent twice.

SUBSCRIBE and UNSUBSCRIBE go out from one task only, in the order tabs joined and left, and a
channel stays in ``channels`` until its UNSUBSCRIBE is sent. So Redis always ends subscribed
to exactly the channels that have subscribers: a tab joining while the last one leaves either
reuses the live subscription or is subscribed again after the UNSUBSCRIBE.

On a Redis Cluster the sessions' channels are sharded (SSUBSCRIBE; the gateway's scripts
SPUBLISH): one connection per primary that owns a channel some tab needs, each a ``_Link``
of its own. A slot that moves (a migration: Redis unsubscribes its channels, or refuses a
subscription with MOVED) is subscribed again where it went, its tabs kept; the events
published meanwhile reach them from the log, since a stream fills any gap in the live ids
from it. A primary that dies closes its tabs, which resume with ``Last-Event-ID`` once the
slot map names its promoted replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from chatrelay_common import WEB_HOME_PREFIX, AnyRedis, decode_wire, encode_sse, new_id, node_client
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.exceptions import MovedError, RedisError, ResponseError

from ._metrics import FanoutLagMeter

__all__ = [
    "DEFAULT_FLUSH_SPACING",
    "DEFAULT_MAX_BACKLOG",
    "DEFAULT_MAX_BACKLOG_BYTES",
    "Fanout",
    "FanoutUnavailableError",
    "LiveEvent",
    "Subscriber",
]

# Events / bytes queued for one connection before it is closed (it resumes from the log).
DEFAULT_MAX_BACKLOG = 10_000
DEFAULT_MAX_BACKLOG_BYTES = 4 * 1024 * 1024
# Seconds between a channel's flushes per connection on it (1,000 tabs: 10 ms at most).
DEFAULT_FLUSH_SPACING = 10e-6
# The name of the one link on a single Redis (a cluster's are named "host:port").
_SINGLE = "Redis"
# On a cluster, after a link failed or a slot moved, the slot map is read again this often
# (seconds), for this long.
_UNSETTLED_REFRESH = 0.5
_UNSETTLED_SECONDS = 30.0
# Heartbeat and stall deadlines are met within this many seconds (the wheel's slot width).
DEADLINE_RESOLUTION = 0.05

logger = logging.getLogger("chatrelay.web")


# Compared by identity: a batch's events are matched against the last joined run.
@dataclass(frozen=True, slots=True, eq=False)
class LiveEvent:
    seq: int
    name: str
    frame: bytes


class _JoinedRun:
    """The last run of events joined into one chunk. After a flush every up-to-date tab of
    a channel takes the same events, one after another: they are joined once, not per tab."""

    __slots__ = ("_events", "_frame")

    def __init__(self) -> None:
        self._events: tuple[LiveEvent, LiveEvent, int] | None = None
        self._frame = b""

    def join(self, events: list[LiveEvent]) -> bytes:
        if len(events) == 1:
            return events[0].frame
        key = (events[0], events[-1], len(events))
        if self._events != key:  # identity of the events (eq=False), and the count
            self._events = key
            self._frame = b"".join(event.frame for event in events)
        return self._frame


class _DeadlineWheel:
    """Wakes waiting subscribers at their deadlines (heartbeat, stall check) with one loop
    timer per slot of ``DEADLINE_RESOLUTION`` seconds, shared by every subscriber due in it:
    thousands of idle connections cost a few timers, not one each (a loop timer is about
    0.5 KiB, and arming one per connection per write was a measurable cost)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[int, list[Subscriber]] = {}

    def arm(self, subscriber: Subscriber, deadline: float) -> float:
        """Wake ``subscriber`` at the end of the slot holding ``deadline``; returns that time."""
        slot = math.ceil(deadline / DEADLINE_RESOLUTION)
        due = self._slots.get(slot)
        if due is None:
            due = self._slots[slot] = []
            asyncio.get_running_loop().call_at(slot * DEADLINE_RESOLUTION, self._fire, slot)
        due.append(subscriber)
        return slot * DEADLINE_RESOLUTION

    def _fire(self, slot: int) -> None:
        at = slot * DEADLINE_RESOLUTION
        for subscriber in self._slots.pop(slot):
            subscriber.on_deadline(at)


class Subscriber:
    """One connection's pending events and its single waiter. Its deadline is armed on the
    shared wheel lazily: events never arm or disarm anything, and a slot that comes due after
    the deadline moved later just arms it again."""

    __slots__ = ("_armed", "_deadline", "_joined", "_waiter", "_wheel", "pending", "queued_bytes")

    def __init__(self, joined: _JoinedRun, wheel: _DeadlineWheel) -> None:
        self._joined = joined
        self._wheel = wheel
        # ``None`` closes the stream: the client reconnects and resumes from the log.
        self.pending: list[LiveEvent | None] = []
        self.queued_bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = math.inf
        # When the earliest wheel slot holding this subscriber comes due (inf: none does).
        self._armed = math.inf

    def put(self, event: LiveEvent | None) -> None:
        """Queue without waking: the fan-out wakes once per flush (or now, for a close)."""
        if event is not None:
            self.queued_bytes += len(event.frame)
        self.pending.append(event)

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def on_deadline(self, at: float) -> None:
        """A wheel slot holding this subscriber came due at loop time ``at``."""
        if at != self._armed:  # a stale slot: an earlier one took over, or it was discarded
            return
        self._armed = math.inf
        if self._waiter is None:
            return
        if asyncio.get_running_loop().time() >= self._deadline:
            self.wake()
        else:  # the deadline moved later since this slot was armed
            self._armed = self._wheel.arm(self, self._deadline)

    async def take(self, deadline: float = math.inf) -> list[LiveEvent | None]:
        """Everything pending; waits for it until the loop time ``deadline`` (rounded up to
        the wheel's resolution). Empty when the deadline passed first (or on a spurious
        wake)."""
        if not self.pending:
            self._deadline = deadline
            if deadline < self._armed:
                self._armed = self._wheel.arm(self, deadline)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        batch, self.pending = self.pending, []
        self.queued_bytes = 0
        return batch

    def join(self, events: list[LiveEvent]) -> bytes:
        """The frames of consecutive live events as one chunk, shared with the other tabs."""
        return self._joined.join(events)

    def close(self, _: object = None) -> None:
        """End the stream (also a done callback: the client left)."""
        self.put(None)
        self.wake()

    def discard(self) -> None:
        """The connection is gone: a wheel slot still holding it (for seconds, maybe) finds
        it disarmed, and no longer keeps what it had not taken alive."""
        self._armed = math.inf
        self.pending = []
        self.queued_bytes = 0


@dataclass(eq=False)
class _Channel:
    subscribers: set[Subscriber]
    confirmed: asyncio.Future[None]
    # The connection it is (to be) subscribed on: on a cluster, that of its slot's primary.
    link: _Link
    # SUBSCRIBE has gone out for this channel (so leaving it needs an UNSUBSCRIBE).
    sent: bool = False
    flush_scheduled: bool = False
    flushed_at: float = -math.inf
    # When the first event of the scheduled flush was read (perf_counter), for its lag.
    received_at: float = 0.0


class FanoutUnavailableError(RuntimeError):
    pass


class _Link:
    """One pub/sub connection: of the one Redis, or on a cluster of one primary, carrying the
    sharded channels of its slots (SSUBSCRIBE). Its one task sends the subscription commands,
    one at a time, in the order channels changed; a channel stays in the fan-out's channels
    until its UNSUBSCRIBE is sent. So Redis always ends subscribed to exactly the channels
    that have subscribers: a tab joining while the last one leaves either reuses the live
    subscription or is subscribed again after the UNSUBSCRIBE."""

    def __init__(self, fanout: Fanout, client: Redis, *, sharded: bool, name: str) -> None:
        self.name = name
        self._fanout = fanout
        self._client = client
        self._subscribe, self._unsubscribe = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        # Channels whose subscription may need a command, in the order they changed.
        self._changed: dict[bytes, None] = {}
        self._wake = asyncio.Event()
        # SUBSCRIBEs awaiting Redis's answer, in the order sent: it answers in that order.
        self._unanswered: deque[tuple[bytes, asyncio.Future[None]]] = deque()
        # UNSUBSCRIBEs sent and not yet confirmed, per channel: a confirmation beyond them is
        # Redis's own doing (its slot moved to another shard).
        self._unsubscribing: dict[bytes, int] = {}
        self.connected = asyncio.Event()

    def mark_changed(self, key: bytes) -> None:
        self._changed[key] = None
        self._wake.set()

    async def run(self) -> None:
        """Subscribe and read until the connection breaks (then raises)."""
        pubsub = self._client.pubsub()
        try:
            # Subscribed for the link's lifetime, so that its connection always has a channel.
            await pubsub.subscribe(self._fanout.home)
            self.connected.set()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._send_commands(pubsub))
                tasks.create_task(self._read(pubsub))
        finally:
            self.connected.clear()
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            try:
                response = await pubsub.parse_response(block=True)
            except ResponseError as refused:  # a SSUBSCRIBE to a slot this node lost (MOVED)
                key, _ = self._unanswered.popleft()
                self._fanout.moved(key, self, refused)
                continue
            message = await pubsub.handle_message(response)  # type: ignore[no-untyped-call]
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, key = message["type"], message["channel"]
        if kind in ("message", "smessage"):
            self._fanout.deliver(key, message["data"])
        elif kind in ("subscribe", "ssubscribe"):
            if key == self._fanout.home_key:
                return
            sent, confirmed = self._unanswered.popleft()
            assert sent == key, (sent, key)
            if not confirmed.done():
                confirmed.set_result(None)
        elif kind in ("unsubscribe", "sunsubscribe"):
            left = self._unsubscribing.get(key, 0)
            if left > 1:
                self._unsubscribing[key] = left - 1
            elif left == 1:
                del self._unsubscribing[key]
            else:  # Redis unsubscribed it: its slot moved to another shard
                self._fanout.moved(key, self)

    async def _send_commands(self, pubsub: PubSub) -> None:
        """The only sender of SUBSCRIBE/UNSUBSCRIBE: one command at a time, in order."""
        channels = self._fanout.channels
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._changed:
                key = next(iter(self._changed))
                del self._changed[key]
                state = channels.get(key)
                if state is None or state.link is not self:
                    continue
                if state.subscribers and not state.sent:
                    state.sent = True
                    self._unanswered.append((key, state.confirmed))
                    await pubsub.execute_command(self._subscribe, key)
                elif not state.subscribers:
                    del channels[key]
                    if state.sent:
                        self._unsubscribing[key] = self._unsubscribing.get(key, 0) + 1
                        await pubsub.execute_command(self._unsubscribe, key)


class Fanout:
    """Every SSE connection's live events, from one pub/sub connection per process (or, on a
    Redis Cluster, one per primary that owns channels it needs)."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        max_backlog_bytes: int = DEFAULT_MAX_BACKLOG_BYTES,
        flush_spacing: float = DEFAULT_FLUSH_SPACING,
        timeout: float = 5.0,
    ):
        self._redis = redis
        self._max_backlog = max_backlog
        self._max_backlog_bytes = max_backlog_bytes
        self._flush_spacing = flush_spacing
        self._joined = _JoinedRun()
        self._lag = FanoutLagMeter()
        self._wheel = _DeadlineWheel()
        self._timeout = timeout
        self.channels: dict[bytes, _Channel] = {}
        # The links by node ("host:port"; one, ``_SINGLE``, on a single Redis).
        self._links: dict[str, _Link] = {}
        self._link_tasks: set[asyncio.Task[None]] = set()
        # On a cluster: the slot map is to be read again (a link failed, a slot moved).
        self._refresh = asyncio.Event()
        self._connected = asyncio.Event()
        self.draining = False
        # Each link subscribes to this for its lifetime (nothing is published there).
        self.home = f"{WEB_HOME_PREFIX}{new_id(8)}"
        self.home_key = self.home.encode()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def drain(self) -> None:
        """The process is shutting down: end every stream now (each browser reconnects, to
        another web process behind the edge, and resumes from the log) and refuse new ones
        (``draining``)."""
        self.draining = True
        for state in self.channels.values():
            for subscriber in state.subscribers:
                subscriber.close()

    @property
    def subscribers(self) -> int:
        """How many subscribers all channels have now."""
        return sum(len(state.subscribers) for state in self.channels.values())

    async def run(self) -> None:
        """Keep the pub/sub connection(s) up, reconnecting while Redis is away."""
        if isinstance(self._redis, RedisCluster):
            await self._run_cluster(self._redis)
        else:
            await self._run_single(self._redis)

    async def _run_single(self, redis: Redis) -> None:
        while True:
            link = self._links[_SINGLE] = _Link(self, redis, sharded=False, name=_SINGLE)
            watch = asyncio.create_task(self._connected_with(link))
            try:
                await self._run_link(link)
            finally:
                watch.cancel()
                self._connected.clear()
            await asyncio.sleep(0.5)  # then reconnect

    async def _connected_with(self, link: _Link) -> None:
        await link.connected.wait()
        self._connected.set()

    async def _run_cluster(self, cluster: RedisCluster) -> None:
        """Reads the slot map, again whenever a link failed or a slot moved, and then every
        ``_UNSETTLED_REFRESH`` seconds for ``_UNSETTLED_SECONDS`` (a failover takes the
        cluster a few seconds to settle): links are made as channels need them
        (``_link_for``), and each ends with its connection."""
        loop = asyncio.get_running_loop()
        unsettled_until = -math.inf
        try:
            while True:
                if self._refresh.is_set():
                    self._refresh.clear()
                    unsettled_until = loop.time() + _UNSETTLED_SECONDS
                try:
                    # The client's own first (its aclose closes only the nodes of a client
                    # that initialized), then the node manager's, which reads the slots again.
                    await cluster.initialize()
                    await cluster.nodes_manager.initialize()
                except (RedisError, OSError) as exc:
                    self._connected.clear()
                    logger.warning("fan-out cannot read the cluster's slots (%s); retrying", exc)
                    await asyncio.sleep(_UNSETTLED_REFRESH)
                    continue
                self._connected.set()
                wait = _UNSETTLED_REFRESH if loop.time() < unsettled_until else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._refresh.wait(), wait)
        finally:
            self._connected.clear()
            for task in list(self._link_tasks):
                task.cancel()
            await asyncio.gather(*self._link_tasks, return_exceptions=True)

    def _link_for(self, key: bytes, node: tuple[str, int] | None = None) -> _Link:
        """The link that carries ``key``: the one Redis's, or its slot's primary's (or
        ``node``'s, when Redis said the slot is there)."""
        if not isinstance(self._redis, RedisCluster):
            return self._links[_SINGLE]
        if node is None:
            primary = self._redis.get_node_from_key(key.decode())
            if primary is None:  # the slot map has no primary for it (mid-failover)
                raise FanoutUnavailableError(f"no node serves {key!r} now")
            node = (primary.host, int(primary.port))
        name = f"{node[0]}:{node[1]}"
        link = self._links.get(name)
        if link is None:
            client = node_client(self._redis, *node)
            link = self._links[name] = _Link(self, client, sharded=True, name=name)
            task = asyncio.create_task(self._run_link(link, client), name=f"fan-out {name}")
            self._link_tasks.add(task)
            task.add_done_callback(self._link_tasks.discard)
        return link

    async def _run_link(self, link: _Link, own_client: Redis | None = None) -> None:
        """Run ``link`` until its connection breaks, then close its tabs (they resume with
        ``Last-Event-ID``) and forget it; on a cluster, read the slot map again. Closes
        ``own_client``, a node's client made for this link."""
        try:
            await link.run()
        except* (RedisError, OSError) as group:
            logger.warning("fan-out lost %s (%s)", link.name, group.exceptions[0])
        finally:
            if self._links.get(link.name) is link:
                del self._links[link.name]
            self._close_channels_of(link)
            self._refresh.set()
            if own_client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await own_client.aclose()

    def moved(self, key: bytes, link: _Link, refused: ResponseError | None = None) -> None:
        """``key``'s slot is no longer ``link``'s node's: subscribe it where it went (where
        Redis's MOVED says, or where the slot map will). Its tabs stay: the events published
        meanwhile come from the log (a stream fills any gap in the live ids from it)."""
        state = self.channels.get(key)
        self._refresh.set()
        if state is None or state.link is not link:
            return
        target = None
        if isinstance(refused, MovedError):
            target = (refused.host, int(refused.port))
        elif refused is not None:  # refused for another reason: its tabs get a 503
            logger.warning("cannot subscribe %s: %s", key, refused)
            self._fail(key, state)
            return
        try:
            state.link = self._link_for(key, target)
        except FanoutUnavailableError:
            self._fail(key, state)
            return
        state.sent = False
        state.link.mark_changed(key)

    def _fail(self, key: bytes, state: _Channel) -> None:
        for subscriber in state.subscribers:
            subscriber.close()
        if not state.confirmed.done():
            state.confirmed.set_exception(FanoutUnavailableError("Redis connection lost"))
            state.confirmed.exception()  # retrieved: nobody else may await it
        del self.channels[key]

    def _close_channels_of(self, link: _Link) -> None:
        for key, state in list(self.channels.items()):
            if state.link is link:
                self._fail(key, state)

    async def join(self, channel: str) -> Subscriber:
        """A new subscriber of ``channel``, once Redis has confirmed the subscription: every
        event published after that reaches its queue. Each join is paired with a ``leave``."""
        key = channel.encode()
        subscriber = Subscriber(self._joined, self._wheel)
        try:
            await asyncio.wait_for(self._connected.wait(), self._timeout)
            state = self.channels.get(key)
            if state is None:
                confirmed = asyncio.get_running_loop().create_future()
                state = self.channels[key] = _Channel(set(), confirmed, self._link_for(key))
                state.link.mark_changed(key)
            state.subscribers.add(subscriber)
            await asyncio.wait_for(asyncio.shield(state.confirmed), self._timeout)
        except (TimeoutError, FanoutUnavailableError) as exc:
            self._leave(key, subscriber)
            raise FanoutUnavailableError("Redis pub/sub is unavailable") from exc
        except BaseException:
            self._leave(key, subscriber)
            raise
        if self.draining:  # the process began shutting down meanwhile: end it like the rest
            self._leave(key, subscriber)
            raise FanoutUnavailableError("the web process is shutting down")
        return subscriber

    def leave(self, channel: str, subscriber: Subscriber) -> None:
        subscriber.discard()
        self._leave(channel.encode(), subscriber)

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        """``join`` and ``leave`` as a context manager."""
        subscriber = await self.join(channel)
        try:
            yield subscriber
        finally:
            self.leave(channel, subscriber)

    def _leave(self, key: bytes, subscriber: Subscriber) -> None:
        state = self.channels.get(key)
        if state is None or subscriber not in state.subscribers:
            return
        state.subscribers.discard(subscriber)
        if not state.subscribers:
            state.link.mark_changed(key)

    def deliver(self, key: bytes, data: bytes) -> None:
        """An event published on ``key``: queued for each of its subscribers."""
        state = self.channels.get(key)
        if state is None:
            return
        seq, name, payload = decode_wire(data)
        event = LiveEvent(seq, name, encode_sse(seq, name, payload))
        size = len(event.frame)
        for subscriber in list(state.subscribers):
            if (
                len(subscriber.pending) >= self._max_backlog
                or subscriber.queued_bytes + size > self._max_backlog_bytes
            ):
                logger.warning(
                    "closing a subscriber %d events (%d bytes) behind",
                    len(subscriber.pending),
                    subscriber.queued_bytes,
                )
                self._leave(key, subscriber)
                subscriber.close()
            else:
                subscriber.put(event)
        if not state.flush_scheduled:
            state.flush_scheduled = True
            state.received_at = time.perf_counter()
            loop = asyncio.get_running_loop()
            at = state.flushed_at + len(state.subscribers) * self._flush_spacing
            if at <= loop.time():
                loop.call_soon(self._flush, state)
            else:
                loop.call_at(at, self._flush, state)

    def _flush(self, state: _Channel) -> None:
        """Wake each subscriber of the channel once for every event since the last flush."""
        state.flush_scheduled = False
        state.flushed_at = asyncio.get_running_loop().time()
        for subscriber in state.subscribers:
            subscriber.wake()
        self._lag.flushed(state.received_at)
