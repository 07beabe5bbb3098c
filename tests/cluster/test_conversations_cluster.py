"""Conversations, share links and accounts on a Redis Cluster (issue 12): an owner's index, a
share link's key, the users set and each user live in slots of their own, apart from the
sessions they name, so no script or transaction spans them. The same behaviours as on one
Redis (tests/common/test_history.py, test_share.py, test_users.py): the list across sessions on
all three primaries, paging, search and its bounds, pruning, renames, deletes, share links and
their revocation (through a real web process too), the users CLI and logins."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from typing import cast

import httpx
import pytest
from argon2 import PasswordHasher
from chatrelay_common import (
    CONTROL_CHANNEL,
    AnyRedis,
    Done,
    History,
    InvalidCursorError,
    LoginThrottle,
    LoginTokens,
    SessionKeys,
    SessionNotFoundError,
    SessionSettings,
    SessionStore,
    ShareKeys,
    ShareLinks,
    decode_wire,
    new_id,
    node_client,
    open_pubsub,
    open_redis,
)
from chatrelay_common._keys import HASH_FIELDS, OWNER_INDEX_PREFIX, USER_PREFIX, USERS
from chatrelay_common._users import UnknownUserError, UserExistsError, Users
from chatrelay_litestar import user_owner
from redis.asyncio import RedisCluster
from redis.asyncio.client import PubSub
from redis.crc import key_slot

from scripts.redis_cluster import ClusterNode, LocalCluster
from tests.gateway.test_share import share
from tests.support.accounts import new_username, run_users_cli
from tests.support.api import create_session, send_message
from tests.support.fake_upstream import SLOW_TEXT
from tests.support.history import assert_deleted_for_good, walk
from tests.support.services import Service
from tests.web.test_shared import Frame, open_raw, reply_text, shared_events

# Generous: other engineers' tests share the two cores.
_WITHIN = 30.0
_SHARE = HASH_FIELDS["SHARE"]


@pytest.fixture
async def redis(cluster: LocalCluster) -> AsyncIterator[AnyRedis]:
    async with open_redis(cluster.url) as client:
        assert isinstance(client, RedisCluster)
        yield client


@pytest.fixture
def store(redis: AnyRedis) -> SessionStore:
    store = SessionStore(redis, log_max_events=100)
    assert store.cluster
    return store


def _owner() -> str:
    return f"o:{new_id()}"


async def _exchange(store: SessionStore, session: str, text: str) -> None:
    """A finished exchange: ``text``, answered ``answer to <text>``."""
    _, reply_id = await store.begin_reply(session, model="m", content=text)
    await store.append_delta(session, reply_id, f"answer to {text}")
    await store.finish_reply(session, reply_id, Done(reply_id, "stop", None))


async def _spread(
    store: SessionStore, cluster: LocalCluster, owner: str, per_primary: int
) -> tuple[list[str], dict[str, ClusterNode]]:
    """``owner``'s sessions, oldest first, made until every primary holds ``per_primary`` of
    them; each has one exchange whose text names its primary's port (``topic <n> on <port>``)
    and the session's number. Also each session's primary."""
    sessions: list[str] = []
    home: dict[str, ClusterNode] = {}
    primaries = cluster.primaries()
    for n in range(per_primary * len(primaries) * 20):
        if all(sum(p is q for q in home.values()) >= per_primary for p in primaries):
            return sessions, home
        session = await store.create(SessionSettings(model="m"), owner=owner)
        home[session] = cluster.primary_of_key(SessionKeys(session).session)
        await _exchange(store, session, f"topic {n:03d} on {home[session].port}")
        sessions.append(session)
        await asyncio.sleep(0.002)  # scores are milliseconds: the next session's are newer
    raise AssertionError(f"sessions did not spread over every primary: {home}")


async def test_the_list_pages_and_searches_sessions_on_every_primary(
    store: SessionStore, cluster: LocalCluster
) -> None:
    history = History(store)
    owner = _owner()
    sessions, home = await _spread(store, cluster, owner, per_primary=3)
    newest_first = sessions[::-1]
    assert len({node.port for node in home.values()}) == 3

    page = await history.list(owner, limit=100)
    assert [s.id for s in page.sessions] == newest_first
    assert page.next is None
    for limit in (1, 2, 3, 7, len(sessions) - 1, len(sessions)):
        assert await walk(history, owner, limit) == newest_first, limit
    assert [(s.title, s.message_count, s.model) for s in page.sessions] == [
        (f"topic {n:03d} on {home[session].port}", 2, "m")
        for n, session in reversed(list(enumerate(sessions)))
    ]

    # Activity (a message, a reply's end) moves a session to the top; its tokens do not.
    moved = sessions[1]
    await asyncio.sleep(0.002)
    _, reply_id = await store.begin_reply(moved, model="m", content="again")
    top = (await history.list(owner, limit=1)).sessions[0]
    assert (top.id, top.message_count) == (moved, 4)
    await asyncio.sleep(0.002)
    await store.append_delta(moved, reply_id, "tokens")
    assert (await history.list(owner, limit=1)).sessions[0].updated_at == top.updated_at
    await store.finish_reply(moved, reply_id, Done(reply_id, "stop", None))
    assert (await history.list(owner, limit=1)).sessions[0].updated_at > top.updated_at
    newest_first = [moved, *(s for s in newest_first if s != moved)]

    # Search reads every session in its own slot: titles, questions and answers, any case.
    for node in cluster.primaries():
        on_node = [s for s in newest_first if home[s].port == node.port]
        assert await walk(history, owner, 10, f"ON {node.port}") == on_node
        assert await walk(history, owner, 1, "answer to topic 0") == [
            s for s in newest_first if "topic 0" in f"topic {sessions.index(s):03d}"
        ]
    assert await walk(history, owner, 10, "answer to topic 002") == [sessions[2]]
    assert await walk(history, owner, 10, "AGAIN") == [moved]
    assert await walk(history, owner, 10, "no such words") == []
    assert await walk(history, owner, 4, "topic") == newest_first

    # The newest sessions only, and a byte bound that a request stops at (with a `next`).
    assert (
        await walk(History(store, search_max_sessions=3), owner, 10, "topic") == (newest_first[:3])
    )
    bounded = History(store, search_max_bytes=1)
    first = await bounded.list(owner, limit=10, query="topic")
    # Every request reads at least one session, then stops at the bound.
    assert ([s.id for s in first.sessions], first.next is not None) == ([newest_first[0]], True)
    assert await walk(bounded, owner, 10, "topic") == newest_first
    assert await walk(bounded, owner, 10, "answer to topic 002") == [sessions[2]]

    with pytest.raises(InvalidCursorError):
        await history.list(owner, limit=10, cursor="!!!")


async def test_gone_sessions_are_pruned_and_ties_are_paged_without_loss(
    store: SessionStore, redis: AnyRedis
) -> None:
    history = History(store)
    owner = _owner()
    index = OWNER_INDEX_PREFIX + owner
    sessions = [await store.create(SessionSettings(model="m"), owner=owner) for _ in range(70)]
    # More than one index page (64) of ties, across every primary.
    now_ms = int(time.time() * 1000)
    await cast("Awaitable[int]", redis.zadd(index, dict.fromkeys(sessions, now_ms)))
    by_id = sorted(sessions, reverse=True)
    for limit in (1, 3, 64, 65, 100):
        assert await walk(history, owner, limit) == by_id, limit

    vanished, expired = by_id[5], by_id[66]
    await cast("Awaitable[int]", redis.delete(SessionKeys(vanished).session))
    old_ms = int((time.time() - store._session_ttl - 5) * 1000)
    await cast("Awaitable[int]", redis.zadd(index, {expired: old_ms}))
    kept = [s for s in by_id if s not in (vanished, expired)]
    assert await walk(history, owner, 3) == kept
    assert await walk(history, owner, 100, "no match") == []
    listed = await cast("Awaitable[list[bytes]]", redis.zrevrange(index, 0, -1))
    assert [member.decode() for member in listed] == kept
    ttl = await cast("Awaitable[int]", redis.ttl(index))
    assert store._session_ttl - 5 < ttl <= store._session_ttl


@contextlib.asynccontextmanager
async def _sharded(redis: AnyRedis, cluster: LocalCluster, channel: str) -> AsyncIterator[PubSub]:
    """A sharded subscription (SSUBSCRIBE: redis-py's asyncio PubSub has no method for it) to
    ``channel`` on the primary that owns its slot, confirmed."""
    assert isinstance(redis, RedisCluster)
    node = cluster.primary_of_key(channel)
    client = node_client(redis, "127.0.0.1", node.port)
    try:
        pubsub = client.pubsub()
        await pubsub.execute_command("SSUBSCRIBE", channel)
        confirmed = await pubsub.parse_response(block=False, timeout=_WITHIN)
        assert confirmed == [b"ssubscribe", channel.encode(), 1]
        try:
            yield pubsub
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
    finally:
        await client.aclose()


async def _sharded_message(pubsub: PubSub, wait: float) -> bytes | None:
    """The next message's data, or None after ``wait`` seconds without one."""
    response = await pubsub.parse_response(block=False, timeout=wait)
    if response is None:
        return None
    kind, _, data = response
    assert kind == b"smessage", response
    return cast("bytes", data)


async def test_a_rename_tells_every_tab_once_and_moves_the_session_up(
    store: SessionStore, redis: AnyRedis, cluster: LocalCluster
) -> None:
    history = History(store)
    owner = _owner()
    session = await store.create(SessionSettings(model="m"), owner=owner)
    await _exchange(store, session, "first")
    other = await store.create(SessionSettings(model="m"), owner=owner)
    before = (await history.list(owner, limit=10)).sessions
    assert [s.id for s in before] == [other, session]
    async with _sharded(redis, cluster, SessionKeys(session).channel) as pubsub:
        await asyncio.sleep(0.002)
        await history.set_title(session, "Renamed")
        await history.set_title(session, "Renamed")  # a retried call: no second event
        message = await _sharded_message(pubsub, _WITHIN)
        assert message is not None
        assert decode_wire(message) == (5, "title", b'{"title":"Renamed"}')
        assert await _sharded_message(pubsub, 0.3) is None
    assert (await store.snapshot(session)).title == "Renamed"
    after = (await history.list(owner, limit=10)).sessions
    assert [(s.id, s.title) for s in after] == [(session, "Renamed"), (other, "")]
    assert after[0].updated_at > before[1].updated_at
    with pytest.raises(SessionNotFoundError):
        await history.set_title(new_id(), "nobody's")


async def _keys_of(redis: AnyRedis, session: str) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"*{session}*")]


