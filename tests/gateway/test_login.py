"""SITE_PASSWORD on the gateway: the login sets the cookie; every API route requires it."""

from __future__ import annotations

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE, auth_token

from tests.conftest import SITE_PASSWORD
from tests.support.services import Service


async def test_the_api_requires_the_login_cookie(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    sessions = f"{locked_gateway.url}/api/sessions"
    refused = await client.post(sessions, json={})
    assert (refused.status_code, refused.json()) == (401, {"detail": "Login required"})
    forged = await client.post(sessions, json={}, headers={"cookie": f"{AUTH_COOKIE}=forged"})
    assert forged.status_code == 401

    login = await client.post(f"{locked_gateway.url}/api/login", json={"password": SITE_PASSWORD})
    assert login.status_code == 204
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{AUTH_COOKIE}={auth_token(SITE_PASSWORD)};")
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    assert SITE_PASSWORD not in cookie

    headers = {"cookie": f"{AUTH_COOKIE}={auth_token(SITE_PASSWORD)}"}
    created = await client.post(sessions, json={}, headers=headers)
    assert created.status_code == 201
    session_id = created.json()["id"]
    for method, path in [("GET", ""), ("POST", "/stop"), ("DELETE", "/messages")]:
        url = f"{sessions}/{session_id}{path}"
        assert (await client.request(method, url)).status_code == 401
        assert (await client.request(method, url, headers=headers)).status_code < 400
    # Health stays open for orchestrators.
    assert (await client.get(f"{locked_gateway.url}/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"), [(b'{"password": "wrong"}', 401), (b"{", 400), (b"{}", 422)]
)
async def test_a_bad_login_gets_no_cookie(
    client: httpx.AsyncClient, locked_gateway: Service, body: bytes, status: int
) -> None:
    response = await client.post(f"{locked_gateway.url}/api/login", content=body)
    assert response.status_code == status
    assert "set-cookie" not in response.headers


async def test_logout_expires_the_cookie(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    response = await client.post(f"{locked_gateway.url}/api/logout")
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith(f'{AUTH_COOKIE}="";')
    assert "Max-Age=0" in response.headers["set-cookie"]


async def test_the_page_can_ask_whether_a_login_is_needed(
    client: httpx.AsyncClient, locked_gateway: Service, gateway: Service
) -> None:
    auth = f"{locked_gateway.url}/api/auth"
    assert (await client.get(auth)).json() == {"required": True, "authenticated": False}
    headers = {"cookie": f"{AUTH_COOKIE}={auth_token(SITE_PASSWORD)}"}
    assert (await client.get(auth, headers=headers)).json() == {
        "required": True,
        "authenticated": True,
    }
    open_auth = await client.get(f"{gateway.url}/api/auth")
    assert open_auth.json() == {"required": False, "authenticated": True}
