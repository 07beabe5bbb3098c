"""A gateway SIGKILLed mid-reply (issue 7, "No stuck replies"): its lease lapses, a reaper
(another gateway's, or the restarted one's) closes the reply as ``interrupted`` with its text
kept, every open tab sees that within 10 s, and the session takes the next message."""

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
from tests.support.services import Service, run_service

TABS = 3
TARGET_SECONDS = 10.0
# 200 tokens 0.05 s apart: the reply would stream for 10 s, so it is mid-way when killed.
TOKEN_DELAY = 0.05


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(slow_delay=TOKEN_DELAY) as fake:
        yield fake


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gateway-kill-logs")


def _gateway_env(redis_url: str, upstream: FakeUpstream) -> dict[str, str]:
    # The defaults under test: CHATRELAY_LEASE_SECONDS (6) and the reaper's 1 s round.
    return keyed_gateway_env(redis_url, upstream.base_url, OPENAI_MODEL="slow")


def _kill(service: Service) -> None:
    assert service.process is not None
    service.process.kill()
    service.process.wait(10)


async def _start_reply_and_tabs(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> tuple[str, str, list[asyncio.Task[ReplyTab]]]:
    session_id = await create_session(client, gateway.url, model="slow")
    reply_id = (await send_message(client, gateway.url, session_id, "go"))["reply_id"]
    tabs = [
        asyncio.create_task(
            follow_reply(client, web.url, session_id, ReplyTab(reply_id), seconds=60)
        )
        for _ in range(TABS)
    ]
    for _ in range(200):  # until some text streamed
        session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        if len(session["messages"][-1]["content"]) > 20:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the reply streamed nothing in 10 s")
    return session_id, reply_id, tabs


async def _assert_ended_and_next_message_works(
    client: httpx.AsyncClient,
    gateway: Service,
    web: Service,
    session_id: str,
    tabs: list[asyncio.Task[ReplyTab]],
    since: float,
    what: str,
) -> None:
    ended = [await tab for tab in tabs]
    seconds = [round(tab.ended_at - since, 2) if tab.ended_at else None for tab in ended]
    print(f"{what}: {TABS} tabs saw the reply end after {seconds} s: {ended[0].outcome}")
    assert all(tab.outcome == "error:interrupted" for tab in ended), ended
    assert all(s is not None and s <= TARGET_SECONDS for s in seconds), seconds

    session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    reply = session["messages"][-1]
    assert reply["status"] == "error"
    assert reply["content"]
    assert SLOW_TEXT.startswith(reply["content"])
    assert all(tab.text == reply["content"] for tab in ended)  # every tab shows the kept text

    # The session takes the next message, and it streams to the end.
    response = await client.patch(f"{gateway.url}/api/sessions/{session_id}", json={"model": "ok"})
    assert response.status_code == 200, response.text
    next_id = (await send_message(client, gateway.url, session_id, "again"))["reply_id"]
    # From where the tabs stopped: a quick reply may end before a tab connects afresh (its
    # snapshot would then show it complete), but a resuming tab gets every event.
    resumed = ReplyTab(next_id, last_event_id=ended[0].last_event_id)
    tab = await follow_reply(client, web.url, session_id, resumed, seconds=20)
    assert tab.outcome == "done:stop"


async def test_a_gateway_killed_mid_reply_with_another_running(
    redis_server_url: str, slow_upstream: FakeUpstream, logs: Path
) -> None:
    env = _gateway_env(redis_server_url, slow_upstream)
    web_env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with (
        run_service("gateway", env, logs) as doomed,
        run_service("gateway", env, logs) as survivor,
        run_service("web", web_env, logs) as web,
    ):
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            session_id, _, tabs = await _start_reply_and_tabs(client, doomed, web)
            _kill(doomed)
            killed = time.monotonic()
            await _assert_ended_and_next_message_works(
                client, survivor, web, session_id, tabs, killed, "gateway killed, one left"
            )
            assert "closed reply" in survivor.log()


async def test_the_only_gateway_killed_then_restarted(
    redis_server_url: str, slow_upstream: FakeUpstream, logs: Path
) -> None:
    env = _gateway_env(redis_server_url, slow_upstream)
    web_env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with run_service("web", web_env, logs) as web:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            with run_service("gateway", env, logs) as doomed:
                session_id, _, tabs = await _start_reply_and_tabs(client, doomed, web)
                _kill(doomed)
            await asyncio.sleep(2)  # no gateway at all for a while: nobody can close it
            assert not any(tab.done() for tab in tabs)
            with run_service("gateway", env, logs) as restarted:
                back = time.monotonic()
                await _assert_ended_and_next_message_works(
                    client, restarted, web, session_id, tabs, back, "the only gateway restarted"
                )
