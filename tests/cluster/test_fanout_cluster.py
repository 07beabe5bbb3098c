"""The web fan-out on a Redis Cluster of 3 primaries: one sharded subscription connection per
primary that owns a channel some tab needs; a migrated slot is subscribed again where it went,
its tabs kept; a primary that dies closes only its own tabs, and once its replica took over a
tab joins there. The last test kills a primary: the cluster fixture is per module."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from chatrelay_common import encode_wire, open_redis
from chatrelay_web._fanout import Fanout, FanoutUnavailableError, LiveEvent, Subscriber
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from scripts.redis_cluster import ClusterNode, LocalCluster
from tests.support.fanout import running


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    async with open_redis(cluster.url) as opened:
        assert isinstance(opened, RedisCluster)
        yield opened


@pytest.fixture
async def fanout(cluster: LocalCluster) -> AsyncIterator[Fanout]:
    async with (
        open_redis(cluster.url, retry=False) as opened,
        running(Fanout(opened, timeout=10.0)) as started,
    ):
        yield started


def channel_on(cluster: LocalCluster, primary: ClusterNode, name: str) -> str:
    """A channel name whose slot ``primary`` owns."""
    for n in range(100_000):
        channel = f"chatrelay:{{{name}-{n}}}:events"
        if cluster.primary_of_key(channel) is primary:
            return channel
    raise AssertionError(f"no channel on {primary}")


async def publish(client: RedisCluster, channel: str, seq: int) -> None:
    await client.execute_command("SPUBLISH", channel, encode_wire(seq, "delta", b'{"n":%d}' % seq))


async def next_events(subscriber: Subscriber) -> list[LiveEvent | None]:
    return await asyncio.wait_for(subscriber.take(), 10)


def sharded_connections(node: ClusterNode) -> int:
    """Connections to ``node`` holding sharded subscriptions (CLIENT LIST's ``ssub``)."""
    listing = str(node.command("CLIENT", "LIST"))
    return sum(1 for line in listing.splitlines() if " ssub=0" not in line and "ssub=" in line)


async def test_one_sharded_connection_per_primary_carries_every_tab(
    fanout: Fanout, client: RedisCluster, cluster: LocalCluster
) -> None:
    primaries = cluster.primaries()
    channels = [
        channel_on(cluster, p, f"s{i}-{j}") for i, p in enumerate(primaries) for j in (0, 1)
    ]
    async with contextlib.AsyncExitStack() as tabs:
        subscribers = {
            channel: [await tabs.enter_async_context(fanout.subscribe(channel)) for _ in range(3)]
            for channel in channels
        }
        for primary in primaries:
            assert sharded_connections(primary) == 1, primary
            for replica in cluster.replicas_of(primary):
                assert sharded_connections(replica) == 0, replica
        for seq, channel in enumerate(channels, 1):
            await publish(client, channel, seq)
        for seq, channel in enumerate(channels, 1):
            for subscriber in subscribers[channel]:
                (event,) = await next_events(subscriber)
                assert event is not None
                assert event.frame == b'id: %d\nevent: delta\ndata: {"n":%d}\n\n' % (seq, seq)


async def test_a_migrated_slot_is_subscribed_again_where_it_went_with_its_tabs_kept(
    fanout: Fanout, client: RedisCluster, cluster: LocalCluster
) -> None:
    source, target = cluster.primaries()[:2]
    channel = channel_on(cluster, source, "moving")
    async with fanout.subscribe(channel) as subscriber:
        await publish(client, channel, 1)
        assert [e.seq for e in await next_events(subscriber) if e is not None] == [1]
        await asyncio.to_thread(cluster.migrate_slot, key_slot(channel.encode()), target)
        # Redis unsubscribed it on the source; the fan-out subscribes on the target.
        for _ in range(200):
            shards = target.command("PUBSUB", "SHARDNUMSUB", channel)
            if shards == [channel, 1]:
                break
            await asyncio.sleep(0.05)
        assert target.command("PUBSUB", "SHARDNUMSUB", channel) == [channel, 1]
        assert source.command("PUBSUB", "SHARDNUMSUB", channel) == [channel, 0]
        await publish(client, channel, 2)
        events = await next_events(subscriber)
        assert None not in events  # the tab was not closed
        assert [e.seq for e in events if e is not None] == [2]


async def test_a_dead_primary_closes_only_its_tabs_and_its_replica_takes_new_ones(
    fanout: Fanout, client: RedisCluster, cluster: LocalCluster
) -> None:
    doomed, spared = cluster.primaries()[1:3]
    lost_channel = channel_on(cluster, doomed, "lost")
    kept_channel = channel_on(cluster, spared, "kept")
    async with fanout.subscribe(lost_channel) as lost, fanout.subscribe(kept_channel) as kept:
        cluster.kill(doomed)
        assert await next_events(lost) == [None]  # closed: its browser resumes from the log
        replica, seconds = await asyncio.to_thread(cluster.wait_for_failover, doomed)
        print(f"\nfailover to {replica} in {seconds:.2f} s")
        await publish(client, kept_channel, 7)
        assert [e.seq for e in await next_events(kept) if e is not None] == [7]
    # A tab joining now lands on the replica (as a browser would, it tries again while the
    # web process answers 503: its slot map may lag the cluster's for a moment).
    for _ in range(20):
        try:
            rejoined = await fanout.join(lost_channel)
            break
        except FanoutUnavailableError:
            await asyncio.sleep(0.25)
    else:
        raise AssertionError("no tab could join the dead primary's channel on its replica")
    try:
        await publish(client, lost_channel, 8)
        assert [e.seq for e in await next_events(rejoined) if e is not None] == [8]
    finally:
        fanout.leave(lost_channel, rejoined)
    for _ in range(100):  # the tab left: its channel is unsubscribed there
        if sharded_connections(replica) == 0:
            break
        await asyncio.sleep(0.05)
    assert sharded_connections(replica) == 0
    await asyncio.to_thread(cluster.restart, doomed)
