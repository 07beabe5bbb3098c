"""The owners' lists on a real Redis: order by activity, paging, search and its bounds, titles,
and deleting a session with everything it has in Redis."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import msgspec
import pytest
from chatrelay_common import (
    CONTROL_CHANNEL,
    Done,
    History,
    InvalidCursorError,
    SessionKeys,
    SessionNotFoundError,
    SessionSettings,
    SessionStore,
    _history,
    clean_title,
    decode_wire,
    new_id,
)
from chatrelay_common._history import _Position
from chatrelay_common._keys import LEASES, OWNER_INDEX_PREFIX
from chatrelay_common._titles import default_title
from redis.asyncio import Redis

from tests.support.history import assert_deleted_for_good, walk


def _owner() -> str:
    return f"o:{new_id()}"  # a fresh owner per test: the Redis is shared


async def _session(store: SessionStore, owner: str, *texts: str, model: str = "m") -> str:
    """A session of ``owner`` with a finished exchange per text."""
    session = await store.create(SessionSettings(model=model), owner=owner)
    for text in texts:
        _, reply_id = await store.begin_reply(session, model=model, content=text)
        await store.append_delta(session, reply_id, f"answer to {text}")
        await store.finish_reply(session, reply_id, Done(reply_id, "stop", None))
    await asyncio.sleep(0.002)  # scores are milliseconds: the next session's are newer
    return session


async def test_the_list_is_newest_activity_first_and_the_cursor_visits_each_once(
    store: SessionStore,
) -> None:
    history = History(store)
    owner = _owner()
    sessions = [await _session(store, owner, f"question {n}") for n in range(7)]
    _, reply_id = await store.begin_reply(sessions[2], model="m", content="again")
    newest_first = [sessions[2], *reversed(sessions[:2] + sessions[3:])]

    page = await history.list(owner, limit=20)
    assert [s.id for s in page.sessions] == newest_first
    assert page.next is None
    for limit in (1, 2, 3, 6, 7):
        assert await walk(history, owner, limit) == newest_first, limit

    top = page.sessions[0]
    assert top.title == "question 2"
    assert top.message_count == 4  # two exchanges, the last reply still streaming
    assert top.model == "m"
    assert top.updated_at.endswith("Z")
    # A reply's tokens do not move its session; its end does.
    await asyncio.sleep(0.002)
    await store.append_delta(sessions[2], reply_id, "tokens")
    assert (await history.list(owner, limit=1)).sessions[0].updated_at == top.updated_at
    await store.finish_reply(sessions[2], reply_id, Done(reply_id, "stop", None))
    assert (await history.list(owner, limit=1)).sessions[0].updated_at > top.updated_at


async def test_ties_in_activity_are_paged_without_loss(store: SessionStore, redis: Redis) -> None:
    history = History(store)
    owner = _owner()
    sessions = [await _session(store, owner) for _ in range(5)]
    now_ms = int(time.time() * 1000)
    await redis.zadd(OWNER_INDEX_PREFIX + owner, dict.fromkeys(sessions, now_ms))
    walked = await walk(history, owner, 2)
    assert walked == sorted(sessions, reverse=True)


async def test_owners_have_their_own_lists(store: SessionStore) -> None:
    history = History(store)
    mine, theirs = _owner(), _owner()
    my_session = await _session(store, mine, "shared secret words")
    their_session = await _session(store, theirs, "shared secret words")
    assert [s.id for s in (await history.list(mine, limit=10)).sessions] == [my_session]
    assert [s.id for s in (await history.list(theirs, limit=10)).sessions] == [their_session]
    found = await history.list(mine, limit=10, query="secret")
    assert [s.id for s in found.sessions] == [my_session]
    assert await history.owner_of(my_session) == mine
    assert (await history.list(_owner(), limit=10)).sessions == []


async def test_expired_and_vanished_sessions_leave_the_list(
    store: SessionStore, redis: Redis
) -> None:
    history = History(store)
    owner = _owner()
    kept, vanished, expired = [await _session(store, owner) for _ in range(3)]
    index = OWNER_INDEX_PREFIX + owner
    await redis.delete(SessionKeys(vanished).session)  # as when its keys expired
    old_ms = int((time.time() - store._session_ttl - 5) * 1000)
    await redis.zadd(index, {expired: old_ms})
    assert [s.id for s in (await history.list(owner, limit=10)).sessions] == [kept]
    assert await redis.zrange(index, 0, -1) == [kept.encode()]
    # The index lives as long as its sessions.
    ttl = await redis.ttl(index)
    assert store._session_ttl - 5 < ttl <= store._session_ttl


async def test_search_finds_titles_and_message_text_in_any_case(store: SessionStore) -> None:
    history = History(store)
    owner = _owner()
    by_title = await _session(store, owner, "Paris trip\nwith details below")
    by_question = await _session(store, owner, "how do I cook rice", "and Crème Brûlée?")
    by_answer = await _session(store, owner, "tell me about pumpkins")
    other = await _session(store, owner, "nothing to see")

    async def found(query: str) -> list[str]:
        return await walk(history, owner, 10, query)

    assert await found("PARIS TRIP") == [by_title]
    assert await found("crème brûlée") == [by_question]
    assert await found("CRÈME") == [by_question]
    assert await found("answer to tell") == [by_answer]
    assert await found("about") == [by_answer]
    assert await found("answer to") == [other, by_answer, by_question, by_title]
    assert await found("no such words") == []
    # Paged like the list: one result a page, each once.
    assert await walk(history, owner, 1, "answer to") == await found("answer to")


async def test_search_looks_at_the_newest_sessions_only(store: SessionStore) -> None:
    history = History(store, search_max_sessions=3)
    owner = _owner()
    oldest = await _session(store, owner, "needle in the oldest")
    newer = [await _session(store, owner, f"needle {n}") for n in range(3)]
    assert await walk(history, owner, 10, "needle") == newer[::-1]
    assert oldest in await walk(History(store), owner, 10, "needle")


async def test_search_stops_at_its_byte_bound_and_goes_on_from_next(
    store: SessionStore,
) -> None:
    history = History(store, search_max_bytes=1)
    owner = _owner()
    sessions = [await _session(store, owner, "hay") for _ in range(3)]
    target = await _session(store, owner, "a needle")
    first = await history.list(owner, limit=10, query="hay")
    # Every request reads at least one session, then stops at the bound.
    assert [s.id for s in first.sessions] == []
    assert first.next is not None
    assert await walk(history, owner, 10, "hay") == sessions[::-1]
    assert await walk(history, owner, 10, "needle") == [target]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "x" * 201,
        "!!!",
        base64.urlsafe_b64encode(b"12.short").decode(),
        base64.urlsafe_b64encode(b"notanumber." + b"a" * 22).decode(),
        base64.urlsafe_b64encode(b"1" * 17 + b"." + b"a" * 22).decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
async def test_a_cursor_it_did_not_make_is_refused(store: SessionStore, cursor: str) -> None:
    with pytest.raises(InvalidCursorError):
        await History(store).list(_owner(), limit=10, cursor=cursor)


async def test_the_first_message_names_the_session(store: SessionStore) -> None:
    owner = _owner()
    session = await store.create(SessionSettings(model="m"), owner=owner)
    fresh = msgspec.json.decode(msgspec.json.encode(await store.snapshot(session)))
    assert "title" not in fresh, "no title before the first message"
    long_line = "word " * 30
    _, reply_id = await store.begin_reply(session, model="m", content=f"\n  {long_line}\nmore")
    await store.finish_reply(session, reply_id, Done(reply_id, "stop", None))
    await store.begin_reply(session, model="m", content="a second question")
    expected = long_line.strip()[:80]
    assert len(expected) == 80
    assert (await store.snapshot(session)).title == expected
    assert (await History(store).list(owner, limit=1)).sessions[0].title == expected


def test_titles_are_one_clean_line() -> None:
    assert default_title("Hello\nworld") == "Hello"
    assert default_title("\n\n   \n  spaced   out  \n") == "spaced out"
    assert default_title("tab\there\x1b[31m") == "tab here [31m"
    assert default_title("") == ""
    assert default_title("é" * 100) == "é" * 80
    assert clean_title("  Trip\nplans \u202e ") == "Trip plans"
    assert clean_title("x" * 200) == "x" * 200
    assert clean_title("x" * 201) is None
    assert clean_title(" \n\t ") is None
    assert clean_title("") is None


async def test_a_rename_tells_every_tab_once(store: SessionStore, redis: Redis) -> None:
    history = History(store)
    owner = _owner()
    session = await _session(store, owner, "first")
    before = (await history.list(owner, limit=1)).sessions[0]
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(SessionKeys(session).channel)
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        await asyncio.sleep(0.002)
        await history.set_title(session, "Renamed")
        await history.set_title(session, "Renamed")  # a retried call: no second event
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
        assert message is not None
        assert decode_wire(message["data"]) == (5, "title", b'{"title":"Renamed"}')
        assert await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None
    assert (await store.snapshot(session)).title == "Renamed"
    after = (await history.list(owner, limit=1)).sessions[0]
    assert after.title == "Renamed"
    assert after.updated_at > before.updated_at
    logged = await store.events_after(session, 4)
    assert [(e.seq, e.name, e.data) for e in logged] == [(5, "title", b'{"title":"Renamed"}')]
    with pytest.raises(SessionNotFoundError):
        await history.set_title(new_id(), "nobody's")


async def test_delete_stops_the_reply_tells_the_tabs_and_removes_every_key(
    store: SessionStore, redis: Redis
) -> None:
    history = History(store)
    owner = _owner()
    session = await _session(store, owner, "one", "two")
    keep = await _session(store, owner, "kept")
    _, reply_id = await store.begin_reply(session, model="m", content="three")
    await store.append_delta(session, reply_id, "partial")
    assert await redis.zscore(LEASES, session) is not None
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(SessionKeys(session).channel, CONTROL_CHANNEL)
        for _ in range(2):
            await pubsub.get_message(timeout=1)
        await history.delete(session)
        heard = []
        for _ in range(2):
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
            assert message is not None
            heard.append((message["channel"], message["data"]))
    seq = 12  # 2 exchanges (4 events each), then message, start, delta: 11
    assert heard == [
        (CONTROL_CHANNEL.encode(), f"{session} {reply_id}".encode()),
        (SessionKeys(session).channel.encode(), f"{seq} deleted {{}}".encode()),
    ]
    assert [key async for key in redis.scan_iter(match=f"*{session}*")] == []
    assert await redis.zscore(LEASES, session) is None
    assert [s.id for s in (await history.list(owner, limit=10)).sessions] == [keep]
    await assert_deleted_for_good(store, history, session, reply_id)
    assert [key async for key in redis.scan_iter(match=f"*{session}*")] == []


async def test_the_cluster_s_step_by_step_walk_returns_what_the_script_returns(
    store: SessionStore, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a Redis Cluster a page is read in steps (``_read_by_parts``: plain index commands,
    a script per session), which run on one Redis too: from every cursor, for each page size
    and byte bound, they return what ``list_sessions.lua`` returns, pruning included. Index
    pages of 2 and read-ahead groups of 3 make them cross pages, ties and groups."""
    monkeypatch.setattr(_history, "_INDEX_PAGE", 2)
    monkeypatch.setattr(_history, "_SEARCH_READ_AHEAD", 3)
    history = History(store, search_max_sessions=9)
    owner = _owner()
    sessions = [await _session(store, owner, "hay " * (n % 4 + 1)) for n in range(12)]
    index = OWNER_INDEX_PREFIX + owner
    now_ms = int(time.time() * 1000)
    await redis.zadd(index, dict.fromkeys(sessions[3:7], now_ms))  # ties
    await redis.zadd(index, {sessions[0]: now_ms - (store._session_ttl + 60) * 1000})  # expired
    for gone in (sessions[4], sessions[9], sessions[10]):
        await redis.delete(SessionKeys(gone).session)
    entries = dict(await redis.zrange(index, 0, -1, withscores=True))
    oldest_live_ms = now_ms - store._session_ttl * 1000

    async def restored() -> None:
        await redis.delete(index)
        await redis.zadd(index, entries)

    def plain(read: tuple[bool, list[Any]]) -> tuple[bool, list[tuple[Any, ...]]]:
        more, rows = read
        return more, [(row[0], int(float(row[1])), *row[2:]) for row in rows]

    cursors = [None, *(_Position(int(score), m.decode()) for m, score in entries.items())]
    compared = 0
    for after in cursors:
        for count in (1, 2, 5, 20):
            for texts, max_bytes in ((False, 0), (True, 1), (True, 9), (True, 1000)):
                await restored()
                by_script = await history._read(
                    owner, after, count, texts=texts, max_bytes=max_bytes
                )
                pruned = await redis.zrange(index, 0, -1)
                await restored()
                by_parts = await history._read_by_parts(
                    owner, oldest_live_ms, after, count, texts=texts, max_bytes=max_bytes
                )
                assert plain(by_parts) == plain(by_script), (after, count, texts, max_bytes)
                assert await redis.zrange(index, 0, -1) == pruned
                compared += 1
    assert compared == len(cursors) * 16
