"""Runs replies: one task per streaming reply, and one writer per gateway that puts the new
text of every running reply into Redis in one round trip per flush tick; stops a reply when
any client (through any gateway) asks.

A running reply holds a lease in Redis, refreshed by its keepalive. Every gateway runs a
reaper that closes the replies whose lease lapsed (their gateway died), so no reply stays
``streaming`` for good. A reply that can no longer be written closes its upstream request
at once (it is billed) and ends with an ``interrupted`` error, or the reaper ends it once
Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import httpx
from chatrelay_common import (
    CONTROL_CHANNEL,
    Done,
    ErrorEvent,
    SessionSettings,
    SessionStore,
    SlotsUnavailableError,
    Snapshot,
    Timing,
    open_pubsub,
)
from chatrelay_common._store import DeltaWrite, LeaseState
from redis.exceptions import RedisError

from ._metrics import (
    FIRST_TOKEN_SECONDS,
    REPLIES_RUNNING,
    TOKENS_RELAYED,
    observe_redis_write,
    reply_finished,
    reply_reaped,
    time_upstream,
)
from ._settings import DEFAULT_FLUSH_SECONDS
from ._upstream import (
    CONTENT,
    Completion,
    UpstreamConfig,
    UpstreamError,
    stream_chat,
)

__all__ = ["Generations", "chat_body"]

logger = logging.getLogger("chatrelay.gateway")

# How often each gateway looks for replies whose lease lapsed.
REAP_SECONDS = 1.0
# How long the stop listener waits for a message before checking its connection again.
_STOP_POLL_SECONDS = 1.0
# Most replies written by one Redis call, which blocks Redis while it runs; the rest follow.
_MAX_REPLIES_PER_FLUSH = 256
_FIRST_RETRY_SECONDS = 0.1
_MAX_RETRY_SECONDS = 1.0
_T = TypeVar("_T")

# stopped: a client asked; shutdown: this gateway stops; lost: the reply was closed by
# someone else (the reaper, a clear); unwritable: Redis stayed away longer than the budget.
CancelReason = Literal["stopped", "shutdown", "lost", "unwritable"]

_MESSAGES: dict[CancelReason, str] = {
    "shutdown": "The gateway shut down during the answer; the partial answer is kept.",
    "lost": "The answer was closed by another writer; the partial answer is kept.",
    "unwritable": "The answer could not be saved (storage unreachable); "
    "the partial answer is kept.",
}


def chat_body(settings: SessionSettings, history: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The upstream request: the system prompt, then the conversation as ``(role, text)``
    (``SessionStore.start_reply`` gives it: a reply's reasoning is never sent back)."""
    messages: list[dict[str, str]] = []
    if settings.system:
        messages.append({"role": "system", "content": settings.system})
    messages.extend({"role": role, "content": text} for role, text in history)
    body: dict[str, Any] = {"model": settings.model, "messages": messages}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    return body


def _snapshot_body(snapshot: Snapshot, reply_id: str) -> dict[str, Any]:
    """``chat_body`` for a reply opened with ``SessionStore.begin_reply``, from a snapshot."""
    history = ((m.role, m.content) for m in snapshot.messages if m.id != reply_id and m.content)
    return chat_body(snapshot.settings, history)


@dataclass(eq=False)
class _Job:
    session_id: str
    reply_id: str
    # The upstream request, when the reply's start gave it (else read from a snapshot).
    request: dict[str, Any] | None = None
    reader: asyncio.Task[Completion] | None = None
    cancel_reason: CancelReason | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # When the reply started and its first piece of text arrived (loop time), and how many
    # pieces came: its timing.
    started: float = 0.0
    first_piece_at: float | None = None
    pieces: int = 0
    # The writer's side: text read and not yet sent, of one kind (`unsent_kind`); runs of
    # the other kind before it (`sealed`: reasoning, then the answer, keep their order); then
    # numbered batches sent but not yet confirmed (a retry resends them unchanged, so Redis
    # can skip one that was applied).
    unsent: list[str] = field(default_factory=list, repr=False)
    unsent_kind: str = CONTENT
    sealed: list[tuple[str, str]] = field(default_factory=list, repr=False)
    unconfirmed: list[tuple[int, str, str]] = field(default_factory=list, repr=False)
    last_batch: int = 0
    failing_since: float | None = None
    # Set while the writer holds none of its text.
    written: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def __post_init__(self) -> None:
        self.written.set()

    @property
    def unwritable(self) -> bool:
        return self.cancel_reason in ("lost", "unwritable")

    def cancel(self, reason: CancelReason) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        if self.reader is not None:
            self.reader.cancel()


