"""The conversation list, rename, delete and export over real services: gateway and web
processes on a real Redis, the fake upstream behind them. Each test's ``client`` is one
browser: it keeps the owner cookie the first answer sets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE, open_redis
from chatrelay_litestar import OWNER_COOKIE, is_anonymous_owner

from tests.conftest import SITE_PASSWORD, keyed_gateway_env
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service, run_service
from tests.support.sse import collect_until, open_events


@pytest.fixture(scope="module")
def bounded_gateway(
    redis_server_url: str, fake_upstream_server: fake.FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """A gateway whose list pages hold 5 at most and whose search looks at 3 sessions."""
    env = keyed_gateway_env(
        redis_server_url,
        fake_upstream_server.base_url,
        OPENAI_MODEL="ok",
        GATEWAY_SESSIONS_PAGE_MAX="5",
        GATEWAY_SEARCH_MAX_SESSIONS="3",
        GATEWAY_SEARCH_MAX_QUERY_CHARS="50",
    )
    with run_service("gateway", env, service_logs) as service:
        yield service


async def _finished(client: httpx.AsyncClient, gateway: Service, web: Service, text: str) -> str:
    """A new session of ``client``'s owner with one finished exchange."""
    session_id = await create_session(client, gateway.url)
    async with open_events(client, web.url, session_id) as events:
        await anext(events)
        await send_message(client, gateway.url, session_id, text)
        await collect_until(events, "done")
    await asyncio.sleep(0.002)  # activity is kept in milliseconds: the next one is newer
    return session_id


