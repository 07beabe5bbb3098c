"""A flush hands events to a waiting connection's ``deliver`` without waking its task, and
the connection's stream stays exact when such a write has to wait for a slow reader."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chatrelay_common import Done, SessionSettings, SessionStore, encode_wire, open_redis
from chatrelay_web._fanout import Fanout, LiveEvent
from redis.asyncio import Redis

from tests.support.services import run_service
from tests.web.test_fanout import running

CHANNEL = "chatrelay:test:eager"


@pytest.fixture
async def fanout(redis_server_url: str) -> AsyncIterator[Fanout]:
    async with open_redis(redis_server_url, retry=False) as client, running(Fanout(client)) as f:
        yield f


async def publish_together(redis: Redis, seqs: range) -> None:
    """One MULTI: the fan-out reads them in one go and flushes them once."""
    async with redis.pipeline(transaction=True) as pipe:
        for seq in seqs:
            pipe.publish(CHANNEL, encode_wire(seq, "delta", b'{"n":%d}' % seq))
        await pipe.execute()


def frames(seqs: range) -> list[bytes]:
    return [b'id: %d\nevent: delta\ndata: {"n":%d}\n\n' % (seq, seq) for seq in seqs]


async def test_a_flush_delivers_to_a_waiting_tab_which_keeps_waiting_until_its_new_deadline(
    fanout: Fanout, redis: Redis
) -> None:
    loop = asyncio.get_running_loop()
    delivered: list[list[bytes]] = []
    arrived = asyncio.Event()
    new_deadline = math.inf

    def deliver(events: list[LiveEvent]) -> float:
        delivered.append([event.frame for event in events])
        arrived.set()
        return new_deadline

    async with fanout.subscribe(CHANNEL) as subscriber:
        subscriber.deliver_with(deliver)
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        new_deadline = loop.time() + 0.5
        await publish_together(redis, range(1, 4))
        await asyncio.wait_for(arrived.wait(), 10)
        delivered_at = loop.time()
        assert delivered == [frames(range(1, 4))]
        assert not waiting.done()  # the task was not woken for them
        assert subscriber.pending == []
        # Its deadline moved from "never" to the one ``deliver`` returned.
        assert await asyncio.wait_for(waiting, 10) == []
        waited = loop.time() - delivered_at
        print(f"the take returned {waited:.3f} s after the delivery (deadline 0.5 s after)")
        assert new_deadline <= loop.time()


async def test_a_declined_delivery_wakes_the_tab_with_the_events(
    fanout: Fanout, redis: Redis
) -> None:
    offered: list[list[int]] = []

    def decline(events: list[LiveEvent]) -> None:
        offered.append([event.seq for event in events])

    async with fanout.subscribe(CHANNEL) as subscriber:
        subscriber.deliver_with(decline)
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        await publish_together(redis, range(1, 3))
        batch = await asyncio.wait_for(waiting, 10)
        assert [None if event is None else event.frame for event in batch] == frames(range(1, 3))
        assert offered == [[1, 2]]


async def test_a_delivery_that_needs_the_task_wakes_it_with_nothing_left_pending(
    fanout: Fanout, redis: Redis
) -> None:
    offered: list[list[int]] = []

    def needs_the_task(events: list[LiveEvent]) -> float:
        offered.append([event.seq for event in events])
        return -math.inf

    async with fanout.subscribe(CHANNEL) as subscriber:
        subscriber.deliver_with(needs_the_task)
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        await publish_together(redis, range(1, 3))
        assert await asyncio.wait_for(waiting, 10) == []
        assert offered == [[1, 2]]


async def test_a_closed_tab_is_woken_with_its_close_not_offered_it(
    fanout: Fanout, redis: Redis
) -> None:
    offered: list[list[int]] = []

    def deliver(events: list[LiveEvent]) -> float:
        offered.append([event.seq for event in events])
        return math.inf

    async with fanout.subscribe(CHANNEL) as subscriber:
        subscriber.deliver_with(deliver)
        waiting = asyncio.create_task(subscriber.take())
        await asyncio.sleep(0)
        subscriber.close()
        await publish_together(redis, range(1, 2))
        assert await asyncio.wait_for(waiting, 10) == [None]
        await asyncio.sleep(0.2)  # the event's flush, which must leave it to the task
        assert offered == []


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    sock.settimeout(60)
    chunks: list[bytes] = []
    tail = b""
    while marker not in tail:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended early"
        chunks.append(chunk)
        tail = tail[-len(marker) :] + chunk
    return b"".join(chunks)


async def test_a_reader_that_pauses_then_reads_gets_every_event_once_in_order(
    redis_server_url: str, service_logs: Path, redis: Redis
) -> None:
    """A reader that stops reading for a while: once the kernel's send buffer (4 MiB at most
    here) and the transport's are full, the flush's writes to it find the socket paused and
    hand over to its task, which finishes them in order before writing what came meanwhile;
    then the flush writes to it again. The backlog cap is raised out of the way."""
    big = 64 * 1024 * 1024
    store = SessionStore(redis, log_max_events=10_000, log_max_bytes=big, session_max_bytes=big)
    env = {"REDIS_URL": redis_server_url, "WEB_MAX_BACKLOG_BYTES": str(big)}
    with run_service("web", env, service_logs) as web:
        session_id = await store.create(SessionSettings(model="m"))
        _, reply_id = await store.begin_reply(session_id, model="m", content="hi")
        port = int(web.url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", port))
            request = f"GET /api/sessions/{session_id}/events HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request.encode())
            head = await asyncio.to_thread(read_until, sock, b"event: snapshot")
            assert head.startswith(b"HTTP/1.1 200"), head
            pieces = [f"{n:05d}" + "x" * 4000 for n in range(2300)]
            for piece in pieces[:2000]:  # 8 MB while the reader does not read
                await store.append_delta(session_id, reply_id, piece)
            await asyncio.sleep(0.5)
            reading = asyncio.create_task(asyncio.to_thread(read_until, sock, b"event: done"))
            for piece in pieces[2000:]:
                await store.append_delta(session_id, reply_id, piece)
                await asyncio.sleep(0.002)
            await store.finish_reply(
                session_id, reply_id, Done(reply_id=reply_id, finish_reason="stop", usage=None)
            )
            body = head + await reading
        assert "closing a subscriber" not in web.log()  # it stayed live
    ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
    # The snapshot's id, then the deltas and the done, each exactly once, in order.
    assert ids == list(range(ids[0], ids[0] + len(pieces) + 2))
    texts = [
        line.split(b'"text":"', 1)[1].split(b'"', 1)[0].decode()
        for line in body.split(b"\n")
        if line.startswith(b"data: ") and b'"text":"' in line
    ]
    assert texts == pieces