class _Writer:
    """Writes the text of every running reply of this gateway: one Redis call per flush tick
    carries the text of all the replies that have some, instead of one round trip per token
    per reply. A failed call is retried with backoff; a reply whose text stays unwritten
    for ``budget_seconds`` is cancelled ("unwritable"), one that no longer streams in Redis
    is cancelled ("lost"); either way its upstream request ends."""

    def __init__(self, store: SessionStore, flush_seconds: float, budget_seconds: float) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._budget_seconds = budget_seconds
        # Jobs holding text, in arrival order (a dict as an ordered set).
        self._pending: dict[_Job, None] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, job: _Job, kind: str, text: str) -> None:
        """Text of ``kind`` (the event that carries it: ``delta`` or ``reasoning``)."""
        if job.unwritable:  # its reader is being cancelled: nothing more can be written
            return
        TOKENS_RELAYED.inc()
        if kind != job.unsent_kind:
            if job.unsent:
                job.sealed.append((job.unsent_kind, "".join(job.unsent)))
                job.unsent.clear()
            job.unsent_kind = kind
        job.unsent.append(text)
        job.written.clear()
        self._pending[job] = None
        self._ready.set()
        if self._task is None or self._task.done():  # first use, or after aclose
            self._task = asyncio.create_task(self._run(), name="reply writer")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        retry_seconds = _FIRST_RETRY_SECONDS
        while True:
            await self._ready.wait()
            self._ready.clear()
            started = loop.time()
            try:
                await self._flush()
            except Exception as exc:
                if isinstance(exc, RedisError | OSError):
                    logger.warning("cannot write replies to Redis (%s); retrying", exc)
                else:
                    logger.exception("writing replies failed")
                pause = retry_seconds
                retry_seconds = min(retry_seconds * 2, _MAX_RETRY_SECONDS)
                # A reply whose budget ends before the next try is given up now.
                self._give_up_on_late(loop.time() + pause, exc)
            else:
                retry_seconds = _FIRST_RETRY_SECONDS
                pause = self._flush_seconds - (loop.time() - started)
            if self._pending:
                self._ready.set()
            if pause > 0:
                await asyncio.sleep(pause)

    async def _flush(self) -> None:
        jobs = list(itertools.islice(self._pending, _MAX_REPLIES_PER_FLUSH))
        writes: list[DeltaWrite] = []
        owners: list[_Job] = []
        for job in jobs:
            if job.sealed:
                for kind, text in job.sealed:
                    job.last_batch += 1
                    job.unconfirmed.append((job.last_batch, kind, text))
                job.sealed.clear()
            if job.unsent:
                job.last_batch += 1
                job.unconfirmed.append((job.last_batch, job.unsent_kind, "".join(job.unsent)))
                job.unsent.clear()
            for number, kind, text in job.unconfirmed:
                writes.append((job.session_id, job.reply_id, kind, text, number))
                owners.append(job)
        # A reply's budget runs from the start of its first failing call (the client's own
        # retries inside one call take a while).
        started = asyncio.get_running_loop().time()
        write_started = time.perf_counter()
        partial: SlotsUnavailableError | None = None
        try:
            streaming: list[bool | None] = list(await self._store.append_deltas(writes))
        except SlotsUnavailableError as exc:  # a cluster shard is down: the others go on
            streaming, partial = cast("list[bool | None]", exc.results), exc
        except BaseException:
            for job in jobs:
                if job.failing_since is None:
                    job.failing_since = started
            raise
        observe_redis_write(write_started)
        failed = {job for job, result in zip(owners, streaming, strict=True) if result is None}
        for job in jobs:
            if job in failed:
                job.failing_since = job.failing_since or started
            else:
                job.unconfirmed.clear()
                job.failing_since = None
        for job, still_streaming in zip(owners, streaming, strict=True):
            if still_streaming is False:
                self._drop(job, "lost")
        for job in jobs:
            if job not in failed and not job.unsent and not job.sealed:
                self._release(job)
        if partial is not None:
            logger.warning("cannot write %d replies to Redis (%s); retrying", len(failed), partial)
            self._give_up_on_late(asyncio.get_running_loop().time() + self._flush_seconds, partial)

    def _give_up_on_late(self, next_try: float, error: Exception) -> None:
        for job in list(self._pending):
            if job.failing_since is not None and next_try - job.failing_since > (
                self._budget_seconds
            ):
                logger.warning("reply %s: cannot write to Redis (%s)", job.reply_id, error)
                self._drop(job, "unwritable")

    def _drop(self, job: _Job, reason: CancelReason) -> None:
        job.cancel(reason)
        job.unsent.clear()
        job.sealed.clear()
        job.unconfirmed.clear()
        self._release(job)

    def _release(self, job: _Job) -> None:
        self._pending.pop(job, None)
        job.written.set()


