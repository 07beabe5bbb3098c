"""The fan-out against a real Redis: tabs joining and leaving a channel at the same moment
must leave Redis subscribed exactly while the channel has subscribers."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from chatrelay_common import encode_wire, open_redis
from chatrelay_web._fanout import Fanout, FanoutUnavailableError, Subscriber
from redis.asyncio import Redis

from tests.support.fanout import running

CHANNEL = "chatrelay:test:fanout"


@pytest.fixture
async def fanout(redis_server_url: str) -> AsyncIterator[Fanout]:
    async with open_redis(redis_server_url, retry=False) as client, running(Fanout(client)) as f:
        yield f


async def numsub(redis: Redis, channel: str) -> int:
    ((_, count),) = await redis.pubsub_numsub(channel)
    return int(count)


async def settle(fanout: Fanout) -> None:
    """Every command the fan-out sent so far has reached Redis: Redis answers one connection's
    commands in order, so a later subscription's confirmation comes after all of them."""
    async with fanout.subscribe("chatrelay:test:barrier"):
        pass


async def assert_live(redis: Redis, subscribers: list[Subscriber], seq: int) -> None:
    """One event published now reaches every subscriber."""
    await redis.publish(CHANNEL, encode_wire(seq, "delta", b'{"n":%d}' % seq))
    for subscriber in subscribers:
        (event,) = await asyncio.wait_for(subscriber.take(), 5)
        assert event is not None
        assert (event.seq, event.frame) == (
            seq,
            b'id: %d\nevent: delta\ndata: {"n":%d}\n\n' % (seq, seq),
        )


@pytest.mark.parametrize("yields", range(8))
async def test_a_tab_joining_as_the_last_one_leaves_stays_subscribed(
    fanout: Fanout, redis: Redis, yields: int
) -> None:
    """A tab's reconnect landing as its old connection closes (issue 7 item 0). ``yields``
    moves the leave to each point of the join's way to Redis."""
    leaving = fanout.subscribe(CHANNEL)
    await leaving.__aenter__()
    joining = fanout.subscribe(CHANNEL)
    join = asyncio.create_task(joining.__aenter__())
    for _ in range(yields):
        await asyncio.sleep(0)
    await leaving.__aexit__(None, None, None)
    subscriber = await join
    try:
        await settle(fanout)
        assert await numsub(redis, CHANNEL) == 1
        await assert_live(redis, [subscriber], 1)
    finally:
        await joining.__aexit__(None, None, None)
    await settle(fanout)
    assert await numsub(redis, CHANNEL) == 0


async def test_tabs_churning_on_one_channel_leave_redis_subscribed_exactly_while_any_remain(
    fanout: Fanout, redis: Redis
) -> None:
    rng = random.Random(7)
    tabs: list[tuple[contextlib.AbstractAsyncContextManager[Subscriber], asyncio.Task[Subscriber]]]
    tabs = []
    for step in range(400):
        if tabs and rng.random() < 0.5:
            leaving, joined = tabs.pop(rng.randrange(len(tabs)))
            await joined
            await leaving.__aexit__(None, None, None)
        else:
            joining = fanout.subscribe(CHANNEL)
            tabs.append((joining, asyncio.create_task(joining.__aenter__())))
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)
        if step % 50 == 49:
            live = [await joined for _, joined in tabs]
            await settle(fanout)
            for subscriber in live:  # forget what earlier checks published
                subscriber.pending.clear()
            assert await numsub(redis, CHANNEL) == (1 if tabs else 0), step
            await assert_live(redis, live, step)
    for leaving, joined in tabs:
        await joined
        await leaving.__aexit__(None, None, None)
    await settle(fanout)
    assert await numsub(redis, CHANNEL) == 0


