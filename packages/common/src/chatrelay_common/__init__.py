"""What the chatrelay services share: event types and wire encoding, Redis names, the store."""

from ._events import (
    Delta,
    Done,
    ErrorEvent,
    Event,
    Message,
    MessageAdded,
    Reset,
    SessionSettings,
    SettingsChanged,
    Snapshot,
    Start,
    Truncate,
    Usage,
    decode_wire,
    encode_data,
    encode_sse,
    encode_wire,
)
from ._keys import CONTROL_CHANNEL, SessionKeys
from ._redis import open_redis
from ._settings import ServiceSettings
from ._store import (
    LoggedEvent,
    NothingToRegenerateError,
    ReplyBusyError,
    SessionNotFoundError,
    SessionStore,
    new_id,
)

__all__ = [
    "CONTROL_CHANNEL",
    "Delta",
    "Done",
    "ErrorEvent",
    "Event",
    "LoggedEvent",
    "Message",
    "MessageAdded",
    "NothingToRegenerateError",
    "ReplyBusyError",
    "Reset",
    "ServiceSettings",
    "SessionKeys",
    "SessionNotFoundError",
    "SessionSettings",
    "SessionStore",
    "SettingsChanged",
    "Snapshot",
    "Start",
    "Truncate",
    "Usage",
    "decode_wire",
    "encode_data",
    "encode_sse",
    "encode_wire",
    "new_id",
    "open_redis",
]
