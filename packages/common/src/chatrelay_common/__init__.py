"""What the chatrelay services share: event types and wire encoding, Redis names, the store."""

from ._auth import AUTH_COOKIE, LoginThrottle, LoginTokens
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
from ._keys import CONTROL_CHANNEL, WEB_HOME_PREFIX, SessionKeys
from ._redis import open_redis
from ._service import serve, store_lifespan
from ._settings import ServiceSettings
from ._store import (
    LoggedEvent,
    NothingToRegenerateError,
    ReplyBusyError,
    SessionFullError,
    SessionNotFoundError,
    SessionStore,
    is_session_id,
    new_id,
)

__all__ = [
    "AUTH_COOKIE",
    "CONTROL_CHANNEL",
    "WEB_HOME_PREFIX",
    "Delta",
    "Done",
    "ErrorEvent",
    "Event",
    "LoggedEvent",
    "LoginThrottle",
    "LoginTokens",
    "Message",
    "MessageAdded",
    "NothingToRegenerateError",
    "ReplyBusyError",
    "Reset",
    "ServiceSettings",
    "SessionFullError",
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
    "is_session_id",
    "new_id",
    "open_redis",
    "serve",
    "store_lifespan",
]
