"""The gateway's limits, each through a real gateway process: concurrent replies per client
IP and in total (429 + Retry-After, slots given back however a reply ends), the token cap
sent upstream, and the byte and time caps on an upstream answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_API_KEY
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service, run_service
from tests.support.sse import collect_until, open_events, reply_text

PER_IP = 2
TOTAL = 3


def _gateway(
    redis_url: str, upstream: fake.FakeUpstream, logs: Path, **env: str
) -> Iterator[Service]:
    keyed = {
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "OPENAI_MODELS": ",".join(fake.SCENARIOS),
        "OPENAI_MODEL": "ok",
        # The tests stand in for clients on other machines (X-Forwarded-For).
        "ALLOW_OPEN_ACCESS": "1",
    }
    with run_service("gateway", {**keyed, **env}, logs) as service:
        yield service


@pytest.fixture(scope="module")
def capped_gateway(
    redis_server_url: str, fake_upstream_server: fake.FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    yield from _gateway(
        redis_server_url,
        fake_upstream_server,
        service_logs,
        GATEWAY_MAX_REPLIES_PER_IP=str(PER_IP),
        GATEWAY_MAX_REPLIES=str(TOTAL),
        GATEWAY_MAX_TOKENS="123",
        GATEWAY_MAX_REPLY_BYTES="65536",
    )


@pytest.fixture(scope="module")
def hasty_gateway(
    redis_server_url: str, fake_upstream_server: fake.FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """Cuts every answer after 1 s."""
    yield from _gateway(
        redis_server_url, fake_upstream_server, service_logs, GATEWAY_MAX_REPLY_SECONDS="1"
    )


def _from(ip: str) -> dict[str, str]:
    # The services trust X-Forwarded-For (in production nginx overwrites it with the peer).
    return {"X-Forwarded-For": ip}


async def _send(
    client: httpx.AsyncClient, gateway: Service, session_id: str, ip: str
) -> httpx.Response:
    return await client.post(
        f"{gateway.url}/api/sessions/{session_id}/messages",
        json={"content": "go"},
        headers=_from(ip),
    )


async def _until_ended(client: httpx.AsyncClient, gateway: Service, session_id: str) -> str:
    """Wait for the session's last reply to end; its status."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        snapshot = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
        status: str = snapshot["messages"][-1]["status"]
        if status != "streaming":
            return status
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the reply in {session_id} did not end within 20 s")


async def _stop(client: httpx.AsyncClient, gateway: Service, session_ids: list[str]) -> None:
    for session_id in session_ids:
        await client.post(f"{gateway.url}/api/sessions/{session_id}/stop")
    for session_id in session_ids:
        await _until_ended(client, gateway, session_id)


async def test_concurrent_replies_are_capped_per_ip_and_in_total(
    client: httpx.AsyncClient, capped_gateway: Service
) -> None:
    sessions = [await create_session(client, capped_gateway.url, model="slow") for _ in range(5)]
    for session_id in sessions[:2]:
        assert (await _send(client, capped_gateway, session_id, "10.0.0.1")).status_code == 202

    per_ip = await _send(client, capped_gateway, sessions[2], "10.0.0.1")
    assert (per_ip.status_code, per_ip.json(), per_ip.headers["retry-after"]) == (
        429,
        {"detail": "At most 2 replies may stream at once per client; try again in 5 s"},
        "5",
    )
    other_ip = await _send(client, capped_gateway, sessions[3], "10.0.0.2")
    assert other_ip.status_code == 202
    total = await _send(client, capped_gateway, sessions[4], "10.0.0.3")
    assert (total.status_code, total.json(), total.headers["retry-after"]) == (
        429,
        {"detail": "The gateway is streaming its maximum of 3 replies; try again in 5 s"},
        "5",
    )
    # Nothing was begun for the refused sends.
    refused = (await client.get(f"{capped_gateway.url}/api/sessions/{sessions[2]}")).json()
    assert refused["messages"] == []

    # A reply that ends gives its slot back.
    await _stop(client, capped_gateway, [sessions[0]])
    assert (await _send(client, capped_gateway, sessions[2], "10.0.0.1")).status_code == 202
    await _stop(client, capped_gateway, [sessions[1], sessions[2], sessions[3]])


async def test_no_way_of_ending_leaks_a_slot(
    client: httpx.AsyncClient, capped_gateway: Service, fake_upstream: fake.FakeUpstream
) -> None:
    ip = "10.0.1.1"
    # Answers that end in done, in an upstream error, cut by the byte cap, and stopped.
    for model, status in [
        ("ok", "complete"),
        ("http_500", "error"),
        ("flood", "error"),
        ("slow", "stopped"),
    ]:
        session_id = await create_session(client, capped_gateway.url, model=model)
        for _ in range(PER_IP + 1):  # more often than there are slots
            assert (await _send(client, capped_gateway, session_id, ip)).status_code == 202
            if model == "slow":
                await client.post(f"{capped_gateway.url}/api/sessions/{session_id}/stop")
            assert await _until_ended(client, capped_gateway, session_id) == status
    # Sends refused with 409 (one session, one reply at a time) take no slot either.
    busy = await create_session(client, capped_gateway.url, model="slow")
    statuses = [(await _send(client, capped_gateway, busy, ip)).status_code for _ in range(4)]
    assert statuses == [202, 409, 409, 409]
    # Both of this IP's slots are free but for the one busy session: one more fits.
    other = await create_session(client, capped_gateway.url, model="slow")
    assert (await _send(client, capped_gateway, other, ip)).status_code == 202
    await _stop(client, capped_gateway, [busy, other])


