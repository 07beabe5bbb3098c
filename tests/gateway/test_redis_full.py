"""Redis at ``maxmemory`` with ``noeviction`` refuses writes, or Redis is gone: the gateway
says so with a 503 and Retry-After instead of a 500. Against a Redis of this module's own
(the shared one must not fill up or stop)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import redis

from tests.support.api import create_session
from tests.support.redis_server import free_port, wait_for_port
from tests.support.services import Service, run_service

FULL = {"detail": "The session store is full; nothing was saved. Try again later"}
AWAY = {"detail": "The session store is unavailable. Try again shortly"}


class OwnRedis(NamedTuple):
    process: subprocess.Popen[bytes]
    client: redis.Redis
    url: str


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis-full")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        with redis.Redis(port=port) as client:
            yield OwnRedis(process, client, f"redis://127.0.0.1:{port}/0")
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def full_gateway(own_redis: OwnRedis, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": own_redis.url, "GATEWAY_DEMO_TOKEN_DELAY": "0"}
    with run_service("gateway", env, service_logs) as service:
        yield service


async def test_a_full_redis_is_a_503_with_retry_after_then_recovers(
    client: httpx.AsyncClient, full_gateway: Service, own_redis: OwnRedis
) -> None:
    session_id = await create_session(client, full_gateway.url)
    own_redis.client.config_set("maxmemory-policy", "noeviction")
    own_redis.client.config_set("maxmemory", 1)
    try:
        sessions = f"{full_gateway.url}/api/sessions"
        for method, url, body in [
            ("POST", sessions, {}),
            ("POST", f"{sessions}/{session_id}/messages", {"content": "hi"}),
            ("PATCH", f"{sessions}/{session_id}", {"temperature": 1.0}),
        ]:
            response = await client.request(method, url, json=body)
            assert (response.status_code, response.json()) == (503, FULL), (method, url)
            assert response.headers["retry-after"] == "10"
        assert "Redis is full (maxmemory)" in full_gateway.log()
        assert "unhandled error" not in full_gateway.log()
    finally:
        own_redis.client.config_set("maxmemory", 0)
    assert (await client.post(f"{full_gateway.url}/api/sessions", json={})).status_code == 201
    snapshot = (await client.get(f"{full_gateway.url}/api/sessions/{session_id}")).json()
    assert (snapshot["messages"], snapshot["settings"]["temperature"]) == ([], None)


async def test_redis_gone_is_a_503_with_retry_after(
    client: httpx.AsyncClient, full_gateway: Service, own_redis: OwnRedis
) -> None:
    """Runs last in this module: it stops the module's Redis."""
    own_redis.process.terminate()
    own_redis.process.wait(10)
    started = time.monotonic()
    response = await client.post(f"{full_gateway.url}/api/sessions", json={})
    print(f"Redis gone: 503 after {time.monotonic() - started:.2f} s")
    assert (response.status_code, response.json()) == (503, AWAY)
    assert response.headers["retry-after"] == "10"
