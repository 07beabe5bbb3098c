"""Screenshots of the page, light and dark, desktop and phone, into test-artifacts/.

With CHATRELAY_UPDATE_SCREENSHOT=1 the light desktop one also replaces docs/screenshot.png
(the README's picture); a normal run leaves tracked files alone.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.browsing import Contexts
from tests.browser.pages import last_reply, open_chat, send
from tests.browser.stack import ARTIFACTS, ROOT, Stack
from tests.support.fake_upstream import SHOWCASE_PROMPT

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 860}}
PHONE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}


@pytest.fixture(scope="module")
def shots_dir() -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(
    ("size", "device"),
    [pytest.param("desktop", DESKTOP, id="desktop"), pytest.param("phone", PHONE, id="phone")],
)
async def test_screenshot(
    contexts: Contexts,
    stack: Stack,
    shots_dir: str,
    scheme: str,
    size: str,
    device: dict[str, Any],
) -> None:
    writer = await contexts.new(stack.url)
    tab = await open_chat(writer)
    await send(tab, SHOWCASE_PROMPT)
    await expect(last_reply(tab)).to_have_attribute("data-status", "complete")

    viewer = await contexts.new(stack.url, color_scheme=scheme, **device)
    page = await open_chat(viewer, tab.url)
    await expect(last_reply(page).locator(".katex").first).to_be_visible()
    # No auto-focus on touch devices (the on-screen keyboard would cover the answer).
    focused = await page.evaluate("document.activeElement && document.activeElement.id")
    if size == "phone":
        assert focused != "input"
    else:
        assert focused == "input"
    await page.locator("#input").fill("Can you add a version that sorts in place?")
    await page.evaluate("document.fonts.ready")
    path = os.path.join(shots_dir, f"page-{scheme}-{size}.png")
    await page.screenshot(path=path)
    if (scheme, size) == ("light", "desktop") and os.environ.get("CHATRELAY_UPDATE_SCREENSHOT"):
        shutil.copyfile(path, ROOT / "docs" / "screenshot.png")
