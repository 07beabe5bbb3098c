"""Redis killed mid-reply and restarted from its append-only file (``appendfsync always``):
the reply continues or ends (and if it ends in an error, its upstream request was closed),
nothing a client got a 2xx for is lost, ids only grow, and every tab learns the outcome.

A short outage is ridden out by the writer's retries (the reply continues); a long one makes
the writer give up: it closes the upstream at once and writes the end once Redis is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos._reply_tabs import ReplyTab, follow_reply
from tests.conftest import keyed_gateway_env
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import SLOW_TEXT, FakeUpstream
from tests.support.redis_process import RedisProcess
from tests.support.services import Service, run_service

TABS = 3
TARGET_SECONDS = 10.0
TOKEN_DELAY = 0.05  # the reply streams for 10 s


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(slow_delay=TOKEN_DELAY) as fake:
        yield fake


@pytest.fixture
def stack(
    tmp_path: Path, slow_upstream: FakeUpstream
) -> Iterator[tuple[RedisProcess, Service, Service]]:
    redis = RedisProcess(tmp_path)
    redis.start()
    gateway_env = keyed_gateway_env(redis.url, slow_upstream.base_url, OPENAI_MODEL="slow")
    web_env = {"REDIS_URL": redis.url, "WEB_HEARTBEAT_SECONDS": "1"}
    try:
        with (
            run_service("gateway", gateway_env, tmp_path) as gateway,
            run_service("web", web_env, tmp_path) as web,
        ):
            yield redis, gateway, web
    finally:
        redis.stop()


async def _send_all(
    client: httpx.AsyncClient, gateway: Service, session_id: str, prefix: str, until: float
) -> tuple[list[str], list[int]]:
    """Messages sent one after another (each answered by the fast ``ok`` model) until
    ``until``: the contents acknowledged with a 2xx, and every status seen."""
    acknowledged: list[str] = []
    statuses: list[int] = []
    url = f"{gateway.url}/api/sessions/{session_id}/messages"
    i = 0
    while time.monotonic() < until:
        content = f"{prefix} {i}"
        i += 1
        try:
            response = await client.post(url, json={"content": content})
        except httpx.HTTPError:
            statuses.append(0)
        else:
            statuses.append(response.status_code)
            if response.is_success:
                acknowledged.append(content)
        await asyncio.sleep(0.15)
    return acknowledged, statuses


@pytest.mark.parametrize("outage", [1.0, 8.0], ids=["short", "long"])
async def test_redis_restarted_from_its_aof_mid_reply(
    stack: tuple[RedisProcess, Service, Service], slow_upstream: FakeUpstream, outage: float
) -> None:
    redis, gateway, web = stack
    slow_upstream.reset()
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        session_id = await create_session(client, gateway.url, model="slow")
        reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
        chatty = await create_session(client, gateway.url, model="ok")
        tabs = [
            asyncio.create_task(
                follow_reply(client, web.url, session_id, ReplyTab(reply_id), seconds=60)
            )
            for _ in range(TABS)
        ]
        await asyncio.sleep(1.0)  # some text streams
        # Writes go on through the outage: each either got a 2xx or did not.
        writer = asyncio.create_task(
            _send_all(client, gateway, chatty, "m", time.monotonic() + outage + 3)
        )
        await asyncio.sleep(0.5)

        redis.kill()
        killed = time.monotonic()
        await asyncio.sleep(outage)
        await asyncio.to_thread(redis.start)
        back = time.monotonic()
        ended = [await tab for tab in tabs]
        acknowledged, statuses = await writer

        seconds = [round(t.ended_at - back, 2) if t.ended_at else None for t in ended]
        session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        reply = session["messages"][-1]
        print(
            f"\nredis down {back - killed:.1f} s: reply {ended[0].outcome}, tabs ended "
            f"{seconds} s after it was back, reconnects {[t.reconnects for t in ended]}, "
            f"resets {[t.resets for t in ended]}, upstream disconnects "
            f"{slow_upstream.client_disconnects}; during the outage {len(acknowledged)} of "
            f"{len(statuses)} messages acknowledged, statuses {sorted(set(statuses))}"
        )
        assert all(t.outcome is not None for t in ended), ended
        assert reply["id"] == reply_id
        assert reply["status"] != "streaming"
        if reply["status"] == "error":
            assert slow_upstream.client_disconnects == ["slow"]
            assert SLOW_TEXT.startswith(reply["content"])
            assert all(t.outcome == "error:interrupted" for t in ended)
            assert all(s is not None and s <= TARGET_SECONDS for s in seconds), seconds
        else:
            assert reply["status"] == "complete"
            assert reply["content"] == SLOW_TEXT
            # It went on to its natural end (no 10 s target: that is the answer's length).
            assert all(t.outcome == "done:stop" for t in ended)
        # Every tab shows what the session holds; ids only grew across its reconnects.
        assert all(t.text == reply["content"] for t in ended)
        assert all(t.ids == sorted(set(t.ids)) for t in ended)

        # Nothing acknowledged is lost; refused writes were refused cleanly.
        assert set(statuses) <= {202, 409, 503}, statuses
        chat = (await client.get(f"{gateway.url}/api/sessions/{chatty}")).json()
        kept = {m["content"] for m in chat["messages"] if m["role"] == "user"}
        assert set(acknowledged) <= kept
        assert acknowledged  # some got through, before and after the outage
