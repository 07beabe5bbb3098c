"""Conversations that follow you, through the compose edge: the owner cookie's list, a
rename, a read-only share link streaming through nginx, revocation, delete; and the users CLI
run inside the gateway's container as an operator would."""

from __future__ import annotations

import secrets

import httpx

from tests.e2e._client import SseClient, Stack


def test_list_rename_share_and_delete_through_the_edge(stack: Stack, api: httpx.Client) -> None:
    session_id = stack.new_session(api)
    assert api.cookies.get("chatrelay_owner"), "the gateway gives an API client its owner cookie"
    shared = api.post(f"/api/sessions/{session_id}/share")
    assert shared.status_code == 201, shared.text
    token = shared.json()["token"]
    with SseClient(f"{stack.base_url}/api/shared/{token}/events") as viewer:
        snapshot = viewer.wait_for(lambda e: e.name == "snapshot", timeout=15)
        assert viewer.status.startswith("HTTP/2 200"), viewer.status
        assert snapshot.data["id"] == token
        reply_id = stack.send(api, session_id, "First line of the chat\nand more")
        viewer.wait_for(lambda e: e.name == "done" and reply_id in e.raw, timeout=60)

        listed = api.get("/api/sessions").json()
        (item,) = [s for s in listed["sessions"] if s["id"] == session_id]
        assert (item["title"], item["message_count"]) == ("First line of the chat", 2)
        with stack.client() as stranger:  # another browser: another owner, another list
            others = stranger.get("/api/sessions").json()["sessions"]
            assert session_id not in [s["id"] for s in others]

        renamed = api.patch(f"/api/sessions/{session_id}", json={"title": "Renamed"})
        assert renamed.status_code == 200, renamed.text
        title = viewer.wait_for(lambda e: e.name == "title", timeout=15)
        assert title.data == {"title": "Renamed"}
        assert api.delete(f"/api/sessions/{session_id}/share").status_code == 204
        viewer.wait_for(lambda e: e.name == "revoked", timeout=15)
        assert all(session_id not in e.raw for e in viewer.events)
    assert api.get(f"/api/shared/{token}").status_code == 404

    assert api.delete(f"/api/sessions/{session_id}").status_code == 204
    assert api.get(f"/api/sessions/{session_id}").status_code == 404
    listed = api.get("/api/sessions").json()["sessions"]
    assert session_id not in [s["id"] for s in listed]


def test_the_users_cli_runs_in_the_gateway_container(compose_stack: Stack) -> None:
    name = f"e2e-{secrets.token_hex(4)}"
    cli = ("exec", "-T", "gateway", "python", "-m", "chatrelay_gateway", "users")
    compose_stack.compose(*cli, "add", name, stdin=f"{secrets.token_urlsafe(16)}\n")
    assert name in compose_stack.compose(*cli, "list").split()
    compose_stack.compose(*cli, "remove", name)
    assert name not in compose_stack.compose(*cli, "list").split()
