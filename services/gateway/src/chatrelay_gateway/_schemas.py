"""Request and response bodies. Litestar decodes the request structs (``data: ...``) and
generates the OpenAPI schema from them; ``_errors`` turns its failures into 400/422."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from chatrelay_common import SessionSettings
from litestar import Request
from litestar.exceptions import ClientException, HTTPException, SerializationException
from litestar.openapi.datastructures import ResponseSpec

__all__ = [
    "BeganReply",
    "CreateSession",
    "CreatedSession",
    "ErrorBody",
    "GatewayRequest",
    "ModelList",
    "PatchSettings",
    "PostMessage",
    "StartedReply",
    "StopResult",
    "UnprocessableError",
    "UpdatedSettings",
    "error_responses",
]

Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
System = Annotated[str, msgspec.Meta(max_length=16_000)]
MessageId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# Bounds the raw text; the handler cleans it and checks the cleaned length (clean_title).
Title = Annotated[str, msgspec.Meta(max_length=1000)]


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    system: System | None = None
    model: Model | None = None
    temperature: Temperature | None = None


class PatchSettings(msgspec.Struct, forbid_unknown_fields=True):
    system: System | msgspec.UnsetType | None = msgspec.UNSET
    model: Model | msgspec.UnsetType = msgspec.UNSET
    temperature: Temperature | msgspec.UnsetType | None = msgspec.UNSET
    # The session's title: not a setting (``changes`` leaves it out).
    title: Title | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        """Only the settings the client sent (``null`` included: it clears a setting)."""
        return {
            name: value
            for name, value in msgspec.structs.asdict(self).items()
            if value is not msgspec.UNSET and name in SessionSettings.__struct_fields__
        }


class PostMessage(msgspec.Struct, forbid_unknown_fields=True):
    content: Annotated[str, msgspec.Meta(min_length=1)]
    # Edit-and-resend: drop this message and all after it first.
    replace_from: MessageId | None = None


class CreatedSession(msgspec.Struct):
    id: str


class UpdatedSettings(msgspec.Struct):
    settings: SessionSettings
    # Present when the PATCH renamed the session: the title as kept.
    title: str | msgspec.UnsetType = msgspec.UNSET


class BeganReply(msgspec.Struct):
    message_id: str
    reply_id: str


class StartedReply(msgspec.Struct):
    reply_id: str


class StopResult(msgspec.Struct):
    reply_id: str | None


class ModelEntry(msgspec.Struct):
    id: str


class ModelList(msgspec.Struct):
    models: list[str]
    default: str
    # The same names as OpenAI's GET /v1/models shapes them (``data[].id``).
    data: list[ModelEntry]

    @classmethod
    def of(cls, models: tuple[str, ...], default: str) -> ModelList:
        return cls(models=list(models), default=default, data=[ModelEntry(id=m) for m in models])


class ErrorBody(msgspec.Struct):
    detail: str


class UnprocessableError(HTTPException):
    status_code = 422


_ERROR_MEANINGS = {
    400: "The body is not JSON",
    401: "Login required",
    403: "Not open to this client",
    404: "No such session",
    409: "A reply is streaming, or there is nothing to answer",
    413: "The body is over the limit, or the conversation is full",
    415: "The body is not application/json",
    422: "A field is wrong, missing or unknown",
    429: "Too many requests or replies; see Retry-After",
    503: "Redis is unavailable or full; see Retry-After",
}


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The documented error answers of a route, all ``{"detail": str}``. 400, 401, 403, 415,
    429 and 503 can come from any route (framework checks, login, access guard, limits,
    Redis)."""
    return {
        status: ResponseSpec(
            ErrorBody, description=_ERROR_MEANINGS[status], generate_examples=False
        )
        for status in sorted({*statuses, 400, 401, 403, 415, 429, 503})
    }


class GatewayRequest(Request[Any, Any, Any]):
    """A request whose JSON body fails as a 400 with a clear detail, whatever is wrong with it
    (malformed, not UTF-8, nested beyond the decoder's recursion limit)."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except SerializationException as exc:
            body = await self.body()
            if surrogate := _lone_surrogate(body):
                raise _not_json(f"{surrogate} is a lone surrogate") from None
            raise _not_json(str(exc.detail)) from None
        except UnicodeDecodeError:
            raise _not_json("it is not UTF-8") from None
        except RecursionError:
            raise _not_json("it is nested too deeply") from None


_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)")


def _lone_surrogate(body: bytes) -> str | None:
    """The first ``\\uD800``-``\\uDFFF`` escape that is not half of a pair: valid JSON
    text, but no Unicode string. Escapes scanned left to right, so ``\\\\`` is skipped."""
    pending_high: re.Match[bytes] | None = None
    for escape in _ESCAPE.finditer(body):
        code = int(escape[1], 16) if escape[1] else None
        if pending_high is not None:
            if code is None or not 0xDC00 <= code <= 0xDFFF or escape.start() != pending_high.end():
                return pending_high[0].decode()
            pending_high = None
        elif code is not None and 0xD800 <= code <= 0xDBFF:
            pending_high = escape
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return escape[0].decode()
    return None if pending_high is None else pending_high[0].decode()


def _not_json(reason: str) -> ClientException:
    return ClientException(detail=f"Request body is not valid JSON: {reason}")
