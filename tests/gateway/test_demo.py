"""The built-in demo model shows the product off: it thinks first (reasoning events), then
answers with what the page renders (a heading, a list, a table, a code block, a formula),
varied by the question, through the same path as a real upstream."""

from __future__ import annotations

import re

import httpx
import pytest
from chatrelay_gateway._demo import demo_reasoning, demo_reply

from tests.support.api import create_session, send_message
from tests.support.services import Service
from tests.support.sse import collect_until, open_events, reply_text

QUESTIONS = [
    "How do I sort a list in Python?",
    "How much will my savings grow at 7 % interest?",
    "How far does light travel in a second?",
]
# What each kind of block looks like in markdown.
RENDERED = {
    "heading": r"^## \S",
    "list": r"^(- |1\. )\S",
    "table": r"^\|---",
    "code block": r"^```python$",
    "formula": r"^\$\$.+\$\$$",
}


@pytest.mark.parametrize("question", QUESTIONS)
def test_each_answer_uses_every_block_the_page_renders(question: str) -> None:
    answer = demo_reply(question)
    for block, pattern in RENDERED.items():
        assert re.search(pattern, answer, flags=re.M), block
    assert answer.count("```") == 2
    assert "demo model" in answer
    assert f"“{question}”" in demo_reasoning(question)


def test_answers_vary_by_question_and_stay_the_same_for_one() -> None:
    answers = {demo_reply(question) for question in QUESTIONS}
    assert len(answers) == len(QUESTIONS)
    assert demo_reply(QUESTIONS[0]) == demo_reply(QUESTIONS[0])
    # A question with no telling word still gets one of them, always the same one.
    bodies = [demo_reply(q).split("”\n\n", 1)[1] for q in QUESTIONS]
    assert demo_reply("Hi!").split("”\n\n", 1)[1] in bodies


async def test_the_demo_thinks_then_answers_and_a_reload_shows_both(
    client: httpx.AsyncClient, demo_gateway: Service, web: Service
) -> None:
    question = QUESTIONS[0]
    session_id = await create_session(client, demo_gateway.url)
    async with open_events(client, web.url, session_id) as tab:
        await anext(tab)
        reply_id = (await send_message(client, demo_gateway.url, session_id, question))["reply_id"]
        events = await collect_until(tab, "done")
    names = [e.name for e in events if e.name in ("reasoning", "delta")]
    first_delta = names.index("delta")
    assert names[:first_delta] == ["reasoning"] * first_delta
    assert "reasoning" not in names[first_delta:]
    thought = "".join(e.data["text"] for e in events if e.name == "reasoning")
    assert thought == demo_reasoning(question)
    assert reply_text(events, reply_id) == demo_reply(question)
    # The thinking streams a few tokens at a time too (the writer batches what comes close).
    assert first_delta > 5

    done = events[-1].data
    assert done["finish_reason"] == "stop"
    tokens = re.findall(r"\s*\S+", demo_reasoning(question) + " " + demo_reply(question))
    assert done["usage"]["completion_tokens"] == len(tokens)
    reloaded = (await client.get(f"{demo_gateway.url}/api/sessions/{session_id}")).json()
    reply = reloaded["messages"][-1]
    assert (reply["reasoning"], reply["content"], reply["model"]) == (
        demo_reasoning(question),
        demo_reply(question),
        "chatrelay-demo",
    )
    assert (reply["usage"], reply["timing"]) == (done["usage"], done["timing"])
