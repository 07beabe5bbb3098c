"""Caps on the replies one gateway process streams at once, per client IP (per account with
accounts) and in total.

Counted in this process (each replica has its own caps): a slot is taken before the reply
begins and given back by the reply task's done callback, so no way of ending leaks it."""

from __future__ import annotations

import asyncio
from collections import Counter

from litestar.exceptions import HTTPException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS

__all__ = ["REPLIES_RETRY_AFTER_SECONDS", "ReplySlots", "TooManyRepliesError"]

# A reply typically ends within seconds; a client may try again after this.
REPLIES_RETRY_AFTER_SECONDS = 5


class TooManyRepliesError(HTTPException):
    status_code = HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(REPLIES_RETRY_AFTER_SECONDS)})


class ReplySlots:
    def __init__(self, *, per_client: int, total: int, per_account: bool = False) -> None:
        self._per_client = per_client
        self._total = total
        # With accounts the clients are accounts (their owner keys), whatever their address.
        self._client_kind = "account" if per_account else "client"
        self._held: Counter[str] = Counter()

    def take(self, client: str) -> None:
        """Hold a slot for ``client`` (an IP, or an account's owner) or raise 429. Give it
        back with ``release`` or ``release_when_done``."""
        if self._held.total() >= self._total:
            raise TooManyRepliesError(
                f"The gateway is streaming its maximum of {self._total} replies; "
                f"try again in {REPLIES_RETRY_AFTER_SECONDS} s"
            )
        if self._held[client] >= self._per_client:
            raise TooManyRepliesError(
                f"At most {self._per_client} replies may stream at once per {self._client_kind}; "
                f"try again in {REPLIES_RETRY_AFTER_SECONDS} s"
            )
        self._held[client] += 1

    def release(self, client: str) -> None:
        self._held[client] -= 1
        if self._held[client] <= 0:
            del self._held[client]

    def release_when_done(self, client: str, reply: asyncio.Task[None]) -> None:
        reply.add_done_callback(lambda _: self.release(client))