async def test_delete_stops_the_reply_tells_the_tabs_and_removes_the_session_entry_and_link(
    store: SessionStore, redis: AnyRedis, cluster: LocalCluster
) -> None:
    history, links = History(store), ShareLinks(redis)
    owner = _owner()
    session = await store.create(SessionSettings(model="m"), owner=owner)
    await _exchange(store, session, "one")
    keep = await store.create(SessionSettings(model="m"), owner=owner)
    token = (await links.share(session)).token
    # The session, its owner's index and its link: three slots (else this proves little).
    slots = {
        key_slot(k.encode())
        for k in (SessionKeys(session).session, OWNER_INDEX_PREFIX + owner, ShareKeys(token).link)
    }
    assert len(slots) == 3
    _, reply_id = await store.begin_reply(session, model="m", content="two")
    await store.append_delta(session, reply_id, "partial")
    async with (
        open_pubsub(redis) as control,
        _sharded(redis, cluster, SessionKeys(session).channel) as tabs,
    ):
        await control.subscribe(CONTROL_CHANNEL)
        assert (await control.get_message(timeout=5) or {}).get("type") == "subscribe"
        await history.delete(session)
        stop = await control.get_message(ignore_subscribe_messages=True, timeout=_WITHIN)
        assert stop is not None
        assert stop["data"] == f"{session} {reply_id}".encode()
        deleted = await _sharded_message(tabs, _WITHIN)
        assert deleted == b"8 deleted {}"  # 4 events an exchange, then message, start, delta
    assert await _keys_of(redis, session) == []
    assert await redis.exists(ShareKeys(token).link) == 0
    assert await links.session_of(token) is None
    index = await cast("Awaitable[list[bytes]]", redis.zrange(OWNER_INDEX_PREFIX + owner, 0, -1))
    assert index == [keep.encode()]
    assert [s.id for s in (await history.list(owner, limit=10)).sessions] == [keep]
    await assert_deleted_for_good(store, history, session, reply_id)
    assert await _keys_of(redis, session) == []


