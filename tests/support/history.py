"""Walking an owner's conversation list page by page, as a client follows ``next``; what a
deleted session must answer."""

from __future__ import annotations

import pytest
from chatrelay_common import Done, History, SessionNotFoundError, SessionStore

__all__ = ["assert_deleted_for_good", "walk"]


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


async def assert_deleted_for_good(
    store: SessionStore, history: History, session: str, reply_id: str
) -> None:
    """``session`` was deleted while ``reply_id`` streamed: it is unknown, and the stopped
    reply's writer finds nothing and puts nothing back."""
    with pytest.raises(SessionNotFoundError):
        await store.snapshot(session)
    with pytest.raises(SessionNotFoundError):
        await history.delete(session)
    assert not await store.append_delta(session, reply_id, "late")
    assert not await store.finish_reply(session, reply_id, Done(reply_id, "stopped", None))
    assert await store.keep_leases([(session, reply_id)]) == ["lost"]
