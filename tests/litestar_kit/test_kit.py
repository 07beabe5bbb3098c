"""The shared Litestar glue, served by a real uvicorn: error bodies, health, the login guard
and the providers, as both services rely on them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE, LoginTokens, open_redis

from tests.litestar_kit.kit_app import GATE_CLOSED
from tests.support.services import run_app

PASSWORD = "kit-password"
SECRET = "kit-secret-0123456789abcdef0123456789"


@pytest.fixture(scope="module")
def kit_url(redis_server_url: str, service_logs: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "REDIS_URL": redis_server_url,
        "SITE_PASSWORD": PASSWORD,
        "CHATRELAY_SECRET": SECRET,
    }
    with run_app("kit", "tests.litestar_kit.kit_app:create_app", env, service_logs) as url:
        yield url


@pytest.fixture
async def kit(kit_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=kit_url, timeout=10) as client:
        yield client


async def test_health_and_a_readiness_check(kit: httpx.AsyncClient) -> None:
    assert (await kit.get("/healthz")).json() == {"status": "ok"}
    assert (await kit.get("/readyz")).json() == {"status": "ok"}
    assert (await kit.put("/gate", params={"is_open": "false"})).json() == {"open": False}
    try:
        closed = await kit.get("/readyz")
        assert closed.status_code == 503
        assert closed.json() == {"detail": GATE_CLOSED}
        assert (await kit.get("/healthz")).status_code == 200
    finally:
        await kit.put("/gate", params={"is_open": "true"})
    assert (await kit.get("/readyz")).status_code == 200


async def test_invalid_request_is_400_with_detail(kit: httpx.AsyncClient) -> None:
    response = await kit.get("/items/seven")
    assert response.status_code == 404  # no route takes a non-number
    response = await kit.put("/gate", params={"is_open": "perhaps"})
    assert response.status_code == 400
    assert set(response.json()) == {"detail"}
    assert "is_open" in response.json()["detail"]


async def test_http_errors_keep_status_detail_and_headers(kit: httpx.AsyncClient) -> None:
    response = await kit.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {"detail": "Short and stout"}
    assert response.headers["x-pot"] == "1"
    missing = await kit.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "Not Found"}


async def test_unexpected_error_is_a_bare_500(kit: httpx.AsyncClient) -> None:
    response = await kit.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "secret" not in response.text


async def test_providers(kit: httpx.AsyncClient) -> None:
    assert (await kit.get("/items/7")).json() == {"item": "item 7"}
    assert (await kit.get("/store")).json() == {"store": "SessionStore"}


async def test_login_guard(kit: httpx.AsyncClient, redis_server_url: str) -> None:
    denied = await kit.get("/guarded")
    assert denied.status_code == 401
    assert denied.json() == {"detail": "Login required"}
    forged = await kit.get("/guarded", headers={"cookie": f"{AUTH_COOKIE}=forged"})
    assert forged.status_code == 401
    async with open_redis(redis_server_url) as redis:
        tokens = LoginTokens(redis, password=PASSWORD, max_age=600, configured_secret=SECRET)
        token = await tokens.issue()
    allowed = await kit.get("/guarded", headers={"cookie": f"{AUTH_COOKIE}={token}"})
    assert allowed.status_code == 200
    assert allowed.json() == {"in": "yes"}
