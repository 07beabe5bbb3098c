"""The page is ES modules: it leaves no globals of its own, listens for exactly the events
the server defines (``/wire.js``, made from chatrelay_common's structs), and badges the
gateway's own demo model name."""

from __future__ import annotations

from typing import get_args

from chatrelay_common import DEMO_MODEL, Event, Revoked
from playwright.async_api import BrowserContext

from tests.browser.pages import open_chat

# Runs before the page's scripts: records every event name an EventSource listens for.
_RECORD_LISTENERS = """
window.__listened = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  addEventListener(type, ...rest) {
    window.__listened.push(type);
    return super.addEventListener(type, ...rest);
  }
};
"""
# The vendored libraries are classic scripts: their globals are the only ones allowed.
_LIBRARY_GLOBALS = {"markdownit", "DOMPurify", "hljs", "katex"}
_TEST_GLOBALS = {"__csp", "__listened", "EventSource"}  # this test's and conftest's init scripts


async def test_the_page_listens_for_every_event_the_server_defines(
    context: BrowserContext,
) -> None:
    await context.add_init_script(_RECORD_LISTENERS)
    page = await open_chat(context)
    wire = await page.evaluate("async () => (await import('/wire.js')).EVENTS")
    assert wire == {struct.__name__: struct.name for struct in get_args(Event)}
    assert await page.evaluate("async () => (await import('/wire.js')).REVOKED") == Revoked.name
    listened = await page.evaluate("window.__listened")
    assert sorted(listened) == sorted(struct.name for struct in get_args(Event))


async def test_the_page_leaves_no_globals_of_its_own(context: BrowserContext) -> None:
    await context.add_init_script(_RECORD_LISTENERS)
    # A document of the same (secure) origin without scripts: the browser's own globals.
    blank = await context.new_page()
    await blank.goto("/static/app.css")
    names = "Object.getOwnPropertyNames(window)"
    builtin = set(await blank.evaluate(names))
    page = await open_chat(context)
    added = set(await page.evaluate(names)) - builtin
    assert added - _TEST_GLOBALS == _LIBRARY_GLOBALS


async def test_the_demo_badge_is_for_the_gateways_demo_model(context: BrowserContext) -> None:
    page = await open_chat(context)
    badged = await page.evaluate("async () => (await import('/wire.js')).DEMO_MODEL")
    assert badged == DEMO_MODEL
