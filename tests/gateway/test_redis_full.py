"""Redis at ``maxmemory`` with ``noeviction`` refuses writes; the gateway says so with a 503
and Retry-After instead of a 500. Against a Redis of this test's own (the shared one must
not fill up)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.api import create_session
from tests.support.redis_server import free_port, wait_for_port
from tests.support.services import Service, run_service

FULL = {"detail": "The session store is full; nothing was saved. Try again later"}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis-full")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    proc = subprocess.Popen([*args, "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        client = redis.Redis(port=port)
        yield client
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def full_gateway(own_redis: redis.Redis, service_logs: Path) -> Iterator[Service]:
    port = own_redis.connection_pool.connection_kwargs["port"]
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/0", "GATEWAY_DEMO_TOKEN_DELAY": "0"}
    with run_service("gateway", env, service_logs) as service:
        yield service


async def test_a_full_redis_is_a_503_with_retry_after_then_recovers(
    client: httpx.AsyncClient, full_gateway: Service, own_redis: redis.Redis
) -> None:
    session_id = await create_session(client, full_gateway.url)
    own_redis.config_set("maxmemory-policy", "noeviction")
    own_redis.config_set("maxmemory", 1)
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
        own_redis.config_set("maxmemory", 0)
    assert (await client.post(f"{full_gateway.url}/api/sessions", json={})).status_code == 201
    snapshot = (await client.get(f"{full_gateway.url}/api/sessions/{session_id}")).json()
    assert (snapshot["messages"], snapshot["settings"]["temperature"]) == ([], None)
