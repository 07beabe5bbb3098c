"""`--scale web=3 --scale gateway=2`: nginx spreads over every replica, and clients of one
session on different web replicas see the same tokens."""

from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest

from tests.e2e._client import SseClient, Stack

WEB, GATEWAY = 3, 2


def _hits(stack: Stack, token: str) -> dict[str, int]:
    """Requests carrying `token` per replica, from the uvicorn access logs."""
    logs = stack.compose("logs", "--no-color", "web", "gateway")
    hits: dict[str, int] = {}
    for line in logs.splitlines():
        if token in line:
            replica = re.split(r"\s+\|", line, maxsplit=1)[0].strip()
            hits[replica] = hits.get(replica, 0) + 1
    return hits


@pytest.fixture(scope="module")
def scaled(compose_stack: Stack) -> Stack:
    compose_stack.compose(
        "up", "--wait", "--no-build", "--scale", f"web={WEB}", "--scale", f"gateway={GATEWAY}"
    )
    return compose_stack


def test_requests_spread_over_all_replicas(scaled: Stack, api: httpx.Client) -> None:
    wanted = {f"web-{i}" for i in range(1, WEB + 1)}
    wanted |= {f"gateway-{i}" for i in range(1, GATEWAY + 1)}
    token = uuid.uuid4().hex
    deadline = time.monotonic() + 30  # the edge re-resolves the names every few seconds
    hits: dict[str, int] = {}
    while True:
        for _ in range(12):
            api.get(f"/login?e2e={token}")  # -> web
            api.get(f"/api/e2e-probe?e2e={token}")  # -> gateway (404)
        hits = _hits(scaled, token)
        if wanted <= set(hits) or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"    requests per replica: {dict(sorted(hits.items()))}")
    assert wanted <= set(hits), f"replicas never reached: {sorted(wanted - set(hits))}"


def test_one_session_across_web_replicas(scaled: Stack, api: httpx.Client) -> None:
    session_id = scaled.new_session(api)
    tag = uuid.uuid4().hex
    clients = [SseClient(scaled.events_url(session_id, f"{tag}-{i}")) for i in range(6)]
    try:
        for client in clients:
            client.wait_for(lambda e: e.name == "snapshot", timeout=15)
        replicas = _hits(scaled, tag)
        print(f"    6 clients on web replicas: {dict(sorted(replicas.items()))}")
        assert len([r for r in replicas if r.startswith("web-")]) >= 2
        reply_id = scaled.send(api, session_id, "hi")
        for client in clients:
            client.wait_for(lambda e: e.name == "done" and reply_id in e.raw, timeout=60)
        seen = [[(e.id, e.name, e.raw) for e in c.events if e.name != "snapshot"] for c in clients]
        assert all(s == seen[0] for s in seen), "clients on different replicas saw different events"
        assert sum(1 for e in seen[0] if e[1] == "delta") >= 5
    finally:
        for client in clients:
            client.close()
