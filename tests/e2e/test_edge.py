"""The edge as a user meets it: HTTPS + HTTP/2, the redirect, headers, routing."""

from __future__ import annotations

import subprocess

import httpx

from tests.e2e._client import Stack


def test_stack_came_up(stack: Stack) -> None:
    if stack.up_seconds is not None:
        print(f"    up --build --wait took {stack.up_seconds:.0f} s")


def test_https_speaks_http2(stack: Stack) -> None:
    out = subprocess.run(
        ["curl", "--http2", "-sk", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         f"{stack.base_url}/login"],
        capture_output=True, text=True, timeout=15, check=True,
    ).stdout  # fmt: skip
    assert out == "2 200"


def test_http_redirects_to_https(stack: Stack) -> None:
    with httpx.Client(timeout=10) as client:
        response = client.get(f"{stack.http_url}/s/abc?x=1")
    assert response.status_code == 301
    https_port = stack.base_url.rsplit(":", 1)[1]
    assert response.headers["location"] == f"https://localhost:{https_port}/s/abc?x=1"


def test_security_headers_and_routing(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["strict-transport-security"].startswith("max-age=")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # Health checks are for the orchestrator, not the network.
    health = api.get("/healthz")
    assert (health.status_code, health.json()) == (404, {"detail": "Not found"})
    # /api/* goes to the gateway (its 404 is JSON), the demo model is not routed.
    assert api.get("/api/sessions/does-not-exist").status_code == 404
    assert api.get("/demo/v1/models").status_code == 404


def test_body_limit(api: httpx.Client, stack: Stack) -> None:
    session_id = stack.new_session(api)
    response = api.post(f"/api/sessions/{session_id}/messages", json={"content": "x" * 40_000})
    assert response.status_code == 413
