"""Walking an owner's conversation list page by page, as a client follows ``next``."""

from __future__ import annotations

from chatrelay_common import History

__all__ = ["walk"]


async def walk(history: History, owner: str, limit: int, query: str | None = None) -> list[str]:
    """Every session id the list (or search, with ``query``) gives, following its cursor;
    each page holds at most ``limit``."""
    seen: list[str] = []
    cursor = None
    for _ in range(200):
        page = await history.list(owner, limit=limit, cursor=cursor, query=query)
        assert len(page.sessions) <= limit
        seen += [summary.id for summary in page.sessions]
        if page.next is None:
            return seen
        cursor = page.next
    raise AssertionError("the cursor walk did not end")
