"""The reply runner in-process, against real Redis and the fake upstream over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from chatrelay_common import SessionSettings, SessionStore
from chatrelay_gateway._generation import Generations
from chatrelay_gateway._upstream import UpstreamConfig

from tests.support import fake_upstream as fake


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
    stopped = f'{{"reply_id":"{reply_id}","finish_reason":"stopped","usage":null}}'
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