async def _page(client: httpx.AsyncClient, gateway: Service, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{gateway.url}/api/sessions", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def _walk(client: httpx.AsyncClient, gateway: Service, **params: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        page = await _page(client, gateway, **params, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in page["sessions"]]
        if page["next"] is None:
            return seen
        cursor = page["next"]
    raise AssertionError("the cursor walk did not end")


async def test_a_browser_gets_an_owner_cookie_once_and_keeps_its_list(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    first = await client.post(f"{gateway.url}/api/sessions", json={})
    assert first.status_code == 201
    owner = first.cookies[OWNER_COOKIE]
    assert is_anonymous_owner(owner)
    assert "HttpOnly" in first.headers["set-cookie"]
    assert "SameSite=Lax" in first.headers["set-cookie"]
    second = await client.post(f"{gateway.url}/api/sessions", json={})
    assert "set-cookie" not in second.headers
    listed = await client.get(f"{gateway.url}/api/sessions")
    assert "set-cookie" not in listed.headers
    assert [s["id"] for s in listed.json()["sessions"]] == [
        second.json()["id"],
        first.json()["id"],
    ]
    assert listed.json()["next"] is None
    # A request without the cookie is another browser: a new owner, an empty list.
    async with httpx.AsyncClient(timeout=10) as stranger:
        theirs = await stranger.get(f"{gateway.url}/api/sessions")
        assert theirs.json() == {"sessions": [], "next": None}
        assert theirs.cookies[OWNER_COOKIE] != owner


async def test_the_list_is_newest_activity_first_and_pages_visit_each_once(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    sessions = [await _finished(client, gateway, web, f"question {n}") for n in range(5)]
    await _finished_again(client, gateway, web, sessions[1])
    newest_first = [sessions[1], sessions[4], sessions[3], sessions[2], sessions[0]]
    page = await _page(client, gateway)
    assert [item["id"] for item in page["sessions"]] == newest_first
    top = page["sessions"][0]
    assert top == {
        "id": sessions[1],
        "title": "question 1",
        "updated_at": top["updated_at"],
        "message_count": 4,
        "model": "ok",
    }
    assert top["updated_at"] > page["sessions"][1]["updated_at"]
    for limit in (1, 2, 4):
        assert await _walk(client, gateway, limit=limit) == newest_first
    two = await _page(client, gateway, limit=2)
    assert len(two["sessions"]) == 2
    assert isinstance(two["next"], str)


async def _finished_again(
    client: httpx.AsyncClient, gateway: Service, web: Service, session_id: str
) -> None:
    async with open_events(client, web.url, session_id) as events:
        await anext(events)
        await send_message(client, gateway.url, session_id, "and again")
        await collect_until(events, "done")


async def test_search_finds_titles_and_message_text_of_the_callers_own_only(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    trip = await _finished(client, gateway, web, "Trip to Zanzibar\nplease plan it")
    await client.patch(f"{gateway.url}/api/sessions/{trip}", json={"title": "Holiday PLANS"})
    soup = await _finished(client, gateway, web, "a recipe for Pumpkin soup")
    await _finished(client, gateway, web, "unrelated")

    async def found(query: str, searcher: httpx.AsyncClient = client) -> list[str]:
        return await _walk(searcher, gateway, q=query)

    assert await found("holiday plans") == [trip]
    assert await found("ZANZIBAR") == [trip]  # its first message, no longer its title
    assert await found("pumpkin SOUP") == [soup]
    assert await found(fake.OK_TEXT.upper()[:12]) == (await found(fake.OK_TEXT[:12]))
    assert len(await found(fake.OK_TEXT[:12])) == 3  # every reply said it
    assert await found("no such words anywhere") == []
    async with httpx.AsyncClient(timeout=10) as stranger:
        await _finished(stranger, gateway, web, "Zanzibar too")
        assert len(await found("zanzibar", stranger)) == 1
    assert await found("zanzibar") == [trip]


async def test_bounds_come_from_the_environment(
    client: httpx.AsyncClient, bounded_gateway: Service, web: Service
) -> None:
    oldest = await _finished(client, bounded_gateway, web, "needle, oldest")
    newer = [await _finished(client, bounded_gateway, web, f"needle {n}") for n in range(3)]
    # The search looks at the newest 3 sessions only.
    assert await _walk(client, bounded_gateway, q="needle") == newer[::-1]
    assert oldest in await _walk(client, bounded_gateway, limit=5)
    refused = await client.get(f"{bounded_gateway.url}/api/sessions", params={"limit": 6})
    assert refused.status_code == 422
    assert refused.json() == {"detail": "limit must be 1 to 5"}
    long_query = await client.get(f"{bounded_gateway.url}/api/sessions", params={"q": "x" * 51})
    assert long_query.status_code == 422
    assert long_query.json() == {"detail": "q must be at most 50 characters"}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 101}, 422),
        ({"limit": 10**9}, 422),
        ({"limit": -1}, 422),
        ({"limit": "many"}, 422),
        ({"cursor": "!!!"}, 400),
        ({"cursor": "x" * 10_000}, 400),
        ({"cursor": base64.urlsafe_b64encode(b"1.short").decode()}, 400),
        ({"cursor": base64.urlsafe_b64encode(b"\xff" * 30).decode()}, 400),
        ({"q": "x" * 10_000}, 422),
    ],
)
async def test_hostile_list_parameters_get_a_clear_4xx(
    client: httpx.AsyncClient, gateway: Service, params: dict[str, Any], status: int
) -> None:
    response = await client.get(f"{gateway.url}/api/sessions", params=params)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)


