"""Optional access control: with ``SITE_PASSWORD`` set (or accounts), a login exchanges the
password for a signed cookie that both services verify, and that logout revokes in Redis.

The cookie is ``v1.<issued_at>.<login_id>.<signature>``. The signing key is derived from the
server secret AND the password, so changing ``SITE_PASSWORD`` (or the secret) invalidates
every cookie without storing anything about the password.

With accounts (``CHATRELAY_ACCOUNTS=1``) the cookie is
``u1.<issued_at>.<login_id>.<username, base64url>.<signature>``: it carries its user, and its
signature also covers that user's stamp (``_users``), which a new password or removal
replaces: every login of that user then stops working. The server secret comes from
``CHATRELAY_SECRET``, or else is generated once into Redis (``SET NX``), so every replica of
both services shares it and it survives restarts with the Redis data. Should Redis lose it,
the next process to sign or to meet a cookie it cannot check puts its own back (or adopts
the one another replica stored first), so the replicas never stay split.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import cast

from redis.exceptions import RedisError

from ._keys import PREFIX
from ._redis import AnyRedis
from ._users import Users

__all__ = ["AUTH_COOKIE", "Login", "LoginThrottle", "LoginTokens"]

AUTH_COOKIE = "chatrelay_auth"

_VERSION = "v1"
_ACCOUNT_VERSION = "u1"
_SECRET_KEY = f"{PREFIX}:auth:secret"
_REVOKED_PREFIX = f"{PREFIX}:auth:revoked:"
_FAILURES_PREFIX = f"{PREFIX}:auth:failures:"
# Tokens issued "in the future" by a replica whose clock runs ahead are fine up to this.
_CLOCK_SKEW_SECONDS = 300


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class Login:
    """A valid login: its id (what logout revokes) and its user (None: ``SITE_PASSWORD``)."""

    login_id: str
    user: str | None


class LoginTokens:
    """Issues, verifies and revokes login cookies. Holds secrets: its repr shows none.
    Give ``users`` for accounts (then ``password`` is unused), else the site password."""

    def __init__(
        self,
        redis: AnyRedis,
        *,
        password: str = "",
        max_age: int,
        configured_secret: str | None = None,
        users: Users | None = None,
    ) -> None:
        self._redis = redis
        self._users = users
        # Keys for the two kinds of cookie differ, so one can never pass for the other.
        self._key_material = (
            b"chatrelay account login key\0"
            if users is not None
            else b"chatrelay login key\0" + password.encode()
        )
        self._configured_secret = configured_secret
        self._secret: str | None = None
        self._key = b""
        self.max_age = max_age

    def __repr__(self) -> str:
        return f"LoginTokens(max_age={self.max_age})"

    async def _signing_key(self, *, refresh: bool = False) -> bytes:
        """The key for the current secret; ``refresh`` re-reads a shared secret from Redis.
        Returns ``b""`` when a refresh found the same secret (nothing new to try)."""
        if self._secret is not None and not refresh:
            return self._key
        secret = self._configured_secret
        if secret is None:
            secret = await self._shared_secret()
        elif self._secret is not None:
            return b""
        if secret == self._secret:
            return b""
        self._secret = secret
        self._key = hmac.new(secret.encode(), self._key_material, hashlib.sha256).digest()
        return self._key

    async def _shared_secret(self) -> str:
        # The first process to get here stores a secret (ours again, if Redis lost it); every
        # other one reads that one.
        stored = await cast("Awaitable[bytes | None]", self._redis.get(_SECRET_KEY))
        if stored is None:
            proposal = self._secret or _b64(secrets.token_bytes(32))
            await cast("Awaitable[object]", self._redis.set(_SECRET_KEY, proposal, nx=True))
            stored = await cast("Awaitable[bytes | None]", self._redis.get(_SECRET_KEY))
        if stored is None:  # deleted between the two calls: the next request tries again
            raise RedisError("the login secret vanished from Redis")
        return stored.decode()

    def _sign(self, key: bytes, payload: str) -> str:
        return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())

    def _signed(self, key: bytes, payload: str, signature: str) -> bool:
        return hmac.compare_digest(self._sign(key, payload).encode(), signature.encode())

    @property
    def accounts(self) -> bool:
        return self._users is not None

    @property
    def users(self) -> Users | None:
        """The accounts (one per process: it bounds concurrent hashing), or None."""
        return self._users

    async def issue(self, user: str | None = None) -> str:
        """A new cookie value: a fresh login session starting now (of ``user``, an existing
        account's stored name, with accounts)."""
        login = f"{int(time.time())}.{_b64(secrets.token_bytes(16))}"
        # Logins are rare: sign with the secret Redis holds now, never a stale copy.
        await self._signing_key(refresh=True)
        if self._users is None:
            payload = f"{_VERSION}.{login}"
            return f"{payload}.{self._sign(self._key, payload)}"
        if user is None or (stamp := await self._users.stamp(user)) is None:
            raise ValueError("a login with accounts needs an existing user")
        payload = f"{_ACCOUNT_VERSION}.{login}.{_b64(user.encode())}"
        return f"{payload}.{self._sign(self._key, f'{payload}.{stamp}')}"

    async def _parse(self, token: str | None) -> tuple[Login, int] | None:
        """``(login, seconds left)`` for a well-signed, unexpired token, else None."""
        if not token or len(token) > 200:
            return None
        parts = token.split(".")
        user: str | None = None
        if self._users is None:
            if len(parts) != 4 or parts[0] != _VERSION:
                return None
            signed = token.rsplit(".", 1)[0]
        else:
            if len(parts) != 5 or parts[0] != _ACCOUNT_VERSION:
                return None
            user = _unb64(parts[3])
            # A removed user has no stamp: nothing of theirs verifies.
            stamp = None if not user else await self._users.stamp(user)
            if stamp is None:
                return None
            signed = f"{token.rsplit('.', 1)[0]}.{stamp}"
        if not parts[1].isdigit():
            return None
        signature = parts[-1]
        if not self._signed(await self._signing_key(), signed, signature):
            # Signed with a secret we do not hold: has the shared one changed?
            fresh = await self._signing_key(refresh=True)
            if not fresh or not self._signed(fresh, signed, signature):
                return None
        now = int(time.time())
        issued_at = int(parts[1])
        left = issued_at + self.max_age - now
        if left <= 0 or issued_at > now + _CLOCK_SKEW_SECONDS:
            return None
        return Login(parts[2], user), left

    async def login(self, token: str | None) -> Login | None:
        """The login of a cookie this server signed, unexpired and not revoked, else None."""
        found = await self._parse(token)
        if found is None:
            return None
        login = found[0]
        revoked = await cast("Awaitable[int]", self._redis.exists(_REVOKED_PREFIX + login.login_id))
        return login if revoked == 0 else None

    async def verify(self, token: str | None) -> bool:
        """True for a cookie this server signed, unexpired, whose login was not revoked."""
        return await self.login(token) is not None

    async def revoke(self, token: str | None) -> None:
        """Log this cookie's login session out everywhere, for as long as it would have lived."""
        found = await self._parse(token)
        if found is not None:
            login, left = found
            await cast(
                "Awaitable[object]",
                self._redis.set(_REVOKED_PREFIX + login.login_id, b"1", ex=left),
            )


# Counts a failure slot per attempt atomically, so that parallel guesses cannot all slip in
# before the first failure is counted. Returns the seconds to wait (0: go ahead).
_TAKE_ATTEMPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then
    local ttl = redis.call('TTL', KEYS[1])
    if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
    return ttl
end
return 0
"""

# A plain DECR on a key that expired meanwhile would leave a -1 with no TTL behind.
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
return 0
"""


class LoginThrottle:
    """At most ``max_failures`` failed logins per client address per ``window`` seconds,
    counted in Redis so that the limit holds across gateway replicas."""

    def __init__(self, redis: AnyRedis, *, max_failures: int, window: int) -> None:
        self._redis = redis
        self._max_failures = max_failures
        self._window = window

    async def take_attempt(self, client: str) -> int:
        """Reserve one attempt for ``client``; the seconds to wait when none is left, else 0.
        Call ``succeeded`` when the attempt turns out right: it gives the slot back."""
        wait = await cast(
            "Awaitable[int]",
            self._redis.eval(
                _TAKE_ATTEMPT, 1, _FAILURES_PREFIX + client, self._max_failures, self._window
            ),
        )
        return int(wait)

    async def succeeded(self, client: str) -> None:
        await cast("Awaitable[int]", self._redis.eval(_GIVE_BACK, 1, _FAILURES_PREFIX + client))
