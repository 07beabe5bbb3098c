"""Share links at the web: the read-only snapshot, the live stream through a token, and
revocation, with real gateway and web processes, real Redis and the fake upstream.

The viewer's streams are read as raw bytes, so that every byte can be searched for the
session id."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatrelay_common import ShareKeys
from chatrelay_litestar import OWNER_COOKIE
from redis.asyncio import Redis

from tests.gateway.test_login import log_in, with_cookie
from tests.gateway.test_share import share
from tests.support import accounts
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service, run_service

# Generous: other engineers' tests share the two cores.
_WITHIN = 20.0


@dataclass(frozen=True)
class Frame:
    id: int | None
    name: str
    data: Any


class RawStream:
    """An SSE response read as bytes: ``raw`` keeps everything received."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.raw = b""
        self._chunks = response.aiter_raw()
        self._buffer = b""
        self.ended = False

    async def next_frame(self) -> Frame | None:
        """The next event (comments and ``retry`` skipped); None once the stream ended."""
        async with asyncio.timeout(_WITHIN):
            while True:
                while b"\n\n" in self._buffer:
                    block, self._buffer = self._buffer.split(b"\n\n", 1)
                    fields = dict(
                        line.split(": ", 1)
                        for line in block.decode().split("\n")
                        if line and not line.startswith(":") and not line.startswith("retry")
                    )
                    if "event" in fields:
                        event_id = int(fields["id"]) if "id" in fields else None
                        return Frame(event_id, fields["event"], json.loads(fields["data"]))
                try:
                    chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    self.ended = True
                    return None
                self.raw += chunk
                self._buffer += chunk

    async def until(self, *names: str) -> list[Frame]:
        frames: list[Frame] = []
        while (frame := await self.next_frame()) is not None:
            frames.append(frame)
            if frame.name in names:
                return frames
        raise AssertionError(f"stream ended before {names}: {frames}")


@contextlib.asynccontextmanager
async def open_raw(
    client: httpx.AsyncClient, url: str, last_event_id: int | None = None
) -> AsyncIterator[RawStream]:
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield RawStream(response)


def shared_events(web: Service, token: str) -> str:
    return f"{web.url}/api/shared/{token}/events"


def owner_events(web: Service, session_id: str) -> str:
    return f"{web.url}/api/sessions/{session_id}/events"


def reply_text(frames: list[Frame]) -> str:
    return "".join(frame.data["text"] for frame in frames if frame.name == "delta")


