"""Small helpers for driving the public API in tests."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["create_session", "send_message"]


async def create_session(client: httpx.AsyncClient, gateway_url: str, **settings: Any) -> str:
    response = await client.post(f"{gateway_url}/api/sessions", json=settings)
    assert response.status_code == 201, response.text
    session_id: str = response.json()["id"]
    return session_id


async def send_message(
    client: httpx.AsyncClient, gateway_url: str, session_id: str, content: str
) -> dict[str, str]:
    response = await client.post(
        f"{gateway_url}/api/sessions/{session_id}/messages", json={"content": content}
    )
    assert response.status_code == 202, response.text
    ids: dict[str, str] = response.json()
    return ids
