"""Every tab watches the answer stream in, whichever tab asked; nothing is lost or doubled."""

from __future__ import annotations

import asyncio

from playwright.async_api import BrowserContext, expect

from tests.browser.browsing import Contexts
from tests.browser.netcut import CuttableLink
from tests.browser.pages import last_reply, open_chat, reply_text, send
from tests.browser.stack import LOG_MAX_EVENTS, Stack
from tests.support.fake_upstream import slow_text


async def test_three_tabs_stream_the_same_text(context: BrowserContext) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    # Through the edge over HTTP/2: all tabs' streams share one connection.
    protocol = await tab2.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
    assert protocol == "h2"

    await send(tab1, "slow 100 50")  # 100 words, one every 50 ms: ~5 s
    for tab in (tab1, tab2):
        await expect(tab.locator(".msg.user .body").last).to_have_text("slow 100 50")
        await expect(last_reply(tab)).to_have_attribute("data-status", "streaming")
    await expect(last_reply(tab2).locator(".body")).to_contain_text("w010")

    # Tab 3 opens mid-answer: it gets the prefix from the snapshot, then the rest live.
    tab3 = await open_chat(context, tab1.url)
    await expect(last_reply(tab3)).to_have_attribute("data-status", "streaming")
    first_seen = await reply_text(tab3)
    assert first_seen.startswith("w001 w002"), first_seen
    assert "w100" not in first_seen

    expected = slow_text(100)
    for tab in (tab1, tab2, tab3):
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete", timeout=20_000)
    texts = [await reply_text(tab) for tab in (tab1, tab2, tab3)]
    assert texts == [expected] * 3
    for tab in (tab1, tab2, tab3):
        await expect(tab.locator("#messages .msg")).to_have_count(2)
        await expect(tab.locator("#conn")).to_have_attribute("data-state", "live")


async def test_tab_cut_off_mid_answer_ends_with_full_text(
    contexts: Contexts,
    stack: Stack,
) -> None:
    asker_browser = await contexts.new(stack.url)
    asker = await open_chat(asker_browser)
    async with CuttableLink(int(stack.url.rsplit(":", 1)[1])) as link:
        watcher_browser = await contexts.new(link.url)
        watcher = await open_chat(watcher_browser, asker.url.replace(stack.url, link.url))

        await send(asker, "slow 150 40")  # ~6 s
        await expect(last_reply(watcher).locator(".body")).to_contain_text("w005")

        # The watcher's network goes away mid-answer while words keep coming.
        link.cut()
        await watcher_browser.set_offline(True)
        await expect(watcher.locator("#conn")).to_have_attribute("data-state", "offline")
        await expect(last_reply(asker).locator(".body")).to_contain_text("w040")
        cut_text = await reply_text(watcher)
        assert "w040" not in cut_text

        await watcher_browser.set_offline(False)
        link.restore()
        await expect(watcher.locator("#conn")).to_have_attribute(
            "data-state", "live", timeout=20_000
        )
        # Back before the end: the rest arrives live, after the replayed gap.
        await expect(last_reply(watcher)).to_have_attribute(
            "data-status", "complete", timeout=20_000
        )
        expected = slow_text(150)
        assert await reply_text(watcher) == expected
        assert await reply_text(asker) == expected
        assert expected.startswith(cut_text)
        await expect(watcher.locator("#messages .msg")).to_have_count(2)


# Counts what the page's EventSource receives; the page itself is not changed.
_COUNT_EVENTS = """
window.__events = {reset: 0, snapshot: 0};
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url, init) {
    super(url, init);
    for (const name of ['reset', 'snapshot']) {
      this.addEventListener(name, () => { window.__events[name] += 1; });
    }
  }
};
"""


async def test_tab_away_longer_than_the_log_resets_and_ends_right(
    contexts: Contexts,
    stack: Stack,
) -> None:
    asker_browser = await contexts.new(stack.url)
    asker = await open_chat(asker_browser)
    async with CuttableLink(int(stack.url.rsplit(":", 1)[1])) as link:
        watcher_browser = await contexts.new(link.url)
        await watcher_browser.add_init_script(_COUNT_EVENTS)
        watcher = await open_chat(watcher_browser, asker.url.replace(stack.url, link.url))

        words = 3 * LOG_MAX_EVENTS + 100
        await send(asker, f"slow {words} 12")
        await expect(last_reply(watcher).locator(".body")).to_contain_text("w005")
        link.cut()
        await watcher_browser.set_offline(True)
        # More events than the log keeps go by while the watcher is away.
        await expect(last_reply(asker).locator(".body")).to_contain_text(
            f"w{3 * LOG_MAX_EVENTS:03d}", timeout=20_000
        )
        await watcher_browser.set_offline(False)
        link.restore()

        await expect(last_reply(watcher)).to_have_attribute(
            "data-status", "complete", timeout=20_000
        )
        assert await reply_text(watcher) == slow_text(words)
        await expect(watcher.locator("#messages .msg")).to_have_count(2)
        counts = await watcher.evaluate("window.__events")
        assert counts["reset"] >= 1, counts
        assert counts["snapshot"] >= 2, counts  # the first one, and the one after `reset`


async def test_stop_from_another_tab_stops_every_tab(context: BrowserContext) -> None:
    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    tab3 = await open_chat(context, tab1.url)

    await send(tab1, "slow 400 40")  # would take 16 s
    await expect(tab2.locator("#stop")).to_be_visible()
    await expect(last_reply(tab2).locator(".body")).to_contain_text("w003")
    await tab2.locator("#stop").click()

    for tab in (tab1, tab2, tab3):
        await expect(last_reply(tab)).to_have_attribute("data-status", "stopped")
        await expect(last_reply(tab).locator(".note")).to_have_text("Stopped.")
        await expect(tab.locator("#send")).to_be_visible()
    texts = [await reply_text(tab) for tab in (tab1, tab2, tab3)]
    assert texts[0] == texts[1] == texts[2]
    assert slow_text(400).startswith(texts[0])
    assert "w400" not in texts[0]
    # Stopped means stopped: nothing more arrives.
    await asyncio.sleep(0.5)
    assert await reply_text(tab3) == texts[0]


async def test_streaming_rerenders_only_the_streaming_message(context: BrowserContext) -> None:
    tab = await open_chat(context)
    await send(tab, "showcase")
    await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
    await tab.evaluate("""() => {
        const earlier = document.getElementById('messages');
        window.__earlier = [...earlier.children];
        window.__content = 0;  // text or elements changed
        window.__attributes = [];  // e.g. a button hidden or shown
        const watch = new MutationObserver((records) => {
            for (const r of records) {
                if (r.type === 'attributes') window.__attributes.push(r.attributeName);
                else window.__content += 1;
            }
        });
        const what = {subtree: true, childList: true, characterData: true, attributes: true};
        for (const el of window.__earlier) watch.observe(el, what);
    }""")
    await send(tab, "slow 80 20")
    await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
    assert await reply_text(tab) == slow_text(80)
    untouched = await tab.evaluate("""() => ({
        content: window.__content,
        attributes: window.__attributes,
        attached: window.__earlier.every((el) => document.contains(el)),
    })""")
    # The earlier messages keep their elements and content; only their buttons come and go
    # (Regenerate moves to the new last reply, Edit hides while a reply streams).
    assert untouched["attached"] is True
    assert untouched["content"] == 0, untouched
    assert set(untouched["attributes"]) <= {"hidden"}, untouched
    assert len(untouched["attributes"]) <= 4, untouched
