"""The events stream through real processes: gateway and web on sockets, real Redis, and a
fake upstream over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import SessionKeys
from redis.asyncio import Redis

from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service, run_service
from tests.support.sse import Event, collect_until, open_events, reply_text


def assert_ids_consecutive(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert all(i is not None for i in ids), ids
    assert ids == list(range(ids[0] or 0, (ids[0] or 0) + len(ids))), ids


@pytest.mark.parametrize(("model", "text"), [("ok", fake.OK_TEXT), ("utf8", fake.UTF8_TEXT)])
async def test_three_clients_receive_identical_events_joining_to_the_upstream_text(
    client: httpx.AsyncClient, gateway: Service, web: Service, model: str, text: str
) -> None:
    session_id = await create_session(client, gateway.url, model=model)
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(open_events(client, web.url, session_id))
            for _ in range(3)
        ]
        # Each stream is subscribed once its snapshot arrived.
        snapshots = [await anext(stream) for stream in streams]
        ids = await send_message(client, gateway.url, session_id, "hi")
        seen = [
            [snapshot, *await collect_until(stream, "done")]
            for snapshot, stream in zip(snapshots, streams, strict=True)
        ]

    assert seen[0] == seen[1] == seen[2]
    events = seen[0]
    assert [e.name for e in events[:3]] == ["snapshot", "message", "start"]
    assert events[0].data == {
        "id": session_id,
        "settings": {"system": None, "model": model, "temperature": None},
        "messages": [],
        "seq": 0,
    }
    created_at = events[2].data["created_at"]  # the message and its reply, in one write
    assert events[1].data == {
        "message": {
            "id": ids["message_id"],
            "role": "user",
            "content": "hi",
            "status": "complete",
            "created_at": created_at,
        }
    }
    assert events[2].data == {"reply_id": ids["reply_id"], "model": model, "created_at": created_at}
    assert reply_text(events, ids["reply_id"]) == text
    assert set(events[-1].data.pop("timing")) == {"first_token_ms", "tokens_per_s"}
    assert events[-1].data == {
        "reply_id": ids["reply_id"],
        "finish_reason": "stop",
        "usage": fake.USAGE,
    }
    assert_ids_consecutive(events)


async def test_a_late_joiner_gets_the_prefix_in_its_snapshot_then_the_rest_live(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    async with open_events(client, web.url, session_id) as first:
        early = [await anext(first)]
        reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
        early += await collect_until(first, "delta", count=20)
        async with open_events(client, web.url, session_id) as late:
            late_events = await collect_until(late, "done")
        first_events = early + await collect_until(first, "done")

    snapshot = late_events[0]
    assert snapshot.name == "snapshot"
    partial = snapshot.data["messages"][-1]
    assert partial["id"] == reply_id
    assert partial["status"] == "streaming"
    assert len(partial["content"]) >= len(reply_text(early, reply_id)) > 0
    assert partial["content"] + reply_text(late_events, reply_id) == fake.SLOW_TEXT
    assert reply_text(first_events, reply_id) == fake.SLOW_TEXT
    # The late joiner's live events are exactly the first client's events after the snapshot.
    assert late_events[1:] == [e for e in first_events if (e.id or 0) > snapshot.data["seq"]]
    assert snapshot.id == snapshot.data["seq"]


async def test_random_disconnects_lose_and_duplicate_nothing(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    rng = random.Random(1234)
    session_id = await create_session(client, gateway.url, model="slow")
    reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
    received: list[Event] = []
    reconnects = 0
    while not received or received[-1].name != "done":
        last_id = received[-1].id if received else None
        async with open_events(client, web.url, session_id, last_event_id=last_id) as stream:
            reconnects += 1
            for _ in range(rng.randint(1, 12)):
                event = await anext(stream)
                received.append(event)
                if event.name == "done":
                    break
        await asyncio.sleep(rng.uniform(0, 0.05))

    assert reconnects > 10
    assert received[0].name == "snapshot"
    assert_ids_consecutive(received)
    snapshot_text = "".join(m["content"] for m in received[0].data["messages"][1:])
    assert snapshot_text + reply_text(received, reply_id) == fake.SLOW_TEXT


async def test_stop_from_another_client_ends_the_reply_for_all_and_closes_upstream(
    client: httpx.AsyncClient, gateway: Service, web: Service, fake_upstream: fake.FakeUpstream
) -> None:
    fake_upstream.reset()
    session_id = await create_session(client, gateway.url, model="slow")
    async with (
        open_events(client, web.url, session_id) as tab1,
        open_events(client, web.url, session_id) as tab2,
    ):
        await anext(tab1), await anext(tab2)
        reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
        await collect_until(tab1, "delta", count=5)
        async with httpx.AsyncClient() as other_client:
            stop = await other_client.post(f"{gateway.url}/api/sessions/{session_id}/stop")
        assert stop.status_code == 202
        ends = [(await collect_until(tab, "done"))[-1] for tab in (tab1, tab2)]

    assert ends[0] == ends[1]
    timing = ends[0].data.pop("timing")  # text had come: how fast it came
    assert set(timing) == {"first_token_ms", "tokens_per_s"}
    assert ends[0].data == {"reply_id": reply_id, "finish_reason": "stopped", "usage": None}
    await fake_upstream.wait_for_disconnect_async(timeout=5)
    assert fake_upstream.client_disconnects == ["slow"]
    session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    stopped = session["messages"][-1]
    assert stopped["status"] == "stopped"
    assert 0 < len(stopped["content"]) < len(fake.SLOW_TEXT)
    assert fake.SLOW_TEXT.startswith(stopped["content"])
    # Stop is idempotent, and the session takes the next message.
    assert (await client.post(f"{gateway.url}/api/sessions/{session_id}/stop")).status_code == 202
    await send_message(client, gateway.url, session_id, "again")


async def test_heartbeats_are_comments_on_a_quiet_stream(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    lines: list[str] = []
    url = f"{web.url}/api/sessions/{session_id}/events"
    async with client.stream("GET", url) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.5):  # the web fixture beats every second
                async for line in response.aiter_lines():
                    lines.append(line)
    assert lines[:4] == ["retry: 1000", "", "id: 0", "event: snapshot"]
    assert lines.count(": ping") >= 2


async def test_an_id_the_log_no_longer_holds_gets_reset_then_snapshot(
    client: httpx.AsyncClient, gateway: Service, web: Service, redis: Redis
) -> None:
    session_id = await create_session(client, gateway.url)
    async with open_events(client, web.url, session_id) as stream:
        await anext(stream)
        await send_message(client, gateway.url, session_id, "hi")
        events = await collect_until(stream, "done")
    last = events[-1].id
    assert last is not None
    # As a long session's log would be.
    await redis.xtrim(SessionKeys(session_id).log, maxlen=2, approximate=False)

    async with open_events(client, web.url, session_id, last_event_id=1) as stream:
        reset, snapshot = await anext(stream), await anext(stream)
    assert (reset.id, reset.name, reset.data) == (None, "reset", {"last_event_id": 1})
    assert (snapshot.id, snapshot.name, snapshot.data["seq"]) == (last, "snapshot", last)
    assert snapshot.data["messages"][-1]["content"] == fake.OK_TEXT

    # An id from the retained part of the log resumes normally.
    async with open_events(client, web.url, session_id, last_event_id=last - 1) as stream:
        assert await anext(stream) == events[-1]
    # An id beyond the session's last one is not from this session: reset.
    async with open_events(client, web.url, session_id, last_event_id=last + 5) as stream:
        assert (await anext(stream)).name == "reset"


async def test_last_event_id_comes_from_the_header_or_the_query(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    async with open_events(client, web.url, session_id) as stream:
        await anext(stream)
        ids = await send_message(client, gateway.url, session_id, "hi")
        events = await collect_until(stream, "done")
    url = f"{web.url}/api/sessions/{session_id}/events"
    async with client.stream("GET", f"{url}?last_event_id={events[-2].id}") as response:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if body.count(b"\n\n") == 2:
                break
    assert body.decode() == (
        "retry: 1000\n\n"
        f"id: {events[-1].id}\nevent: done\n"
        f'data: {{"reply_id":"{ids["reply_id"]}","finish_reason":"stop",'
        f'"usage":{{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}},'
        f'"timing":{json.dumps(events[-1].data["timing"], separators=(",", ":"))}}}\n\n'
    )


@pytest.mark.parametrize("bad_id", ["abc", "-1", "1.5", "9" * 30])
async def test_a_malformed_last_event_id_is_a_400(
    client: httpx.AsyncClient, gateway: Service, web: Service, bad_id: str
) -> None:
    session_id = await create_session(client, gateway.url)
    url = f"{web.url}/api/sessions/{session_id}/events"
    response = await client.get(url, headers={"Last-Event-ID": bad_id})
    assert response.status_code == 400
    assert response.json() == {"detail": "Last-Event-ID must be a non-negative integer event id"}
    assert (await client.get(url, params={"last_event_id": bad_id})).status_code == 400


async def test_unknown_sessions_are_404(client: httpx.AsyncClient, web: Service) -> None:
    for session_id in ("A" * 22, "not/valid", "short"):
        response = await client.get(f"{web.url}/api/sessions/{session_id}/events")
        assert response.status_code == 404


async def test_one_redis_subscription_per_process_released_after_disconnect(
    client: httpx.AsyncClient, gateway: Service, web: Service, redis: Redis
) -> None:
    session_id = await create_session(client, gateway.url)
    channel = SessionKeys(session_id).channel

    async def subscriptions() -> int:
        ((_, count),) = await redis.pubsub_numsub(channel)
        return int(count)

    async with contextlib.AsyncExitStack() as stack:
        # Keep every stream referenced: a collected event iterator closes its connection.
        streams = [
            await stack.enter_async_context(open_events(client, web.url, session_id))
            for _ in range(3)
        ]
        for stream in streams:
            await anext(stream)
        assert await subscriptions() == 1
    for _ in range(200):  # the web service unsubscribes soon after the last client left
        if await subscriptions() == 0:
            break
        await asyncio.sleep(0.05)
    assert await subscriptions() == 0


@pytest.fixture(scope="module")
def one_opening_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """A web that opens one events stream at a time (checks and first read)."""
    env = {"REDIS_URL": redis_server_url, "WEB_MAX_OPENING_STREAMS": "1"}
    with run_service("web", env, service_logs) as service:
        yield service


async def test_a_burst_of_tabs_opens_one_at_a_time_and_every_tab_gets_its_start(
    client: httpx.AsyncClient, gateway: Service, one_opening_web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    async with open_events(client, one_opening_web.url, session_id) as stream:
        await anext(stream)
        ids = await send_message(client, gateway.url, session_id, "hi")
        done = (await collect_until(stream, "done"))[-1]
    assert done.id is not None

    async def first_event(last_event_id: int | None) -> Event:
        async with open_events(client, one_opening_web.url, session_id, last_event_id) as tab:
            return await anext(tab)

    # Resuming and fresh tabs, all at once: each waits its turn, none waits forever.
    firsts = await asyncio.wait_for(
        asyncio.gather(*(first_event(None if i % 2 else done.id - 1) for i in range(40))), 30
    )
    assert [event.name for event in firsts] == ["done", "snapshot"] * 20
    assert {event.id for event in firsts} == {done.id}
    assert firsts[0].data["reply_id"] == ids["reply_id"]
    assert firsts[1].data["seq"] == done.id
    unknown = await client.get(f"{one_opening_web.url}/api/sessions/{'A' * 22}/events")
    assert (unknown.status_code, unknown.json()) == (404, {"detail": "No such session"})
    # As under Litestar's router, a trailing slash names the same stream.
    slashed = f"{one_opening_web.url}/api/sessions/{session_id}/events/"
    async with client.stream("GET", slashed) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        first = await anext(response.aiter_bytes())
    assert first.startswith(f"retry: 1000\n\nid: {done.id}\nevent: snapshot\n".encode())
