"""Several gateway processes share the work: one reply per session across all of them, a stop
reaches whichever runs the reply, and a reply runs on with no tab open."""

from __future__ import annotations

import asyncio

import httpx

from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service
from tests.support.sse import collect_until, open_events, reply_text


async def test_a_stop_sent_to_another_replica_stops_the_reply(
    client: httpx.AsyncClient,
    gateway: Service,
    gateway_replica: Service,
    web: Service,
    fake_upstream: fake.FakeUpstream,
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    async with open_events(client, web.url, session_id) as tab:
        await anext(tab)
        reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
        await collect_until(tab, "delta", count=3)
        busy = await client.post(
            f"{gateway_replica.url}/api/sessions/{session_id}/messages", json={"content": "x"}
        )
        assert busy.status_code == 409
        stop = await client.post(f"{gateway_replica.url}/api/sessions/{session_id}/stop")
        assert (stop.status_code, stop.json()) == (202, {"reply_id": reply_id})
        events = await collect_until(tab, "done")

    timing = events[-1].data.pop("timing")  # text had come: how fast it came
    assert set(timing) == {"first_token_ms", "tokens_per_s"}
    assert events[-1].data == {"reply_id": reply_id, "finish_reason": "stopped", "usage": None}
    await fake_upstream.wait_for_disconnect_async(timeout=5)
    assert fake_upstream.client_disconnects == ["slow"]
    # The other replica takes the next message at once.
    await send_message(client, gateway_replica.url, session_id, "next")


async def test_a_reply_runs_to_the_end_with_no_tab_open(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="utf8")
    reply_id = (await send_message(client, gateway.url, session_id, "hi"))["reply_id"]
    for _ in range(100):
        session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        if session["messages"][-1]["status"] != "streaming":
            break
        await asyncio.sleep(0.05)
    # A tab opened afterwards replays the whole reply from the log.
    async with open_events(client, web.url, session_id, last_event_id=0) as tab:
        events = await collect_until(tab, "done")
    assert reply_text(events, reply_id) == fake.UTF8_TEXT
    [start] = [e.data for e in events if e.name == "start"]
    assert session["messages"][-1] == {
        "id": reply_id,
        "role": "assistant",
        "content": fake.UTF8_TEXT,
        "status": "complete",
        "created_at": start["created_at"],
        "model": "utf8",
        "reasoning": "",
        "finish_reason": "stop",
        "usage": fake.USAGE,
        "error": None,
        "timing": events[-1].data["timing"],
    }
