"""The session store on a Redis Cluster of 3 primaries: each session script runs in its
session's slot and publishes on its sharded channel; the many-session calls split per slot;
the store keeps the lease index itself; ids jump after a failover (a promoted replica may lack
the last writes) and not after a slot migration (which loses nothing).

The module's last tests kill a primary: the cluster fixture is per module."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from chatrelay_common import (
    Done,
    SessionKeys,
    SessionSettings,
    SessionStore,
    SlotsUnavailableError,
    open_redis,
)
from chatrelay_common._keys import LEASES, OWNER_INDEX_PREFIX
from chatrelay_common._store import SEQ_SKIP_AFTER_RESTART
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot

from scripts.redis_cluster import ClusterNode, LocalCluster

MODEL = "m"


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    async with open_redis(cluster.url) as opened:
        assert isinstance(opened, RedisCluster)
        yield opened


@pytest.fixture
def store(client: RedisCluster) -> SessionStore:
    return SessionStore(client, lease_seconds=1.0)


async def sessions_on(
    store: SessionStore, cluster: LocalCluster, primary: ClusterNode, count: int
) -> list[str]:
    """New sessions until ``count`` of them live on ``primary``."""
    found: list[str] = []
    while len(found) < count:
        session_id = await store.create(SessionSettings(model=MODEL), owner="o:test")
        if cluster.primary_of_key(SessionKeys(session_id).session) is primary:
            found.append(session_id)
    return found


async def one_per_primary(store: SessionStore, cluster: LocalCluster) -> list[str]:
    return [(await sessions_on(store, cluster, p, 1))[0] for p in cluster.primaries()]


async def finish(store: SessionStore, session_id: str, reply_id: str) -> None:
    assert await store.finish_reply(
        session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
    )


def node_client(node: ClusterNode) -> Redis:
    return Redis(host="127.0.0.1", port=node.port)


async def test_the_store_runs_in_cluster_mode(store: SessionStore) -> None:
    assert store.cluster


async def test_an_event_is_published_on_the_sessions_sharded_channel_only(
    store: SessionStore, cluster: LocalCluster
) -> None:
    primary = cluster.primaries()[1]
    (session_id,) = await sessions_on(store, cluster, primary, 1)
    channel = SessionKeys(session_id).channel
    subscriber = node_client(primary)
    plain = node_client(cluster.primaries()[0])
    sharded, broadcast = subscriber.pubsub(), plain.pubsub()
    try:
        await sharded.execute_command("SSUBSCRIBE", channel)
        await broadcast.subscribe(channel)
        assert (await sharded.get_message(timeout=5))["type"] == "ssubscribe"
        assert (await broadcast.get_message(timeout=5))["type"] == "subscribe"
        start = await store.start_reply(session_id, allowed_models=[MODEL], content="hi")
        names: list[bytes] = []
        while len(names) < 2:
            message = await sharded.get_message(timeout=5)
            assert message is not None
            assert message["type"] == "smessage"
            names.append(message["data"].split(b" ")[1])
        assert names == [b"message", b"start"]
        # A plain PUBLISH would reach this subscriber on another node: nothing did.
        assert await broadcast.get_message(timeout=0.5) is None
        assert start.history == [("user", "hi")]
    finally:
        for pubsub in (sharded, broadcast):
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        await subscriber.aclose()
        await plain.aclose()


async def test_one_write_call_serves_sessions_on_every_primary_in_order(
    store: SessionStore, cluster: LocalCluster
) -> None:
    sessions = await one_per_primary(store, cluster)
    replies = {
        s: (await store.start_reply(s, allowed_models=[MODEL], content="q")).reply_id
        for s in sessions
    }
    words = ["one ", "two ", "three"]
    writes = [
        (s, replies[s], "delta", word, n) for n, word in enumerate(words, 1) for s in sessions
    ]
    assert await store.append_deltas(writes) == [True] * len(writes)
    # Applied once: a retried call (its answer lost) changes nothing.
    assert await store.append_deltas(writes) == [True] * len(writes)
    for session_id in sessions:
        snapshot = await store.snapshot(session_id)
        assert [m.content for m in snapshot.messages] == ["q", "one two three"]
        events = await store.events_after(session_id, 0)
        assert [e.name for e in events] == ["message", "start", "delta", "delta", "delta"]
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]


async def test_the_store_keeps_the_lease_index_and_the_owner_index(
    store: SessionStore, client: RedisCluster, cluster: LocalCluster
) -> None:
    sessions = await one_per_primary(store, cluster)
    listed = {s.decode() for s in await client.zrange(OWNER_INDEX_PREFIX + "o:test", 0, -1)}
    assert set(sessions) <= listed
    starts = [await store.start_reply(s, allowed_models=[MODEL], content="q") for s in sessions]
    indexed = {s.decode() for s in await client.zrange(LEASES, 0, -1)}
    assert set(sessions) <= indexed
    assert (
        await store.keep_leases([(s, r.reply_id) for s, r in zip(sessions, starts, strict=True)])
        == ["kept"] * 3
    )
    # The first ends normally; the other two lapse (lease 1 s) and are closed by the reaper.
    await store.finish_reply(
        sessions[0],
        starts[0].reply_id,
        Done(reply_id=starts[0].reply_id, finish_reason="stop", usage=None),
    )
    await asyncio.sleep(1.3)
    closed = await store.reap_lapsed()
    # (Replies earlier tests left streaming are closed too.)
    assert {r.reply_id for r in starts[1:]} <= set(closed)
    assert starts[0].reply_id not in closed
    assert not set(sessions) & {s.decode() for s in await client.zrange(LEASES, 0, -1)}
    for session_id, start in zip(sessions[1:], starts[1:], strict=True):
        (*_, last) = await store.events_after(session_id, 0)
        assert last.name == "error"
        assert b'"interrupted"' in last.data
        snapshot = await store.snapshot(session_id)
        assert snapshot.messages[-1].status == "error"
        assert snapshot.messages[-1].id == start.reply_id


async def test_a_lease_entry_moved_later_by_a_new_reply_is_kept_by_the_reaper(
    store: SessionStore, client: RedisCluster, cluster: LocalCluster
) -> None:
    session_id = (await one_per_primary(store, cluster))[0]
    # An entry left behind (its reply ended) and due: the reaper drops it...
    await client.zadd(LEASES, {session_id: 1})
    await store.reap_lapsed()
    assert await client.zscore(LEASES, session_id) is None
    # ...unless a reply started in between and moved it later (the conditional removal).
    await client.zadd(LEASES, {session_id: 1})
    start = await store.start_reply(session_id, allowed_models=[MODEL], content="q")
    assert await store.reap_lapsed() == []
    assert (await client.zscore(LEASES, session_id) or 0) > 1
    await store.finish_reply(
        session_id, start.reply_id, Done(reply_id=start.reply_id, finish_reason="stop", usage=None)
    )


async def test_ids_go_on_after_a_slot_migration(store: SessionStore, cluster: LocalCluster) -> None:
    source = cluster.primaries()[0]
    (session_id,) = await sessions_on(store, cluster, source, 1)
    start = await store.start_reply(session_id, allowed_models=[MODEL], content="q")
    assert await store.append_deltas([(session_id, start.reply_id, "delta", "before ", 1)])
    slot = key_slot(SessionKeys(session_id).session.encode())
    target = cluster.primaries()[1]
    await asyncio.to_thread(cluster.migrate_slot, slot, target)
    assert await store.append_deltas([(session_id, start.reply_id, "delta", "after", 2)])
    events = await store.events_after(session_id, 0)
    assert [e.seq for e in events] == [1, 2, 3, 4]
    snapshot = await store.snapshot(session_id)
    assert snapshot.messages[-1].content == "before after"
    await store.finish_reply(
        session_id, start.reply_id, Done(reply_id=start.reply_id, finish_reason="stop", usage=None)
    )


async def test_a_down_primary_fails_only_its_own_writes_then_ids_jump_on_its_replica(
    store: SessionStore, cluster: LocalCluster
) -> None:
    sessions = await one_per_primary(store, cluster)
    starts = [await store.start_reply(s, allowed_models=[MODEL], content="q") for s in sessions]
    writes = [(s, r.reply_id, "delta", "a", 1) for s, r in zip(sessions, starts, strict=True)]
    assert await store.append_deltas(writes) == [True, True, True]
    before = [await store.last_seq(s) for s in sessions]
    doomed = cluster.primaries()[2]
    assert cluster.primary_of_key(SessionKeys(sessions[2]).session) is doomed
    cluster.kill(doomed)
    more = [(s, r.reply_id, "delta", "b", 2) for s, r in zip(sessions, starts, strict=True)]
    with pytest.raises(SlotsUnavailableError) as failed:
        await store.append_deltas(more)
    assert failed.value.results == [True, True, None]
    replica, seconds = await asyncio.to_thread(cluster.wait_for_failover, doomed)
    print(f"\nfailover: {replica} took over in {seconds:.2f} s")
    # The batch is sent again, as the gateway's writer does: applied once where it was.
    assert await store.append_deltas(more) == [True, True, True]
    after = [await store.last_seq(s) for s in sessions]
    assert None not in before
    assert after[:2] == [cast("int", before[0]) + 1, cast("int", before[1]) + 1]
    # The replica may lack its primary's last writes: ids jump past any a tab may hold.
    assert after[2] is not None
    assert before[2] is not None
    assert after[2] > before[2] + SEQ_SKIP_AFTER_RESTART
    for session_id in sessions:
        assert (await store.snapshot(session_id)).messages[-1].content == "ab"
    await asyncio.to_thread(cluster.restart, doomed)
