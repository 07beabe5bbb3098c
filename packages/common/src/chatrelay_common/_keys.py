"""Redis key and channel names. The ``{session}`` hash tag keeps a session in one cluster slot."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONTROL_CHANNEL",
    "HASH_FIELDS",
    "LEASES",
    "LOG_FIELDS",
    "OWNER_INDEX_PREFIX",
    "SESSION_KEY_SUFFIXES",
    "SHARE_PREFIX",
    "SHARE_REVOKED_SUFFIX",
    "USERS",
    "USER_PREFIX",
    "WEB_HOME_PREFIX",
    "SessionKeys",
    "ShareKeys",
]

PREFIX = "chatrelay"
# Gateways listen here for stop requests: ``b"<session_id> <reply_id>"``.
CONTROL_CHANNEL = f"{PREFIX}:control"
# Sorted set of the session ids with a streaming reply, scored by lease deadline (Unix ms):
# every gateway's reaper closes the replies past it. Entries leave when their reply ends.
LEASES = f"{PREFIX}:leases"
# Each web process subscribes to ``<this><random id>`` for its lifetime, so that its pub/sub
# connection always has a channel (nothing is published there).
WEB_HOME_PREFIX = f"{PREFIX}:web:"
# Each owner's conversation list (``chatrelay_litestar.Identity.owner``) is a sorted set at
# ``<this><owner>``: session ids scored by their last activity (Unix ms). It lives as long as
# its newest session; entries of sessions that expired are pruned when listing.
OWNER_INDEX_PREFIX = f"{PREFIX}:owner:"
# A share link's key is ``<this><token>``: the id of the session it shows (whose hash names
# the token in its ``share`` field). Its viewers hear of its revocation on the key plus
# ``SHARE_REVOKED_SUFFIX`` (a channel). Outside the session's hash tag: the token must not
# lead to the session id.
SHARE_PREFIX = f"{PREFIX}:share:"
SHARE_REVOKED_SUFFIX = ":revoked"
# Accounts: the set of usernames, and each user's hash at ``<this><username>`` (fields
# ``hash``: argon2id; ``stamp``: random, replaced by a new password, signs the user's logins).
USERS = f"{PREFIX}:users"
USER_PREFIX = f"{PREFIX}:user:"

# What follows a session's key prefix (``SessionKeys.base``) in each of its keys. The Lua
# scripts build the keys they do not get in KEYS from these: the store composes them into the
# scripts as constants at load time.
_SESSION = "session"
_LOG = "log"
_ORDER = "order"
_LOCK = "lock"
_STOP = "stop"
_CHANNEL = "events"
_MESSAGE = "msg:"
_TEXT = "text:"
_REASONING = "reasoning:"
SESSION_KEY_SUFFIXES = {
    "ORDER": _ORDER,
    "LOCK": _LOCK,
    "STOP": _STOP,
    "CHANNEL": _CHANNEL,
    "MESSAGE": _MESSAGE,
    "TEXT": _TEXT,
    "REASONING": _REASONING,
}
# Fields of a message's hash (``SessionKeys.message``) and of a session's hash
# (``SessionKeys.session``): composed into the Lua as the key suffixes are.
HASH_FIELDS = {
    "ROLE": "role",
    "STATUS": "status",
    "SETTINGS": "settings",
    "SEQ": "seq",
    "STREAMING": "streaming",
    "BATCH": "batch",
    "BYTES": "bytes",
    "LOG_BYTES": "log_bytes",
    "RUN": "run",
    # A message's: when it was added (RFC 3339), the reply's model, and how the reply ended
    # (JSON: finish reason, usage, error, timing).
    "CREATED": "created",
    "MODEL": "model",
    "ENDING": "ending",
    # A session's: its creator's owner (its index is OWNER_INDEX_PREFIX + owner; absent for
    # sessions made before owners existed), and its title (absent until it has one).
    "OWNER": "owner",
    "TITLE": "title",
    # A session's active share token, if it has one.
    "SHARE": "share",
}
# Fields of a log entry (``SessionKeys.log``), likewise.
LOG_FIELDS = {"NAME": "e", "DATA": "d"}


@dataclass(frozen=True, slots=True)
class SessionKeys:
    session_id: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.session_id}}}:"

    @property
    def session(self) -> str:
        """Hash: ``settings`` (JSON), ``seq`` (last event id), ``streaming`` (reply id),
        ``batch`` (last delta batch applied to it), ``bytes`` (message text size),
        ``log_bytes`` (size of the event data in the log), ``run`` (the Redis run id of its
        last event, when Redis may lose writes)."""
        return self.base + _SESSION

    @property
    def log(self) -> str:
        """Stream of events, entry id ``<seq>-0``, fields ``e`` (name) and ``d`` (data)."""
        return self.base + _LOG

    @property
    def order(self) -> str:
        """List of message ids in conversation order."""
        return self.base + _ORDER

    @property
    def lock(self) -> str:
        """The streaming reply's lease: its id, expiring unless its gateway refreshes it."""
        return self.base + _LOCK

    @property
    def stop(self) -> str:
        """The reply id a client asked to stop."""
        return self.base + _STOP

    @property
    def channel(self) -> str:
        """Pub/sub channel carrying each event as it is logged."""
        return self.base + _CHANNEL

    def declared(self, reply_id: str | None = None) -> list[str]:
        """The KEYS of a script on this session: its fixed keys, and a reply's own when the
        caller knows which (its hash, text and reasoning). On a Redis Cluster a slot being
        migrated key by key makes a script whose declared keys are split fail with TRYAGAIN
        (the client tries again) rather than run against half of them; keys of other
        messages, which only a script knows, are left out."""
        keys = [self.session, self.log, self.order, self.lock, self.stop]
        if reply_id is not None:
            keys += [self.message(reply_id), self.text(reply_id), self.reasoning(reply_id)]
        return keys

    def message(self, message_id: str) -> str:
        """Hash: ``role``, ``status``, ``created``; a reply's also ``model``, ``ending``."""
        return self.base + _MESSAGE + message_id

    def text(self, message_id: str) -> str:
        """String: the message content (APPENDed to while streaming)."""
        return self.base + _TEXT + message_id

    def reasoning(self, message_id: str) -> str:
        """String: a reply's reasoning ("thinking"), APPENDed to while streaming; absent when
        it has none."""
        return self.base + _REASONING + message_id


@dataclass(frozen=True, slots=True)
class ShareKeys:
    token: str

    @property
    def link(self) -> str:
        """String: the id of the session this token shows; expires with the session."""
        return SHARE_PREFIX + self.token

    @property
    def revoked(self) -> str:
        """Pub/sub channel: a message here ends every viewer stream of this token."""
        return SHARE_PREFIX + self.token + SHARE_REVOKED_SUFFIX