async def test_the_token_cap_is_sent_upstream_under_the_name_the_model_takes(
    client: httpx.AsyncClient, capped_gateway: Service, fake_upstream: fake.FakeUpstream
) -> None:
    session_id = await create_session(client, capped_gateway.url)
    await send_message(client, capped_gateway.url, session_id, "hi")
    assert await _until_ended(client, capped_gateway, session_id) == "complete"
    [request] = fake_upstream.requests
    assert (request.body["max_tokens"], "max_completion_tokens" in request.body) == (123, False)

    fake_upstream.reset()
    session_id = await create_session(client, capped_gateway.url, model="no_max_tokens")
    for _ in range(2):
        await send_message(client, capped_gateway.url, session_id, "hi")
        assert await _until_ended(client, capped_gateway, session_id) == "complete"
    caps = [
        {k: v for k, v in r.body.items() if k.startswith("max_")} for r in fake_upstream.requests
    ]
    # Refused once, then asked again at once; the next reply uses the accepted name directly.
    assert caps == [
        {"max_tokens": 123},
        {"max_completion_tokens": 123},
        {"max_completion_tokens": 123},
    ]
    snapshot = (await client.get(f"{capped_gateway.url}/api/sessions/{session_id}")).json()
    assert [m["content"] for m in snapshot["messages"]] == ["hi", fake.OK_TEXT] * 2


@pytest.mark.parametrize(
    ("gateway_name", "model", "code", "message"),
    [
        (
            "capped_gateway",
            "flood",
            "upstream_too_large",
            "The answer passed 65536 bytes and was cut; the partial answer is kept",
        ),
        (
            "hasty_gateway",
            "slow",
            "upstream_timeout",
            "The answer took longer than 1 s and was cut; the partial answer is kept",
        ),
    ],
)
async def test_an_answer_over_a_cap_ends_in_an_error_keeping_its_text(
    client: httpx.AsyncClient,
    web: Service,
    fake_upstream: fake.FakeUpstream,
    request: pytest.FixtureRequest,
    gateway_name: str,
    model: str,
    code: str,
    message: str,
) -> None:
    gateway: Service = request.getfixturevalue(gateway_name)
    session_id = await create_session(client, gateway.url, model=model)
    async with open_events(client, web.url, session_id) as events:
        await anext(events)
        started = time.monotonic()
        ids = await send_message(client, gateway.url, session_id, "go")
        seen = await collect_until(events, "done", "error")
        took = time.monotonic() - started
    print(f"{code}: the reply ended {took:.2f} s after the send")
    assert seen[-1].data == {"reply_id": ids["reply_id"], "code": code, "message": message}
    await fake_upstream.wait_for_disconnect_async()
    assert fake_upstream.client_disconnects == [model]
    text = reply_text(seen, ids["reply_id"])
    snapshot = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    [start] = [e.data for e in seen if e.name == "start"]
    assert snapshot["messages"][-1] == {
        "id": ids["reply_id"],
        "role": "assistant",
        "content": text,
        "status": "error",
        "created_at": start["created_at"],
        "model": model,
        "reasoning": "",
        "finish_reason": None,
        "usage": None,
        "error": {"code": code, "message": message},
        "timing": None,
    }
    if model == "flood":
        assert 32 * 1024 < len(text) < 64 * 1024
    else:
        assert text == "".join(fake.SLOW_PIECES[: text.count("w")])
        assert 0 < text.count("w") < fake.SLOW_TOKEN_COUNT


@pytest.fixture(scope="module")
def small_sessions_gateway(
    redis_server_url: str, fake_upstream_server: fake.FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    yield from _gateway(
        redis_server_url, fake_upstream_server, service_logs, CHATRELAY_SESSION_MAX_BYTES="65536"
    )


async def test_a_full_conversation_is_413_saying_what_to_do(
    client: httpx.AsyncClient, small_sessions_gateway: Service
) -> None:
    gateway = small_sessions_gateway
    session_id = await create_session(client, gateway.url)
    for _ in range(2):
        await send_message(client, gateway.url, session_id, "a" * 30_000)
        assert await _until_ended(client, gateway, session_id) == "complete"
    full = await client.post(
        f"{gateway.url}/api/sessions/{session_id}/messages", json={"content": "a" * 30_000}
    )
    assert (full.status_code, full.json()) == (
        413,
        {
            "detail": "This conversation has reached its size limit (65536 bytes of text): "
            "clear it or start a new one"
        },
    )
    # Clearing makes room again.
    assert (
        await client.delete(f"{gateway.url}/api/sessions/{session_id}/messages")
    ).status_code == 204
    await send_message(client, gateway.url, session_id, "a" * 30_000)
