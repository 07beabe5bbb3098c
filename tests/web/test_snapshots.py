"""Tabs opening on one session at once share its snapshot read, but only a read that started
after their own subscription (real Redis)."""

from __future__ import annotations

import asyncio

from chatrelay_common import SessionSettings, SessionStore, Snapshot
from chatrelay_web._events import SharedSnapshots
from redis.asyncio import Redis


class _CountingStore(SessionStore):
    reads = 0

    async def snapshot(self, session_id: str) -> Snapshot:
        self.reads += 1
        return await super().snapshot(session_id)


async def test_tabs_subscribed_before_a_read_started_share_it(redis: Redis) -> None:
    store = _CountingStore(redis)
    session_id = await store.create(SessionSettings(model="m"))
    snapshots = SharedSnapshots(store)
    subscribed_at = snapshots.epoch  # three tabs, all subscribed before any read
    frames = await asyncio.gather(*(snapshots(session_id, subscribed_at) for _ in range(3)))
    assert store.reads == 1
    assert frames[1] is frames[0]
    assert frames[2] is frames[0]


async def test_a_tab_subscribed_after_a_read_started_reads_again_and_sees_later_events(
    redis: Redis,
) -> None:
    store = _CountingStore(redis)
    session_id = await store.create(SessionSettings(model="m"))
    snapshots = SharedSnapshots(store)
    early = asyncio.create_task(snapshots(session_id, snapshots.epoch))
    await asyncio.sleep(0)  # the early tab's read has started
    await store.update_settings(session_id, {"temperature": 0.5})
    late = await snapshots(session_id, snapshots.epoch)  # subscribed after that read began
    first = await early
    assert store.reads == 2
    assert late is not first
    assert late.seq > 0
    assert late.seq >= first.seq
    assert b'"temperature":0.5' in late.frame
