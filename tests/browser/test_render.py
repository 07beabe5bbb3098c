"""Model output is rendered as markdown, highlighted, copyable — and never executed."""

from __future__ import annotations

from typing import Any

from playwright.async_api import BrowserContext, expect

from tests.browser.browsing import Contexts, Watch
from tests.browser.pages import last_reply, open_chat, send
from tests.browser.stack import Stack


async def test_xss_payload_from_the_model_stays_inert(
    context: BrowserContext,
    watch: Watch,
) -> None:
    # The edge sends the strict CSP with the page; the conftest fails any test that violates it.
    page_response = await context.request.get("/")
    csp = page_response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp
    assert "style-src 'self'" in csp
    assert "unsafe-inline" not in csp

    tab1 = await open_chat(context)
    tab2 = await open_chat(context, tab1.url)
    await send(tab1, "xss")
    for tab in (tab1, tab2):
        await expect(last_reply(tab)).to_have_attribute("data-status", "complete")
        body = last_reply(tab).locator(".body")
        await expect(body).to_contain_text("END-OF-PAYLOAD")
        # The raw HTML is shown as text, not parsed.
        await expect(body).to_contain_text("<script>window.__xss")
        await expect(body).to_contain_text('<div id="injected"')
        found = await tab.evaluate("""() => {
            const body = [...document.querySelectorAll('#messages .msg.assistant .body')].pop();
            return {
                xss: window.__xss === undefined ? null : window.__xss,
                injected: document.getElementById('injected') !== null,
                active: body.querySelectorAll(
                    'script, iframe, svg, object, embed, img, [onerror], [onload], [style]'
                ).length,
                hrefs: [...body.querySelectorAll('a')].map((a) => a.getAttribute('href')),
            };
        }""")
        assert found["xss"] is None
        assert found["injected"] is False
        assert found["active"] == 0
        assert not [h for h in found["hrefs"] if h and h.lower().startswith("javascript:")]
    assert watch.dialogs == []


async def test_markdown_code_copy_and_math(contexts: Contexts, stack: Stack) -> None:
    context = await contexts.new(stack.url, permissions=["clipboard-read", "clipboard-write"])
    tab = await open_chat(context)
    await send(tab, "showcase")
    reply = last_reply(tab)
    await expect(reply).to_have_attribute("data-status", "complete")

    body = reply.locator(".body")
    await expect(body.locator("strong")).to_have_text("quick sort")
    await expect(body.locator(".codeblock .codelang")).to_have_text("python")
    await expect(body.locator("pre code .hljs-keyword").first).to_have_text("def")
    await expect(body.locator("li")).to_have_count(2)
    await expect(body.locator(".katex").first).to_be_visible()
    await expect(body.locator(".katex-display")).to_have_count(1)

    await body.locator(".copy-code").click()
    await expect(body.locator(".copy-code")).to_have_text("Copied")
    copied = await tab.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("def quicksort(items: list[int]) -> list[int]:\n")
    assert copied.rstrip().endswith("return quicksort(left) + [pivot] + quicksort(right)")

    await reply.locator("[data-action=copy]").click()
    copied = await tab.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("Here is a **quick sort** in Python")  # the markdown source
    assert "$$C(n) = (n-1)" in copied


RENDER = """async (src) => {
    const { render } = await import('/static/render.js');
    const box = document.createElement('div');
    render(box, src);
    return {
        html: box.innerHTML,
        text: box.innerText,
        katex: box.querySelectorAll('.katex').length,
        display: box.querySelectorAll('.katex-display').length,
        errors: box.querySelectorAll('.math-error').length,
        links: [...box.querySelectorAll('a')].map((a) => [a.getAttribute('href'), a.target, a.rel]),
        code: [...box.querySelectorAll('pre code')].map((c) => c.textContent),
        langs: [...box.querySelectorAll('.codelang')].map((c) => c.textContent),
        copyButtons: box.querySelectorAll('.copy-code').length,
        tags: [...new Set([...box.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()))],
    };
}"""


async def test_markdown_edge_cases(context: BrowserContext) -> None:
    page = await open_chat(context)

    async def render(src: str) -> dict[str, Any]:
        result: dict[str, Any] = await page.evaluate(RENDER, src)
        result["text"] = result["text"].strip()
        return result

    money = await render("It costs $5 and $10, or $20.")
    assert money["katex"] == 0
    assert money["text"] == "It costs $5 and $10, or $20."

    assert (await render("inline $x^2$ and \\(y_1\\)"))["katex"] == 2
    block = await render("before\n\n$$\n\\int_0^1 x\\,dx\n$$\n\nafter")
    assert block["display"] == 1
    assert (await render("\\[ \\frac{1}{2} \\]"))["display"] == 1
    broken = await render("$\\frac{1}{$ and $\\notacommand$")
    assert broken["errors"] == 2  # shown as text marked as an error; nothing thrown

    in_code = await render("`$x$` and\n\n```\n$$y$$\n```")
    assert in_code["katex"] == 0
    assert in_code["code"] == ["$$y$$\n"]

    fenced = await render("```nosuchlang\nplain <b>text</b>\n```\n\n```js\nlet a = 1;\n```")
    assert fenced["langs"] == ["nosuchlang", "js"]
    assert fenced["copyButtons"] == 2
    assert fenced["code"] == ["plain <b>text</b>\n", "let a = 1;\n"]

    html = await render('<b>bold</b> <a href="https://x.test">raw</a> <style>*{}</style>')
    assert not {"b", "style"} & set(html["tags"])
    assert [link[0] for link in html["links"]] == ["https://x.test"]  # linkified text
    assert html["text"] == '<b>bold</b> <a href="https://x.test">raw</a> <style>*{}</style>'

    links = await render(
        "[ok](https://example.com) [bad](javascript:alert(1)) "
        "[data](data:text/html;base64,PHNjcmlwdD4=) see https://chatrelay.test/x"
    )
    hrefs = [link[0] for link in links["links"]]
    assert hrefs == ["https://example.com", "https://chatrelay.test/x"]
    for _, target, rel in links["links"]:
        assert target == "_blank"
        assert "noopener" in rel
