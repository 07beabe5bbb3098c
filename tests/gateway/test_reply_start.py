"""A reply starts in one Redis round trip: the begin script checks the session's model and
returns the settings and conversation the upstream request is made of."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from chatrelay_common import Done, SessionSettings, SessionStore
from chatrelay_common._store import ModelNotAllowedError
from chatrelay_gateway._generation import chat_body
from redis.asyncio import Redis

from tests.support.redis_process import redis_process
from tests.support.redis_server import open_plain_redis


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[Redis]:
    """A Redis of this test's own: its command counts are this test's alone."""
    with redis_process(tmp_path) as server:
        async with open_plain_redis(server.url) as client:
            yield client


async def test_a_reply_starts_in_one_round_trip_with_its_upstream_request(
    own_redis: Redis,
) -> None:
    store = SessionStore(own_redis)
    settings = SessionSettings(system="Be brief.", model="ok", temperature=0.5)
    session_id = await store.create(settings)
    first = await store.start_reply(session_id, allowed_models=("slow", "ok"), content="hi")
    assert (first.settings, first.history) == (settings, [("user", "hi")])
    # The first reply: an answer with reasoning (never sent back).
    await store.append_delta(session_id, first.reply_id, "thinking", kind="reasoning")
    await store.append_delta(session_id, first.reply_id, "Hello!")
    await store.finish_reply(session_id, first.reply_id, _done(first.reply_id))

    sent: list[str] = []
    execute = own_redis.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return await execute(*args, **options)  # type: ignore[no-untyped-call]

    own_redis.execute_command = counted  # type: ignore[method-assign]
    second = await store.start_reply(session_id, allowed_models=("ok",), content="again")
    assert sent == ["EVALSHA"]  # one round trip
    assert second.history == [("user", "hi"), ("assistant", "Hello!"), ("user", "again")]
    assert chat_body(second.settings, second.history) == {
        "model": "ok",
        "temperature": 0.5,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "again"},
        ],
    }
    snapshot = await store.snapshot(session_id)
    assert [(m.id, m.role, m.status) for m in snapshot.messages[-2:]] == [
        (second.message_id, "user", "complete"),
        (second.reply_id, "assistant", "streaming"),
    ]
    assert snapshot.messages[-1].model == "ok"
    start = (await store.events_after(session_id, 0))[-1]
    assert start.name == "start"
    assert f'"reply_id":"{second.reply_id}","model":"ok"'.encode() in start.data


async def test_regenerating_sends_the_conversation_without_the_replaced_reply(
    store: SessionStore,
) -> None:
    session_id = await store.create(SessionSettings(model="ok"))
    first = await store.start_reply(session_id, allowed_models=("ok",), content="hi")
    await store.append_delta(session_id, first.reply_id, "old answer")
    await store.finish_reply(session_id, first.reply_id, _done(first.reply_id))
    again = await store.start_reply(session_id, allowed_models=("ok",), content=None)
    assert (again.message_id, again.history) == (None, [("user", "hi")])
    # An empty reply (stopped before its first token) is left out too.
    await store.finish_reply(session_id, again.reply_id, _done(again.reply_id))
    third = await store.start_reply(session_id, allowed_models=("ok",), content="more")
    assert third.history == [("user", "hi"), ("user", "more")]


async def test_a_model_no_longer_allowed_is_refused_before_anything_is_written(
    store: SessionStore,
) -> None:
    session_id = await store.create(SessionSettings(model="slow"))
    with pytest.raises(ModelNotAllowedError) as refused:
        await store.start_reply(session_id, allowed_models=("ok", "other"), content="hi")
    assert refused.value.model == "slow"
    snapshot = await store.snapshot(session_id)
    assert (snapshot.messages, snapshot.seq) == ([], 0)
    assert await store.events_after(session_id, 0) == []


def _done(reply_id: str) -> Done:
    return Done(reply_id=reply_id, finish_reason="stop", usage=None)
