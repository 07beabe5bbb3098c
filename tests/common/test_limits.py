"""Bounded Redis: every key of a session expires after a TTL of inactivity, the log is capped in
bytes as well as events, and a session's text is capped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from chatrelay_common import (
    Done,
    SessionFullError,
    SessionKeys,
    SessionSettings,
    SessionStore,
    is_session_id,
    new_id,
)
from redis.asyncio import Redis

TTL = 1000


async def _ttls(redis: Redis, session_id: str) -> dict[str, int]:
    """Every key of the session and its TTL in seconds (-1: none)."""
    pattern = SessionKeys(session_id).base.replace("{", "\\{").replace("}", "\\}") + "*"
    keys = [key async for key in redis.scan_iter(match=pattern)]
    return {key.decode(): await redis.ttl(key) for key in keys}


async def _age_every_key(redis: Redis, session_id: str) -> None:
    for key in await _ttls(redis, session_id):
        await redis.expire(key, 10)


async def _assert_all_refreshed(redis: Redis, session_id: str) -> None:
    """After a write: every key lives a whole TTL again (lock and stop have their own)."""
    ttls = await _ttls(redis, session_id)
    keys = SessionKeys(session_id)
    own = {keys.lock, keys.stop}
    assert ttls, "no keys"
    assert {k: t for k, t in ttls.items() if k not in own and not TTL - 5 <= t <= TTL} == {}
    assert all(t > 0 for t in ttls.values()), ttls


async def test_every_key_of_a_session_expires_and_each_write_refreshes_them(
    redis: Redis,
) -> None:
    store = SessionStore(redis, session_ttl_seconds=TTL)
    session = await store.create(SessionSettings(model="m"))
    await _assert_all_refreshed(redis, session)

    writes = []
    _, first = await store.begin_reply(session, model="m", content="one")
    writes.append("send")
    await _assert_all_refreshed(redis, session)
    steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("delta", lambda: store.append_delta(session, first, "text", batch=1)),
        ("stop", lambda: store.request_stop(session)),
        ("done", lambda: store.finish_reply(session, first, Done(first, "stop", None))),
        ("settings", lambda: store.update_settings(session, {"model": "n"})),
        ("update", lambda: store.update_settings(session, {"system": "s"})),
        ("regenerate", lambda: store.begin_reply(session, model="m", content=None)),
    ]
    for name, write in steps:
        await _age_every_key(redis, session)
        await write()
        writes.append(name)
        if name == "delta":  # only the keys a delta writes are refreshed; all carry a TTL
            ttls = await _ttls(redis, session)
            assert all(t > 0 for t in ttls.values()), (name, ttls)
            for key in (SessionKeys(session).session, SessionKeys(session).text(first)):
                assert ttls[key] >= TTL - 5, (name, key)
        else:
            await _assert_all_refreshed(redis, session)
    reply = (await store.snapshot(session)).messages[-1].id
    await store.finish_reply(session, reply, Done(reply, "stop", None))
    await _age_every_key(redis, session)
    await store.clear(session)
    await _assert_all_refreshed(redis, session)
    assert len(writes) == 7


async def test_the_log_is_capped_in_bytes_and_events(redis: Redis) -> None:
    store = SessionStore(redis, log_max_bytes=2000, log_max_events=1000)
    session = await store.create(SessionSettings(model="m"))
    _, reply = await store.begin_reply(session, model="m", content="go")
    for i in range(40):
        await store.append_delta(session, reply, f"{i:02d}" * 25, batch=i + 1)
    log = await store.events_after(session, 0, limit=1000)
    assert sum(len(e.data) for e in log) <= 2000
    assert log[-1].seq == 42  # message, start, 40 deltas: the newest kept
    assert [e.seq for e in log] == list(range(log[0].seq, 43))  # no gaps
    assert log[0].seq > 3  # the oldest went
    # The full text is still in the session: only the resume log is capped.
    text = "".join(f"{i:02d}" * 25 for i in range(40))
    assert (await store.snapshot(session)).messages[-1].content == text

    by_count = SessionStore(redis, log_max_events=5)
    other = await by_count.create(SessionSettings(model="m"))
    _, reply = await by_count.begin_reply(other, model="m", content="go")
    for i in range(10):
        await by_count.append_delta(other, reply, "x", batch=i + 1)
    assert [e.seq for e in await by_count.events_after(other, 0)] == [8, 9, 10, 11, 12]


async def test_a_message_over_the_session_cap_is_refused_and_changes_nothing(
    redis: Redis,
) -> None:
    store = SessionStore(redis, session_max_bytes=100)
    session = await store.create(SessionSettings(model="m"))
    _, reply = await store.begin_reply(session, model="m", content="a" * 60)
    await store.append_delta(session, reply, "b" * 30, batch=1)
    await store.finish_reply(session, reply, Done(reply, "stop", None))
    before = await store.snapshot(session)
    with pytest.raises(SessionFullError, match=r"size limit \(100 bytes of text\)"):
        await store.begin_reply(session, model="m", content="c" * 11)
    assert await store.snapshot(session) == before
    await store.begin_reply(session, model="m", content="c" * 10)  # exactly at the cap

    emptied = await store.create(SessionSettings(model="m"))
    _, reply = await store.begin_reply(emptied, model="m", content="a" * 90)
    await store.finish_reply(emptied, reply, Done(reply, "stop", None))
    await store.clear(emptied)  # clearing frees the space
    await store.begin_reply(emptied, model="m", content="d" * 100)


def test_a_session_id_is_checked_whole() -> None:
    session_id = new_id()
    assert is_session_id(session_id)
    assert not is_session_id(session_id + "\n")
    assert not is_session_id("\n" + session_id)
    assert not is_session_id(session_id[:10])
