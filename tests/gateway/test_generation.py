"""The reply runner in-process, against real Redis and the fake upstream over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest
from chatrelay_common import SessionKeys, SessionSettings, SessionStore, open_redis
from chatrelay_gateway._generation import Generations
from chatrelay_gateway._upstream import UpstreamConfig
from redis.asyncio import Redis

from tests.support import fake_upstream as fake
from tests.support.redis_process import redis_process


async def _finished(store: SessionStore, session_id: str) -> tuple[str, str]:
    for _ in range(500):
        reply = (await store.snapshot(session_id)).messages[-1]
        if reply.status != "streaming":
            return reply.status, reply.content
        await asyncio.sleep(0.02)
    raise AssertionError("the reply is still streaming after 10 s")


@pytest.fixture
async def generations(
    store: SessionStore, fake_upstream: fake.FakeUpstream
) -> AsyncIterator[Generations]:
    async with httpx.AsyncClient() as client:
        runner = Generations(store, client, UpstreamConfig(fake_upstream.base_url, None))
        yield runner
        await runner.aclose()


async def _slow_reply(store: SessionStore) -> tuple[str, str]:
    session_id = await store.create(SessionSettings(model="slow"))
    _, reply_id = await store.begin_reply(session_id, model="slow", content="go")
    return session_id, reply_id


async def test_a_stop_before_the_reply_began_ends_it_at_once(
    store: SessionStore, generations: Generations
) -> None:
    session_id, reply_id = await _slow_reply(store)
    generations.start(session_id, reply_id)
    generations.stop(session_id, reply_id)  # before its task has run at all
    assert await _finished(store, session_id) == ("stopped", "")
    log = await store.events_after(session_id, 0)
    assert log[-1].name == "done"
    # Stopped before any text: no usage, no timing.
    stopped = f'{{"reply_id":"{reply_id}","finish_reason":"stopped","usage":null,"timing":null}}'
    assert log[-1].data == stopped.encode()


async def test_shutdown_ends_running_replies_with_an_error_keeping_the_text(
    store: SessionStore, generations: Generations, fake_upstream: fake.FakeUpstream
) -> None:
    session_id, reply_id = await _slow_reply(store)
    generations.start(session_id, reply_id)
    for _ in range(500):  # until some text has streamed
        if (await store.snapshot(session_id)).messages[-1].content:
            break
        await asyncio.sleep(0.02)
    await generations.aclose()
    status, content = await _finished(store, session_id)
    assert status == "error"
    assert content
    assert fake.SLOW_TEXT.startswith(content)
    assert (await store.events_after(session_id, 0))[-1].name == "error"
    await fake_upstream.wait_for_disconnect_async(timeout=5)


async def _until_text(store: SessionStore, session_id: str) -> None:
    for _ in range(500):
        if (await store.snapshot(session_id)).messages[-1].content:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no text streamed in 10 s")


async def test_start_returns_a_task_done_when_the_reply_has_ended(
    store: SessionStore, generations: Generations
) -> None:
    session_id = await store.create(SessionSettings(model="ok"))
    _, reply_id = await store.begin_reply(session_id, model="ok", content="hi")
    task = generations.start(session_id, reply_id)
    await asyncio.wait_for(task, 10)
    reply = (await store.snapshot(session_id)).messages[-1]
    assert (reply.status, reply.content) == ("complete", fake.OK_TEXT)


async def test_a_reply_closed_by_someone_else_closes_its_upstream(
    store: SessionStore, redis: Redis, generations: Generations, fake_upstream: fake.FakeUpstream
) -> None:
    """As when a reaper found its lease lapsed: the writer learns it at its next write."""
    session_id, reply_id = await _slow_reply(store)
    task = generations.start(session_id, reply_id)
    await _until_text(store, session_id)
    await redis.delete(SessionKeys(session_id).lock)
    assert await store.request_stop(session_id) == reply_id  # an orphan now: closed at once
    await fake_upstream.wait_for_disconnect_async(timeout=5)
    await asyncio.wait_for(task, 10)
    log = await store.events_after(session_id, 0)
    assert [e.name for e in log].count("error") == 1  # the writer added no second end
    assert fake_upstream.client_disconnects == ["slow"]


async def test_stops_reach_an_idle_listener_on_a_client_with_a_short_socket_timeout(
    redis_server_url: str, fake_upstream: fake.FakeUpstream
) -> None:
    async with open_redis(redis_server_url, socket_timeout=0.3) as redis_client:
        # A long lease: its keepalive (which also checks the stop flag) runs every 10 s.
        store = SessionStore(redis_client, lease_seconds=30)
        async with httpx.AsyncClient() as client:
            runner = Generations(store, client, UpstreamConfig(fake_upstream.base_url, None))
            listener = asyncio.create_task(runner.listen_for_stops())
            await asyncio.sleep(1.5)  # idle: five socket timeouts
            session_id, reply_id = await _slow_reply(store)
            task = runner.start(session_id, reply_id)
            await _until_text(store, session_id)
            started = time.monotonic()
            assert await store.request_stop(session_id) == reply_id
            await asyncio.wait_for(task, 10)
            print(f"stop took effect in {time.monotonic() - started:.2f} s")
            assert time.monotonic() - started < 3
            assert (await store.snapshot(session_id)).messages[-1].status == "stopped"
            listener.cancel()
            await runner.aclose()


async def test_redis_gone_mid_reply_closes_the_upstream_and_the_reply_ends_once_it_is_back(
    tmp_path: Path, fake_upstream: fake.FakeUpstream
) -> None:
    with redis_process(tmp_path) as server:
        async with open_redis(server.url) as redis_client, httpx.AsyncClient() as client:
            store = SessionStore(redis_client, lease_seconds=2)
            runner = Generations(store, client, UpstreamConfig(fake_upstream.base_url, None))
            session_id, reply_id = await _slow_reply(store)
            task = runner.start(session_id, reply_id)
            await _until_text(store, session_id)

            server.kill()
            killed = time.monotonic()
            await fake_upstream.wait_for_disconnect_async(timeout=15)
            closed_after = time.monotonic() - killed
            await asyncio.wait_for(task, 15)
            ended_after = time.monotonic() - killed
            print(f"upstream closed {closed_after:.2f} s, task ended {ended_after:.2f} s after")
            assert fake_upstream.client_disconnects == ["slow"]

            server.start()
            # Nobody renews the lease now: a reaper (any gateway's) ends the reply.
            closed: list[str] = []
            for _ in range(100):
                closed += await store.reap_lapsed()
                if reply_id in closed:
                    break
                await asyncio.sleep(0.1)
            snapshot = await store.snapshot(session_id)
            reply = snapshot.messages[-1]
            assert reply.status == "error"
            log = await store.events_after(session_id, 0)
            deltas = "".join(msgspec.json.decode(e.data)["text"] for e in log if e.name == "delta")
            # Tabs saw exactly what the session holds: no delta lost or doubled.
            assert reply.content == deltas
            assert reply.content
            assert fake.SLOW_TEXT.startswith(reply.content)
            assert [e.name for e in log][-1] == "error"
            assert [e.seq for e in log] == list(range(1, snapshot.seq + 1))
            await runner.aclose()


async def test_the_keepalive_ends_a_reply_whose_stop_was_flagged_but_never_heard(
    redis_server_url: str, redis: Redis, fake_upstream: fake.FakeUpstream
) -> None:
    """No stop listener runs here: only the keepalive, one Redis call for every running
    reply, can see the flag. The other reply streams on."""
    async with open_redis(redis_server_url) as redis_client, httpx.AsyncClient() as client:
        store = SessionStore(redis_client, lease_seconds=1.5)  # a keepalive every 0.5 s
        runner = Generations(store, client, UpstreamConfig(fake_upstream.base_url, None))
        stopped, stopped_reply = await _slow_reply(store)
        going, going_reply = await _slow_reply(store)
        stopped_task = runner.start(stopped, stopped_reply)
        going_task = runner.start(going, going_reply)
        await _until_text(store, stopped)
        await redis.set(SessionKeys(stopped).stop, stopped_reply)  # no publication
        await asyncio.wait_for(stopped_task, 10)
        assert (await store.snapshot(stopped)).messages[-1].status == "stopped"
        assert not going_task.done()
        await asyncio.wait_for(going_task, 20)
        going_message = (await store.snapshot(going)).messages[-1]
        assert (going_message.status, going_message.content) == ("complete", fake.SLOW_TEXT)
        await runner.aclose()