async def test_a_viewer_sees_what_an_owner_tab_sees_and_never_the_session_id(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    token = await share(client, gateway.url, session_id)
    async with httpx.AsyncClient(timeout=_WITHIN) as stranger:  # no cookie of any kind
        async with (
            open_raw(client, owner_events(web, session_id)) as owner,
            open_raw(stranger, shared_events(web, token)) as viewer,
        ):
            owner_snapshot, viewer_snapshot = await owner.next_frame(), await viewer.next_frame()
            ids = await send_message(client, gateway.url, session_id, "go")
            owner_frames = await owner.until("done")
            viewer_frames = await viewer.until("done")
        snapshot = await stranger.get(f"{web.url}/api/shared/{token}")

    assert owner_snapshot is not None
    assert viewer_snapshot is not None
    assert owner_snapshot.data["id"] == session_id
    assert viewer_snapshot == Frame(
        owner_snapshot.id, "snapshot", {**owner_snapshot.data, "id": token}
    )
    # Live: the same events, the same ids, the same text.
    assert viewer_frames == owner_frames
    assert [f.id for f in viewer_frames] == list(range(1, len(viewer_frames) + 1))
    assert reply_text(viewer_frames) == fake.SLOW_TEXT
    assert viewer_frames[0].data["message"]["id"] == ids["message_id"]

    assert snapshot.status_code == 200
    body = snapshot.json()
    assert body["id"] == token
    assert [m["content"] for m in body["messages"]] == ["go", fake.SLOW_TEXT]
    owner_body = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    assert body == {**owner_body, "id": token}
    for raw in (viewer.raw, snapshot.content):
        assert session_id.encode() not in raw
        assert session_id.encode() in owner.raw  # the same search finds it where it is
    # Nor the owner (in open mode, the owner cookie is what holds their list).
    owner_id = client.cookies.get(OWNER_COOKIE)
    assert owner_id
    assert owner_id.encode() not in viewer.raw + snapshot.content


async def test_a_viewer_resumes_with_last_event_id_exactly_once(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    token = await share(client, gateway.url, session_id)
    async with open_raw(client, shared_events(web, token)) as first:
        await first.next_frame()
        await send_message(client, gateway.url, session_id, "go")
        early = [frame for frame in [await first.next_frame() for _ in range(10)] if frame]
    last = early[-1].id
    assert last is not None
    async with open_raw(client, shared_events(web, token), last_event_id=last) as resumed:
        rest = await resumed.until("done")
    assert session_id.encode() not in resumed.raw
    frames = early + rest
    assert [f.id for f in frames] == list(range(1, len(frames) + 1))
    assert reply_text(frames) == fake.SLOW_TEXT

    # ?last_event_id= on a first connection, as the page may ask.
    query = f"{shared_events(web, token)}?last_event_id={last}"
    async with open_raw(client, query) as by_query:
        assert await by_query.until("done") == rest
    # An id the log no longer holds: reset, then a snapshot showing the token.
    async with open_raw(client, shared_events(web, token), last_event_id=10**9) as gone:
        reset, snapshot = await gone.next_frame(), await gone.next_frame()
    assert reset == Frame(None, "reset", {"last_event_id": 10**9})
    assert snapshot is not None
    assert snapshot.data["id"] == token
    assert session_id.encode() not in gone.raw
    bad = await client.get(shared_events(web, token), headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


async def test_revoking_ends_every_viewer_with_revoked_while_the_owner_tab_goes_on(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    async with (
        open_raw(client, owner_events(web, session_id)) as owner,
        open_raw(client, shared_events(web, token)) as viewer1,
        open_raw(client, shared_events(web, token)) as viewer2,
    ):
        for stream in (owner, viewer1, viewer2):
            await stream.next_frame()
        await send_message(client, gateway.url, session_id, "before")
        before = await owner.until("done")
        for viewer in (viewer1, viewer2):
            assert await viewer.until("done") == before

        revoked = await client.delete(f"{gateway.url}/api/sessions/{session_id}/share")
        assert revoked.status_code == 204
        for viewer in (viewer1, viewer2):
            assert await viewer.next_frame() == Frame(None, "revoked", {})
            assert await viewer.next_frame() is None
            assert viewer.ended
            assert viewer.raw.endswith(b"event: revoked\ndata: {}\n\n")

        # The owner's tab is still open, heard nothing of it, and goes on in order.
        await send_message(client, gateway.url, session_id, "after")
        after = await owner.until("done")
    frames = before + after
    assert [f.id for f in frames] == list(range(1, len(frames) + 1))
    assert b"revoked" not in owner.raw
    assert reply_text(after) == fake.OK_TEXT

    for url in (f"{web.url}/api/shared/{token}", shared_events(web, token)):
        response = await client.get(url)
        assert response.status_code == 404, url
        assert response.json() == {"detail": "No such share link (it may have been revoked)"}
    # A new link works; the old one stays dead.
    new_token = await share(client, gateway.url, session_id)
    assert new_token != token
    assert (await client.get(f"{web.url}/api/shared/{new_token}")).status_code == 200
    assert (await client.get(f"{web.url}/api/shared/{token}")).status_code == 404


async def test_unknown_and_malformed_tokens_and_writes_are_refused(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    for bad in ("A" * 32, session_id, "short", "x" * 33):
        for url in (f"{web.url}/api/shared/{bad}", shared_events(web, bad)):
            response = await client.get(url)
            assert response.status_code == 404, (bad, url, response.text)
            assert response.json() == {"detail": "No such share link (it may have been revoked)"}
    # A session id is no token, and a token no session id.
    assert (await client.get(owner_events(web, token))).status_code == 404
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for url in (f"{web.url}/api/shared/{token}", shared_events(web, token)):
            response = await client.request(method, url, json={"content": "hi"})
            assert response.status_code in (404, 405), (method, url, response.text)
    assert (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()["messages"] == []


async def test_the_read_only_page_is_the_page_for_anyone(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    page = await client.get(f"{web.url}/r/{token}")
    index = await client.get(f"{web.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.content == index.content
    assert session_id.encode() not in page.content
    assert (await client.get(f"{web.url}/r/not-a-token")).status_code == 404


async def test_deleting_the_session_ends_its_viewers_and_its_link(
    client: httpx.AsyncClient, gateway: Service, web: Service, redis: Redis
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    async with open_raw(client, shared_events(web, token)) as viewer:
        await viewer.next_frame()
        deleted = await client.delete(f"{gateway.url}/api/sessions/{session_id}")
        assert deleted.status_code == 204, deleted.text
        # Like every tab: `deleted` (a logged event, with its id), then the stream ends.
        assert await viewer.next_frame() == Frame(1, "deleted", {})
        assert await viewer.next_frame() is None
    assert session_id.encode() not in viewer.raw
    assert await redis.exists(ShareKeys(token).link) == 0
    for url in (f"{web.url}/api/shared/{token}", shared_events(web, token)):
        assert (await client.get(url)).status_code == 404, url
    # Sharing a session that is gone is a 404 too.
    assert (await client.post(f"{gateway.url}/api/sessions/{session_id}/share")).status_code == 404


@pytest.fixture(scope="module")
def capped_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server_url, "WEB_MAX_VIEWERS_PER_SHARE": "2"}
    with run_service("web", env, service_logs) as service:
        yield service


async def test_viewers_beyond_the_cap_get_429_with_retry_after(
    client: httpx.AsyncClient, gateway: Service, capped_web: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    token = await share(client, gateway.url, session_id)
    other = await share(client, gateway.url, await create_session(client, gateway.url))
    url = shared_events(capped_web, token)
    async with open_raw(client, url) as first, open_raw(client, url) as second:
        await first.next_frame(), await second.next_frame()
        refused = await client.get(url)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert refused.json() == {
            "detail": "This share link has 2 viewers here already; retry later"
        }
        # Per link: another link, and the owner's own tabs, are not counted.
        async with open_raw(client, shared_events(capped_web, other)) as elsewhere:
            assert (await elsewhere.next_frame()) is not None
        async with open_raw(client, owner_events(capped_web, session_id)) as owner:
            assert (await owner.next_frame()) is not None
    # A viewer that left frees its place.
    async with open_raw(client, url) as again:
        snapshot = await again.next_frame()
    assert snapshot is not None
    assert snapshot.data["id"] == token


async def test_sharing_under_site_password_needs_no_login_to_watch(
    client: httpx.AsyncClient, locked_gateway: Service, locked_web: Service
) -> None:
    cookie = with_cookie(await log_in(client, locked_gateway.url))
    made = await client.post(f"{locked_gateway.url}/api/sessions", json={}, headers=cookie)
    session_id = made.json()["id"]
    unauthorized = await client.post(f"{locked_gateway.url}/api/sessions/{session_id}/share")
    assert unauthorized.status_code == 401  # sharing is the owner's
    shared = await client.post(
        f"{locked_gateway.url}/api/sessions/{session_id}/share", headers=cookie
    )
    assert shared.status_code == 201
    token = shared.json()["token"]
    async with httpx.AsyncClient(timeout=_WITHIN) as stranger:
        assert (await stranger.get(f"{locked_web.url}/r/{token}")).status_code == 200
        await _a_stranger_watches_the_owner_send(
            client, stranger, (locked_gateway, locked_web), session_id, token, cookie
        )
        # The session itself stays closed to the stranger.
        assert (await stranger.get(owner_events(locked_web, session_id))).status_code == 401


async def _a_stranger_watches_the_owner_send(
    client: httpx.AsyncClient,
    stranger: httpx.AsyncClient,
    services: tuple[Service, Service],
    session_id: str,
    token: str,
    owner: dict[str, str],
) -> None:
    """Through the link only, ``stranger`` gets the snapshot, then the reply to the message
    the owner (``owner``'s headers) sends, and never the session id."""
    gateway, web = services
    snapshot = await stranger.get(f"{web.url}/api/shared/{token}")
    assert (snapshot.status_code, snapshot.json()["id"]) == (200, token)
    async with open_raw(stranger, shared_events(web, token)) as viewer:
        await viewer.next_frame()
        sent = await client.post(
            f"{gateway.url}/api/sessions/{session_id}/messages",
            json={"content": "hello"},
            headers=owner,
        )
        assert sent.status_code == 202
        frames = await viewer.until("done")
    assert frames[0].data["message"]["content"] == "hello"
    assert session_id.encode() not in viewer.raw + snapshot.content


@pytest.fixture(scope="module")
def accounts_services(
    redis_server_url: str, service_logs: Path
) -> Iterator[tuple[Service, Service]]:
    """A demo gateway and a web in accounts mode."""
    env = {"REDIS_URL": redis_server_url, "CHATRELAY_ACCOUNTS": "1"}
    with (
        run_service("gateway", {**env, "GATEWAY_DEMO_TOKEN_DELAY": "0"}, service_logs) as gateway,
        run_service("web", env, service_logs) as web,
    ):
        yield gateway, web


async def test_with_accounts_only_the_owner_shares_and_anyone_watches(
    client: httpx.AsyncClient, accounts_services: tuple[Service, Service], redis_server_url: str
) -> None:
    gateway, web = accounts_services
    alice = accounts.with_cookie(
        await accounts.log_in(client, gateway.url, accounts.add_user(redis_server_url, "a"), "a")
    )
    bob = accounts.with_cookie(
        await accounts.log_in(client, gateway.url, accounts.add_user(redis_server_url, "b"), "b")
    )
    session_id = (await client.post(f"{gateway.url}/api/sessions", json={}, headers=alice)).json()[
        "id"
    ]
    share_url = f"{gateway.url}/api/sessions/{session_id}/share"
    assert (await client.post(share_url, headers=bob)).status_code == 404
    shared = await client.post(share_url, headers=alice)
    assert shared.status_code == 201
    token = shared.json()["token"]
    assert (await client.delete(share_url, headers=bob)).status_code == 404
    async with httpx.AsyncClient(timeout=_WITHIN) as stranger:
        await _a_stranger_watches_the_owner_send(
            client, stranger, (gateway, web), session_id, token, alice
        )
        # Bob's own session-id route stays closed; the link is all he may have.
        assert (await client.get(owner_events(web, session_id), headers=bob)).status_code == 404
