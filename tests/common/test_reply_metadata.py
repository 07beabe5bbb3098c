"""What the store keeps of a reply beyond its text: reasoning (its own event and key, in the
same numbered batches as the text), the model, when it was added, and how it ended; a snapshot
shows each exactly as the events said it live."""

from __future__ import annotations

import asyncio
import json

import msgspec
from chatrelay_common import (
    Done,
    ErrorEvent,
    Message,
    Reasoning,
    ReplyError,
    SessionKeys,
    SessionSettings,
    SessionStore,
    Timing,
    Usage,
    encode_data,
)
from redis.asyncio import Redis

USAGE = Usage(prompt_tokens=5, completion_tokens=9, total_tokens=14)
TIMING = Timing(first_token_ms=120, tokens_per_s=42.5)


async def test_reasoning_and_text_keep_their_order_and_a_retried_call_applies_nothing(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    _, reply = await store.begin_reply(session, model="m", content="why?")
    writes = [
        (session, reply, "reasoning", "Let me ", 1),
        (session, reply, "reasoning", "think.", 2),
        (session, reply, "delta", "Because", 3),
    ]
    assert await store.append_deltas(writes) == [True, True, True]
    # The same call again (its answer was lost): every batch is applied already.
    assert await store.append_deltas(writes) == [True, True, True]
    assert await store.append_deltas([(session, reply, "delta", ".", 4)]) == [True]

    log = await store.events_after(session, 2)
    assert [(e.seq, e.name, e.data) for e in log] == [
        (3, "reasoning", encode_data(Reasoning(reply, "Let me "))),
        (4, "reasoning", encode_data(Reasoning(reply, "think."))),
        (5, "delta", f'{{"reply_id":"{reply}","text":"Because"}}'.encode()),
        (6, "delta", f'{{"reply_id":"{reply}","text":"."}}'.encode()),
    ]
    keys = SessionKeys(session)
    assert await redis.get(keys.reasoning(reply)) == b"Let me think."
    assert await redis.get(keys.text(reply)) == b"Because."
    [_, streaming] = (await store.snapshot(session)).messages
    assert (streaming.reasoning, streaming.content, streaming.status) == (
        "Let me think.",
        "Because.",
        "streaming",
    )
    # Reasoning counts toward the session's size like text: "why?", the reasoning, the text.
    assert int(await redis.hget(keys.session, "bytes")) == 4 + 13 + 8  # type: ignore[misc]


async def test_a_snapshot_shows_what_the_events_said_for_every_ending(
    store: SessionStore,
) -> None:
    session = await store.create(SessionSettings(model="m"))
    mid, done = await store.begin_reply(session, model="model-a", content="one")
    await store.append_delta(session, done, "thought", batch=1, kind="reasoning")
    await store.append_delta(session, done, "answer", batch=2)
    assert await store.finish_reply(session, done, Done(done, "length", USAGE, TIMING))
    _, failed = await store.begin_reply(session, model="model-b", content="two")
    await store.append_delta(session, failed, "part", batch=1)
    assert await store.finish_reply(session, failed, ErrorEvent(failed, "upstream_error", "boom"))
    _, stopped = await store.begin_reply(session, model="model-a", content="three")
    assert await store.finish_reply(session, stopped, Done(stopped, "stopped", None))

    log = await store.events_after(session, 0)
    created = [json.loads(e.data)["message"]["created_at"] for e in log if e.name == "message"]
    starts = [json.loads(e.data) for e in log if e.name == "start"]
    assert [s["created_at"] for s in starts] == created
    assert [s["model"] for s in starts] == ["model-a", "model-b", "model-a"]
    done_data = next(e.data for e in log if e.name == "done")
    assert json.loads(done_data) == {
        "reply_id": done,
        "finish_reason": "length",
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        "timing": {"first_token_ms": 120, "tokens_per_s": 42.5},
    }

    messages = (await store.snapshot(session)).messages
    assert messages[0] == Message(mid or "", "user", "one", "complete", created_at=created[0])

    def reply(reply_id: str, at: int, model: str, **fields: object) -> Message:
        message = Message(
            reply_id,
            "assistant",
            "",
            "complete",
            created_at=created[at],
            model=model,
            finish_reason=None,
            usage=None,
            error=None,
            reasoning="",
            timing=None,
        )
        return msgspec.structs.replace(message, **fields)

    assert messages[1] == reply(
        done,
        0,
        "model-a",
        content="answer",
        reasoning="thought",
        finish_reason="length",
        usage=USAGE,
        timing=TIMING,
    )
    assert messages[3] == reply(
        failed,
        1,
        "model-b",
        content="part",
        status="error",
        error=ReplyError("upstream_error", "boom"),
    )
    assert messages[5] == reply(stopped, 2, "model-a", status="stopped", finish_reason="stopped")
    # As JSON: a user message carries no reply fields; a reply carries every one.
    as_json = json.loads(msgspec.json.encode(messages))
    assert set(as_json[0]) == {"id", "role", "content", "status", "created_at"}
    assert as_json[3]["error"] == {"code": "upstream_error", "message": "boom"}
    assert as_json[5]["usage"] is None


async def test_a_reaped_reply_keeps_the_interrupted_error_its_event_carried(
    redis: Redis,
) -> None:
    store = SessionStore(redis, lease_seconds=0.2)
    session = await store.create(SessionSettings(model="m"))
    _, reply = await store.begin_reply(session, model="m", content="hi")
    await store.append_delta(session, reply, "deep", batch=1, kind="reasoning")
    await asyncio.sleep(0.5)  # nobody refreshes the lease: its gateway is gone
    # Reaped here, or by a reaper of a gateway that other tests run on this Redis.
    await store.reap_lapsed()
    [_, closed] = (await store.snapshot(session)).messages
    error = json.loads((await store.events_after(session, 0))[-1].data)
    assert closed.status == "error"
    assert closed.error == ReplyError(error["code"], error["message"])
    assert closed.error.code == "interrupted"
    assert (closed.reasoning, closed.finish_reason, closed.timing) == ("deep", None, None)


async def test_truncating_removes_reasoning_and_frees_its_bytes(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    keys = SessionKeys(session)
    _, reply = await store.begin_reply(session, model="m", content="q")
    await store.append_delta(session, reply, "hmm", batch=1, kind="reasoning")
    await store.finish_reply(session, reply, Done(reply, "stop", None))
    await store.clear(session)

    assert await redis.exists(keys.reasoning(reply)) == 0
    assert int(await redis.hget(keys.session, "bytes")) == 0  # type: ignore[misc]
    assert (await store.snapshot(session)).messages == []