async def test_events_published_together_wake_a_waiting_tab_once_with_all_of_them(
    fanout: Fanout, redis: Redis
) -> None:
    """One flush per read from Redis: a MULTI of three PUBLISHes reaches Redis's reply to the
    pub/sub connection as one write, so the waiting tab takes all three at once, in order."""
    async with fanout.subscribe(CHANNEL) as subscriber:
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        async with redis.pipeline(transaction=True) as pipe:
            for seq in (1, 2, 3):
                pipe.publish(CHANNEL, encode_wire(seq, "delta", b'{"n":%d}' % seq))
            await pipe.execute()
        batch = await asyncio.wait_for(waiting, 5)
        assert [None if event is None else (event.seq, event.frame) for event in batch] == [
            (seq, b'id: %d\nevent: delta\ndata: {"n":%d}\n\n' % (seq, seq)) for seq in (1, 2, 3)
        ]


async def test_a_take_with_a_deadline_and_no_events_returns_empty_at_the_deadline(
    fanout: Fanout, redis: Redis
) -> None:
    loop = asyncio.get_running_loop()
    async with fanout.subscribe(CHANNEL) as subscriber:
        started = loop.time()
        assert await asyncio.wait_for(subscriber.take(started + 0.3), 10) == []
        waited = loop.time() - started
        print(f"a take with a 0.3 s deadline returned after {waited:.3f} s")
        assert waited >= 0.3
        # A later event still arrives to the next take: the timer left nothing behind.
        await redis.publish(CHANNEL, encode_wire(1, "delta", b"{}"))
        (event,) = await asyncio.wait_for(subscriber.take(loop.time() + 30), 5)
        assert event is not None
        assert event.seq == 1


async def test_a_channels_flushes_are_spaced_by_its_connection_count(
    redis_server_url: str, redis: Redis
) -> None:
    """With a spacing of 1 s per connection, events published right after a flush wake the
    waiting tab only at the next one, a second later, and arrive there together."""
    loop = asyncio.get_running_loop()
    async with (
        open_redis(redis_server_url, retry=False) as client,
        running(Fanout(client, flush_spacing=1.0)) as fanout,
        fanout.subscribe(CHANNEL) as subscriber,
    ):
        await redis.publish(CHANNEL, encode_wire(1, "delta", b"{}"))
        (first,) = await asyncio.wait_for(subscriber.take(), 5)
        flushed = loop.time()
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        await redis.publish(CHANNEL, encode_wire(2, "delta", b"{}"))
        await redis.publish(CHANNEL, encode_wire(3, "delta", b"{}"))
        batch = await asyncio.wait_for(waiting, 10)
        waited = loop.time() - flushed
        print(f"the second flush came {waited:.3f} s after the first")
        assert first is not None
        assert first.seq == 1
        assert [None if event is None else event.seq for event in batch] == [2, 3]
        assert waited >= 0.95


async def test_tabs_taking_the_same_events_share_one_joined_chunk(
    fanout: Fanout, redis: Redis
) -> None:
    """The events of one flush are joined once for every tab, not once per tab."""
    async with fanout.subscribe(CHANNEL) as first, fanout.subscribe(CHANNEL) as second:
        waiting = [asyncio.create_task(tab.take()) for tab in (first, second)]
        await asyncio.sleep(0)
        async with redis.pipeline(transaction=True) as pipe:
            for seq in (1, 2, 3):
                pipe.publish(CHANNEL, encode_wire(seq, "delta", b'{"n":%d}' % seq))
            await pipe.execute()
        batches = [[event for event in await asyncio.wait_for(w, 5) if event] for w in waiting]
        chunks = [tab.join(batch) for tab, batch in zip((first, second), batches, strict=True)]
        assert chunks[0] == b"".join(
            b'id: %d\nevent: delta\ndata: {"n":%d}\n\n' % (seq, seq) for seq in (1, 2, 3)
        )
        assert chunks[1] is chunks[0]


async def test_a_drain_ends_every_subscriber_and_refuses_new_ones(fanout: Fanout) -> None:
    """What the web does on SIGTERM: every stream ends now, and none starts after."""
    async with (
        fanout.subscribe(CHANNEL) as first,
        fanout.subscribe(f"{CHANNEL}:other") as second,
    ):
        fanout.drain()
        assert await asyncio.wait_for(first.take(), 5) == [None]
        assert await asyncio.wait_for(second.take(), 5) == [None]
        with pytest.raises(FanoutUnavailableError):
            await fanout.join(CHANNEL)
