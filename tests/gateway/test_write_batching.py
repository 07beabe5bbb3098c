"""The gateway's writer: the text of every running reply goes to Redis in one call per flush
tick, not one round trip per token per reply (in-process, real Redis, fake upstream over HTTP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from chatrelay_common import SessionKeys, SessionSettings, SessionStore
from chatrelay_gateway._generation import Generations
from chatrelay_gateway._upstream import UpstreamConfig
from redis.asyncio import Redis

from tests.support import fake_upstream as fake
from tests.support.redis_process import redis_process
from tests.support.redis_server import open_plain_redis

# 200 tokens in about 0.4 s.
_TOKEN_DELAY = 0.002


@pytest.fixture(scope="module")
def quick_upstream() -> Iterator[fake.FakeUpstream]:
    with fake.FakeUpstream(slow_delay=_TOKEN_DELAY) as upstream:
        yield upstream


@pytest.fixture
def upstream(quick_upstream: fake.FakeUpstream) -> fake.FakeUpstream:
    quick_upstream.reset()
    return quick_upstream


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A Redis of this test's own: its command counts are this test's alone."""
    with redis_process(tmp_path) as server:
        async with open_plain_redis(server.url) as client:
            yield client


async def _slow_replies(store: SessionStore, count: int) -> list[tuple[str, str]]:
    replies = []
    for _ in range(count):
        session_id = await store.create(SessionSettings(model="slow"))
        _, reply_id = await store.begin_reply(session_id, model="slow", content="go")
        replies.append((session_id, reply_id))
    return replies


async def _deltas(store: SessionStore, session_id: str) -> list[str]:
    log = await store.events_after(session_id, 0)
    return [msgspec.json.decode(e.data)["text"] for e in log if e.name == "delta"]


async def test_replies_running_together_share_their_redis_calls(
    own_redis: Redis, upstream: fake.FakeUpstream
) -> None:
    store = SessionStore(own_redis)
    replies = await _slow_replies(store, 20)
    await own_redis.config_resetstat()
    async with httpx.AsyncClient() as client:
        runner = Generations(
            store, client, UpstreamConfig(upstream.base_url, None), flush_seconds=0.01
        )
        tasks = [runner.start(session_id, reply_id) for session_id, reply_id in replies]
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        await runner.aclose()
    calls = (await own_redis.info("commandstats"))["cmdstat_evalsha"]["calls"]
    tokens = len(replies) * fake.SLOW_TOKEN_COUNT
    # One call per token per reply before (about 1 per token); each reply's end is one more.
    print(f"{calls} script calls for {tokens} tokens: {calls / tokens:.3f} per token")
    assert calls <= 0.2 * tokens
    for session_id, _ in replies:
        reply = (await store.snapshot(session_id)).messages[-1]
        assert (reply.status, reply.content) == ("complete", fake.SLOW_TEXT)
        assert "".join(await _deltas(store, session_id)) == fake.SLOW_TEXT


async def test_text_after_a_quiet_spell_goes_out_at_once_then_waits_for_the_tick(
    store: SessionStore, redis: Redis, upstream: fake.FakeUpstream
) -> None:
    [(session_id, reply_id)] = await _slow_replies(store, 1)
    pubsub = redis.pubsub()
    await pubsub.subscribe(SessionKeys(session_id).channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    delta_times: list[float] = []
    async with httpx.AsyncClient() as client:
        # A tick far longer than the whole upstream answer (about 0.4 s).
        runner = Generations(
            store, client, UpstreamConfig(upstream.base_url, None), flush_seconds=3.0
        )
        started = time.monotonic()
        task = runner.start(session_id, reply_id)
        while not task.done() or len(delta_times) < 2:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None and message["data"].split(b" ", 2)[1] == b"delta":
                delta_times.append(time.monotonic() - started)
            assert time.monotonic() - started < 20
        await runner.aclose()
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    print(f"deltas written {', '.join(f'{t:.2f}' for t in delta_times)} s after the start")
    # The first text goes out at once; the rest, read meanwhile, waits for the next tick.
    assert len(delta_times) == 2
    assert delta_times[0] < 1.5
    assert delta_times[1] - delta_times[0] >= 2.9
    assert "".join(await _deltas(store, session_id)) == fake.SLOW_TEXT
    assert (await store.snapshot(session_id)).messages[-1].status == "complete"


async def test_a_reply_closed_by_someone_else_stops_alone(
    store: SessionStore, redis: Redis
) -> None:
    """Two replies share the writer's calls; the one that no longer streams ends its
    upstream, the other is written to its end."""
    with fake.FakeUpstream() as upstream:  # 20 ms a token: 4 s an answer
        [(lost, lost_reply), (kept, kept_reply)] = await _slow_replies(store, 2)
        async with httpx.AsyncClient() as client:
            runner = Generations(store, client, UpstreamConfig(upstream.base_url, None))
            lost_task = runner.start(lost, lost_reply)
            kept_task = runner.start(kept, kept_reply)
            for _ in range(500):  # until both have text
                if all([await _deltas(store, lost), await _deltas(store, kept)]):
                    break
                await asyncio.sleep(0.02)
            await redis.delete(SessionKeys(lost).lock)
            assert await store.request_stop(lost) == lost_reply  # an orphan: closed at once
            await upstream.wait_for_disconnect_async(timeout=5)
            await asyncio.wait_for(lost_task, 10)
            await asyncio.wait_for(kept_task, 20)
            await runner.aclose()
        assert upstream.client_disconnects == ["slow"]
    log = await store.events_after(lost, 0)
    assert [e.name for e in log].count("error") == 1  # the writer added no second end
    assert fake.SLOW_TEXT.startswith((await store.snapshot(lost)).messages[-1].content)
    kept_message = (await store.snapshot(kept)).messages[-1]
    assert (kept_message.status, kept_message.content) == ("complete", fake.SLOW_TEXT)
