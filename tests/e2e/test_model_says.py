"""What the model says, through the compose edge: the demo model thinks (``reasoning``
events) before it answers, a reload shows every field the events showed, the model list is
the demo model, and the edge opens /metrics only to the scraper's bearer token."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from chatrelay_common import DEMO_MODEL

from tests.e2e._client import SseClient, Stack
from tests.support.metrics import Metrics

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def test_the_demo_model_thinks_then_answers_and_a_reload_keeps_it(
    stack: Stack, api: httpx.Client
) -> None:
    listed = api.get("/api/models")
    assert listed.json() == {
        "models": [DEMO_MODEL],
        "default": DEMO_MODEL,
        "data": [{"id": DEMO_MODEL}],
    }
    session_id = stack.new_session(api)
    with SseClient(stack.events_url(session_id, "thinks")) as client:
        client.wait_for(lambda e: e.name == "snapshot", timeout=15)
        reply_id = stack.send(api, session_id, "Show me a table")
        client.wait_for(lambda e: e.name == "done" and reply_id in e.raw, timeout=90)
        events = [e for e in client.events if e.name != "snapshot" and reply_id in e.raw]
    names = [e.name for e in events]
    first_delta = names.index("delta")
    print(f"    {names.count('reasoning')} reasoning events, then {names.count('delta')} deltas")
    assert (names[0], names[-1]) == ("start", "done")
    assert "reasoning" in names[:first_delta]
    assert "reasoning" not in names[first_delta:]
    reasoning = "".join(e.data["text"] for e in events if e.name == "reasoning")
    answer = "".join(e.data["text"] for e in events if e.name == "delta")
    done = events[-1].data

    reloaded = api.get(f"/api/sessions/{session_id}").json()
    question, reply = reloaded["messages"]
    assert RFC3339_UTC.match(question["created_at"]), question
    assert RFC3339_UTC.match(reply["created_at"]), reply
    assert (reply["content"], reply["reasoning"], reply["model"]) == (answer, reasoning, DEMO_MODEL)
    assert (reply["finish_reason"], reply["usage"], reply["timing"], reply["error"]) == (
        done["finish_reason"],
        done["usage"],
        done["timing"],
        None,
    )
    assert reply["usage"]["completion_tokens"] > 0


def test_the_edge_opens_metrics_only_to_the_bearer_token(
    compose_stack: Stack, api: httpx.Client
) -> None:
    token = os.environ.get("METRICS_TOKEN")
    if not token:
        pytest.skip("scripts/e2e.sh sets METRICS_TOKEN for the compose edge")
    for service, family in (
        ("gateway", "chatrelay_gateway_replies_running"),
        ("web", "chatrelay_web_sse_connections"),
    ):
        for headers in ({}, {"Authorization": f"Bearer {token}x"}):
            refused = api.get(f"/metrics/{service}", headers=headers)
            assert (refused.status_code, refused.json()) == (404, {"detail": "Not found"})
        opened = api.get(f"/metrics/{service}", headers={"Authorization": f"Bearer {token}"})
        assert opened.status_code == 200, opened.text
        assert Metrics.parse(opened.text).types[family] == "gauge"
