"""The gateway's ``/metrics`` through real processes (a gateway of its own, so that no other
test's replies move its figures; real Redis; the fake upstream over HTTP): each counter moves
by exactly what the reply did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_API_KEY, keyed_gateway_env
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import FakeUpstream
from tests.support.metrics import Metrics, metrics_once, read_metrics
from tests.support.redis_server import redis_url
from tests.support.services import Service, run_service

TOKENS = "chatrelay_gateway_tokens_relayed_total"
RUNNING = "chatrelay_gateway_replies_running"
FINISHED = "chatrelay_gateway_replies_finished_total"
ERRORS = "chatrelay_gateway_reply_errors_total"
UPSTREAM_COUNT = "chatrelay_gateway_upstream_seconds_count"
FIRST_TOKEN_COUNT = "chatrelay_gateway_first_token_seconds_count"
FIRST_TOKEN_SUM = "chatrelay_gateway_first_token_seconds_sum"
WRITES_COUNT = "chatrelay_gateway_redis_write_seconds_count"
WRITES_SUM = "chatrelay_gateway_redis_write_seconds_sum"
OUTCOMES = ("done", "length", "stopped", "error", "interrupted")
# Long flush ticks: the pieces of one quick answer then share a write call.
FLUSH_SECONDS = 0.2


@pytest.fixture(scope="module")
def metrics_gateway(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    env = keyed_gateway_env(
        redis_server_url,
        fake_upstream_server.base_url,
        OPENAI_MODEL="ok",
        GATEWAY_FLUSH_SECONDS=str(FLUSH_SECONDS),
    )
    with run_service("gateway", env, service_logs) as service:
        yield service


def _outcomes(metrics: Metrics, before: Metrics) -> dict[str, float]:
    """How many replies ended with each outcome since ``before``."""
    return {
        outcome: metrics.value(FINISHED, outcome=outcome) - before.value(FINISHED, outcome=outcome)
        for outcome in OUTCOMES
    }


def _moved(name: str, before: Metrics, **labels: str) -> Callable[[Metrics], bool]:
    return lambda metrics: metrics.value(name, **labels) > before.value(name, **labels)


async def test_a_reply_moves_every_counter_by_exactly_its_share(
    client: httpx.AsyncClient, metrics_gateway: Service
) -> None:
    url = metrics_gateway.url
    session_id = await create_session(client, url, model="ok")
    before = await read_metrics(client, url)
    assert before.types[RUNNING] == "gauge"
    assert before.types["chatrelay_gateway_first_token_seconds"] == "histogram"
    await send_message(client, url, session_id, "a secret question")
    after = await metrics_once(client, url, _moved(FINISHED, before, outcome="done"))

    assert after.value(TOKENS) - before.value(TOKENS) == len(fake.OK_PIECES)
    assert _outcomes(after, before) == {**dict.fromkeys(OUTCOMES, 0), "done": 1}
    assert after.value(RUNNING) == before.value(RUNNING) == 0
    assert after.value(UPSTREAM_COUNT) - before.value(UPSTREAM_COUNT) == 1
    # The time to first token is the one the reply's timing shows.
    assert after.value(FIRST_TOKEN_COUNT) - before.value(FIRST_TOKEN_COUNT) == 1
    first_token = after.value(FIRST_TOKEN_SUM) - before.value(FIRST_TOKEN_SUM)
    reply = (await client.get(f"{url}/api/sessions/{session_id}")).json()["messages"][-1]
    assert abs(first_token * 1000 - reply["timing"]["first_token_ms"]) <= 1
    # Redis writes are timed per batched call, not per token: the first piece goes at once,
    # the rest of this quick answer together on the next tick.
    writes = after.value(WRITES_COUNT) - before.value(WRITES_COUNT)
    write_ms = (after.value(WRITES_SUM) - before.value(WRITES_SUM)) / writes * 1e3
    print(f"{len(fake.OK_PIECES)} pieces in {writes:.0f} write calls, {write_ms:.2f} ms each")
    assert 1 <= writes < len(fake.OK_PIECES)
    # No key, no text, no session id in any label or value.
    for secret in (TEST_API_KEY, "secret", fake.OK_TEXT, session_id):
        assert secret not in after.text


async def test_a_stopped_reply_counts_stopped_and_the_tokens_it_got(
    client: httpx.AsyncClient, metrics_gateway: Service
) -> None:
    url = metrics_gateway.url
    session_id = await create_session(client, url, model="slow")
    before = await read_metrics(client, url)
    reply_id = (await send_message(client, url, session_id, "go"))["reply_id"]
    running = await metrics_once(client, url, _moved(TOKENS, before))
    assert running.value(RUNNING) == 1
    stop = await client.post(f"{url}/api/sessions/{session_id}/stop")
    assert stop.json() == {"reply_id": reply_id}
    after = await metrics_once(client, url, _moved(FINISHED, before, outcome="stopped"))

    assert _outcomes(after, before) == {**dict.fromkeys(OUTCOMES, 0), "stopped": 1}
    assert after.value(RUNNING) == 0
    reply = (await client.get(f"{url}/api/sessions/{session_id}")).json()["messages"][-1]
    assert reply["status"] == "stopped"
    # Every piece the reply kept was counted once: "w0", " w1", ... one word each.
    kept = len(reply["content"].split())
    assert 0 < kept < fake.SLOW_TOKEN_COUNT
    assert after.value(TOKENS) - before.value(TOKENS) == kept
    assert after.value(UPSTREAM_COUNT) - before.value(UPSTREAM_COUNT) == 1


async def test_an_upstream_error_counts_error_by_its_code(
    client: httpx.AsyncClient, metrics_gateway: Service
) -> None:
    url = metrics_gateway.url
    session_id = await create_session(client, url, model="http_429")
    before = await read_metrics(client, url)
    await send_message(client, url, session_id, "hi")
    after = await metrics_once(client, url, _moved(FINISHED, before, outcome="error"))

    assert _outcomes(after, before) == {**dict.fromkeys(OUTCOMES, 0), "error": 1}
    code = "upstream_rate_limited"
    assert after.value(ERRORS, code=code) - before.value(ERRORS, code=code) == 1
    assert after.value(TOKENS) == before.value(TOKENS)
    assert after.value(FIRST_TOKEN_COUNT) == before.value(FIRST_TOKEN_COUNT)
    assert after.value(UPSTREAM_COUNT) - before.value(UPSTREAM_COUNT) == 1


async def test_requests_are_counted_by_route_template(
    client: httpx.AsyncClient, metrics_gateway: Service
) -> None:
    url = metrics_gateway.url
    labels = {
        "method": "POST",
        "path": "/api/sessions/{session_id}/messages",
        "status_code": "202",
        "app_name": "gateway",
    }
    session_id = await create_session(client, url, model="ok")
    before = await read_metrics(client, url)
    await send_message(client, url, session_id, "hi")
    after = await metrics_once(
        client, url, _moved("chatrelay_http_requests_total", before, **labels)
    )
    assert (
        after.value("chatrelay_http_requests_total", **labels)
        - before.value("chatrelay_http_requests_total", **labels)
        == 1
    )
    await metrics_once(client, url, _moved(FINISHED, before, outcome="done"))


async def test_a_reaped_reply_counts_interrupted_on_the_gateway_that_closed_it(
    client: httpx.AsyncClient, fake_upstream_server: FakeUpstream, service_logs: Path
) -> None:
    """A gateway killed mid-reply counts nothing more; the one whose reaper closes the reply
    counts it once. A Redis of their own: no other test's gateway may reap it first."""
    with redis_url() as redis:
        env = keyed_gateway_env(redis, fake_upstream_server.base_url, CHATRELAY_LEASE_SECONDS="1")
        with run_service("gateway", env, service_logs) as reaper:
            with run_service("gateway", env, service_logs) as doomed:
                session_id = await create_session(client, doomed.url, model="slow")
                before = await read_metrics(client, reaper.url)
                await send_message(client, doomed.url, session_id, "go")
                await metrics_once(client, doomed.url, lambda m: m.value(TOKENS) > 0)
                assert doomed.process is not None
                doomed.process.kill()
                doomed.process.wait(10)
            after = await metrics_once(
                client, reaper.url, _moved(FINISHED, before, outcome="interrupted")
            )
            assert _outcomes(after, before) == {**dict.fromkeys(OUTCOMES, 0), "interrupted": 1}
            code = "interrupted"
            assert after.value(ERRORS, code=code) - before.value(ERRORS, code=code) == 1
            assert after.value(RUNNING) == 0
            reply = (await client.get(f"{reaper.url}/api/sessions/{session_id}")).json()
            assert reply["messages"][-1]["status"] == "error"
