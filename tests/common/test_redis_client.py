"""What we rely on in redis-py's asyncio client."""

from __future__ import annotations

import asyncio
import random
from urllib.parse import urlsplit

from chatrelay_common import Done, SessionSettings, SessionStore
from redis.asyncio import Redis

from tests.support.redis_server import open_plain_redis


async def test_cancelling_a_task_mid_command_cancels_it(redis: Redis) -> None:
    """A reply's keepalive and an SSE stream are cancelled mid-command; the cancellation must
    end the task. (redis-py 8.0/8.1 swallowed about half of them: the task ran on.)"""
    rng = random.Random(7)
    went_on = 0

    async def commands() -> None:
        nonlocal went_on
        for _ in range(1000):
            await redis.get("chatrelay:test:cancel")
            await asyncio.sleep(0)
        went_on += 1

    for _ in range(200):
        task = asyncio.create_task(commands())
        await asyncio.sleep(rng.uniform(0, 0.001))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, "a cancelled task is still running"
        assert task.cancelled() or went_on
    assert went_on == 0


class _CuttingProxy:
    """Forwards connections to Redis. When armed, it passes the next EVALSHA on and then cuts
    the client's connection before the answer comes back, as a network blip would: the
    script ran, the client does not know, and retries it."""

    def __init__(self, target: str) -> None:
        url = urlsplit(target)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 6379
        self.armed = False
        self.cuts = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aexit__(self, *_: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)

        async def answers() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)
                await writer.drain()

        down = asyncio.create_task(answers())
        self._tasks.add(down)
        try:
            while data := await reader.read(65536):
                cut = self.armed and b"EVALSHA" in data.upper()
                if cut:
                    self.armed = False
                    self.cuts += 1
                    down.cancel()  # before the answer can come back
                up_writer.write(data)
                await up_writer.drain()
                if cut:
                    await asyncio.sleep(0.2)  # Redis runs it
                    break
        finally:
            down.cancel()
            writer.close()
            up_writer.close()


async def test_a_retried_write_whose_first_attempt_ran_is_applied_once(
    redis_server_url: str,
) -> None:
    proxy = _CuttingProxy(redis_server_url)
    async with proxy as url, open_plain_redis(url) as client:
        store = SessionStore(client)
        session = await store.create(SessionSettings(model="m"))
        # Every script once, so that none is loaded during an armed call.
        _, warm = await store.begin_reply(session, model="m", content="warm")
        await store.append_delta(session, warm, "w", batch=1)
        await store.finish_reply(session, warm, Done(warm, "stop", None))
        before = (await store.snapshot(session)).seq

        proxy.armed = True
        _, reply_id = await store.begin_reply(session, model="m", content="hi")
        assert proxy.cuts == 1
        for batch, text in enumerate(["Hel", "lo"], start=1):
            proxy.armed = True
            assert await store.append_delta(session, reply_id, text, batch=batch)
        assert proxy.cuts == 3

        snapshot = await store.snapshot(session)
        assert [(m.content, m.status) for m in snapshot.messages[2:]] == [
            ("hi", "complete"),
            ("Hello", "streaming"),
        ]
        log = await store.events_after(session, before)
        assert [e.name for e in log] == ["message", "start", "delta", "delta"]
        assert snapshot.seq == before + 4


async def test_an_idle_subscription_outlives_the_socket_timeout(redis_server_url: str) -> None:
    """The fan-out's client (retry=False) reads with no timeout; the gateway's stop listener
    reads with get_message's own timeout on the command client. Both stay up while idle."""
    async with (
        open_plain_redis(redis_server_url, retry=False, socket_timeout=0.2) as fanout_client,
        open_plain_redis(redis_server_url, socket_timeout=0.2) as command_client,
    ):
        fanout = fanout_client.pubsub(ignore_subscribe_messages=True)
        listener = command_client.pubsub(ignore_subscribe_messages=True)
        await fanout.subscribe("chatrelay:test:idle")
        await listener.subscribe("chatrelay:test:idle")

        async def first_message() -> bytes:
            async for message in fanout.listen():
                data: bytes = message["data"]
                return data
            raise AssertionError("listen() ended")

        heard = asyncio.create_task(first_message())
        polls = 0
        for _ in range(8):  # 1.2 s: six socket timeouts, idle
            assert await listener.get_message(timeout=0.15) is None
            polls += 1
        assert not heard.done()
        await command_client.publish("chatrelay:test:idle", b"still here")
        assert await asyncio.wait_for(heard, 5) == b"still here"
        message = await listener.get_message(timeout=5)
        assert message is not None
        assert message["data"] == b"still here"
        assert polls == 8
        await fanout.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()  # type: ignore[no-untyped-call]
