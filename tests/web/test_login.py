"""SITE_PASSWORD on the web service: events need the cookie; the page sends you to /login."""

from __future__ import annotations

import httpx
from chatrelay_common import AUTH_COOKIE, auth_token

from tests.conftest import SITE_PASSWORD
from tests.support.services import Service


async def test_events_and_pages_require_the_login_cookie(
    client: httpx.AsyncClient, locked_gateway: Service, locked_web: Service
) -> None:
    headers = {"cookie": f"{AUTH_COOKIE}={auth_token(SITE_PASSWORD)}"}
    created = await client.post(f"{locked_gateway.url}/api/sessions", json={}, headers=headers)
    events = f"{locked_web.url}/api/sessions/{created.json()['id']}/events"

    refused = await client.get(events)
    assert (refused.status_code, refused.json()) == (401, {"detail": "Login required"})
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