async def _named(redis: AnyRedis, session: str) -> bytes | None:
    return await cast("Awaitable[bytes | None]", redis.hget(SessionKeys(session).session, _SHARE))


async def _links_to(redis: AnyRedis, session: str) -> list[bytes]:
    """Every share link key that holds ``session``'s id."""
    found = []
    async for key in redis.scan_iter(match=ShareKeys("*").link):
        if await cast("Awaitable[bytes | None]", redis.get(key)) == session.encode():
            found.append(key)
    return found


async def test_share_and_revoke_in_steps_tell_the_link_s_viewers(
    store: SessionStore, redis: AnyRedis, cluster: LocalCluster
) -> None:
    links = ShareLinks(redis)
    session = await store.create(SessionSettings(model="m"))
    link = await links.share(session)
    assert link.created
    assert key_slot(ShareKeys(link.token).link.encode()) != key_slot(
        SessionKeys(session).session.encode()
    )
    assert await links.session_of(link.token) == session
    again = await links.share(session)
    assert (again.token, again.created) == (link.token, False)
    session_ttl = await cast("Awaitable[int]", redis.ttl(SessionKeys(session).session))
    assert await cast("Awaitable[int]", redis.ttl(ShareKeys(link.token).link)) == session_ttl
    seq_before = await store.last_seq(session)

    async with _sharded(redis, cluster, ShareKeys(link.token).revoked) as viewers:
        await links.revoke(session)
        message = await _sharded_message(viewers, _WITHIN)
        assert message is not None
        assert decode_wire(message) == (0, "revoked", b"{}")
    assert await store.last_seq(session) == seq_before
    assert await links.session_of(link.token) is None
    assert await redis.exists(ShareKeys(link.token).link) == 0
    assert await _named(redis, session) is None
    await links.revoke(session)  # idempotent

    with pytest.raises(SessionNotFoundError):
        await links.share(new_id())
    with pytest.raises(SessionNotFoundError):
        await links.revoke(new_id())
    assert await links.session_of("A" * 32) is None


