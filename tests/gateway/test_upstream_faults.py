"""Every upstream behaviour, end to end: the reply ends in the right ``done`` or ``error``
event for every tab, the partial text stays in the session, and the next message works."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import TEST_API_KEY
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service
from tests.support.sse import Event, collect_until, open_events, reply_text

DONE_CASES = [
    ("ok", fake.OK_TEXT, "stop"),
    ("length", fake.LENGTH_TEXT, "length"),
    ("utf8", fake.UTF8_TEXT, "stop"),
    ("finish_no_done", fake.FINISH_NO_DONE_TEXT, "stop"),
    ("json", fake.JSON_TEXT, "stop"),
]

ERROR_CASES = [
    (
        "midstream_error",
        fake.MIDSTREAM_TEXT,
        "upstream_error",
        f"The upstream failed mid-answer: {fake.MIDSTREAM_ERROR_MESSAGE}",
    ),
    (
        "no_done",
        fake.NO_DONE_TEXT,
        "upstream_incomplete",
        "The upstream ended the answer early; the partial answer is kept",
    ),
    (
        "cut",
        fake.CUT_TEXT,
        "upstream_disconnected",
        "The upstream connection broke; the partial answer is kept",
    ),
    (
        "idle",
        fake.IDLE_TEXT,
        "upstream_timeout",
        "The upstream stopped sending (idle timeout); the partial answer is kept",
    ),
    ("hang", "", "upstream_timeout", "No answer from the upstream within 1.5 s"),
    ("http_401", "", "upstream_auth", "The upstream rejected the API key (HTTP 401): "),
    (
        "http_404",
        "",
        "upstream_not_found",
        "The upstream does not know this model or path (HTTP 404): ",
    ),
    (
        "http_429",
        "",
        "upstream_rate_limited",
        "The upstream is rate limiting (HTTP 429); retry after 7 s: ",
    ),
    ("http_500", "", "upstream_unavailable", "The upstream answered (HTTP 500): "),
    ("http_503", "", "upstream_unavailable", "The upstream answered (HTTP 503): "),
]


async def _one_reply(
    client: httpx.AsyncClient, gateway: Service, web: Service, model: str
) -> tuple[str, str, list[list[Event]]]:
    """Two tabs watch one reply from ``model``: (session id, reply id, each tab's events)."""
    session_id = await create_session(client, gateway.url, model=model)
    async with (
        open_events(client, web.url, session_id) as tab1,
        open_events(client, web.url, session_id) as tab2,
    ):
        await anext(tab1), await anext(tab2)
        reply_id = (await send_message(client, gateway.url, session_id, "hi"))["reply_id"]
        seen = [await collect_until(tab, "done", "error") for tab in (tab1, tab2)]
    return session_id, reply_id, seen


async def _assert_kept_and_usable(
    client: httpx.AsyncClient,
    gateway: Service,
    session_id: str,
    reply_id: str,
    text: str,
    status: str,
    live: list[Event],
) -> None:
    """After a reload the reply shows what its events said live: model and time from
    ``start``; finish reason, usage and timing from ``done``, or the ``error``."""
    session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    [start] = [e.data for e in live if e.name == "start"]
    end = live[-1].data
    assert session["messages"][-1] == {
        "id": reply_id,
        "role": "assistant",
        "content": text,
        "status": status,
        "created_at": start["created_at"],
        "model": start["model"],
        "reasoning": "",
        "finish_reason": end.get("finish_reason"),
        "usage": end.get("usage"),
        "timing": end.get("timing"),
        "error": {"code": end["code"], "message": end["message"]} if "code" in end else None,
    }
    # The session takes the next message (the model is switched to one that works).
    patched = await client.patch(f"{gateway.url}/api/sessions/{session_id}", json={"model": "ok"})
    assert patched.status_code == 200
    await send_message(client, gateway.url, session_id, "next")


@pytest.mark.parametrize(("model", "text", "finish_reason"), DONE_CASES)
async def test_answers_end_with_done(
    client: httpx.AsyncClient,
    gateway: Service,
    web: Service,
    model: str,
    text: str,
    finish_reason: str,
) -> None:
    session_id, reply_id, (tab1, tab2) = await _one_reply(client, gateway, web, model)
    assert tab1 == tab2
    assert reply_text(tab1, reply_id) == text
    assert tab1[-1].name == "done"
    assert tab1[-1].data["finish_reason"] == finish_reason
    await _assert_kept_and_usable(client, gateway, session_id, reply_id, text, "complete", tab1)


@pytest.mark.parametrize(("model", "text", "code", "message"), ERROR_CASES)
async def test_faults_end_with_an_error_every_tab_sees(
    client: httpx.AsyncClient,
    gateway: Service,
    web: Service,
    model: str,
    text: str,
    code: str,
    message: str,
) -> None:
    session_id, reply_id, (tab1, tab2) = await _one_reply(client, gateway, web, model)
    assert tab1 == tab2
    assert reply_text(tab1, reply_id) == text
    error = tab1[-1]
    assert (error.name, error.data["reply_id"], error.data["code"]) == ("error", reply_id, code)
    assert error.data["message"].startswith(message)
    if model.startswith("http_"):  # the upstream's own words follow
        assert error.data["message"] != message
    await _assert_kept_and_usable(client, gateway, session_id, reply_id, text, "error", tab1)


async def test_an_unreachable_upstream_is_an_error_event(
    client: httpx.AsyncClient, unreachable_gateway: Service, web: Service
) -> None:
    session_id, reply_id, (tab1, _) = await _one_reply(client, unreachable_gateway, web, "ok")
    assert (tab1[-1].name, tab1[-1].data["reply_id"]) == ("error", reply_id)
    assert tab1[-1].data["code"] == "upstream_unreachable"
    await _assert_kept_and_usable(
        client, unreachable_gateway, session_id, reply_id, "", "error", tab1
    )


async def test_the_api_key_never_leaves_the_gateway(
    client: httpx.AsyncClient, gateway: Service, web: Service, fake_upstream: fake.FakeUpstream
) -> None:
    """Runs last in this module: every fault above has been logged by then."""
    session_id, _, (events, _) = await _one_reply(client, gateway, web, "http_401")
    message = events[-1].data["message"]
    assert TEST_API_KEY not in message
    assert re.findall(r"sk-[^\s.]*", message) == ["sk-***"]
    # The fake saw the key: the gateway did send it upstream.
    assert fake_upstream.requests[-1].headers["authorization"] == f"Bearer {TEST_API_KEY}"
    snapshot = await client.get(f"{gateway.url}/api/sessions/{session_id}")
    page = await client.get(f"{web.url}/")
    for text in (snapshot.text, page.text, gateway.log(), web.log()):
        assert TEST_API_KEY not in text
        assert "SECRETSECRET" not in text
