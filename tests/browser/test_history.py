"""The sidebar lists the owner's chats from the server (issue 11): newest activity first, the
next page when the list's end scrolls into view, search, rename seen live in another tab,
delete with an open tab, export; a chat started on one device appears on another of the same
owner and streams live there; "Log out" only when a login is in force."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from chatrelay_common._users import Users
from playwright.async_api import BrowserContext, Page, expect
from redis.asyncio import Redis

from tests.browser.browsing import SITE_PASSWORD, Contexts
from tests.browser.pages import (
    chat_titles,
    last_reply,
    open_chat,
    same_owner,
    seed_chat,
    send,
    session_id,
    sign_in,
)
from tests.browser.stack import Stack, run_stack
from tests.support.fake_upstream import slow_text

PAGE_SIZE = 30  # history.js asks for this many chats at a time
SEEDED = PAGE_SIZE + 3
ACCOUNT_PASSWORD = "a long enough secret 42"


@pytest.fixture(scope="module")
def accounts_stack(redis_server_url: str) -> Iterator[Stack]:
    with run_stack(redis_server_url, name="accounts", accounts=True) as running:
        yield running


@pytest.fixture
async def accounts(redis_server_url: str) -> AsyncIterator[tuple[str, str]]:
    """Two accounts of their own (``users add`` writes the same records)."""
    redis = Redis.from_url(redis_server_url)
    users = Users(redis)
    suffix = secrets.token_hex(3)
    names = (f"alice-{suffix}", f"bob-{suffix}")
    for name in names:
        await users.add(name, ACCOUNT_PASSWORD)
    yield names
    for name in names:
        await users.remove(name)
    await redis.aclose()


async def _log_in_on_the_page(page: Page, name: str, password: str) -> None:
    await page.locator("#username").fill(name)
    await page.locator("#password").fill(password)
    await page.locator("#login-submit").click()


async def _item_action(page: Page, title: str, action: str) -> None:
    item = page.locator("#recent-list .recent-item").filter(
        has=page.locator(".recent-row a", has_text=re.compile(f"^{re.escape(title)}$"))
    )
    await item.hover()  # as a mouse does: the item's ⋯ button shows on hover
    more = item.locator("[data-action=more]")
    if await more.get_attribute("aria-expanded") != "true":  # its actions are not open yet
        await more.click()
    await item.locator(f"[data-action={action}]").click()


async def test_the_list_pages_as_it_scrolls_and_search_narrows_it(
    contexts: Contexts, stack: Stack
) -> None:
    context = await contexts.new(stack.url)  # a browser of its own: an owner of its own
    ids: dict[int, str] = {}
    for n in range(1, SEEDED + 1):
        # Chat 7 also mentions a zebra, in its second message only (not in its title).
        extra = ("the zebra crossing",) if n == 7 else ()
        ids[n] = await seed_chat(context, f"chat {n:02d}", *extra)

    page = await open_chat(context, f"/s/{ids[1]}")
    newest_first = [f"chat {n:02d}" for n in range(SEEDED, 0, -1)]
    await expect(chat_titles(page)).to_have_text(newest_first[:PAGE_SIZE])
    await expect(page.locator("#recent-list [aria-current=page]")).to_have_count(0)  # page 2
    await page.locator("#recent-more").scroll_into_view_if_needed()  # the list's end
    await expect(chat_titles(page)).to_have_text(newest_first)
    await expect(page.locator("#recent-list a[aria-current=page]")).to_have_text("chat 01")
    await expect(page.locator("#recent-more")).to_be_hidden()

    search = page.locator("#history-search")
    await search.fill("zebra")  # message text, not the title
    await expect(chat_titles(page)).to_have_text(["chat 07"])
    await search.fill("CHAT 1")  # case-insensitive substring
    await expect(chat_titles(page)).to_have_text([f"chat {n}" for n in range(19, 9, -1)])
    await search.fill("no such words anywhere")
    await expect(chat_titles(page)).to_have_count(0)
    await expect(page.locator("#recent-empty")).to_have_text("No chats match.")
    await search.fill("")
    await expect(chat_titles(page)).to_have_text(newest_first[:PAGE_SIZE])


async def test_rename_is_seen_live_in_another_tab(contexts: Contexts, stack: Stack) -> None:
    context = await contexts.new(stack.url)
    first = await seed_chat(context, "name me later")
    other = await seed_chat(context, "another chat")
    tab1 = await open_chat(context, f"/s/{other}")
    tab2 = await open_chat(context, f"/s/{first}")
    await expect(chat_titles(tab1)).to_have_text(["another chat", "name me later"])
    await expect(tab2).to_have_title("name me later · chatrelay")

    await _item_action(tab1, "name me later", "rename")
    box = tab1.locator("#recent-list .rename-input")
    await expect(box).to_have_value("name me later")
    await box.fill("A trip to the zoo")
    await box.press("Enter")
    await expect(chat_titles(tab1)).to_have_text(["another chat", "A trip to the zoo"])
    # The other tab shows that chat: the `title` event renames it there, without a reload.
    await expect(tab2).to_have_title("A trip to the zoo · chatrelay")
    await expect(tab2.locator("#recent-list a[aria-current=page]")).to_have_text(
        "A trip to the zoo"
    )
    snapshot = await (await context.request.get(f"/api/sessions/{first}")).json()
    assert snapshot["title"] == "A trip to the zoo"

    # Escape leaves the title as it was.
    await _item_action(tab1, "another chat", "rename")
    await box.fill("never saved")
    await box.press("Escape")
    await expect(chat_titles(tab1)).to_have_text(["another chat", "A trip to the zoo"])


async def test_delete_asks_first_and_ends_the_open_tab(contexts: Contexts, stack: Stack) -> None:
    context = await contexts.new(stack.url)
    doomed = await seed_chat(context, "delete me")
    kept = await seed_chat(context, "keep me")
    manager = await open_chat(context, f"/s/{kept}")
    viewer = await open_chat(context, f"/s/{doomed}")
    await expect(chat_titles(manager)).to_have_text(["keep me", "delete me"])

    await _item_action(manager, "delete me", "delete")
    button = manager.locator("#recent-list .armed[data-action=delete]")
    await expect(button).to_have_text("Delete for good?")
    # Asked, not yet done: the chat is still there.
    assert (await context.request.get(f"/api/sessions/{doomed}")).status == 200
    await button.click()
    await expect(chat_titles(manager)).to_have_text(["keep me"])

    # The tab that showed it says so, offers a new chat, and stops listening.
    await expect(viewer.locator("#fatal")).to_contain_text("This chat was deleted.")
    await expect(viewer.locator("#fatal a")).to_have_attribute("href", "/")
    await expect(viewer.locator("#messages .msg")).to_have_count(0)
    await expect(viewer.locator("#conn")).to_have_attribute("data-state", "offline")
    for gone in ("#input", "#share-btn", "#settings-btn", "#clear-btn"):
        await expect(viewer.locator(gone)).to_be_hidden()
    assert (await context.request.get(f"/api/sessions/{doomed}")).status == 404
    assert not contexts.watch.dialogs  # asked on the page, not with confirm()


async def test_export_links_download_the_chat(contexts: Contexts, stack: Stack) -> None:
    context = await contexts.new(stack.url, accept_downloads=True)
    chat = await seed_chat(context, "export me")
    page = await open_chat(context, f"/s/{chat}")
    for action, suffix in (("export-markdown", ".md"), ("export-json", ".json")):
        async with page.expect_download() as info:
            await _item_action(page, "export me", action)
        download = await info.value
        assert download.suggested_filename.endswith(suffix), download.suggested_filename
        path = await download.path()
        fmt = action.removeprefix("export-")
        served = await context.request.get(f"/api/sessions/{chat}/export?format={fmt}")
        assert path.read_bytes() == await served.body()
        if fmt == "json":
            exported = json.loads(path.read_text())
            assert [(m["role"], m["content"]) for m in exported["messages"]] == [
                ("user", "export me"),
                ("assistant", "echo: export me"),
            ]
        else:
            text = path.read_text()
            assert "export me" in text
            assert "echo: export me" in text


async def test_a_chat_started_on_one_device_streams_live_on_another(
    contexts: Contexts, stack: Stack
) -> None:
    device_a = await contexts.new(stack.url)
    tab_a = await open_chat(device_a)
    device_b = await contexts.new(stack.url)
    await same_owner(device_b, device_a, stack.url)

    await send(tab_a, "slow 300 40")  # about 12 s: device B arrives mid-reply even on a busy box
    await expect(last_reply(tab_a).locator(".body")).to_contain_text("w003")
    # The first message named the chat (the server's default title), in this tab too.
    await expect(tab_a).to_have_title("slow 300 40 · chatrelay")
    tab_b = await open_chat(device_b)
    await tab_b.locator("#recent-list a", has_text="slow 300 40").click()
    await expect(tab_b).to_have_url(f"/s/{session_id(tab_a)}")
    # It arrives mid-reply and follows it to the end, live.
    await expect(last_reply(tab_b)).to_have_attribute("data-status", "streaming")
    await expect(last_reply(tab_b)).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(last_reply(tab_b).locator(".body")).to_have_text(slow_text(300))
    await expect(last_reply(tab_a).locator(".body")).to_have_text(slow_text(300))

    # Another browser (another owner) does not list it.
    stranger = await open_chat(await contexts.new(stack.url))
    await expect(stranger.locator("#recent-empty")).to_be_visible()
    await expect(chat_titles(stranger)).to_have_count(0)


async def test_with_the_site_password_every_login_shares_one_list(
    contexts: Contexts, auth_stack: Stack
) -> None:
    device_a = await contexts.new(auth_stack.url)
    device_b = await contexts.new(auth_stack.url)
    for device in (device_a, device_b):
        await sign_in(device, SITE_PASSWORD)
    tab_a = await open_chat(device_a)
    await send(tab_a, "slow 221 40")  # a length no other test asks for: its title is unique
    await expect(last_reply(tab_a).locator(".body")).to_contain_text("w003")
    tab_b = await open_chat(device_b)
    await chat_titles(tab_b).filter(has_text=re.compile("^slow 221 40$")).click()
    await expect(tab_b).to_have_url(f"/s/{session_id(tab_a)}")
    await expect(last_reply(tab_b)).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(last_reply(tab_b).locator(".body")).to_have_text(slow_text(221))


async def test_log_out_shows_only_when_a_login_is_in_force(
    context: BrowserContext, contexts: Contexts, auth_stack: Stack
) -> None:
    open_page = await open_chat(context)
    await expect(open_page.locator("#account")).to_be_hidden()
    await expect(open_page.locator("#logout")).to_be_hidden()

    signed = await contexts.new(auth_stack.url)
    await sign_in(signed, SITE_PASSWORD)
    page = await open_chat(signed)
    await expect(page.locator("#logout")).to_be_visible()
    await page.locator("#logout").click()
    await expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    await expect(page.locator("#username-field")).to_be_hidden()  # one shared password


async def test_accounts_log_in_by_name_and_see_only_their_own_chats(
    contexts: Contexts, accounts_stack: Stack, accounts: tuple[str, str]
) -> None:
    alice, bob = accounts
    device_a = await contexts.new(accounts_stack.url)
    page = await device_a.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    await expect(page.locator("#username-field")).to_be_visible()
    await expect(page.locator("#login-intro")).to_have_text("Sign in with your account.")
    await _log_in_on_the_page(page, alice, "not the password")
    await expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    await _log_in_on_the_page(page, alice, ACCOUNT_PASSWORD)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#whoami")).to_have_text(alice)
    await expect(page.locator("#logout")).to_be_visible()
    await send(page, "slow 300 40")
    await expect(last_reply(page).locator(".body")).to_contain_text("w003")

    # Alice on another device: the chat is in her list and streams there live.
    device_b = await contexts.new(accounts_stack.url)
    other = await device_b.new_page()
    await other.goto("/login")
    await _log_in_on_the_page(other, alice, ACCOUNT_PASSWORD)
    await expect(other.locator("#conn")).to_have_attribute("data-state", "live")
    await chat_titles(other).filter(has_text=re.compile("^slow 300 40$")).click()
    await expect(other).to_have_url(f"/s/{session_id(page)}")
    await expect(last_reply(other)).to_have_attribute("data-status", "streaming")
    await expect(last_reply(other)).to_have_attribute("data-status", "complete", timeout=30_000)
    await expect(last_reply(other).locator(".body")).to_have_text(slow_text(300))

    # Bob lists none of it, and her chat's address is no chat to him.
    bobs = await contexts.new(accounts_stack.url)
    bob_page = await bobs.new_page()
    await bob_page.goto(f"/login?next=/s/{session_id(page)}")
    await _log_in_on_the_page(bob_page, bob, ACCOUNT_PASSWORD)
    await expect(bob_page.locator("#fatal")).to_contain_text("does not exist")
    await expect(bob_page.locator("#whoami")).to_have_text(bob)
    await expect(chat_titles(bob_page)).to_have_count(0)

    # Alice logs out and Bob signs in on her browser: the list it painted early from
    # localStorage was hers, and is gone (Bob's list from the server is held back here).
    await expect(chat_titles(page)).to_have_text(["slow 300 40"])
    await page.locator("#logout").click()
    await expect(page).to_have_url(re.compile(r"/login(\?|$)"))
    await device_a.route(re.compile(r"/api/sessions\?"), lambda route: route.abort())
    await _log_in_on_the_page(page, bob, ACCOUNT_PASSWORD)
    await expect(page.locator("#whoami")).to_have_text(bob)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    await expect(page.locator("#recent-empty")).to_be_visible()
    await expect(chat_titles(page)).to_have_count(0)
