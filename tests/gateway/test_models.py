"""``GET /api/models``: the allowlist narrowed to what the upstream's ``GET /v1/models``
lists, cached, one fetch shared by concurrent callers; the allowlist alone when the upstream
is down, slow or answers an error; the demo model in demo mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import keyed_gateway_env
from tests.support.fake_upstream import SCENARIOS, FakeUpstream
from tests.support.services import Service, run_service

ALLOWED = ("ok", "reasoning", "retired")  # the upstream serves the first two
CACHE_SECONDS = 2.0
TIMEOUT_SECONDS = 1.0


@pytest.fixture
def own_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream of this test's own: its model list is changed per test."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def catalog_gateway(
    redis_server_url: str, own_upstream: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    env = keyed_gateway_env(
        redis_server_url,
        own_upstream.base_url,
        OPENAI_MODELS=",".join(ALLOWED),
        OPENAI_MODEL="ok",
        GATEWAY_MODELS_CACHE_SECONDS=str(CACHE_SECONDS),
        GATEWAY_MODELS_TIMEOUT=str(TIMEOUT_SECONDS),
    )
    with run_service("gateway", env, service_logs) as service:
        yield service


async def _models(client: httpx.AsyncClient, gateway: Service) -> dict[str, object]:
    response = await client.get(f"{gateway.url}/api/models")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    # ``data`` names the same models the way OpenAI's GET /v1/models does.
    models = body["models"]
    assert isinstance(models, list)
    assert body.pop("data") == [{"id": model} for model in models], body
    return body


async def test_the_allowlist_is_narrowed_to_what_the_upstream_serves_and_cached(
    client: httpx.AsyncClient, catalog_gateway: Service, own_upstream: FakeUpstream
) -> None:
    narrowed = {"models": ["ok", "reasoning"], "default": "ok"}
    assert await _models(client, catalog_gateway) == narrowed
    assert await _models(client, catalog_gateway) == narrowed
    assert own_upstream.models_requests == 1  # the second answer came from the cache

    # Once the cache is stale, concurrent callers share one slow fetch.
    own_upstream.listed_models = ("ok",)
    own_upstream.models_delay = 0.3
    await asyncio.sleep(CACHE_SECONDS + 0.2)
    answers = await asyncio.gather(*(_models(client, catalog_gateway) for _ in range(10)))
    assert answers == [{"models": ["ok"], "default": "ok"}] * 10
    assert own_upstream.models_requests == 2

    # An upstream that lists none of the allowed models says nothing useful: all are offered.
    own_upstream.listed_models = ("someone-else",)
    own_upstream.models_delay = 0.0
    await asyncio.sleep(CACHE_SECONDS + 0.2)
    assert await _models(client, catalog_gateway) == {"models": list(ALLOWED), "default": "ok"}


@pytest.mark.parametrize("fault", ["error", "slow", "down"])
async def test_the_allowlist_alone_when_the_upstream_does_not_answer(
    client: httpx.AsyncClient, catalog_gateway: Service, own_upstream: FakeUpstream, fault: str
) -> None:
    if fault == "error":
        own_upstream.models_status = 500
    elif fault == "slow":
        own_upstream.models_delay = 30.0
    else:
        own_upstream.stop()
    started = time.monotonic()
    body = await _models(client, catalog_gateway)
    took = time.monotonic() - started
    print(f"/api/models with the upstream {fault}: {took * 1000:.0f} ms")
    assert body == {"models": list(ALLOWED), "default": "ok"}
    # Bounded by the fetch timeout (1 s), with room for a loaded machine.
    assert took < TIMEOUT_SECONDS + 3
    if fault != "down":
        assert own_upstream.models_requests == 1


async def test_the_upstream_is_asked_again_after_a_failure(
    client: httpx.AsyncClient, catalog_gateway: Service, own_upstream: FakeUpstream
) -> None:
    own_upstream.models_status = 503
    assert (await _models(client, catalog_gateway))["models"] == list(ALLOWED)
    own_upstream.models_status = 200
    # A failure is remembered for a tenth of the cache time only.
    await asyncio.sleep(CACHE_SECONDS / 10 + 0.2)
    assert (await _models(client, catalog_gateway))["models"] == ["ok", "reasoning"]
    assert own_upstream.models_requests == 2


async def test_the_demo_model_alone_in_demo_mode(
    client: httpx.AsyncClient, demo_gateway: Service
) -> None:
    assert await _models(client, demo_gateway) == {
        "models": ["chatrelay-demo"],
        "default": "chatrelay-demo",
    }


def test_every_fake_scenario_is_listed_by_default() -> None:
    with FakeUpstream() as fake:
        listed = httpx.get(f"{fake.base_url}/models").json()["data"]
    assert [model["id"] for model in listed] == list(SCENARIOS)
