"""On top of the shared ``{"detail": str}`` handlers: the store's domain errors and Redis
failures map to their status here, once, for every route."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from chatrelay_common import (
    NothingToRegenerateError,
    ReplyBusyError,
    SessionFullError,
    SessionNotFoundError,
    is_session_id,
)
from chatrelay_litestar import ErrorResponse, error_response
from chatrelay_litestar import exception_handlers as base_exception_handlers
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_RETRY_AFTER_SECONDS", "checked_session_id", "exception_handlers"]

logger = logging.getLogger("chatrelay")

# A full or absent Redis is an operator's problem: clients should not hammer it meanwhile.
REDIS_RETRY_AFTER_SECONDS = 10

Request_ = Request[Any, Any, Any]


def checked_session_id(session_id: str) -> str:
    """``session_id``, or the unknown session's 404: an id of the wrong shape names none (and
    never reaches a Redis key)."""
    if not is_session_id(session_id):
        raise SessionNotFoundError(session_id)
    return session_id


def _validation_error(exc: ValidationException) -> ErrorResponse:
    """Litestar checks the whole signature at once (``$.data`` is the body). A missing body
    is not JSON (400); a body of the wrong shape is a 422 with msgspec's words."""
    cause = exc.__cause__
    if not isinstance(cause, msgspec.ValidationError):
        return error_response(HTTP_400_BAD_REQUEST, exc.detail)
    message = str(cause)
    if message == "Object missing required field `data`":
        return error_response(HTTP_400_BAD_REQUEST, "Request body is not valid JSON: it is empty")
    message = message.removesuffix(" - at `$.data`").replace("`$.data.", "`$.")
    return error_response(HTTP_422_UNPROCESSABLE_ENTITY, f"Invalid request body: {message}")


def _no_session(_: Request_, __: SessionNotFoundError) -> ErrorResponse:
    return error_response(HTTP_404_NOT_FOUND, "No such session")


def _busy(request: Request_, __: ReplyBusyError) -> ErrorResponse:
    if request.method == "DELETE":
        return error_response(HTTP_409_CONFLICT, "A reply is streaming; stop it first")
    return error_response(HTTP_409_CONFLICT, "A reply is already streaming in this session")


def _nothing_to_answer(request: Request_, __: NothingToRegenerateError) -> ErrorResponse:
    if request.url.path.endswith("/regenerate"):
        return error_response(HTTP_409_CONFLICT, "There is no answer to regenerate")
    # Sending a message: the only way to have nothing to answer is a bad replace_from.
    return error_response(
        HTTP_422_UNPROCESSABLE_ENTITY, "replace_from names no message of this session"
    )


def _session_full(_: Request_, exc: SessionFullError) -> ErrorResponse:
    return error_response(HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc))


def _redis_full(request: Request_, exc: OutOfMemoryError) -> ErrorResponse:
    logger.error("Redis is full (maxmemory) on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        "The session store is full; nothing was saved. Try again later",
        {"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
    )


def _redis_away(request: Request_, exc: Exception) -> ErrorResponse:
    logger.error("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        HTTP_503_SERVICE_UNAVAILABLE,
        "The session store is unavailable. Try again shortly",
        {"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
    )


exception_handlers: ExceptionHandlersMap = {
    **base_exception_handlers(on_invalid=_validation_error),
    SessionNotFoundError: _no_session,
    ReplyBusyError: _busy,
    NothingToRegenerateError: _nothing_to_answer,
    SessionFullError: _session_full,
    OutOfMemoryError: _redis_full,
    RedisConnectionError: _redis_away,
    RedisTimeoutError: _redis_away,
}
