"""The shared ``/metrics`` route and request metrics, on a real uvicorn: valid exposition
text, one series per route template (never per raw path), statuses counted as answered,
probes and scrapes not counted, and the route kept out of the OpenAPI schema."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import Metrics, metrics_once, read_metrics
from tests.support.services import run_app

REQUESTS = "chatrelay_http_requests_total"
DURATION_COUNT = "chatrelay_http_request_duration_seconds_count"


@pytest.fixture(scope="module")
def metrics_app_url(service_logs: Path) -> Iterator[str]:
    factory = "tests.litestar_kit.metrics_app:create_app"
    with run_app("kit-metrics", factory, dict(os.environ), service_logs) as url:
        yield url


@pytest.fixture
async def app_client(metrics_app_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=metrics_app_url, timeout=10) as client:
        yield client


def _requests(metrics: Metrics, path: str, status: str) -> float:
    return metrics.value(REQUESTS, method="GET", path=path, status_code=status, app_name="kit")


async def test_metrics_is_exposition_text_with_process_metrics(
    app_client: httpx.AsyncClient, metrics_app_url: str
) -> None:
    metrics = await read_metrics(app_client, metrics_app_url)
    # prometheus-client's own collectors come with the default registry.
    assert metrics.types["process_resident_memory_bytes"] == "gauge"
    assert metrics.value("process_resident_memory_bytes") > 0
    assert metrics.types["python_gc_collections"] == "counter"
    # No *_created timestamp series doubling every counter and histogram.
    assert not [name for name in metrics.types if name.endswith("_created")]


async def test_requests_counted_per_route_template(
    app_client: httpx.AsyncClient, metrics_app_url: str
) -> None:
    template = "/items/{number}"
    before = await read_metrics(app_client, metrics_app_url)
    for number in (1, 2, 3):
        assert (await app_client.get(f"/items/{number}")).json() == {"item": number}
    assert (await app_client.get("/teapot")).status_code == 418
    after = await metrics_once(
        app_client,
        metrics_app_url,
        lambda m: (
            _requests(m, template, "200") - _requests(before, template, "200") >= 3
            and _requests(m, "/teapot", "418") > _requests(before, "/teapot", "418")
        ),
    )
    assert _requests(after, template, "200") - _requests(before, template, "200") == 3
    assert _requests(after, "/teapot", "418") - _requests(before, "/teapot", "418") == 1
    labels = {"method": "GET", "path": template, "status_code": "200", "app_name": "kit"}
    assert after.value(DURATION_COUNT, **labels) - before.value(DURATION_COUNT, **labels) == 3
    # One series per route, never one per raw path (a session id would make one per session).
    assert {series["path"] for series in after.series(REQUESTS)} == {template, "/teapot"}


async def test_probes_and_scrapes_are_not_counted(
    app_client: httpx.AsyncClient, metrics_app_url: str
) -> None:
    await app_client.get("/healthz")
    await read_metrics(app_client, metrics_app_url)
    metrics = await read_metrics(app_client, metrics_app_url)
    counted = {series["path"] for series in metrics.series(REQUESTS)}
    assert not counted & {"/healthz", "/metrics"}


async def test_unknown_paths_make_no_series(
    app_client: httpx.AsyncClient, metrics_app_url: str
) -> None:
    assert (await app_client.get("/no/such/path")).status_code == 404
    metrics = await read_metrics(app_client, metrics_app_url)
    assert "/no/such/path" not in metrics.text


async def test_metrics_route_is_not_in_the_openapi_schema(app_client: httpx.AsyncClient) -> None:
    schema = (await app_client.get("/schema/openapi.json")).json()
    assert "/items/{number}" in schema["paths"]
    assert "/metrics" not in schema["paths"]
