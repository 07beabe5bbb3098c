"""The web's ``/metrics`` through real processes (a web of its own, so that no other test's
streams move its figures; the shared gateway, real Redis, the fake upstream): open streams,
resumes, resets and the fan-out lag move by exactly what the tabs did."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvloop
from chatrelay_web._metrics import FANOUT_LAG, FanoutLagMeter

from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.metrics import Metrics, metrics_once, read_metrics
from tests.support.services import Service, run_service
from tests.support.sse import Event, collect_until, open_events, reply_text

TABS = 3
OPEN = "chatrelay_web_sse_connections"
RESUMES = "chatrelay_web_resumes_total"
RESETS = "chatrelay_web_resets_total"
LAG_COUNT = "chatrelay_web_fanout_lag_seconds_count"
LAG_SUM = "chatrelay_web_fanout_lag_seconds_sum"


@pytest.fixture(scope="module")
def metrics_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with run_service("web", env, service_logs) as service:
        yield service


async def _metrics(client: httpx.AsyncClient, web: Service) -> Metrics:
    return await read_metrics(client, web.url)


async def _until_open_streams(
    client: httpx.AsyncClient, web: Service, expected: float, within: float = 10.0
) -> float:
    """Polls the gauge until it reads ``expected`` (a closed tab is noticed a moment later);
    returns the seconds that took."""
    started = time.monotonic()
    while True:
        current = (await _metrics(client, web)).value(OPEN)
        if current == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < within, f"{OPEN} is {current}, want {expected}"
        await asyncio.sleep(0.05)


async def _finished_reply(client: httpx.AsyncClient, gateway: Service, web: Service) -> list[Event]:
    """A session with one finished ``ok`` reply; its events as a tab saw them."""
    session_id = await create_session(client, gateway.url, model="ok")
    async with open_events(client, web.url, session_id) as stream:
        snapshot = await anext(stream)
        ids = await send_message(client, gateway.url, session_id, "hi")
        events = [snapshot, *await collect_until(stream, "done")]
    assert reply_text(events, ids["reply_id"]) == fake.OK_TEXT
    return events


async def test_open_streams_gauge_follows_the_tabs(
    client: httpx.AsyncClient, gateway: Service, metrics_web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="ok")
    baseline = (await _metrics(client, metrics_web)).value(OPEN)
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(open_events(client, metrics_web.url, session_id))
            for _ in range(TABS)
        ]
        for stream in streams:
            assert (await anext(stream)).name == "snapshot"
        assert (await _metrics(client, metrics_web)).value(OPEN) == baseline + TABS
    took = await _until_open_streams(client, metrics_web, baseline)
    print(f"{OPEN} back to {baseline} {took * 1000:.0f} ms after {TABS} tabs closed")


async def test_a_last_event_id_reconnect_counts_one_resume(
    client: httpx.AsyncClient, gateway: Service, metrics_web: Service
) -> None:
    events = await _finished_reply(client, gateway, metrics_web)
    session_id = events[0].data["id"]
    done = events[-1]
    assert done.id is not None
    before = await _metrics(client, metrics_web)
    # Resume from the event before `done`: the log still holds `done`, so no reset.
    async with open_events(client, metrics_web.url, session_id, last_event_id=done.id - 1) as s:
        assert await anext(s) == done
    after = await _metrics(client, metrics_web)
    assert after.value(RESUMES) - before.value(RESUMES) == 1
    assert after.value(RESETS) == before.value(RESETS)


async def test_an_id_the_log_lacks_counts_one_reset(
    client: httpx.AsyncClient, gateway: Service, metrics_web: Service
) -> None:
    events = await _finished_reply(client, gateway, metrics_web)
    session_id = events[0].data["id"]
    last_id = events[-1].id
    assert last_id is not None
    before = await _metrics(client, metrics_web)
    # An id this session never reached: reset, then a fresh snapshot.
    gone = last_id + 1000
    async with open_events(client, metrics_web.url, session_id, last_event_id=gone) as stream:
        reset, snapshot = await anext(stream), await anext(stream)
    assert (reset.name, reset.data) == ("reset", {"last_event_id": gone})
    assert snapshot.name == "snapshot"
    after = await _metrics(client, metrics_web)
    assert after.value(RESETS) - before.value(RESETS) == 1
    assert after.value(RESUMES) - before.value(RESUMES) == 1


async def test_fanout_lag_is_observed_per_turn_not_per_tab(
    client: httpx.AsyncClient, gateway: Service, metrics_web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="ok")
    before = await _metrics(client, metrics_web)
    async with contextlib.AsyncExitStack() as stack:
        streams = [
            await stack.enter_async_context(open_events(client, metrics_web.url, session_id))
            for _ in range(TABS)
        ]
        for stream in streams:
            await anext(stream)
        await send_message(client, gateway.url, session_id, "a secret question")
        seen = [await collect_until(stream, "done") for stream in streams]
    assert seen[0] == seen[1] == seen[2]
    live_events = len(seen[0])
    after = await _metrics(client, metrics_web)
    observed = after.value(LAG_COUNT) - before.value(LAG_COUNT)
    lag = after.value(LAG_SUM) - before.value(LAG_SUM)
    print(f"{live_events} events to {TABS} tabs: {observed:.0f} observations, mean lag "
          f"{lag / observed * 1e6:.0f} us")  # fmt: skip
    # At least one fan-out turn carried them, and at most one per event: never one per tab.
    assert 1 <= observed <= live_events
    assert 0 < lag < 10 * observed
    # Nothing of the session (its id, its text) is a label or a value.
    assert session_id not in after.text
    assert "secret" not in after.text
    assert fake.OK_TEXT not in after.text


async def test_requests_are_counted_by_route_and_events_streams_are_not(
    client: httpx.AsyncClient, gateway: Service, metrics_web: Service
) -> None:
    await _finished_reply(client, gateway, metrics_web)
    assert (await client.get(f"{metrics_web.url}/login")).status_code == 200
    requests = "chatrelay_http_requests_total"
    metrics = await metrics_once(
        client, metrics_web.url, lambda m: any(s["path"] == "/login" for s in m.series(requests))
    )
    paths = {series["path"] for series in metrics.series(requests)}
    # The events streams are answered before Litestar's router and its request middleware.
    assert not [path for path in paths if "events" in path]


def _lag_observations() -> tuple[float, float]:
    """(count, sum) of this test process's own fan-out lag histogram."""
    samples = {s.name: s.value for metric in FANOUT_LAG.collect() for s in metric.samples}
    return samples["chatrelay_web_fanout_lag_seconds_count"], samples[LAG_SUM]