class Generations:
    def __init__(
        self,
        store: SessionStore,
        client: httpx.AsyncClient,
        config: UpstreamConfig,
        *,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
    ):
        self._store = store
        self._client = client
        self._config = config
        self._jobs: dict[str, _Job] = {}
        self._writer = _Writer(store, flush_seconds, budget_seconds=store.lease_seconds / 2)
        # Refreshing three times per lease rides out one missed refresh.
        self._keepalive_seconds = store.lease_seconds / 3
        self._keepalive: asyncio.Task[None] | None = None

    def start(
        self, session_id: str, reply_id: str, request: dict[str, Any] | None = None
    ) -> asyncio.Task[None]:
        """Run the reply in the background: it goes on when every tab has closed. The task
        is done once the reply has ended, whatever the outcome. ``request`` is its upstream
        request (``chat_body``); without it, it is built from a snapshot of the session."""
        job = _Job(session_id, reply_id, request, started=asyncio.get_running_loop().time())
        self._jobs[session_id] = job
        job.task = asyncio.create_task(self._run(job), name=f"reply {reply_id}")
        if self._keepalive is None or self._keepalive.done():  # first use, or after aclose
            self._keepalive = asyncio.create_task(self._keep_leases(), name="reply keepalive")
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
        await self._writer.aclose()
        if self._keepalive is not None:
            self._keepalive.cancel()
            await asyncio.wait([self._keepalive])

    async def listen_for_stops(self) -> None:
        """Follow stop requests from every gateway; reconnects while Redis is away. (A stop
        missed meanwhile is still seen: each keepalive checks the stop flag.)"""
        while True:
            try:
                async with open_pubsub(self._store.redis, ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CONTROL_CHANNEL)
                    while True:
                        # A read with its own timeout: the client's socket timeout would break
                        # the idle subscription.
                        message = await pubsub.get_message(timeout=_STOP_POLL_SECONDS)
                        if message is not None and message["type"] == "message":
                            session_id, reply_id = message["data"].decode().split(" ", 1)
                            self.stop(session_id, reply_id)
            except (RedisError, OSError) as exc:
                logger.warning("stop listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(1)

    async def reap_lapsed(self) -> None:
        """Close, every second, the replies (of any gateway) whose lease lapsed."""
        while True:
            try:
                for reply_id in await self._store.reap_lapsed():
                    logger.warning("closed reply %s: its gateway stopped renewing it", reply_id)
                    reply_reaped()
            except (RedisError, OSError) as exc:
                logger.warning("reaper: %s", exc)
            await asyncio.sleep(REAP_SECONDS)

    async def _run(self, job: _Job) -> None:
        REPLIES_RUNNING.inc()
        try:
            try:
                event = await self._generate(job)
            except Exception:
                logger.exception("reply %s failed", job.reply_id)
                event = ErrorEvent(job.reply_id, "internal", "The gateway failed")
            reply_finished(event)
            await self._finish(job, event)
        finally:
            REPLIES_RUNNING.dec()
            if self._jobs.get(job.session_id) is job:
                del self._jobs[job.session_id]

    async def _generate(self, job: _Job) -> Done | ErrorEvent:
        request = job.request
        if request is None:
            request = _snapshot_body(await self._store.snapshot(job.session_id), job.reply_id)
        job.reader = asyncio.create_task(self._read(job, request))
        time_upstream(job.reader)
        if job.cancel_reason is not None:  # stopped before it began
            job.reader.cancel()
        try:
            # Ends early when the writer cancels the reader (text could not be written).
            await asyncio.wait([job.reader])
            await job.written.wait()
        finally:
            # Whatever stopped the reply, the upstream request (billed) ends here too.
            job.reader.cancel()
            await asyncio.wait([job.reader])
        return self._outcome(job, job.reader)

    async def _read(self, job: _Job, body: dict[str, Any]) -> Completion:
        """The reply's upstream answer, each piece handed to the writer as it arrives."""
        loop = asyncio.get_running_loop()
        add = self._writer.add
        async with contextlib.aclosing(stream_chat(self._client, self._config, body)) as pieces:
            async for piece in pieces:
                if isinstance(piece, Completion):
                    return piece
                if job.first_piece_at is None:
                    job.first_piece_at = loop.time()
                    FIRST_TOKEN_SECONDS.observe(job.first_piece_at - job.started)
                job.pieces += 1
                add(job, *piece)
        raise AssertionError("stream_chat ends with its Completion")

    async def _keep_leases(self) -> None:
        """Extend the lease of every running reply of this gateway, in one Redis call for
        all of them, and end those a client asked to stop or that no longer stream."""
        while True:
            await asyncio.sleep(self._keepalive_seconds)
            jobs = list(self._jobs.values())
            try:
                states: list[LeaseState | None] = list(
                    await self._store.keep_leases([(j.session_id, j.reply_id) for j in jobs])
                )
            except SlotsUnavailableError as partial:  # a cluster shard is down: keep the rest
                logger.warning("keepalive reached only some replies: %s", partial)
                states = cast("list[LeaseState | None]", partial.results)
            except (RedisError, OSError) as exc:
                logger.warning("keepalive for %d replies: %s", len(jobs), exc)
                continue
            for job, state in zip(jobs, states, strict=True):
                if state == "stop":
                    job.cancel("stopped")
                elif state == "lost":
                    job.cancel("lost")

    @staticmethod
    def _outcome(job: _Job, reader: asyncio.Task[Completion]) -> Done | ErrorEvent:
        reason = job.cancel_reason
        # Text is missing when a write failed, even if the upstream finished meanwhile.
        if reason in ("unwritable", "lost") or (reader.cancelled() and reason != "stopped"):
            return ErrorEvent(job.reply_id, "interrupted", _MESSAGES[reason or "shutdown"])
        if reader.cancelled():
            return Done(job.reply_id, "stopped", None, _timing(job, None))
        error = reader.exception()
        if isinstance(error, UpstreamError):
            return ErrorEvent(job.reply_id, error.code, error.message)
        if error is not None:
            raise error
        completion = reader.result()
        return Done(
            job.reply_id, completion.finish_reason, completion.usage, _timing(job, completion)
        )

    async def _finish(self, job: _Job, event: Done | ErrorEvent) -> None:
        """Write the reply's end, retrying for about a lease while Redis is away. (Written
        already by another when the reply was closed: then the store ignores it.) If Redis
        stays away, the lease lapses and a reaper closes the reply once it is back."""
        try:
            await self._retrying(
                lambda: self._store.finish_reply(job.session_id, job.reply_id, event),
                seconds=self._store.lease_seconds,
            )
        except (RedisError, OSError) as exc:
            logger.warning("reply %s: could not write its end (%s)", job.reply_id, exc)

    @staticmethod
    async def _retrying(call: Callable[[], Awaitable[_T]], *, seconds: float) -> _T:
        """``call()``, tried again with backoff while Redis fails, for about ``seconds``."""
        deadline = asyncio.get_running_loop().time() + seconds
        delay = 0.1
        while True:
            try:
                return await call()
            except (RedisError, OSError):
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


def _timing(job: _Job, completion: Completion | None) -> Timing | None:
    """How the reply streamed: None when no text came. Tokens are the upstream's count of
    completion tokens when it gave one, else the pieces received (about one token each)."""
    if job.first_piece_at is None:
        return None
    now = asyncio.get_running_loop().time()
    usage = completion.usage if completion is not None else None
    tokens = (usage.completion_tokens if usage is not None else 0) or job.pieces
    # A lone piece ends as it begins: its rate counts a millisecond at least.
    seconds = max(now - job.first_piece_at, 0.001)
    return Timing(
        first_token_ms=round((job.first_piece_at - job.started) * 1000),
        tokens_per_s=round(tokens / seconds, 1),
    )
