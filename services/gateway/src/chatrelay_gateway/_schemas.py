"""Request bodies, decoded by hand so that bad JSON is a 400 and bad fields a 422."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from litestar.exceptions import ClientException, HTTPException

__all__ = ["CreateSession", "PatchSettings", "PostMessage", "decode_body"]

Model = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
System = Annotated[str, msgspec.Meta(max_length=16_000)]
MessageId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class CreateSession(msgspec.Struct, forbid_unknown_fields=True):
    system: System | None = None
    model: Model | None = None
    temperature: Temperature | None = None


class PatchSettings(msgspec.Struct, forbid_unknown_fields=True):
    system: System | msgspec.UnsetType | None = msgspec.UNSET
    model: Model | msgspec.UnsetType = msgspec.UNSET
    temperature: Temperature | msgspec.UnsetType | None = msgspec.UNSET


class PostMessage(msgspec.Struct, forbid_unknown_fields=True):
    content: Annotated[str, msgspec.Meta(min_length=1)]
    # Edit-and-resend: drop this message and all after it first.
    replace_from: MessageId | None = None


class UnprocessableError(HTTPException):
    status_code = 422


T = TypeVar("T")


def decode_body(raw: bytes, schema: type[T], *, empty_ok: bool = False) -> T:
    if empty_ok and not raw.strip():
        raw = b"{}"
    try:
        return msgspec.json.decode(raw, type=schema)
    except msgspec.ValidationError as exc:
        raise UnprocessableError(detail=f"Invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ClientException(detail=f"Request body is not valid JSON: {exc}") from None
