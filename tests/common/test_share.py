"""Share links in the store: one live token per session, resolution, revocation (told on
the link's channel, never in the session's log) and the session's delete taking it along."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from chatrelay_common import (
    History,
    SessionKeys,
    SessionNotFoundError,
    SessionSettings,
    SessionStore,
    ShareKeys,
    ShareLinks,
    decode_wire,
)
from redis.asyncio import Redis
from redis.asyncio.client import PubSub


async def test_revoking_tells_the_links_channel_and_leaves_the_log_alone(
    store: SessionStore, redis: Redis
) -> None:
    session_id = await store.create(SessionSettings(model="m"))
    links = ShareLinks(redis)
    link = await links.share(session_id)
    assert link.created
    assert await links.session_of(link.token) == session_id
    assert (await links.share(session_id)).token == link.token
    seq_before = await store.last_seq(session_id)

    pubsub = redis.pubsub()
    await pubsub.subscribe(ShareKeys(link.token).revoked, SessionKeys(session_id).channel)
    try:
        await links.revoke(session_id)
        async with asyncio.timeout(10):
            messages = [m async for m in _messages(pubsub, 1)]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert [m["channel"] for m in messages] == [ShareKeys(link.token).revoked.encode()]
    assert decode_wire(messages[0]["data"]) == (0, "revoked", b"{}")
    assert await store.last_seq(session_id) == seq_before
    assert await links.session_of(link.token) is None
    await links.revoke(session_id)  # idempotent


async def _messages(pubsub: PubSub, count: int) -> AsyncIterator[dict[str, Any]]:
    async for message in pubsub.listen():
        if message["type"] == "message":
            yield message
            count -= 1
            if count == 0:
                return


async def test_unknown_sessions_and_tokens(store: SessionStore, redis: Redis) -> None:
    links = ShareLinks(redis)
    with pytest.raises(SessionNotFoundError):
        await links.share("A" * 22)
    with pytest.raises(SessionNotFoundError):
        await links.revoke("A" * 22)
    assert await links.session_of("A" * 32) is None
    assert await links.session_of("not a token") is None


async def test_deleting_the_session_deletes_its_link(store: SessionStore, redis: Redis) -> None:
    session_id = await store.create(SessionSettings(model="m"))
    links = ShareLinks(redis)
    token = (await links.share(session_id)).token
    await History(store).delete(session_id)
    assert await redis.exists(ShareKeys(token).link) == 0
    assert await links.session_of(token) is None


async def test_the_link_lives_as_long_as_its_session_while_the_owner_writes(
    store: SessionStore, redis: Redis
) -> None:
    session_id = await store.create(SessionSettings(model="m"))
    link = await ShareLinks(redis).share(session_id)
    # Nobody opens the link for a while; the owner keeps writing.
    await redis.expire(ShareKeys(link.token).link, 5)
    await store.update_settings(session_id, {"system": "s"})
    session_ttl = await redis.ttl(SessionKeys(session_id).session)
    assert session_ttl > 5
    assert await redis.ttl(ShareKeys(link.token).link) == session_ttl


async def test_a_token_whose_session_names_another_leads_nowhere(
    store: SessionStore, redis: Redis
) -> None:
    """As a crash between the steps of a share or revoke on a Redis Cluster leaves it: a
    link's key whose session does not name its token is no live link."""
    session_id = await store.create(SessionSettings(model="m"))
    links = ShareLinks(redis)
    stray = "C" * 32
    await redis.set(ShareKeys(stray).link, session_id, ex=60)
    assert await links.session_of(stray) is None
    live = await links.share(session_id)
    assert live.token != stray
    assert await links.session_of(live.token) == session_id
    assert await links.session_of(stray) is None
