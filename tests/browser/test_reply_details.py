"""What a reply carries beside its text — its "thinking", its model, how it ended, its
figures — shows live in every tab and the same after a reload (from the snapshot's message
fields)."""

from __future__ import annotations

from chatrelay_common import Done, Reasoning, SessionStore, Timing, Usage, open_redis
from playwright.async_api import BrowserContext, Page, expect

from tests.browser.pages import last_reply, open_chat, send, session_id
from tests.browser.stack import LOG_MAX_EVENTS, REASONING_MODEL, UPSTREAM_MODEL
from tests.support.fake_upstream import OK_TEXT, REASONING_TEXT

CUT_OFF = "Cut off: the model reached its length limit."
FIGURES = "12 tokens in · 40 out · first token 0.21 s · 35.2 tokens/s"


async def _thinking(tab: Page, text: str, *, is_open: bool) -> None:
    thinking = last_reply(tab).locator(".thinking")
    await expect(thinking).to_be_visible()
    await expect(thinking.locator("summary")).to_have_text("Thinking")
    # The text stays in the DOM when folded: check it whether or not it shows.
    await expect(thinking.locator(".thinking-text")).to_have_text(text, use_inner_text=False)
    if is_open:
        await expect(thinking).to_have_attribute("open", "")
    else:
        await expect(thinking).not_to_have_attribute("open", "")


async def test_thinking_note_and_figures_show_live_in_every_tab_and_after_a_reload(
    context: BrowserContext, redis_server_url: str
) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    chat = session_id(tab1)
    # The test writes the reply the way the gateway does (the fake upstream has no thinking
    # model): the events reach the tabs through Redis, the web's fan-out and nginx.
    async with open_redis(redis_server_url) as redis:
        store = SessionStore(redis, log_max_events=LOG_MAX_EVENTS)
        _, reply = await store.begin_reply(chat, model=UPSTREAM_MODEL, content="why?")
        await store.append_delta(chat, reply, "Let me think.", kind=Reasoning.name)
        for tab in (tab1, tab2):
            await _thinking(tab, "Let me think.", is_open=True)
        await store.append_delta(chat, reply, "\nStep two.", kind=Reasoning.name)
        for tab in (tab1, tab2):
            await _thinking(tab, "Let me think.\nStep two.", is_open=True)

        await store.append_delta(chat, reply, "The answer.")
        for tab in (tab1, tab2):
            await expect(last_reply(tab).locator(".body")).to_have_text("The answer.")
            await _thinking(tab, "Let me think.\nStep two.", is_open=False)
        # A user may open it again; more answer text does not fold it back.
        await last_reply(tab1).locator(".thinking summary").click()
        await store.append_delta(chat, reply, " More.")
        await expect(last_reply(tab1).locator(".body")).to_have_text("The answer. More.")
        await _thinking(tab1, "Let me think.\nStep two.", is_open=True)

        await expect(last_reply(tab1).locator(".usage")).to_be_hidden()  # not while streaming
        done = Done(
            reply_id=reply,
            finish_reason="length",
            usage=Usage(prompt_tokens=12, completion_tokens=40, total_tokens=52),
            timing=Timing(first_token_ms=210, tokens_per_s=35.24),
        )
        assert await store.finish_reply(chat, reply, done)
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
        await expect(last_reply(tab).locator(".note")).to_have_text(CUT_OFF)
        await expect(last_reply(tab).locator(".usage")).to_have_text(FIGURES)

    await tab2.reload()
    await expect(tab2.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(last_reply(tab2).locator(".body")).to_have_text("The answer. More.")
    await _thinking(tab2, "Let me think.\nStep two.", is_open=False)
    await expect(last_reply(tab2).locator(".note")).to_have_text(CUT_OFF)
    await expect(last_reply(tab2).locator(".usage")).to_have_text(FIGURES)
    await expect(last_reply(tab2).locator(".msg-model")).to_have_text(UPSTREAM_MODEL)


async def test_a_reply_without_thinking_shows_no_thinking_block(context: BrowserContext) -> None:
    tab = await open_chat(context)
    await send(tab, "hello")
    await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
    await expect(last_reply(tab).locator(".thinking")).to_be_hidden()
    await tab.reload()
    await expect(last_reply(tab).locator(".body")).to_have_text("echo: hello")
    await expect(last_reply(tab).locator(".thinking")).to_be_hidden()


async def test_a_failed_reply_keeps_its_error_and_model_after_a_reload(
    context: BrowserContext,
) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "fail 429")
    card = last_reply(tab1).locator(".error-card")
    await expect(card).to_be_visible()
    live = await card.inner_text()
    # The card names the upstream's code and message, not the generic fallback.
    assert "The upstream model did not finish this answer." not in live, live
    await expect(last_reply(tab1).locator(".msg-model")).to_have_text(UPSTREAM_MODEL)

    await tab2.reload()
    await expect(tab2.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(last_reply(tab2)).to_have_attribute("data-status", "error")
    await expect(last_reply(tab2).locator(".error-card")).to_have_text(live, use_inner_text=True)
    await expect(last_reply(tab2).locator(".msg-model")).to_have_text(UPSTREAM_MODEL)


async def test_a_reasoning_model_thinks_then_answers_through_the_gateway(
    context: BrowserContext,
) -> None:
    # The whole path: the fake upstream's reasoning_content chunks, the gateway's parse, Redis,
    # the fan-out, nginx, and the page, in two tabs and after a reload.
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await tab1.locator("#settings-btn").click()
    await tab1.locator("#set-model").fill(REASONING_MODEL)
    await tab1.locator("#settings-save").click()
    await expect(tab2.locator("#model-label")).to_have_text(REASONING_MODEL)

    await send(tab1, "think first")
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
        await expect(last_reply(tab).locator(".body")).to_have_text(OK_TEXT)
        await _thinking(tab, REASONING_TEXT, is_open=False)
        await expect(last_reply(tab).locator(".msg-model")).to_have_text(REASONING_MODEL)
    await tab2.reload()
    await expect(tab2.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(last_reply(tab2).locator(".body")).to_have_text(OK_TEXT)
    await _thinking(tab2, REASONING_TEXT, is_open=False)
