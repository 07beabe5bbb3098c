"""A streaming reply holds a lease; whoever finds it lapsed closes the reply, keeping its text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chatrelay_common import ErrorEvent, SessionKeys, SessionSettings, SessionStore
from chatrelay_common._keys import LEASES
from redis.asyncio import Redis

from tests.support.redis_process import redis_process
from tests.support.redis_server import open_plain_redis

INTERRUPTED = (
    '{{"reply_id":"{}","code":"interrupted","message":"The gateway generating this reply '
    'stopped; the partial answer is kept."}}'
)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A Redis of these tests' own: a gateway process of another test on the shared Redis
    would reap these short leases itself."""
    with redis_process(tmp_path) as server:
        async with open_plain_redis(server.url) as client:
            yield client


def _short_lease_store(redis: Redis) -> SessionStore:
    return SessionStore(redis, lease_seconds=0.3)


async def _lease_members(redis: Redis) -> set[bytes]:
    return set(await redis.zrange(LEASES, 0, -1))


async def test_the_reaper_closes_a_reply_whose_lease_lapsed(redis: Redis) -> None:
    store = _short_lease_store(redis)
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    await store.append_delta(session, reply_id, "partial", batch=1)
    assert session.encode() in await _lease_members(redis)
    assert reply_id not in await store.reap_lapsed()  # the lease still runs

    await asyncio.sleep(0.5)  # nobody refreshed it: its gateway is gone
    assert reply_id in await store.reap_lapsed()
    assert reply_id not in await store.reap_lapsed()  # once

    reply = (await store.snapshot(session)).messages[-1]
    assert (reply.content, reply.status) == ("partial", "error")
    last = (await store.events_after(session, 0))[-1]
    assert (last.name, last.data.decode()) == ("error", INTERRUPTED.format(reply_id))
    assert session.encode() not in await _lease_members(redis)
    # The session takes the next message.
    await store.begin_reply(session, model="m", content="again")


async def test_a_refreshed_lease_keeps_the_reply_open(redis: Redis) -> None:
    store = _short_lease_store(redis)
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    for _ in range(6):
        await asyncio.sleep(0.1)
        assert await store.refresh_lease(session, reply_id)
        assert reply_id not in await store.reap_lapsed()
    assert (await store.snapshot(session)).messages[-1].status == "streaming"


async def test_a_lapsed_lease_is_taken_back_while_nobody_closed_the_reply(redis: Redis) -> None:
    """A gateway cut off from Redis longer than the lease goes on if nobody closed its reply."""
    store = _short_lease_store(redis)
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    await asyncio.sleep(0.5)
    assert not await redis.exists(SessionKeys(session).lock)
    assert await store.refresh_lease(session, reply_id)
    assert reply_id not in await store.reap_lapsed()
    # Once closed, the lease is gone for good.
    await store.finish_reply(session, reply_id, ErrorEvent(reply_id, "internal", "x"))
    assert not await store.refresh_lease(session, reply_id)
    assert session.encode() not in await _lease_members(redis)


async def test_stop_closes_an_orphaned_reply(redis: Redis) -> None:
    store = _short_lease_store(redis)
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    await store.append_delta(session, reply_id, "part", batch=1)
    await asyncio.sleep(0.5)
    assert await store.request_stop(session) == reply_id
    reply = (await store.snapshot(session)).messages[-1]
    assert (reply.content, reply.status) == ("part", "error")
    assert (await store.events_after(session, 0))[-1].data.decode() == INTERRUPTED.format(reply_id)
    assert await store.request_stop(session) is None  # nothing streams now
    assert session.encode() not in await _lease_members(redis)


async def test_finished_and_vanished_replies_leave_the_index(redis: Redis) -> None:
    store = _short_lease_store(redis)
    done = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(done, model="m", content="hi")
    await store.finish_reply(done, reply_id, ErrorEvent(reply_id, "internal", "x"))
    vanished = await store.create(SessionSettings(model="m"))
    _, lost_id = await store.begin_reply(vanished, model="m", content="hi")
    keys = SessionKeys(vanished)
    await redis.delete(keys.session, keys.lock)  # as when the session expired
    await asyncio.sleep(0.5)
    assert not {reply_id, lost_id} & set(await store.reap_lapsed())
    members = await _lease_members(redis)
    assert done.encode() not in members
    assert vanished.encode() not in members
