"""Conversations survive a restart of the whole stack (Redis AOF on a named volume).
Runs last (file name): it takes the stack down and up again, back to one replica each."""

from __future__ import annotations

import time

import httpx

from tests.e2e._client import Stack


def _wait_until_complete(
    api: httpx.Client, session_id: str, timeout: float = 60
) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        body = api.get(f"/api/sessions/{session_id}").json()
        messages = body["messages"]
        if len(messages) == 2 and messages[1]["status"] == "complete":
            assert isinstance(body, dict)
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_conversation_survives_down_and_up(compose_stack: Stack, api: httpx.Client) -> None:
    session_id = compose_stack.new_session(api)
    compose_stack.send(api, session_id, "remember this across a restart")
    before = _wait_until_complete(api, session_id)
    compose_stack.compose("down", "--timeout", "10")  # keeps the volumes
    started = time.monotonic()
    compose_stack.compose("up", "--wait", "--no-build")
    print(f"    warm up --wait after down: {time.monotonic() - started:.1f} s")
    with compose_stack.client() as fresh:
        after = fresh.get(f"/api/sessions/{session_id}")
    assert after.status_code == 200, after.text
    assert after.json()["messages"] == before["messages"]
    assert after.json()["messages"][0]["content"] == "remember this across a restart"
