"""Who the gateway serves: this machine only when a paid key has no password in front of it,
same-site browsers only for writes (CSRF), and JSON bodies only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from chatrelay_gateway._access import LOCAL_ONLY_DETAIL, LocalAddresses

from tests.conftest import SITE_PASSWORD, TEST_API_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import Service, run_service

REMOTE = {"x-forwarded-for": "203.0.113.9"}

# /proc/net/route inside a compose container: default route via 172.18.0.1 on eth0.
ROUTE_TABLE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    "eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
)


def test_this_machine_is_loopback_and_the_container_gateway() -> None:
    local = LocalAddresses(ROUTE_TABLE, in_container=True)
    assert [str(a) for a in local.gateways] == ["172.18.0.1"]
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "172.18.0.1"):
        assert host in local, host
    others: list[str | None] = ["172.18.0.5", "10.0.0.1", "203.0.113.9", "localhost", "", None]
    for other in others:
        assert other not in local, other
    assert LocalAddresses("", in_container=True).gateways == set()
    # On a host the default gateway is a router, which may forward anyone: not local.
    on_host = LocalAddresses(ROUTE_TABLE, in_container=False)
    assert on_host.gateways == set()
    assert "172.18.0.1" not in on_host
    assert "127.0.0.1" in on_host


async def test_a_paid_key_without_a_password_serves_only_this_machine(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    sessions = f"{gateway.url}/api/sessions"
    for method, url in [
        ("POST", sessions),
        ("GET", f"{sessions}/{'A' * 22}"),
        ("GET", f"{gateway.url}/api/auth"),
    ]:
        refused = await client.request(method, url, headers=REMOTE)
        assert (refused.status_code, refused.json()) == (403, {"detail": LOCAL_ONLY_DETAIL})
    assert "SITE_PASSWORD" in LOCAL_ONLY_DETAIL
    assert "ALLOW_OPEN_ACCESS=1" in LOCAL_ONLY_DETAIL
    # Orchestrators' probes are not the key's business.
    for probe in ("/healthz", "/readyz"):
        assert (await client.get(f"{gateway.url}{probe}", headers=REMOTE)).status_code == 200
    # This machine, over IPv4 or IPv6 loopback, is served.
    assert (await client.post(sessions, json={})).status_code == 201
    ipv6 = await client.post(sessions, json={}, headers={"x-forwarded-for": "::1"})
    assert ipv6.status_code == 201

    log = gateway.log()
    assert "access: only this machine is served" in log
    assert "set SITE_PASSWORD or ALLOW_OPEN_ACCESS=1" in log
    assert TEST_API_KEY not in log


@pytest.fixture(scope="module")
def upstream_url(fake_upstream_server: FakeUpstream) -> str:
    return fake_upstream_server.base_url


@pytest.mark.parametrize(
    ("setup", "remote_status"),
    [
        ("key + ALLOW_OPEN_ACCESS=1", 201),
        ("key + SITE_PASSWORD", 401),
        ("key + accounts", 401),
        ("keyless upstream", 201),
        ("demo", 201),
    ],
)
async def test_who_else_is_served(
    client: httpx.AsyncClient,
    redis_server_url: str,
    service_logs: Path,
    upstream_url: str,
    setup: str,
    remote_status: int,
) -> None:
    env = {
        "key + ALLOW_OPEN_ACCESS=1": {
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_BASE_URL": upstream_url,
            "ALLOW_OPEN_ACCESS": "1",
        },
        "key + SITE_PASSWORD": {
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_BASE_URL": upstream_url,
            "SITE_PASSWORD": SITE_PASSWORD,
        },
        # Accounts are a login too: a remote client is asked to log in, not refused.
        "key + accounts": {
            "OPENAI_API_KEY": TEST_API_KEY,
            "OPENAI_BASE_URL": upstream_url,
            "CHATRELAY_ACCOUNTS": "1",
        },
        # A keyless server (a local model) and the demo model cost nothing: open.
        "keyless upstream": {"OPENAI_BASE_URL": upstream_url},
        "demo": {},
    }[setup]
    with run_service("gateway", {"REDIS_URL": redis_server_url, **env}, service_logs) as service:
        answer = await client.post(f"{service.url}/api/sessions", json={}, headers=REMOTE)
        assert answer.status_code == remote_status, answer.text
        log = service.log()
        assert "access: only this machine" not in log
        assert TEST_API_KEY not in log
        if setup == "key + ALLOW_OPEN_ACCESS=1":
            assert "ALLOW_OPEN_ACCESS=1: anyone who reaches this gateway uses the key" in log


async def test_writes_from_another_site_are_refused(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    sessions = f"{gateway.url}/api/sessions"
    own_origin = gateway.url  # http://127.0.0.1:PORT, the Host this request carries
    refused = {
        "other origin": {"origin": "https://evil.example"},
        "other port": {"origin": "http://127.0.0.1:1"},
        "opaque origin": {"origin": "null"},
        "cross-site fetch": {"sec-fetch-site": "cross-site"},
        "cross-site with own origin": {"sec-fetch-site": "cross-site", "origin": own_origin},
        "edge host differs": {"origin": "https://chat.example.org", "x-forwarded-host": "x.org"},
    }
    for case, headers in refused.items():
        answer = await client.post(sessions, json={}, headers=headers)
        assert answer.status_code == 403, case
        detail = answer.json()["detail"]
        assert "cross-site requests are not allowed" in detail.lower(), (case, detail)
    evil = await client.post(sessions, json={}, headers={"origin": "https://evil.example"})
    assert evil.json() == {
        "detail": "Origin 'https://evil.example' does not match this site; cross-site "
        "requests are not allowed"
    }

    allowed = {
        "own origin": {"origin": own_origin, "sec-fetch-site": "same-origin"},
        # nginx passes $host without the port: the hostname is what is compared then.
        "behind the edge": {"origin": "https://chat.example.org:8443", "host": "chat.example.org"},
        "forwarded host": {
            "origin": "https://chat.example.org",
            "x-forwarded-host": "chat.example.org",
        },
        "not a browser": {},
        "user typed the URL": {"sec-fetch-site": "none"},
    }
    for case, headers in allowed.items():
        answer = await client.post(sessions, json={}, headers=headers)
        assert answer.status_code == 201, (case, answer.text)
    # Reads are not state-changing: another site's page cannot read them anyway (no CORS).
    session_id = answer.json()["id"]
    read = await client.get(f"{sessions}/{session_id}", headers={"origin": "https://evil.example"})
    assert read.status_code == 200


async def test_bodies_must_be_json(client: httpx.AsyncClient, gateway: Service) -> None:
    sessions = f"{gateway.url}/api/sessions"
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ):
        answer = await client.post(sessions, content=b"{}", headers={"content-type": content_type})
        assert (answer.status_code, answer.json()) == (
            415,
            {"detail": "Request bodies must be JSON (Content-Type: application/json)"},
        ), content_type
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        answer = await client.post(sessions, content=b"{}", headers={"content-type": content_type})
        assert answer.status_code == 201, content_type
    session_id = answer.json()["id"]
    # No body: no type needed, whatever the header says.
    stop = await client.post(
        f"{sessions}/{session_id}/stop", headers={"content-type": "text/plain"}
    )
    assert stop.status_code == 202
    # No Content-Type at all (curl --data-binary, scripts) is read as JSON.
    assert (await client.post(sessions, content=b"{}")).status_code == 201
