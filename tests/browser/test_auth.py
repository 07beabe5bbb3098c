"""With SITE_PASSWORD set, the page and every API/SSE route need the login cookie."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Route, expect

from tests.browser.browsing import SITE_PASSWORD, Contexts
from tests.browser.pages import SESSION_URL, last_reply, send
from tests.browser.stack import Stack


async def test_login_flow(contexts: Contexts, auth_stack: Stack) -> None:
    context = await contexts.new(auth_stack.url)

    # No cookie: the API and the event stream refuse, and the page sends us to /login.
    refused = await context.request.post("/api/sessions", data={})
    assert refused.status == 401
    assert "detail" in await refused.json()
    events = await context.request.get("/api/sessions/nosuchsession0000000000/events")
    assert events.status == 401

    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    # The login page's own assets load without the cookie (styled, script running).
    await expect(page.locator(".login-card")).to_have_css("border-radius", "14px")

    await page.locator("#password").fill("not the password")
    await page.locator("#login-submit").click()
    await expect(page.locator("#login-error")).to_be_visible()
    assert not await context.cookies()

    await page.locator("#password").fill(SITE_PASSWORD)
    await page.locator("#login-submit").click()
    await expect(page).to_have_url(SESSION_URL)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    cookies = {c["name"]: c for c in await context.cookies()}
    auth = cookies["chatrelay_auth"]
    assert auth["httpOnly"] is True
    assert auth["secure"] is True
    assert auth["sameSite"] == "Strict"
    assert SITE_PASSWORD not in auth["value"]

    await send(page, "hello behind the door")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete")
    await expect(last_reply(page).locator(".body")).to_have_text("echo: hello behind the door")

    # The password is not kept anywhere the page can read.
    stored = await page.evaluate(
        "JSON.stringify({...localStorage}) + JSON.stringify({...sessionStorage}) + document.cookie"
    )
    assert SITE_PASSWORD not in stored

    # The cookie goes away under an open page: its next request is refused, it goes to the
    # login page, and signing in brings it back to the same conversation.
    chat_url = page.url
    await context.clear_cookies()
    await page.locator("#input").fill("am I still in?")
    await page.locator("#input").press("Enter")
    await expect(page).to_have_url(re.compile(r"/login\?next=%2Fs%2F"))
    await page.locator("#password").fill(SITE_PASSWORD)
    await page.locator("#login-submit").click()
    await expect(page).to_have_url(chat_url)
    await expect(page.locator(".msg.user .body")).to_have_text(["hello behind the door"])
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")

    # Logging out drops the cookie: back to the login page, and the API refuses again,
    # even with a copy of the cookie saved before (the server revoked that login).
    (saved,) = [c["value"] for c in await context.cookies() if c["name"] == "chatrelay_auth"]
    await page.locator("#logout").click()
    await expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    again = await context.request.post("/api/sessions", data={})
    assert again.status == 401
    await context.add_cookies([{"name": "chatrelay_auth", "value": saved, "url": auth_stack.url}])
    assert [c["value"] for c in await context.cookies()] == [saved]
    replayed = await context.request.post("/api/sessions", data={})
    assert replayed.status == 401


@pytest.mark.parametrize(
    "next_param",
    [
        "/%09/evil.example",  # the tab is dropped: "//evil.example"
        "//evil.example",
        "https://evil.example",
        "/%5Cevil.example",  # "/\evil.example": a backslash is a slash to the browser
        "%2F%2Fevil.example",
        "javascript:alert(1)",
        "/%0A/evil.example",
    ],
)
async def test_login_never_redirects_to_another_site(
    contexts: Contexts, auth_stack: Stack, next_param: str
) -> None:
    context = await contexts.new(auth_stack.url)
    elsewhere: list[str] = []

    async def refuse(route: Route) -> None:
        elsewhere.append(route.request.url)
        await route.abort()

    await context.route(lambda url: urlsplit(url).hostname == "evil.example", refuse)
    page = await context.new_page()
    await page.goto(f"/login?next={next_param}")
    await page.locator("#password").fill(SITE_PASSWORD)
    await page.locator("#login-submit").click()
    # Signed in and sent to this site's own start page, which opens a new chat.
    await expect(page).to_have_url(SESSION_URL)
    assert page.url.startswith(f"{auth_stack.url}/s/"), page.url
    assert not elsewhere
    assert not contexts.watch.dialogs  # javascript:alert(1) did not run