async def test_a_crash_between_the_steps_leaves_no_live_link(
    store: SessionStore, redis: AnyRedis
) -> None:
    links = ShareLinks(redis)
    session = await store.create(SessionSettings(model="m"))

    # A share that made its key but crashed before the session named it: a dead key (which
    # expires with the session).
    orphan = "B" * 32
    await cast("Awaitable[object]", redis.set(ShareKeys(orphan).link, session, ex=60))
    assert await links.session_of(orphan) is None
    fresh = await links.share(session)
    assert fresh.created
    assert fresh.token != orphan

    # A revoke that removed the key but crashed before the session forgot the token.
    await cast("Awaitable[int]", redis.delete(ShareKeys(fresh.token).link))
    assert await links.session_of(fresh.token) is None
    replaced = await links.share(session)  # the dead token is replaced, never revived
    assert replaced.created
    assert replaced.token != fresh.token
    assert await links.session_of(replaced.token) == session
    assert await links.session_of(fresh.token) is None
    await cast("Awaitable[int]", redis.delete(ShareKeys(replaced.token).link))
    await links.revoke(session)  # done again, it finishes the job
    assert await _named(redis, session) is None

    # Sharing at once from many requests: one token, made once, no stray keys (but the
    # orphan above).
    made = await asyncio.gather(*(links.share(session) for _ in range(6)))
    assert len({link.token for link in made}) == 1
    assert sum(link.created for link in made) == 1
    assert sorted(await _links_to(redis, session)) == sorted(
        [ShareKeys(orphan).link.encode(), ShareKeys(made[0].token).link.encode()]
    )


