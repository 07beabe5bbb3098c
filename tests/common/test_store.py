from __future__ import annotations

import asyncio
import json
import re

import pytest
from chatrelay_common import (
    CONTROL_CHANNEL,
    Done,
    ErrorEvent,
    Message,
    NothingToRegenerateError,
    ReplyBusyError,
    SessionKeys,
    SessionNotFoundError,
    SessionSettings,
    SessionStore,
    Usage,
    decode_wire,
)
from chatrelay_common._keys import LEASES
from redis.asyncio import Redis


async def test_a_reply_is_logged_and_snapshotted_atomically(store: SessionStore) -> None:
    session = await store.create(SessionSettings(system="be brief", model="m", temperature=0.5))
    message_id, reply_id = await store.begin_reply(session, model="m", content="hi")
    assert await store.append_delta(session, reply_id, "Hel")
    assert await store.append_delta(session, reply_id, "lo ✓")

    snapshot = await store.snapshot(session)
    assert snapshot.seq == 4
    assert snapshot.settings == SessionSettings(system="be brief", model="m", temperature=0.5)
    created_at = json.loads((await store.events_after(session, 0))[0].data)["message"]["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created_at)
    assert snapshot.messages == [
        Message(
            id=message_id or "", role="user", content="hi", status="complete", created_at=created_at
        ),
        Message(
            id=reply_id,
            role="assistant",
            content="Hello ✓",
            status="streaming",
            created_at=created_at,
            model="m",
            finish_reason=None,
            usage=None,
            error=None,
            reasoning="",
            timing=None,
        ),
    ]

    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    assert await store.finish_reply(session, reply_id, Done(reply_id, "stop", usage))
    # A reply can finish only once, and takes no text after that.
    assert not await store.finish_reply(session, reply_id, Done(reply_id, "stop", None))
    assert not await store.append_delta(session, reply_id, "late")

    log = await store.events_after(session, 0)
    assert [(e.seq, e.name) for e in log] == [
        (1, "message"),
        (2, "start"),
        (3, "delta"),
        (4, "delta"),
        (5, "done"),
    ]
    assert log[3].data.decode() == f'{{"reply_id":"{reply_id}","text":"lo ✓"}}'
    assert [e.seq for e in await store.events_after(session, 3)] == [4, 5]
    assert (await store.snapshot(session)).messages[1].status == "complete"


async def test_each_event_is_published_with_its_seq(store: SessionStore, redis: Redis) -> None:
    session = await store.create(SessionSettings(model="m"))
    pubsub = redis.pubsub()
    await pubsub.subscribe(SessionKeys(session).channel)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    await store.append_delta(session, reply_id, "a b")
    got = []
    for _ in range(3):
        message = await pubsub.get_message(timeout=1)
        assert message is not None
        got.append(decode_wire(message["data"]))
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert got[0][:2] == (1, "message")
    created_at = json.loads(got[0][2])["message"]["created_at"]
    start = f'{{"reply_id":"{reply_id}","model":"m","created_at":"{created_at}"}}'
    assert got[1] == (2, "start", start.encode())
    assert got[2] == (3, "delta", f'{{"reply_id":"{reply_id}","text":"a b"}}'.encode())


async def test_one_reply_at_a_time_and_unknown_sessions(store: SessionStore) -> None:
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="one")
    with pytest.raises(ReplyBusyError):
        await store.begin_reply(session, model="m", content="two")
    with pytest.raises(ReplyBusyError):
        await store.clear(session)
    await store.finish_reply(session, reply_id, ErrorEvent(reply_id, "upstream_error", "boom"))
    await store.begin_reply(session, model="m", content="two")
    with pytest.raises(SessionNotFoundError):
        await store.begin_reply("nope", model="m", content="x")
    with pytest.raises(SessionNotFoundError):
        await store.snapshot("nope")


