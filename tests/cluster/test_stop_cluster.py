"""A stop sent to one gateway ends a reply another gateway streams, on a Redis Cluster: the
stop request travels on the plain control channel, which each gateway reads from one node
(a plain PUBLISH reaches every node). The gateways' keepalive, which would also see the stop
flag, runs only every 20 s here, so only the control channel can end the reply in time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.redis_cluster import LocalCluster
from tests.conftest import keyed_gateway_env
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import Service, run_service

# A 60 s lease: the keepalive (lease / 3) checks the stop flag every 20 s.
LEASE_SECONDS = 60
STOP_WITHIN = 10.0


@pytest.fixture(scope="module")
def slow_delay() -> float:
    return 0.1  # 200 tokens in ~20 s: the reply is mid-way when it is stopped


@pytest.fixture(scope="module")
def slow_gateways(
    cluster: LocalCluster, upstream: FakeUpstream, cluster_logs: Path
) -> Iterator[list[Service]]:
    env = keyed_gateway_env(
        cluster.url,
        upstream.base_url,
        OPENAI_MODEL="slow",
        CHATRELAY_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    with ExitStack() as stack:
        yield [stack.enter_context(run_service("gateway", env, cluster_logs)) for _ in range(2)]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as opened:
        yield opened


async def last_message(client: httpx.AsyncClient, gateway: Service, session: str) -> Any:
    response = await client.get(f"{gateway.url}/api/sessions/{session}")
    assert response.status_code == 200, response.text
    return response.json()["messages"][-1]


async def test_a_stop_on_one_gateway_ends_the_reply_another_streams(
    client: httpx.AsyncClient, slow_gateways: list[Service]
) -> None:
    streaming, stopping = slow_gateways
    session = await create_session(client, streaming.url)
    reply_id = (await send_message(client, streaming.url, session, "go on"))["reply_id"]
    for _ in range(200):  # until some text is in
        if (await last_message(client, stopping, session))["content"]:
            break
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    response = await client.post(f"{stopping.url}/api/sessions/{session}/stop")
    assert response.status_code == 202, response.text
    assert response.json() == {"reply_id": reply_id}
    while (message := await last_message(client, stopping, session))["status"] == "streaming":
        assert time.monotonic() - asked < STOP_WITHIN, "the stop never reached the gateway"
        await asyncio.sleep(0.05)
    print(f"\nstop across gateways on the cluster: ended in {time.monotonic() - asked:.2f} s")
    assert (message["id"], message["status"], message["finish_reason"]) == (
        reply_id,
        "stopped",
        "stopped",
    )
    assert message["content"]