@pytest.fixture(scope="module")
def slow_delay() -> float:
    return 0.005  # the `slow` reply's 200 tokens in ~1 s


async def test_through_the_services_a_viewer_gets_revoked_and_a_delete_ends_the_link(
    gateways: list[Service], webs: list[Service]
) -> None:
    """The gateways share, revoke and delete; viewers on both web processes watch (their
    fan-out joins the link's sharded channel on its primary)."""
    async with (
        httpx.AsyncClient(timeout=_WITHIN) as owner,  # keeps its owner cookie
        httpx.AsyncClient(timeout=_WITHIN) as stranger,
    ):
        sessions = [await create_session(owner, gateways[n].url) for n in range(2)]
        shared = sessions[1]
        token = await share(owner, gateways[1].url, shared)
        listed = (await owner.get(f"{gateways[0].url}/api/sessions")).json()
        assert [s["id"] for s in listed["sessions"]] == sessions[::-1]

        async with contextlib.AsyncExitStack() as stack:
            tab = await stack.enter_async_context(
                open_raw(owner, f"{webs[0].url}/api/sessions/{shared}/events")
            )
            viewers = [
                await stack.enter_async_context(open_raw(stranger, shared_events(web, token)))
                for web in webs
            ]
            for stream in (tab, *viewers):
                assert (await stream.next_frame() or Frame(None, "", None)).name == "snapshot"
            await send_message(owner, gateways[0].url, shared, "go")
            seen = await tab.until("done")
            assert reply_text(seen) == SLOW_TEXT
            for viewer in viewers:
                assert await viewer.until("done") == seen
            revoked = await owner.delete(f"{gateways[1].url}/api/sessions/{shared}/share")
            assert revoked.status_code == 204
            for viewer in viewers:
                assert await viewer.next_frame() == Frame(None, "revoked", {})
                assert await viewer.next_frame() is None
        for web in webs:
            response = await stranger.get(f"{web.url}/api/shared/{token}")
            assert response.status_code == 404
            assert response.json() == {"detail": "No such share link (it may have been revoked)"}

        token = await share(owner, gateways[0].url, shared)
        assert (await stranger.get(f"{webs[0].url}/api/shared/{token}")).status_code == 200
        deleted = await owner.delete(f"{gateways[1].url}/api/sessions/{shared}")
        assert deleted.status_code == 204
        assert (await stranger.get(f"{webs[1].url}/api/shared/{token}")).status_code == 404
        listed = (await owner.get(f"{gateways[0].url}/api/sessions")).json()
        assert [s["id"] for s in listed["sessions"]] == sessions[:1]