async def test_stop_flags_the_streaming_reply_and_tells_gateways(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    assert await store.request_stop(session) is None  # nothing streams: a no-op
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    pubsub = redis.pubsub()
    await pubsub.subscribe(CONTROL_CHANNEL)
    await pubsub.get_message(timeout=1)
    assert await store.request_stop(session) == reply_id
    message = await pubsub.get_message(timeout=1)
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert message is not None
    assert message["data"] == f"{session} {reply_id}".encode()
    assert await store.stop_requested(session, reply_id)


async def test_an_orphaned_reply_is_closed_when_the_lock_expired(
    store: SessionStore, redis: Redis
) -> None:
    session = await store.create(SessionSettings(model="m"))
    _, orphan = await store.begin_reply(session, model="m", content="hi")
    await store.append_delta(session, orphan, "partial")
    await redis.delete(SessionKeys(session).lock)  # as if its gateway died and the lock expired
    await store.begin_reply(session, model="m", content="again")
    snapshot = await store.snapshot(session)
    assert [(m.content, m.status) for m in snapshot.messages] == [
        ("hi", "complete"),
        ("partial", "error"),
        ("again", "complete"),
        ("", "streaming"),
    ]
    names = [e.name for e in await store.events_after(session, 0)]
    assert names == ["message", "start", "delta", "error", "message", "start"]


async def test_regenerate_edit_and_clear_truncate_for_every_tab(store: SessionStore) -> None:
    session = await store.create(SessionSettings(model="m"))
    first, reply = await store.begin_reply(session, model="m", content="one")
    await store.finish_reply(session, reply, Done(reply, "stop", None))
    with pytest.raises(NothingToRegenerateError):
        await store.begin_reply(session, model="m", content="x", replace_from="unknown")

    _, regenerated = await store.begin_reply(session, model="m", content=None)
    after = (await store.snapshot(session)).seq
    await store.finish_reply(session, regenerated, Done(regenerated, "stop", None))
    assert [m.id for m in (await store.snapshot(session)).messages] == [first, regenerated]

    edited, _ = await store.begin_reply(session, model="m", content="uno", replace_from=first)
    snapshot = await store.snapshot(session)
    assert [(m.role, m.content) for m in snapshot.messages] == [("user", "uno"), ("assistant", "")]
    log = await store.events_after(session, after)
    assert [e.name for e in log] == ["done", "truncate", "message", "start"]
    assert log[1].data == f'{{"from_message_id":"{first}"}}'.encode()
    assert edited != first

    await store.finish_reply(session, snapshot.messages[1].id, Done("", "stop", None))
    await store.clear(session)
    assert (await store.snapshot(session)).messages == []
    last = (await store.events_after(session, snapshot.seq))[-1]
    assert (last.name, last.data) == ("truncate", b'{"from_message_id":null}')
    with pytest.raises(NothingToRegenerateError):
        await store.begin_reply(session, model="m", content=None)


async def test_settings_change_is_an_event_and_no_change_is_none(store: SessionStore) -> None:
    session = await store.create(SessionSettings(model="m"))
    changes = {"system": "s", "model": "n", "temperature": 1.0}
    await store.update_settings(session, changes)
    assert await store.settings(session) == SessionSettings(system="s", model="n", temperature=1.0)
    (event,) = await store.events_after(session, 0)
    assert event.name == "settings"
    assert event.data == b'{"settings":{"system":"s","model":"n","temperature":1.0}}'
    # The same again (as a retried call that had run): nothing changes, no second event.
    await store.update_settings(session, changes)
    assert len(await store.events_after(session, 0)) == 1


async def test_update_settings_merges_only_the_given_fields(store: SessionStore) -> None:
    session = await store.create(
        SessionSettings(system='say "hi"\\/ ✓', model="m", temperature=1.0)
    )
    merged = await store.update_settings(session, {"model": "n"})
    assert merged == SessionSettings(system='say "hi"\\/ ✓', model="n", temperature=1.0)
    assert await store.settings(session) == merged
    (event,) = await store.events_after(session, 0)
    assert event.name == "settings"
    # Unchanged values keep their exact JSON text (1.0 stays 1.0).
    assert (
        event.data
        == b'{"settings":{"system":"say \\"hi\\"\\\\/ \xe2\x9c\x93","model":"n","temperature":1.0}}'
    )
    assert await store.update_settings(session, {"system": None, "temperature": 0.25}) == (
        SessionSettings(system=None, model="n", temperature=0.25)
    )


async def test_concurrent_updates_of_different_fields_both_survive(store: SessionStore) -> None:
    session = await store.create(SessionSettings(model="m"))
    for round_ in range(20):
        await asyncio.gather(
            store.update_settings(session, {"system": f"s{round_}"}),
            store.update_settings(session, {"temperature": round_ / 10}),
            store.update_settings(session, {"model": f"m{round_}"}),
        )
        assert await store.settings(session) == SessionSettings(
            system=f"s{round_}", model=f"m{round_}", temperature=round_ / 10
        )


async def test_update_settings_rejects_unknown_sessions_and_fields(store: SessionStore) -> None:
    with pytest.raises(SessionNotFoundError):
        await store.update_settings("A" * 22, {"model": "n"})
    session = await store.create(SessionSettings(model="m"))
    with pytest.raises(ValueError, match="not a session setting: colour"):
        await store.update_settings(session, {"colour": "red"})
    assert await store.events_after(session, 0) == []


async def test_append_deltas_writes_several_sessions_in_one_call_and_skips_a_retried_batch(
    store: SessionStore,
) -> None:
    first = await store.create(SessionSettings(model="m"))
    second = await store.create(SessionSettings(model="m"))
    _, first_reply = await store.begin_reply(first, model="m", content="a?")
    _, second_reply = await store.begin_reply(second, model="m", content="b?")
    writes = [
        (first, first_reply, "delta", "a1", 1),
        (second, second_reply, "delta", "b1", 1),
        (first, first_reply, "delta", "a2", 2),
    ]
    assert await store.append_deltas(writes) == [True, True, True]
    # The same call again, as when its answer was lost: every batch is applied already.
    assert await store.append_deltas(writes) == [True, True, True]

    first_log = await store.events_after(first, 0)
    assert [(e.seq, e.name) for e in first_log] == [
        (1, "message"),
        (2, "start"),
        (3, "delta"),
        (4, "delta"),
    ]
    assert first_log[3].data.decode() == f'{{"reply_id":"{first_reply}","text":"a2"}}'
    assert [(e.seq, e.name) for e in await store.events_after(second, 2)] == [(3, "delta")]
    assert (await store.snapshot(first)).messages[-1].content == "a1a2"
    assert (await store.snapshot(second)).messages[-1].content == "b1"

    assert await store.finish_reply(second, second_reply, Done(second_reply, "stop", None))
    # One reply ended: only its write says so, the other goes on.
    assert await store.append_deltas(
        [(first, first_reply, "delta", "a3", 3), (second, second_reply, "delta", "late", 2)]
    ) == [True, False]
    assert (await store.snapshot(first)).messages[-1].content == "a1a2a3"
    assert (await store.snapshot(second)).messages[-1].content == "b1"
    assert await store.append_deltas([]) == []


async def test_a_delta_extends_a_lease_that_has_run_down(store: SessionStore, redis: Redis) -> None:
    session = await store.create(SessionSettings(model="m"))
    _, reply_id = await store.begin_reply(session, model="m", content="hi")
    lock = SessionKeys(session).lock
    await redis.pexpire(lock, 1000)  # as if the keepalive had missed its refreshes
    assert await store.append_delta(session, reply_id, "a", batch=1)
    lease_ms = round(store.lease_seconds * 1000)
    assert lease_ms - 1000 < await redis.pttl(lock) <= lease_ms
    now_ms = (await redis.time())[0] * 1000
    deadline = await redis.zscore(LEASES, session)
    assert deadline is not None
    assert now_ms + lease_ms - 2000 < deadline <= now_ms + lease_ms + 1000


async def test_keep_leases_extends_many_leases_in_one_call_and_says_which_to_end(
    store: SessionStore, redis: Redis
) -> None:
    replies = []
    for _ in range(3):
        session = await store.create(SessionSettings(model="m"))
        _, reply_id = await store.begin_reply(session, model="m", content="hi")
        await redis.pexpire(SessionKeys(session).lock, 500)
        replies.append((session, reply_id))
    (kept, _), (stopped, stopped_reply), (ended, ended_reply) = replies
    # A stop flag alone (its publication missed, say), and a reply that has ended.
    await redis.set(SessionKeys(stopped).stop, stopped_reply)
    assert await store.finish_reply(ended, ended_reply, Done(ended_reply, "stop", None))

    assert await store.keep_leases(replies) == ["kept", "stop", "lost"]
    lease_ms = round(store.lease_seconds * 1000)
    for session in (kept, stopped):
        assert lease_ms - 1000 < await redis.pttl(SessionKeys(session).lock) <= lease_ms
    assert await redis.exists(SessionKeys(ended).lock) == 0
    assert await store.keep_leases([]) == []
