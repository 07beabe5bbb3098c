"""Share links at the gateway: making, repeating and revoking a session's one live token,
over real HTTP against real Redis. (Viewing them is the web's: tests/web/test_shared.py.)"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import cast

import httpx
from chatrelay_common import SessionKeys, ShareKeys
from chatrelay_common._keys import HASH_FIELDS
from redis.asyncio import Redis

from tests.support.api import create_session
from tests.support.services import Service


async def share(client: httpx.AsyncClient, gateway_url: str, session_id: str) -> str:
    """A session's share token (made or repeated)."""
    response = await client.post(f"{gateway_url}/api/sessions/{session_id}/share")
    assert response.status_code in (200, 201), response.text
    token: str = response.json()["token"]
    return token


async def share_field(redis: Redis, session_id: str) -> bytes | None:
    """The token the session's hash names."""
    key = SessionKeys(session_id).session
    return await cast("Awaitable[bytes | None]", redis.hget(key, HASH_FIELDS["SHARE"]))


async def test_sharing_makes_one_token_shared_again_until_revoked(
    client: httpx.AsyncClient, gateway: Service, redis: Redis
) -> None:
    session_id = await create_session(client, gateway.url)
    url = f"{gateway.url}/api/sessions/{session_id}/share"

    first = await client.post(url)
    assert first.status_code == 201, first.text
    token = first.json()["token"]
    assert first.json() == {"token": token, "url": f"/r/{token}"}
    assert len(token) == 32  # 192 random bits, URL-safe
    assert token.replace("-", "").replace("_", "").isalnum()
    assert session_id not in token

    again = await client.post(url)
    assert (again.status_code, again.json()) == (200, {"token": token, "url": f"/r/{token}"})

    # Stored: token -> session id, living as long as the session; the session names it.
    link = ShareKeys(token).link
    assert await redis.get(link) == session_id.encode()
    session_ttl, link_ttl = (
        await redis.pttl(SessionKeys(session_id).session),
        await redis.pttl(link),
    )
    print(f"session TTL {session_ttl} ms, link TTL {link_ttl} ms")
    # Both are set to the same TTL within one script; the two reads are a moment apart.
    assert link_ttl > 0
    assert abs(session_ttl - link_ttl) < 5_000
    assert await share_field(redis, session_id) == token.encode()

    revoked = await client.delete(url)
    assert (revoked.status_code, revoked.content) == (204, b"")
    assert await redis.exists(link) == 0
    assert await share_field(redis, session_id) is None
    assert (await client.delete(url)).status_code == 204  # idempotent

    renewed = await client.post(url)
    assert renewed.status_code == 201
    assert renewed.json()["token"] != token


async def test_sharing_an_unknown_or_malformed_session_is_404(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    for session_id in ("A" * 22, "not%20an%20id"):
        url = f"{gateway.url}/api/sessions/{session_id}/share"
        for method in ("POST", "DELETE"):
            response = await client.request(method, url)
            assert response.status_code == 404, (method, session_id, response.text)
            assert response.json() == {"detail": "No such session"}


async def test_a_share_token_is_no_session_id_on_any_route(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    base = f"{gateway.url}/api/sessions/{token}"
    attempts = [
        ("GET", base, None),
        ("PATCH", base, {"temperature": 1.0}),
        ("POST", f"{base}/messages", {"content": "hi"}),
        ("POST", f"{base}/regenerate", None),
        ("DELETE", f"{base}/messages", None),
        ("POST", f"{base}/stop", None),
        ("POST", f"{base}/share", None),
        ("DELETE", f"{base}/share", None),
    ]
    for method, url, body in attempts:
        response = await client.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
        assert response.json() == {"detail": "No such session"}, (method, url)
    # Nothing under /api/shared/ is the gateway's: no write reaches a session that way.
    for method in ("POST", "PATCH", "DELETE", "PUT"):
        response = await client.request(method, f"{gateway.url}/api/shared/{token}", json={})
        assert response.status_code in (404, 405), (method, response.text)
    session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    assert session["messages"] == []
    assert session["settings"]["temperature"] is None
