"""The edge sends share links to web: the read-only page, the snapshot and its event stream
(which needs the SSE location's settings); sharing itself stays the gateway's."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from scripts.render_nginx import render_text
from tests.infra.conftest import Edge
from tests.infra.nginx_conf import Directive, duration_seconds, parse
from tests.infra.test_nginx_config import (
    HEARTBEAT_SECONDS,
    VALUES,
    headers_set,
    https_server,
    location,
)


@pytest.fixture(scope="module")
def http() -> Directive:
    """The rendered template, as nginx's `http {}` block would hold it."""
    return Directive("http", [], parse(render_text(VALUES)))


def shared_location(http: Directive) -> Directive:
    return location(location(https_server(http), ["/api/"]), ["/api/shared/"])


def test_the_shared_location_streams_like_the_events_location(http: Directive) -> None:
    shared = shared_location(http)
    assert shared.one("proxy_pass") == ["http://chatrelay_web"]
    assert shared.one("proxy_http_version") == ["1.1"]
    assert shared.one("proxy_buffering") == ["off"]
    assert shared.one("proxy_cache") == ["off"]
    assert shared.one("gzip") == ["off"]
    for timeout in ("proxy_read_timeout", "proxy_send_timeout", "send_timeout"):
        assert duration_seconds(shared.one(timeout)[0]) >= 3600, timeout
        assert duration_seconds(shared.one(timeout)[0]) > 4 * HEARTBEAT_SECONDS, timeout
    assert headers_set(shared) == {
        "connection": "",
        "host": "$host",
        "x-forwarded-for": "$remote_addr",
        "x-forwarded-proto": "$scheme",
        "x-forwarded-host": "$host",
    }
    assert all(d.name != "add_header" for d in shared.walk())  # keeps the server's headers


@pytest.fixture
def client(edge: Edge) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(edge.cert.cert))
    with httpx.Client(base_url=edge.https, verify=context, timeout=10.0) as client:
        yield client


def test_share_paths_reach_the_right_service(client: httpx.Client) -> None:
    token = "T" * 32
    for method, path, backend in [
        ("GET", f"/r/{token}", "web"),
        ("GET", f"/api/shared/{token}", "web"),
        ("GET", f"/api/shared/{token}/events", "web"),
        ("GET", f"/api/shared/{token}/events?last_event_id=3", "web"),
        ("POST", f"/api/shared/{token}", "web"),  # which has no writes: 405 there
        ("POST", "/api/sessions/abc/share", "gateway"),
        ("GET", "/api/sessions/abc", "gateway"),
        ("GET", "/api/sharedx", "gateway"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 200, (method, path)
        assert response.json()["backend"] == backend, (method, path)
        assert response.json()["path"] == path, (method, path)
        assert response.headers["x-content-type-options"] == "nosniff", path
