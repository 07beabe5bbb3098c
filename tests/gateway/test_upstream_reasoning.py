"""Reasoning ("thinking") from the upstream: read from ``delta.reasoning_content``,
``delta.reasoning`` or ``<think>…</think>`` at the start of the text (tags cut anywhere);
relayed as ``reasoning`` events before the answer's ``delta`` events, identical in every tab,
kept in the session, never sent back upstream. Also a proxy that refuses ``stream_options``."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from chatrelay_common import Usage
from chatrelay_gateway._upstream import REASONING, Completion, _ThinkTags

from tests.gateway.test_upstream import Run
from tests.support import fake_upstream as fake
from tests.support.api import create_session, send_message
from tests.support.services import Service
from tests.support.sse import Event, collect_until, open_events, reply_text

REASONING_MODELS = ["reasoning", "reasoning_field", "think_tags"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client


@pytest.mark.parametrize("model", REASONING_MODELS)
async def test_each_way_of_sending_reasoning_gives_the_same_pieces(
    client: httpx.AsyncClient, fake_upstream: fake.FakeUpstream, model: str
) -> None:
    run = Run(client, fake_upstream.base_url)
    assert await run(model) == Completion("stop", Usage(**fake.USAGE))
    assert "".join(run.thoughts) == fake.REASONING_TEXT == "The user greets me; greet them back."
    assert "".join(run.pieces) == fake.OK_TEXT
    if model != "think_tags":  # pieces as the upstream cut them
        assert run.thoughts == list(fake.REASONING_PIECES)
        assert run.pieces == list(fake.OK_PIECES)


def _split(text: str, cuts: tuple[int, ...]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def _through_tags(chunks: list[str]) -> tuple[str, str]:
    """(reasoning, text) that ``_ThinkTags`` makes of these chunks, then the end."""
    tags = _ThinkTags()
    pieces = [piece for chunk in chunks for piece in tags.pieces(chunk)]
    pieces += tags.pieces("", end=True)
    thought = "".join(text for kind, text in pieces if kind == REASONING)
    return thought, "".join(text for kind, text in pieces if kind != REASONING)


ANSWER = "<think>a < b, so </th> stays.</think>\n\nThe answer: x<y."


@pytest.mark.parametrize("first", range(1, len(ANSWER)))
def test_think_tags_cut_at_any_two_points_give_the_same_reasoning_and_text(first: int) -> None:
    for second in range(first, len(ANSWER)):
        assert _through_tags(_split(ANSWER, (first, second))) == (
            "a < b, so </th> stays.",
            "The answer: x<y.",
        ), (first, second)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        # Leading blank space before the tag is still "begins with".
        (["\n ", "<think>", "hm", "</think>", "ok"], ("hm", "ok")),
        # "<think>" later on is text, as is a tag-like start that is not the tag.
        (["Hi <think>x</think>"], ("", "Hi <think>x</think>")),
        (["<thin", "king> is a tag name"], ("", "<thinking> is a tag name")),
        (["<", "b>bold</b>"], ("", "<b>bold</b>")),
        # A reply cut off while thinking: all of it was reasoning, the held "</thi" too.
        (["<think>still going</thi"], ("still going</thi", "")),
        # Nothing but "<thi" at the end is text after all.
        (["<thi"], ("", "<thi")),
        # A reply that is only blank space is kept as it is.
        ([" ", "\n"], ("", " \n")),
        # After the answer began, a later "</think>" is text.
        (["<think>r</think>A", "</think>"], ("r", "A</think>")),
    ],
)
def test_think_tags_edge_cases(chunks: list[str], expected: tuple[str, str]) -> None:
    assert _through_tags(chunks) == expected


async def test_a_proxy_refusing_stream_options_is_asked_again_without_them(
    client: httpx.AsyncClient, fake_upstream: fake.FakeUpstream
) -> None:
    run = Run(client, fake_upstream.base_url)
    # No usage without stream_options: the answer itself is whole.
    assert await run("no_stream_options") == Completion("stop", None)
    assert await run("no_stream_options") == Completion("stop", None)
    assert run.pieces == list(fake.OK_PIECES) * 2
    sent = [("stream_options" in r.body, r.body["stream"]) for r in fake_upstream.requests]
    # Refused once; remembered for this model, so the second reply is one request.
    assert sent == [(True, True), (False, True), (False, True)]
    fake_upstream.reset()
    await run("ok")  # another model still asks for usage
    assert fake_upstream.requests[0].body["stream_options"] == {"include_usage": True}


def _reply_events(events: list[Event], reply_id: str) -> list[tuple[str, str]]:
    return [
        (e.name, e.data["text"])
        for e in events
        if e.name in ("reasoning", "delta") and e.data["reply_id"] == reply_id
    ]


@pytest.mark.parametrize("model", REASONING_MODELS)
async def test_three_tabs_see_reasoning_then_the_answer_and_a_reload_keeps_both(
    client: httpx.AsyncClient,
    gateway: Service,
    web: Service,
    fake_upstream: fake.FakeUpstream,
    model: str,
) -> None:
    session_id = await create_session(client, gateway.url, model=model)
    async with (
        open_events(client, web.url, session_id) as tab1,
        open_events(client, web.url, session_id) as tab2,
        open_events(client, web.url, session_id) as tab3,
    ):
        tabs = (tab1, tab2, tab3)
        for tab in tabs:
            await anext(tab)
        ids = await send_message(client, gateway.url, session_id, "hi")
        seen = [await collect_until(tab, "done") for tab in tabs]
    assert seen[0] == seen[1] == seen[2]
    events = seen[0]
    reply_id = ids["reply_id"]
    ordered = _reply_events(events, reply_id)
    kinds = [name for name, _ in ordered]
    # Every reasoning event comes before the first delta, each with its own id.
    assert kinds == sorted(kinds, key=lambda name: name != "reasoning")
    assert "".join(text for name, text in ordered if name == "reasoning") == fake.REASONING_TEXT
    assert reply_text(events, reply_id) == fake.OK_TEXT
    assert all(e.id is not None for e in events)
    assert [e.id for e in events] == sorted({e.id for e in events if e.id is not None})

    # A tab that opens afterwards gets both in its snapshot, as the reload does.
    async with open_events(client, web.url, session_id) as late:
        snapshot = await anext(late)
    [start] = [e.data for e in events if e.name == "start"]
    reply = {
        "id": reply_id,
        "role": "assistant",
        "content": fake.OK_TEXT,
        "status": "complete",
        "created_at": start["created_at"],
        "model": model,
        "reasoning": fake.REASONING_TEXT,
        "finish_reason": "stop",
        "usage": fake.USAGE,
        "error": None,
        "timing": events[-1].data["timing"],
    }
    assert snapshot.data["messages"][-1] == reply
    reloaded = (await client.get(f"{gateway.url}/api/sessions/{session_id}")).json()
    assert reloaded["messages"][-1] == reply
    timing = reply["timing"]
    assert isinstance(timing, dict)
    assert timing["first_token_ms"] >= 0
    print(f"{model}: timing {timing}")
    # usage says 7 completion tokens: the rate counts those, from the first piece to the end.
    assert timing["tokens_per_s"] > 0

    # The next request upstream carries the conversation's text, never the reasoning.
    fake_upstream.reset()
    patched = await client.patch(f"{gateway.url}/api/sessions/{session_id}", json={"model": "ok"})
    assert patched.status_code == 200
    async with open_events(client, web.url, session_id) as tab:
        await anext(tab)
        await send_message(client, gateway.url, session_id, "and now?")
        await collect_until(tab, "done")
    [request] = fake_upstream.requests
    assert request.body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": fake.OK_TEXT},
        {"role": "user", "content": "and now?"},
    ]
    assert fake.REASONING_PIECES[1] not in str(request.body)


async def test_a_tab_joining_while_the_model_thinks_gets_the_reasoning_in_its_snapshot(
    client: httpx.AsyncClient, gateway: Service, web: Service
) -> None:
    session_id = await create_session(client, gateway.url, model="reasoning_pause")
    async with open_events(client, web.url, session_id) as first:
        await anext(first)
        reply_id = (await send_message(client, gateway.url, session_id, "hi"))["reply_id"]
        # The reasoning comes in one or more events (the writer batches what comes close);
        # then the upstream pauses (REASONING_PAUSE) before its answer: a tab joins.
        seen = await collect_until(first, "reasoning")
        async with open_events(client, web.url, session_id) as late:
            snapshot = await anext(late)
            late_events = await collect_until(late, "done")
        seen += await collect_until(first, "done")
    [reply] = [m for m in snapshot.data["messages"] if m["id"] == reply_id]
    assert reply["status"] == "streaming"
    assert (reply["finish_reason"], reply["usage"], reply["timing"]) == (None, None, None)
    # The snapshot and what followed it add up to what the first tab saw, exactly.
    late_reasoning = "".join(e.data["text"] for e in late_events if e.name == "reasoning")
    assert reply["reasoning"] + late_reasoning == fake.REASONING_TEXT
    assert reply["reasoning"]  # it joined after the first reasoning event
    assert reply["content"] + reply_text(late_events, reply_id) == fake.OK_TEXT
    assert late_events == [e for e in seen if e.id is not None and e.id > snapshot.data["seq"]]
