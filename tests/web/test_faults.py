"""The events stream on a bad day, through a real web process and a real Redis: a lost
publication, a slow reader, the fan-out's connection killed, Redis restarted mid-reply."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import (
    Delta,
    Done,
    SessionKeys,
    SessionSettings,
    SessionStore,
    encode_data,
    open_redis,
)
from redis.asyncio import Redis

from tests.support.redis_process import RedisProcess, redis_process
from tests.support.services import Service, run_service
from tests.support.sse import Event, collect_until, open_events, reply_text


@pytest.fixture
async def big_store(redis: Redis) -> SessionStore:
    """A log and a session big enough to hold every event these tests write."""
    big = 64 * 1024 * 1024
    return SessionStore(redis, log_max_events=10_000, log_max_bytes=big, session_max_bytes=big)


@pytest.fixture
def stalling_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1", "WEB_STALL_SECONDS": "1"}
    with run_service("web", env, service_logs) as service:
        yield service


async def log_without_publishing(redis: Redis, session_id: str, reply_id: str, text: str) -> int:
    """What the append script does, minus the PUBLISH: a live event the fan-out never hears."""
    keys = SessionKeys(session_id)
    seq = int(await redis.hincrby(keys.session, "seq", 1))  # type: ignore[misc]
    data = encode_data(Delta(reply_id=reply_id, text=text))
    await redis.xadd(keys.log, {"e": "delta", "d": data}, id=f"{seq}-0")
    await redis.append(keys.text(reply_id), text)
    return seq


async def settings_event(
    store: SessionStore, session_id: str, stream: AsyncIterator[Event]
) -> Event:
    """A live event that says nothing about replies: once it arrived, the stream is past its
    snapshot or replay, and live."""
    await store.update_settings(session_id, {"temperature": 0.5})
    event = await anext(stream)
    assert (event.name, event.data["settings"]["temperature"]) == ("settings", 0.5)
    return event


def assert_ids_consecutive(events: list[Event]) -> None:
    ids = [e.id for e in events]
    assert ids == list(range(ids[0] or 0, (ids[0] or 0) + len(ids))), ids


@pytest.mark.parametrize(
    ("resumed", "kind"),
    [(False, "delta"), (True, "delta"), (True, "reasoning")],
    ids=["from-snapshot", "resumed-up-to-date", "resumed-after-reasoning"],
)
async def test_a_stream_stalled_mid_reply_replays_what_the_log_holds(
    client: httpx.AsyncClient,
    stalling_web: Service,
    big_store: SessionStore,
    redis: Redis,
    resumed: bool,
    kind: str,
) -> None:
    session_id = await big_store.create(SessionSettings(model="m"))
    _, reply_id = await big_store.begin_reply(session_id, model="m", content="hi")
    await big_store.append_delta(session_id, reply_id, "heard ", kind=kind)
    # Fresh: the snapshot shows the reply streaming. Resumed at the newest event (a delta or
    # reasoning): nothing to replay, and that event says a reply streams.
    last_event_id = await big_store.last_seq(session_id) if resumed else None
    async with open_events(client, stalling_web.url, session_id, last_event_id) as stream:
        if not resumed:
            snapshot = await anext(stream)
            assert snapshot.data["messages"][-1] == {
                "id": reply_id,
                "role": "assistant",
                "content": "heard ",
                "status": "streaming",
                "created_at": snapshot.data["messages"][0]["created_at"],
                "model": "m",
                "reasoning": "",
                "finish_reason": None,
                "usage": None,
                "error": None,
                "timing": None,
            }
        live = await settings_event(big_store, session_id, stream)
        lost = await log_without_publishing(redis, session_id, reply_id, "lost ")
        started = time.monotonic()
        async with asyncio.timeout(15):  # WEB_STALL_SECONDS=1; generous on a shared machine
            recovered = await anext(stream)
        print(f"a lost live event replayed from the log after {time.monotonic() - started:.2f} s")
        await big_store.append_delta(session_id, reply_id, "after")
        await big_store.finish_reply(
            session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
        )
        rest = await collect_until(stream, "done")

    assert (recovered.id, recovered.name, recovered.data) == (
        lost,
        "delta",
        {"reply_id": reply_id, "text": "lost "},
    )
    events = [live, recovered, *rest]
    assert_ids_consecutive(events)
    assert reply_text(events, reply_id) == "lost after"
    assert "a live stream missed events" in stalling_web.log()


@pytest.mark.parametrize("resumed", [False, True], ids=["from-snapshot", "resumed-up-to-date"])
async def test_a_quiet_stream_with_no_reply_in_flight_does_not_poll_the_log(
    client: httpx.AsyncClient,
    stalling_web: Service,
    big_store: SessionStore,
    redis: Redis,
    resumed: bool,
) -> None:
    """The safety net is for replies in flight only: an idle session's event that never got
    published (none does, in real life) stays unsent, and the stream only beats."""
    session_id = await big_store.create(SessionSettings(model="m"))
    _, reply_id = await big_store.begin_reply(session_id, model="m", content="hi")
    await big_store.finish_reply(
        session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
    )
    last_event_id = await big_store.last_seq(session_id) if resumed else None
    async with open_events(client, stalling_web.url, session_id, last_event_id) as stream:
        if not resumed:
            assert (await anext(stream)).name == "snapshot"
        await settings_event(big_store, session_id, stream)
        await log_without_publishing(redis, session_id, reply_id, "x")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(3):
                await anext(stream)


@pytest.mark.parametrize(
    "limit", [{"WEB_MAX_BACKLOG": "10"}, {"WEB_MAX_BACKLOG_BYTES": str(64 * 1024)}]
)
async def test_a_reader_too_far_behind_is_closed_and_resumes_from_the_log(
    redis_server_url: str,
    service_logs: Path,
    big_store: SessionStore,
    limit: dict[str, str],
) -> None:
    env = {"REDIS_URL": redis_server_url, **limit}
    with run_service("web", env, service_logs) as web:
        session_id = await big_store.create(SessionSettings(model="m"))
        _, reply_id = await big_store.begin_reply(session_id, model="m", content="hi")
        piece = "x" * 16_000
        port = int(web.url.rsplit(":", 1)[1])
        with socket.socket() as sock:  # a reader that stops reading: a tiny receive buffer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            request = f"GET /api/sessions/{session_id}/events HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request.encode())
            head = sock.recv(4096)
            assert head.startswith(b"HTTP/1.1 200"), head
            for _ in range(400):  # ~6.4 MB: more than socket buffers hold
                await big_store.append_delta(session_id, reply_id, piece)
            await big_store.finish_reply(
                session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
            )
            for _ in range(200):
                if "closing a subscriber" in web.log():
                    break
                await asyncio.sleep(0.05)
            assert "closing a subscriber" in web.log()
            body = head + await asyncio.to_thread(read_to_end, sock)
        assert body.endswith(b"0\r\n\r\n")  # the server ended the stream itself
        ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
        assert ids == list(range(ids[0], ids[-1] + 1))
        assert ids[-1] < 403  # closed before the reply ended: it was behind

        async with (
            httpx.AsyncClient(timeout=30) as client,
            open_events(client, web.url, session_id, last_event_id=ids[-1]) as stream,
        ):
            rest = await collect_until(stream, "done")
    assert [e.id for e in rest] == list(range(ids[-1] + 1, 404))
    assert all(e.data["text"] == piece for e in rest[:-1])


def read_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    chunks: list[bytes] = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        if b"".join(chunks[-2:]).endswith(b"0\r\n\r\n"):
            break
    return b"".join(chunks)


@pytest.fixture
async def restartable(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    with redis_process(tmp_path) as server:
        yield server


async def readyz(client: httpx.AsyncClient, web: Service) -> tuple[int, dict[str, str]]:
    response = await client.get(f"{web.url}/readyz")
    return response.status_code, response.json()


async def test_readyz_is_503_while_the_fanout_is_cut_off_and_streams_end(
    client: httpx.AsyncClient, restartable: RedisProcess, service_logs: Path
) -> None:
    with run_service("web", {"REDIS_URL": restartable.url}, service_logs) as web:
        async with open_redis(restartable.url) as redis:
            store = SessionStore(redis)
            session_id = await store.create(SessionSettings(model="m"))
            async with open_events(client, web.url, session_id) as stream:
                await anext(stream)
                assert await readyz(client, web) == (200, {"status": "ok"})
                await redis.client_kill_filter(_type="pubsub")
                async with asyncio.timeout(10):
                    with pytest.raises(StopAsyncIteration):
                        await anext(stream)  # closed: the browser resumes from the log
            statuses: list[int] = []
            async with asyncio.timeout(20):
                while not statuses or statuses[-1] != 200:
                    status, body = await readyz(client, web)
                    statuses.append(status)
                    if status == 503:
                        assert body == {"detail": "Live events are not connected to Redis"}
                    await asyncio.sleep(0.02)
    assert statuses[0] == 503


async def test_a_redis_restart_mid_reply_ends_streams_and_tabs_resume_with_the_exact_text(
    client: httpx.AsyncClient, restartable: RedisProcess, service_logs: Path
) -> None:
    env = {"REDIS_URL": restartable.url, "WEB_HEARTBEAT_SECONDS": "1"}
    with run_service("web", env, service_logs) as web:
        async with open_redis(restartable.url) as redis:
            store = SessionStore(redis)
            session_id = await store.create(SessionSettings(model="m"))
            _, reply_id = await store.begin_reply(session_id, model="m", content="hi")
            async with open_events(client, web.url, session_id) as stream:
                received = [await anext(stream)]
                for i in range(5):
                    await store.append_delta(session_id, reply_id, f"a{i} ")
                received += [await anext(stream) for _ in range(5)]
                restartable.stop()
                async with asyncio.timeout(10):
                    received += [event async for event in stream]
            assert (await client.get(f"{web.url}/readyz")).status_code == 503
            events_while_down = await client.get(f"{web.url}/api/sessions/{session_id}/events")
            assert events_while_down.status_code == 503
            restartable.start()
            started = time.monotonic()
            async with asyncio.timeout(20):
                while True:
                    if (await client.get(f"{web.url}/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
            print(f"web ready {time.monotonic() - started:.2f} s after Redis came back")
            for i in range(5):
                await store.append_delta(session_id, reply_id, f"b{i} ")
            await store.finish_reply(
                session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
            )
            last = received[-1].id
            async with open_events(client, web.url, session_id, last_event_id=last) as stream:
                received += await collect_until(stream, "done")

    assert received[0].name == "snapshot"
    assert_ids_consecutive(received)
    assert reply_text(received, reply_id) == "a0 a1 a2 a3 a4 b0 b1 b2 b3 b4 "