async def test_through_the_gateways_the_list_pages_searches_and_a_rename_reaches_the_tabs(
    gateways: list[Service], webs: list[Service]
) -> None:
    """Either gateway serves the list, and takes the other's cursors."""
    async with httpx.AsyncClient(timeout=_WITHIN) as owner:
        sessions = [await create_session(owner, gateways[n % 2].url) for n in range(5)]
        renamed = sessions[2]
        async with open_raw(owner, f"{webs[1].url}/api/sessions/{renamed}/events") as tab:
            assert (await tab.next_frame() or Frame(None, "", None)).name == "snapshot"
            response = await owner.patch(
                f"{gateways[0].url}/api/sessions/{renamed}", json={"title": "Paris trip"}
            )
            assert response.status_code == 200, response.text
            assert await tab.next_frame() == Frame(1, "title", {"title": "Paris trip"})
        newest_first = [renamed, *(s for s in sessions[::-1] if s != renamed)]

        walked: list[str] = []
        cursor: str | None = None
        for page_number in range(10):
            params = {"limit": "2", **({} if cursor is None else {"cursor": cursor})}
            url = f"{gateways[page_number % 2].url}/api/sessions"
            page = (await owner.get(url, params=params)).json()
            walked += [s["id"] for s in page["sessions"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert walked == newest_first
        found = (await owner.get(f"{gateways[1].url}/api/sessions", params={"q": "PARIS"})).json()
        assert [(s["id"], s["title"]) for s in found["sessions"]] == [(renamed, "Paris trip")]
        assert found["next"] is None


class _CheapHasher(PasswordHasher):
    """argon2id, cheap enough for tests."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)


async def test_accounts_and_logins_touch_one_slot_at_a_time(redis: AnyRedis) -> None:
    users = Users(redis, _CheapHasher())
    name = await users.add(new_username("Alice"), "first")
    # The users set and the user's hash: two slots (else this proves little).
    assert key_slot(USERS.encode()) != key_slot((USER_PREFIX + name).encode())
    assert name in await users.names()
    assert await users.verify(name.upper(), "first") == name
    with pytest.raises(UserExistsError):
        await users.add(name, "second")
    assert await users.verify(name, "first") == name

    tokens = LoginTokens(redis, users=users, max_age=3600)
    token = await tokens.issue(name)
    login = await tokens.login(token)
    assert login is not None
    assert login.user == name
    stamp = await users.stamp(name)
    await users.set_password(name, "new")
    assert await users.stamp(name) not in (None, stamp)
    assert await users.verify(name, "first") is None
    assert await users.verify(name, "new") == name
    assert await tokens.login(token) is None  # a new password ends every login
    fresh = await tokens.issue(name)
    await tokens.revoke(fresh)
    assert await tokens.login(fresh) is None

    await users.remove(name)
    assert name not in await users.names()
    assert await redis.exists(USER_PREFIX + name) == 0
    with pytest.raises(UnknownUserError):
        await users.remove(name)
    with pytest.raises(UnknownUserError):
        await users.set_password(name, "again")

    throttle = LoginThrottle(redis, max_failures=2, window=60)
    client = f"198.51.100.{secrets.randbelow(250)}-{new_id()}"
    assert [await throttle.take_attempt(client) for _ in range(2)] == [0, 0]
    assert 0 < await throttle.take_attempt(client) <= 60
    await throttle.succeeded(client)
    assert 0 < await throttle.take_attempt(client) <= 60


async def test_the_users_cli_on_the_cluster_removes_a_user_with_their_conversations(
    cluster: LocalCluster, store: SessionStore
) -> None:
    name = new_username()
    added = await asyncio.to_thread(run_users_cli, cluster.url, "add", name, stdin="pw\n")
    assert (added.code, added.out) == (0, f"added user {name!r}\n"), added.err
    taken = await asyncio.to_thread(run_users_cli, cluster.url, "add", name, stdin="pw\n")
    assert (taken.code, taken.err) == (1, f"error: user {name!r} already exists\n")
    listed = await asyncio.to_thread(run_users_cli, cluster.url, "list")
    assert name in listed.out.splitlines()
    changed = await asyncio.to_thread(run_users_cli, cluster.url, "passwd", name, stdin="pw2\n")
    assert changed.code == 0, changed.err

    owner = user_owner(name)
    theirs = [await store.create(SessionSettings(model="m"), owner=owner) for _ in range(4)]
    removed = await asyncio.to_thread(run_users_cli, cluster.url, "remove", name)
    assert (removed.code, removed.out) == (
        0,
        f"removed user {name!r} and their 4 conversation(s); their logins have ended\n",
    ), removed.err
    for session in theirs:
        assert not await store.exists(session)
    assert await store.redis.exists(OWNER_INDEX_PREFIX + owner) == 0
    listed = await asyncio.to_thread(run_users_cli, cluster.url, "list")
    assert name not in listed.out.splitlines()
