"""Accounts mode on the web service: a session's events stream is its owner's alone (another
account gets the same 404 as for an unknown session), and the page reveals nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import add_user, log_in, with_cookie
from tests.support.services import Service, run_service
from tests.support.sse import collect_until, open_events

NO_SUCH_SESSION = {"detail": "No such session"}


@pytest.fixture(scope="module")
def accounts_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {
        "REDIS_URL": redis_server_url,
        "CHATRELAY_ACCOUNTS": "1",
        "GATEWAY_DEMO_TOKEN_DELAY": "0",
    }
    with run_service("gateway", env, service_logs) as service:
        yield service


@pytest.fixture(scope="module")
def accounts_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server_url, "CHATRELAY_ACCOUNTS": "1"}
    with run_service("web", env, service_logs) as service:
        yield service


async def test_only_the_owner_hears_a_session(
    accounts_gateway: Service, accounts_web: Service, redis_server_url: str
) -> None:
    alice_name = add_user(redis_server_url, "a")
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as client:
        alice = with_cookie(await log_in(client, accounts_gateway.url, alice_name, "a"))
        bob = with_cookie(
            await log_in(client, accounts_gateway.url, add_user(redis_server_url, "b"), "b")
        )
        created = await client.post(f"{accounts_gateway.url}/api/sessions", json={}, headers=alice)
        session_id = created.json()["id"]
        events = f"{accounts_web.url}/api/sessions/{session_id}/events"
        unknown = f"{accounts_web.url}/api/sessions/AAAAAAAAAAAAAAAAAAAAAA/events"

        for url in (events, unknown, f"{events}/"):
            refused = await client.get(url, headers=bob)
            assert (refused.status_code, refused.json()) == (404, NO_SUCH_SESSION), url
        # Resuming is no way round it.
        resumed = await client.get(events, headers={**bob, "Last-Event-ID": "0"})
        assert (resumed.status_code, resumed.json()) == (404, NO_SUCH_SESSION)
        signed_out = await client.get(events)
        assert (signed_out.status_code, signed_out.json()) == (401, {"detail": "Login required"})

        # The owner hears it: its snapshot, then what she sends.
        client.headers.update(alice)
        async with open_events(client, accounts_web.url, session_id) as stream:
            first = await collect_until(stream, "snapshot")
            assert first[-1].data["id"] == session_id
            sent = await client.post(
                f"{accounts_gateway.url}/api/sessions/{session_id}/messages",
                json={"content": "hello"},
            )
            assert sent.status_code == 202
            done = await collect_until(stream, "done")
            assert done[-1].data["reply_id"] == sent.json()["reply_id"]

        # The page is the same for any id (what it loads is checked above): nothing to learn.
        mine = await client.get(f"{accounts_web.url}/s/{session_id}")
        client.headers.update(bob)
        theirs = await client.get(f"{accounts_web.url}/s/{session_id}")
        assert (mine.status_code, theirs.status_code) == (200, 200)
        assert mine.content == theirs.content
