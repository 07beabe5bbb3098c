"""Every error answers ``{"detail": str}``; nothing unexpected leaks as a stack trace. The
store's domain errors map to their status here, once, for every route."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from chatrelay_common import (
    NothingToRegenerateError,
    ReplyBusyError,
    SessionFullError,
    SessionNotFoundError,
)
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_RETRY_AFTER_SECONDS", "exception_handlers"]

logger = logging.getLogger("chatrelay")

# A full or absent Redis is an operator's problem: clients should not hammer it meanwhile.
REDIS_RETRY_AFTER_SECONDS = 10

Request_ = Request[Any, Any, Any]


def _error(
    status: int, detail: str, headers: dict[str, str] | None = None
) -> Response[dict[str, str]]:
    return Response(
        {"detail": detail}, status_code=status, media_type=MediaType.JSON, headers=headers
    )


def _http_error(_: Request_, exc: HTTPException) -> Response[dict[str, str]]:
    if isinstance(exc, ValidationException):
        return _validation_error(exc)
    return _error(exc.status_code, exc.detail, exc.headers)


def _validation_error(exc: ValidationException) -> Response[dict[str, str]]:
    """Litestar checks the whole signature at once (``$.data`` is the body). A missing body
    is not JSON (400); a body of the wrong shape is a 422 with msgspec's words."""
    cause = exc.__cause__
    if not isinstance(cause, msgspec.ValidationError):
        return _error(HTTP_400_BAD_REQUEST, exc.detail)
    message = str(cause)
    if message == "Object missing required field `data`":
        return _error(HTTP_400_BAD_REQUEST, "Request body is not valid JSON: it is empty")
    message = message.removesuffix(" - at `$.data`").replace("`$.data.", "`$.")
    return _error(HTTP_422_UNPROCESSABLE_ENTITY, f"Invalid request body: {message}")


def _no_session(_: Request_, __: SessionNotFoundError) -> Response[dict[str, str]]:
    return _error(HTTP_404_NOT_FOUND, "No such session")


def _busy(request: Request_, __: ReplyBusyError) -> Response[dict[str, str]]:
    if request.method == "DELETE":
        return _error(HTTP_409_CONFLICT, "A reply is streaming; stop it first")
    return _error(HTTP_409_CONFLICT, "A reply is already streaming in this session")


def _nothing_to_answer(request: Request_, __: NothingToRegenerateError) -> Response[dict[str, str]]:
    if request.url.path.endswith("/regenerate"):
        return _error(HTTP_409_CONFLICT, "There is no answer to regenerate")
    # Sending a message: the only way to have nothing to answer is a bad replace_from.
    return _error(HTTP_422_UNPROCESSABLE_ENTITY, "replace_from names no message of this session")


def _session_full(_: Request_, exc: SessionFullError) -> Response[dict[str, str]]:
    return _error(HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc))


def _redis_full(request: Request_, exc: OutOfMemoryError) -> Response[dict[str, str]]:
    logger.error("Redis is full (maxmemory) on %s %s: %s", request.method, request.url.path, exc)
    return _error(
        HTTP_503_SERVICE_UNAVAILABLE,
        "The session store is full; nothing was saved. Try again later",
        {"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
    )


def _redis_away(request: Request_, exc: Exception) -> Response[dict[str, str]]:
    logger.error("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return _error(
        HTTP_503_SERVICE_UNAVAILABLE,
        "The session store is unavailable. Try again shortly",
        {"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
    )


def _unexpected(request: Request_, exc: Exception) -> Response[dict[str, str]]:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")


exception_handlers: ExceptionHandlersMap = {
    HTTPException: _http_error,
    SessionNotFoundError: _no_session,
    ReplyBusyError: _busy,
    NothingToRegenerateError: _nothing_to_answer,
    SessionFullError: _session_full,
    OutOfMemoryError: _redis_full,
    RedisConnectionError: _redis_away,
    RedisTimeoutError: _redis_away,
    Exception: _unexpected,
}
