"""Every error answers ``{"detail": str}``; nothing unexpected leaks as a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

__all__ = ["ErrorResponse", "error_response", "exception_handlers"]

logger = logging.getLogger("chatrelay")

ErrorResponse = Response[dict[str, str]]


def error_response(
    status: int, detail: str, headers: dict[str, str] | None = None
) -> ErrorResponse:
    return Response(
        {"detail": detail}, status_code=status, media_type=MediaType.JSON, headers=headers
    )


def _bad_request(exc: ValidationException) -> ErrorResponse:
    return error_response(HTTP_400_BAD_REQUEST, exc.detail, exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> ErrorResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "Internal server error")


def exception_handlers(
    on_invalid: Callable[[ValidationException], ErrorResponse] = _bad_request,
) -> ExceptionHandlersMap:
    """Litestar's own errors keep their status; an invalid request is a 400 unless
    ``on_invalid`` says otherwise (the gateway tells bad JSON from bad fields)."""

    def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> ErrorResponse:
        if isinstance(exc, ValidationException):
            return on_invalid(exc)
        return error_response(exc.status_code, exc.detail, exc.headers)

    return {HTTPException: http_error, Exception: _unexpected}
