"""The gateway's public API through a real uvicorn process: status codes and exact bodies."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from chatrelay_gateway._demo import demo_reply

from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service
from tests.support.sse import collect_until, open_events, reply_text


async def test_create_then_read_a_session(client: httpx.AsyncClient, gateway: Service) -> None:
    empty = await client.post(f"{gateway.url}/api/sessions", content=b"")
    assert empty.status_code == 201
    session_id = await create_session(
        client, gateway.url, system="Be brief.", model="ok", temperature=0.2
    )
    assert len(session_id) >= 22  # 16 random bytes, URL-safe
    assert session_id.replace("-", "").replace("_", "").isalnum()
    response = await client.get(f"{gateway.url}/api/sessions/{session_id}")
    assert response.status_code == 200
    assert response.json() == {
        "id": session_id,
        "settings": {"system": "Be brief.", "model": "ok", "temperature": 0.2},
        "messages": [],
        "seq": 0,
    }
    # Without a model the session takes the configured OPENAI_MODEL.
    default = await client.get(f"{gateway.url}/api/sessions/{empty.json()['id']}")
    assert default.json()["settings"] == {"system": None, "model": "ok", "temperature": None}


async def test_a_finished_conversation_is_kept_in_order(
    client: httpx.AsyncClient, gateway: Service, web: Service, fake_upstream: fake.FakeUpstream
) -> None:
    session_id = await create_session(client, gateway.url, system="Be brief.", temperature=0.5)
    async with open_events(client, web.url, session_id) as stream:
        await anext(stream)
        first = await send_message(client, gateway.url, session_id, "one")
        first_events = await collect_until(stream, "done")
        fake_upstream.reset()
        second = await send_message(client, gateway.url, session_id, "two")
        events = await collect_until(stream, "done")
    session = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    # When each message was added and how each reply went, as their events said live.
    lived = [(e.name, e.data) for e in first_events + events]
    starts = [data["created_at"] for name, data in lived if name == "start"]
    # A message and its reply are added together, in one write.
    created = [at for at in starts for _ in ("message", "reply")]
    reply_meta = {"model": "ok", "finish_reason": "stop", "usage": fake.USAGE, "error": None}
    timings = [data["timing"] for name, data in lived if name == "done"]
    assert [m.pop("created_at") for m in session["messages"]] == created
    assert [
        {key: m.pop(key) for key in (*reply_meta, "reasoning", "timing")}
        for m in session["messages"][1::2]
    ] == [{**reply_meta, "reasoning": "", "timing": timing} for timing in timings]
    assert session["messages"] == [
        {"id": first["message_id"], "role": "user", "content": "one", "status": "complete"},
        {
            "id": first["reply_id"],
            "role": "assistant",
            "content": fake.OK_TEXT,
            "status": "complete",
        },
        {"id": second["message_id"], "role": "user", "content": "two", "status": "complete"},
        {
            "id": second["reply_id"],
            "role": "assistant",
            "content": fake.OK_TEXT,
            "status": "complete",
        },
    ]
    assert session["seq"] == events[-1].id
    # The upstream got the system prompt and the whole conversation, streamed with usage.
    (request,) = fake_upstream.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": fake.OK_TEXT},
        {"role": "user", "content": "two"},
    ]
    assert request.body["temperature"] == 0.5
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        (b'{"content": ', 400, "Request body is not valid JSON: Input data was truncated"),
        (
            b"not json",
            400,
            "Request body is not valid JSON: JSON is malformed: invalid character (byte 4)",
        ),
        (b"[]", 422, "Invalid request body: Expected `object`, got `array`"),
        (b"{}", 422, "Invalid request body: Object missing required field `content`"),
        (
            b'{"content": 5}',
            422,
            "Invalid request body: Expected `str`, got `int` - at `$.content`",
        ),
        (
            b'{"content": ""}',
            422,
            "Invalid request body: Expected `str` of length >= 1 - at `$.content`",
        ),
        (b'{"content": "  \\n "}', 422, "Message content must not be blank"),
        (
            b'{"content": "x", "role": "system"}',
            422,
            "Invalid request body: Object contains unknown field `role`",
        ),
    ],
)
async def test_bad_messages_get_a_clear_4xx(
    client: httpx.AsyncClient, gateway: Service, body: bytes, status: int, detail: str
) -> None:
    session_id = await create_session(client, gateway.url)
    response = await client.post(
        f"{gateway.url}/api/sessions/{session_id}/messages",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_an_oversized_message_is_413_and_the_limit_is_32_kib(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    url = f"{gateway.url}/api/sessions/{session_id}/messages"
    too_big = await client.post(url, json={"content": "a" * 32 * 1024})
    assert too_big.status_code == 413
    assert too_big.json() == {"detail": "Request body is larger than 32768 bytes"}
    fits = await client.post(url, json={"content": "a" * (32 * 1024 - 20)})
    assert fits.status_code == 202


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{", 400),
        (b'{"temperature": 2.5}', 422),
        (b'{"temperature": "hot"}', 422),
        (b'{"model": ""}', 422),
        (b'{"system": 1}', 422),
        (b'{"colour": "red"}', 422),
    ],
)
async def test_bad_session_settings_get_a_clear_4xx(
    client: httpx.AsyncClient, gateway: Service, body: bytes, status: int
) -> None:
    response = await client.post(f"{gateway.url}/api/sessions", content=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)
    assert set(response.json()) == {"detail"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("POST", "/messages"),
        ("POST", "/stop"),
        ("POST", "/regenerate"),
        ("DELETE", "/messages"),
        ("PATCH", ""),
    ],
)
async def test_unknown_sessions_are_404(
    client: httpx.AsyncClient, gateway: Service, method: str, path: str
) -> None:
    body = b'{"content": "hi"}' if path == "/messages" else b"{}"
    for session_id in ("A" * 22, "nope"):
        response = await client.request(
            method,
            f"{gateway.url}/api/sessions/{session_id}{path}",
            content=None if method in ("GET", "DELETE") else body,
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"detail": "No such session"}


async def test_one_reply_at_a_time_per_session(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    async with open_events(client, web.url, session_id) as stream:
        await anext(stream)
        await send_message(client, gateway.url, session_id, "first")
        busy = await client.post(
            f"{gateway.url}/api/sessions/{session_id}/messages", json={"content": "second"}
        )
        assert busy.status_code == 409
        assert busy.json() == {"detail": "A reply is already streaming in this session"}
        await client.post(f"{gateway.url}/api/sessions/{session_id}/stop")
        await collect_until(stream, "done")
    await send_message(client, gateway.url, session_id, "third")


async def test_concurrent_sends_start_exactly_one_reply(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="slow")
    url = f"{gateway.url}/api/sessions/{session_id}/messages"
    responses = await asyncio.gather(
        *(client.post(url, json={"content": f"m{i}"}) for i in range(8))
    )
    assert sorted(r.status_code for r in responses) == [202] + [409] * 7
    await client.post(f"{gateway.url}/api/sessions/{session_id}/stop")


async def test_the_demo_model_answers_without_a_key(
    client: httpx.AsyncClient, demo_gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, demo_gateway.url)
    async with open_events(client, web.url, session_id) as stream:
        snapshot = await anext(stream)
        ids = await send_message(client, demo_gateway.url, session_id, "Hello there")
        events = await collect_until(stream, "done")
    assert snapshot.data["settings"]["model"] == "chatrelay-demo"
    assert events[1].data == {
        "reply_id": ids["reply_id"],
        "model": "chatrelay-demo",
        "created_at": events[0].data["message"]["created_at"],
    }
    assert reply_text(events, ids["reply_id"]) == demo_reply("Hello there")
    assert "demo model" in demo_reply("x")
    assert events[-1].data["finish_reason"] == "stop"
    assert sum(e.name == "delta" for e in events) > 20  # token by token, not one block


DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    ("path", "body", "status", "detail"),
    [
        (
            "/messages",
            b'{"content": "\\ud800"}',
            400,
            "Request body is not valid JSON: \\ud800 is a lone surrogate",
        ),
        (
            "/messages",
            b'{"content": "ok \\udfff then"}',
            400,
            "Request body is not valid JSON: \\udfff is a lone surrogate",
        ),
        (
            "/messages",
            b'{"content": "caf\xe9"}',
            400,
            "Request body is not valid JSON: it is not UTF-8",
        ),
        ("/messages", b"", 400, "Request body is not valid JSON: it is empty"),
        (
            "/messages",
            b'{"content": ' + DEEP + b"}",
            400,
            "Request body is not valid JSON: it is nested too deeply",
        ),
        ("", DEEP, 400, "Request body is not valid JSON: it is nested too deeply"),
        (
            "",
            b'{"temperature": 1e999}',
            400,
            "Request body is not valid JSON: Number out of range - at `$[...]`",
        ),
        (
            "",
            b'{"temperature": ' + b"9" * 400 + b"}",
            422,
            "Invalid request body: Number out of range - at `$.temperature`",
        ),
        (
            "",
            b'{"temperature": -' + b"9" * 5000 + b"}",
            400,
            "Request body is not valid JSON: Integer value out of range - at `$[...]`",
        ),
        (
            "/messages",
            b'{"content": "x", "replace_from": ' + b"1" * 5000 + b"}",
            400,
            "Request body is not valid JSON: Integer value out of range - at `$[...]`",
        ),
        ("", b"null", 422, "Invalid request body: Expected `object`, got `null`"),
    ],
)
async def test_hostile_bodies_get_a_clear_4xx(
    client: httpx.AsyncClient, gateway: Service, path: str, body: bytes, status: int, detail: str
) -> None:
    """PATCH ("") and send ("/messages"): lone surrogates, bad UTF-8, deep nesting, giant
    numbers. Never a 500."""
    session_id = await create_session(client, gateway.url)
    response = await client.request(
        "PATCH" if path == "" else "POST",
        f"{gateway.url}/api/sessions/{session_id}{path}",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert (response.status_code, response.json()) == (status, {"detail": detail})


async def test_a_valid_surrogate_pair_is_a_character(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    session_id = await create_session(client, gateway.url)
    url = f"{gateway.url}/api/sessions/{session_id}"
    response = await client.patch(url, content=b'{"system": "\\ud83d\\ude00 \\\\ud800"}')
    assert response.status_code == 200
    assert response.json()["settings"]["system"] == "\U0001f600 \\ud800"


async def test_concurrent_patches_of_different_fields_both_survive(
    client: httpx.AsyncClient, gateway: Service
) -> None:
    for _ in range(10):
        session_id = await create_session(client, gateway.url)
        url = f"{gateway.url}/api/sessions/{session_id}"
        system, temperature = await asyncio.gather(
            client.patch(url, json={"system": "Be brief."}),
            client.patch(url, json={"temperature": 1.5}),
        )
        assert (system.status_code, temperature.status_code) == (200, 200)
        settings = (await client.get(url)).json()["settings"]
        assert settings == {"system": "Be brief.", "model": "ok", "temperature": 1.5}


async def test_the_demo_model_answers_a_conversation_over_the_message_limit(
    client: httpx.AsyncClient, demo_gateway: Service, web: Service
) -> None:
    """The gateway sends the demo endpoint the whole conversation: past 32 KiB of JSON it
    must still answer (its own, larger limit applies there)."""
    session_id = await create_session(client, demo_gateway.url)
    long_message = "word " * 6000  # 30,000 characters: under the message limit
    async with open_events(client, web.url, session_id) as stream:
        await anext(stream)
        for round_ in range(3):
            ids = await send_message(
                client, demo_gateway.url, session_id, f"{round_} {long_message}"
            )
            events = await collect_until(stream, "done", "error")
            assert events[-1].name == "done", events[-1]
            assert reply_text(events, ids["reply_id"]) == demo_reply(f"{round_} {long_message}")
    snapshot = (await client.get(f"{demo_gateway.url}/api/sessions/{session_id}")).json()
    assert len(snapshot["messages"]) == 6
    assert sum(len(m["content"]) for m in snapshot["messages"]) > 3 * 30_000


async def test_the_demo_endpoint_is_still_bounded(
    client: httpx.AsyncClient, demo_gateway: Service
) -> None:
    url = f"{demo_gateway.url}/demo/v1/chat/completions"
    limit = 16 * 1024 * 1024
    too_big = await client.post(url, content=b'{"messages": []' + b" " * limit + b"}")
    assert (too_big.status_code, too_big.json()) == (
        413,
        {"detail": f"Request body is larger than {limit} bytes"},
    )
    malformed = await client.post(url, json={"messages": [{"content": "no role"}]})
    missing_role = "Object missing required field `role` - at `$.messages[0]`"
    assert (malformed.status_code, malformed.json()) == (
        422,
        {"detail": f"Invalid request body: {missing_role}"},
    )