async def test_a_rename_reaches_every_tab_and_the_snapshot(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await _finished(client, gateway, web, "First line\nsecond line")
    url = f"{gateway.url}/api/sessions/{session_id}"
    assert (await client.get(url)).json()["title"] == "First line"
    async with open_events(client, web.url, session_id) as tab:
        snapshot = await anext(tab)
        assert snapshot.data["title"] == "First line"
        renamed = await client.patch(url, json={"title": "  Trip\tplans\n\u202e "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json() == {
            "settings": {"system": None, "model": "ok", "temperature": None},
            "title": "Trip plans",
        }
        [event] = await collect_until(tab, "title")
        assert (event.id, event.name, event.data) == (
            snapshot.data["seq"] + 1,
            "title",
            {"title": "Trip plans"},
        )
    assert (await client.get(url)).json()["title"] == "Trip plans"
    async with open_events(client, web.url, session_id) as reloaded:
        assert (await anext(reloaded)).data["title"] == "Trip plans"
    before = snapshot.data["seq"]
    async with open_events(client, web.url, session_id, last_event_id=before) as resumed:
        assert (await anext(resumed)).name == "title"
    listed = await _page(client, gateway, limit=1)
    assert listed["sessions"][0]["title"] == "Trip plans"
    # Settings alone leave the title out of the answer, as before.
    only_settings = await client.patch(url, json={"temperature": 0.5})
    assert only_settings.json() == {"settings": {"system": None, "model": "ok", "temperature": 0.5}}


@pytest.mark.parametrize(
    "body", [{"title": ""}, {"title": " \n\t "}, {"title": "x" * 201}, {"title": "x" * 5000}]
)
async def test_a_title_must_hold_1_to_200_characters(
    client: httpx.AsyncClient, gateway: Service, body: dict[str, str]
) -> None:
    session_id = await create_session(client, gateway.url)
    response = await client.patch(f"{gateway.url}/api/sessions/{session_id}", json=body)
    assert response.status_code == 422, response.text
    assert "title" in response.json()["detail"]
    assert "title" not in (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()


async def test_delete_with_a_tab_open_stops_the_reply_and_leaves_nothing(
    client: httpx.AsyncClient,
    gateway: Service,
    web: Service,
    fake_upstream: fake.FakeUpstream,
    redis_server_url: str,
) -> None:
    session_id = await create_session(client, gateway.url, model="flood")
    url = f"{gateway.url}/api/sessions/{session_id}"
    async with open_events(client, web.url, session_id) as tab:
        await anext(tab)
        await send_message(client, gateway.url, session_id, "never ending")
        await collect_until(tab, "delta")
        deleted = await client.delete(url)
        assert deleted.status_code == 204, deleted.text
        rest = [event async for event in tab]  # the stream ends after `deleted`
    assert rest[-1].name == "deleted"
    assert rest[-1].data == {}
    assert {event.name for event in rest[:-1]} <= {"delta"}
    await fake_upstream.wait_for_disconnect_async(timeout=10)
    assert fake_upstream.client_disconnects == ["flood"]
    await asyncio.sleep(0.5)  # anything the stopped reply might still write would land now
    async with open_redis(redis_server_url) as redis:
        assert [key async for key in redis.scan_iter(match=f"*{session_id}*")] == []
        assert await redis.zscore("chatrelay:leases", session_id) is None
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url)).status_code == 404
    assert (await client.patch(url, json={"title": "back"})).status_code == 404
    assert (await client.get(f"{url}/export")).status_code == 404
    events = await client.get(f"{web.url}/api/sessions/{session_id}/events")
    assert events.status_code == 404
    assert session_id not in await _walk(client, gateway)


async def test_export_as_markdown_and_json(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await _finished(client, gateway, web, "Hello: world/é\nmore text")
    url = f"{gateway.url}/api/sessions/{session_id}"
    snapshot = (await client.get(url)).json()
    user, reply = snapshot["messages"]

    exported = await client.get(f"{url}/export", params={"format": "markdown"})
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "text/markdown; charset=utf-8"
    assert exported.headers["content-disposition"] == 'attachment; filename="Hello_ world.md"'
    assert exported.text == (
        "# Hello: world/é\n"
        "\n## User\n"
        f"_{user['created_at']}_\n"
        "\nHello: world/é\nmore text\n"
        "\n## Assistant · ok\n"
        f"_{reply['created_at']}_\n"
        f"\n{fake.OK_TEXT}\n"
    )
    default = await client.get(f"{url}/export")
    assert default.text == exported.text

    as_json = await client.get(f"{url}/export", params={"format": "json"})
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["content-disposition"] == 'attachment; filename="Hello_ world.json"'
    assert as_json.json() == snapshot

    other = await client.get(f"{url}/export", params={"format": "pdf"})
    assert other.status_code == 422
    assert other.json() == {"detail": "format must be markdown or json"}


async def test_an_untitled_session_exports_with_a_default_name(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    exported = await client.get(f"{gateway.url}/api/sessions/{session_id}/export")
    assert exported.text == "# Untitled conversation\n"
    assert exported.headers["content-disposition"] == 'attachment; filename="conversation.md"'


async def test_site_password_logins_share_one_list(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    tokens = []
    for address in ("10.11.0.1", "10.11.0.2"):
        login = await client.post(
            f"{locked_gateway.url}/api/login",
            json={"password": SITE_PASSWORD},
            headers={"x-forwarded-for": address},
        )
        assert login.status_code == 204, login.text
        tokens.append(login.cookies[AUTH_COOKIE])
    first, second = ({"cookie": f"{AUTH_COOKIE}={token}"} for token in tokens)
    created = await client.post(f"{locked_gateway.url}/api/sessions", json={}, headers=first)
    assert created.status_code == 201
    assert OWNER_COOKIE not in created.cookies  # no anonymous owner behind a login
    lists = [
        await client.get(f"{locked_gateway.url}/api/sessions", headers=headers)
        for headers in (first, second)
    ]
    assert lists[0].json() == lists[1].json()
    assert lists[0].json()["sessions"][0]["id"] == created.json()["id"]
    denied = await client.get(f"{locked_gateway.url}/api/sessions")
    assert denied.status_code == 401


async def test_the_page_gives_a_new_browser_its_owner_and_the_api_lists_by_it(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    page = await client.get(f"{web.url}/")
    assert page.status_code == 200
    owner = page.cookies[OWNER_COOKIE]
    assert is_anonymous_owner(owner)
    again = await client.get(f"{web.url}/s/{'a' * 22}")
    assert "set-cookie" not in again.headers
    # The gateway (same site, behind the edge) takes the page's owner: no second cookie.
    created = await client.post(f"{gateway.url}/api/sessions", json={})
    assert "set-cookie" not in created.headers
    listed = await _page(client, gateway)
    assert [item["id"] for item in listed["sessions"]] == [created.json()["id"]]
    # Behind an HTTPS edge the cookie is Secure.
    async with httpx.AsyncClient(timeout=10) as behind_tls:
        secure = await behind_tls.get(f"{web.url}/", headers={"x-forwarded-proto": "https"})
        assert "Secure" in secure.headers["set-cookie"]


async def test_an_export_says_how_a_reply_ended(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="midstream_error")
    async with open_events(client, web.url, session_id) as events:
        await anext(events)
        await send_message(client, gateway.url, session_id, "go")
        [*_, failed] = await collect_until(events, "error")
    snapshot = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    user, reply = snapshot["messages"]
    exported = await client.get(f"{gateway.url}/api/sessions/{session_id}/export")
    assert exported.text == (
        "# go\n"
        "\n## User\n"
        f"_{user['created_at']}_\n"
        "\ngo\n"
        "\n## Assistant · midstream_error (error)\n"
        f"_{reply['created_at']}_\n"
        f"\n{fake.MIDSTREAM_TEXT}\n"
        f"\n> Error: {failed.data['message']}\n"
    )


async def test_any_api_call_of_a_new_browser_gets_its_owner(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    models = await client.get(f"{gateway.url}/api/models")
    assert models.status_code == 200
    owner = models.cookies[OWNER_COOKIE]
    assert is_anonymous_owner(owner)
    created = await client.post(f"{gateway.url}/api/sessions", json={})
    assert "set-cookie" not in created.headers
    listed = await _page(client, gateway)
    assert [item["id"] for item in listed["sessions"]] == [created.json()["id"]]
    async with httpx.AsyncClient(timeout=10) as stranger:
        health = await stranger.get(f"{gateway.url}/healthz")
        assert "set-cookie" not in health.headers  # not an API call
