"""Runs replies: one task per streaming reply, coalescing tokens into few Redis writes, and
stopping when any client (through any gateway) asks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from chatrelay_common import CONTROL_CHANNEL, Done, ErrorEvent, SessionStore, Snapshot
from redis.exceptions import RedisError

from ._upstream import Completion, UpstreamConfig, UpstreamError, stream_chat

__all__ = ["Generations", "chat_body"]

logger = logging.getLogger("chatrelay.gateway")

# How often a running reply refreshes its lock and looks for a stop flag it may have missed.
KEEPALIVE_SECONDS = 2.0
_END = object()

CancelReason = Literal["stopped", "shutdown", "lost"]


def chat_body(snapshot: Snapshot, reply_id: str) -> dict[str, Any]:
    """The upstream request for ``reply_id``: the system prompt, then the conversation."""
    settings = snapshot.settings
    messages: list[dict[str, str]] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages.extend(
        {"role": m.role, "content": m.content}
        for m in snapshot.messages
        if m.id != reply_id and m.content
    )
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    return body


@dataclass(eq=False)
class _Job:
    session_id: str
    reply_id: str
    reader: asyncio.Task[Completion] | None = None
    cancel_reason: CancelReason | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def cancel(self, reason: CancelReason) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.reader is not None:
            self.reader.cancel()


class Generations:
    def __init__(self, store: SessionStore, client: httpx.AsyncClient, config: UpstreamConfig):
        self._store = store
        self._client = client
        self._config = config
        self._jobs: dict[str, _Job] = {}

    def start(self, session_id: str, reply_id: str) -> asyncio.Task[None]:
        """Run the reply in the background: it goes on when every tab has closed. The task
        is done once the reply has ended, whatever the outcome."""
        job = _Job(session_id, reply_id)
        self._jobs[session_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"reply {reply_id}")
        return job.task

    def stop(self, session_id: str, reply_id: str) -> None:
        job = self._jobs.get(session_id)
        if job is not None and job.reply_id == reply_id:
            job.cancel("stopped")

    async def aclose(self) -> None:
        """On shutdown: end every running reply with an error event, keeping its text."""
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel("shutdown")
        await asyncio.gather(*(job.task for job in jobs if job.task), return_exceptions=True)

    async def listen_for_stops(self) -> None:
        """Follow stop requests from every gateway; reconnects while Redis is away."""
        while True:
            pubsub = self._store.redis.pubsub()
            try:
                await pubsub.subscribe(CONTROL_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        session_id, reply_id = message["data"].decode().split(" ", 1)
                        self.stop(session_id, reply_id)
            except (RedisError, OSError) as exc:
                logger.warning("stop listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _run(self, job: _Job) -> None:
        try:
            await self._generate(job)
        except Exception:
            logger.exception("reply %s failed", job.reply_id)
            # Without Redis this fails too; then the lock expires and the next message
            # closes the reply as interrupted.
            with contextlib.suppress(RedisError, OSError):
                await self._finish(job, ErrorEvent(job.reply_id, "internal", "The gateway failed"))
        finally:
            if self._jobs.get(job.session_id) is job:
                del self._jobs[job.session_id]

    async def _generate(self, job: _Job) -> None:
        snapshot = await self._store.snapshot(job.session_id)
        pieces: asyncio.Queue[object] = asyncio.Queue()

        job.reader = asyncio.create_task(
            stream_chat(
                self._client, self._config, chat_body(snapshot, job.reply_id), pieces.put_nowait
            )
        )
        # However the reader ends (even cancelled before it ran), the writer hears of it.
        job.reader.add_done_callback(lambda _: pieces.put_nowait(_END))
        if job.cancel_reason is not None:  # stopped before it began
            job.reader.cancel()
        keepalive = asyncio.create_task(self._keepalive(job))
        try:
            await self._write_pieces(job, pieces)
            await asyncio.wait([job.reader])
        finally:
            keepalive.cancel()
            # Let it unwind: a Redis call cut off mid-way must release its connection.
            await asyncio.wait([keepalive])
        await self._finish(job, self._outcome(job, job.reader))

    async def _write_pieces(self, job: _Job, pieces: asyncio.Queue[object]) -> None:
        """Whatever arrived while the previous write was in flight goes in the next one."""
        ended = False
        while not ended:
            batch = [await pieces.get()]
            while not pieces.empty():
                batch.append(pieces.get_nowait())
            ended = batch[-1] is _END
            text = "".join(p for p in batch if isinstance(p, str))
            if text and not await self._store.append_delta(job.session_id, job.reply_id, text):
                job.cancel("lost")

    async def _keepalive(self, job: _Job) -> None:
        while True:
            try:
                if await self._store.stop_requested(job.session_id, job.reply_id):
                    job.cancel("stopped")
                elif not await self._store.refresh_lock(job.session_id, job.reply_id):
                    job.cancel("lost")
            except (RedisError, OSError) as exc:
                logger.warning("keepalive for reply %s: %s", job.reply_id, exc)
            await asyncio.sleep(KEEPALIVE_SECONDS)

    @staticmethod
    def _outcome(job: _Job, reader: asyncio.Task[Completion]) -> Done | ErrorEvent:
        if reader.cancelled():
            if job.cancel_reason == "stopped":
                return Done(job.reply_id, "stopped", None)
            return ErrorEvent(
                job.reply_id,
                "interrupted",
                "The gateway shut down during the answer; the partial answer is kept.",
            )
        error = reader.exception()
        if isinstance(error, UpstreamError):
            return ErrorEvent(job.reply_id, error.code, error.message)
        if error is not None:
            raise error
        completion = reader.result()
        return Done(job.reply_id, completion.finish_reason, completion.usage)

    async def _finish(self, job: _Job, event: Done | ErrorEvent) -> None:
        if job.cancel_reason == "lost":
            return  # another writer closed this reply already
        await self._store.finish_reply(job.session_id, job.reply_id, event)