@pytest.mark.parametrize(
    "new_loop", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_the_lag_is_observed_once_a_turn_after_every_woken_tab_wrote(
    new_loop: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """Two channels flushed in one loop turn, as the fan-out schedules them: one observation,
    taken after the tabs of both have run their step (where they write)."""

    async def scenario() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        meter = FanoutLagMeter()
        wakes = [loop.create_future() for _ in range(3)]
        wrote: list[float] = []

        async def tab(woken: asyncio.Future[None]) -> None:
            await woken
            wrote.append(time.perf_counter())

        tabs = [asyncio.ensure_future(tab(woken)) for woken in wakes]
        await asyncio.sleep(0)
        received = time.perf_counter()

        def flush(woken: list[asyncio.Future[None]]) -> None:
            for future in woken:
                future.set_result(None)
            meter.flushed(received)

        loop.call_soon(flush, wakes[:1])
        loop.call_soon(flush, wakes[1:])
        await asyncio.gather(*tabs)
        for _ in range(3):
            await asyncio.sleep(0)
        return received, wrote

    count_before, sum_before = _lag_observations()
    with asyncio.Runner(loop_factory=new_loop) as runner:
        received, wrote = runner.run(scenario())
    count_after, sum_after = _lag_observations()
    assert count_after - count_before == 1
    assert len(wrote) == 3
    assert sum_after - sum_before >= max(wrote) - received
