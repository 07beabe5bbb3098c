"""SITE_PASSWORD on the web service: events need the cookie; the page sends you to /login."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import SITE_PASSWORD
from tests.gateway.test_login import log_in, with_cookie
from tests.support.services import Service, run_service


async def test_events_and_pages_require_the_login_cookie(
    client: httpx.AsyncClient, locked_gateway: Service, locked_web: Service
) -> None:
    # The gateway issued the cookie; web verifies it with the secret both share in Redis.
    headers = with_cookie(await log_in(client, locked_gateway.url))
    created = await client.post(f"{locked_gateway.url}/api/sessions", json={}, headers=headers)
    events = f"{locked_web.url}/api/sessions/{created.json()['id']}/events"

    refused = await client.get(events)
    assert (refused.status_code, refused.json()) == (401, {"detail": "Login required"})
    forged = await client.get(events, headers=with_cookie("v1.1.forged.forged"))
    assert forged.status_code == 401
    async with client.stream("GET", events, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")

    page = await client.get(f"{locked_web.url}/s/{created.json()['id']}")
    next_path = f"%2Fs%2F{created.json()['id']}"
    assert (page.status_code, page.headers["location"]) == (302, f"/login?next={next_path}")
    assert (await client.get(f"{locked_web.url}/", headers=headers)).status_code == 200
    login_page = await client.get(f"{locked_web.url}/login")
    assert login_page.status_code == 200
    assert login_page.headers["content-type"].startswith("text/html")


async def test_logout_at_the_gateway_closes_the_page_and_events_too(
    client: httpx.AsyncClient, locked_gateway: Service, locked_web: Service
) -> None:
    token = await log_in(client, locked_gateway.url)
    created = await client.post(
        f"{locked_gateway.url}/api/sessions", json={}, headers=with_cookie(token)
    )
    session_id = created.json()["id"]
    page = f"{locked_web.url}/s/{session_id}"
    assert (await client.get(page, headers=with_cookie(token))).status_code == 200

    logout = await client.post(f"{locked_gateway.url}/api/logout", headers=with_cookie(token))
    assert logout.status_code == 204
    after = await client.get(page, headers=with_cookie(token))
    assert (after.status_code, after.headers["location"]) == (
        302,
        f"/login?next=%2Fs%2F{session_id}",
    )
    events = await client.get(
        f"{locked_web.url}/api/sessions/{session_id}/events", headers=with_cookie(token)
    )
    assert events.status_code == 401


async def test_a_password_change_signs_everyone_out_of_the_page(
    client: httpx.AsyncClient, locked_gateway: Service, redis_server_url: str, service_logs: Path
) -> None:
    token = await log_in(client, locked_gateway.url)
    env = {"REDIS_URL": redis_server_url, "SITE_PASSWORD": f"new {SITE_PASSWORD}"}
    with run_service("web", env, service_logs) as changed_web:
        page = await client.get(f"{changed_web.url}/", headers=with_cookie(token))
        assert (page.status_code, page.headers["location"]) == (302, "/login?next=%2F")
