"""Every error answers ``{"detail": str}``; nothing unexpected leaks as a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

__all__ = ["exception_handlers"]

logger = logging.getLogger("chatrelay")


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, str]]:
    status = HTTP_400_BAD_REQUEST if isinstance(exc, ValidationException) else exc.status_code
    return Response(
        {"detail": exc.detail},
        status_code=status,
        media_type=MediaType.JSON,
        headers=exc.headers,
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, str]]:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Response(
        {"detail": "Internal server error"},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
        media_type=MediaType.JSON,
    )


exception_handlers: ExceptionHandlersMap = {
    HTTPException: _http_error,
    Exception: _unexpected,
}
