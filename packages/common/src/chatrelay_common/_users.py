"""Accounts (``CHATRELAY_ACCOUNTS=1``): usernames and their argon2id password hashes in Redis.

- A username is 1 to 64 characters of ``A-Z a-z 0-9 . _ -``, compared case-insensitively: it is
  kept lower-case (``Alice`` and ``alice`` are one user).
- A password is 1 to 1024 characters, any Unicode, compared in NFC form (the same text typed
  on two keyboards is the same password).
- Each user also has a random ``stamp`` that signs their login cookies; a new password and
  removal replace or drop it, which logs every existing login of that user out.
- Checking a password costs one argon2id verification whether or not the user exists (an
  unknown user is checked against a dummy hash), so the answer's timing tells nothing.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import unicodedata
from collections.abc import Awaitable
from typing import cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from redis.asyncio import Redis

from ._keys import USER_PREFIX, USERS
from ._redis import AnyRedis

__all__ = [
    "PASSWORD_MAX_CHARS",
    "USERNAME_MAX_CHARS",
    "USERNAME_PATTERN",
    "InvalidCredentialError",
    "UnknownUserError",
    "UserExistsError",
    "Users",
    "check_password",
    "normalize_username",
]

USERNAME_MAX_CHARS = 64
USERNAME_PATTERN = rf"^[A-Za-z0-9._-]{{1,{USERNAME_MAX_CHARS}}}$"
PASSWORD_MAX_CHARS = 1024
_USERNAME = re.compile(USERNAME_PATTERN)
_HASH = "hash"
_STAMP = "stamp"
# argon2id takes 64 MiB and a core for ~50 ms per hash: a burst of logins waits its turn.
_PARALLEL_HASHES = 2

# Each touches one user's hash only (so one slot of a Redis Cluster). KEYS[1] the user's hash;
# ARGV[1] the password hash, [2] a new stamp. Returns 1 when written, else 0.
# A new user: 0 when the name is taken (but 1 for this very call run again, as after a lost
# answer: the stamp is its own).
_CREATE = f"""
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGET', KEYS[1], '{_STAMP}') == ARGV[2] and 1 or 0
end
redis.call('HSET', KEYS[1], '{_HASH}', ARGV[1], '{_STAMP}', ARGV[2])
return 1
"""
# A new password for an existing user: 0 when there is none.
_REPLACE = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], '{_HASH}', ARGV[1], '{_STAMP}', ARGV[2])
return 1
"""


class InvalidCredentialError(ValueError):
    """A username or password that breaks the rules (the message says which rule)."""


class UserExistsError(Exception):
    pass


class UnknownUserError(Exception):
    pass


def normalize_username(name: str) -> str:
    """The stored form of ``name`` (lower-case), or InvalidCredentialError."""
    if not _USERNAME.fullmatch(name):
        raise InvalidCredentialError(
            f"A username is 1 to {USERNAME_MAX_CHARS} characters of A-Z, a-z, 0-9, '.', '_', '-'"
        )
    return name.lower()


def check_password(password: str) -> str:
    """The NFC form of ``password``, or InvalidCredentialError."""
    if not 1 <= len(password) <= PASSWORD_MAX_CHARS:
        raise InvalidCredentialError(f"A password is 1 to {PASSWORD_MAX_CHARS} characters")
    return unicodedata.normalize("NFC", password)


def _key(name: str) -> str:
    return USER_PREFIX + name


class Users:
    """The accounts in one Redis (or Redis Cluster: each command and script touches one key,
    so one slot). Methods take a username as typed and normalize it."""

    def __init__(self, redis: AnyRedis, hasher: PasswordHasher | None = None) -> None:
        self._redis = redis
        # argon2-cffi's defaults are RFC 9106's second recommendation (argon2id, 64 MiB).
        self._hasher = hasher or PasswordHasher()
        self._hashing = asyncio.Semaphore(_PARALLEL_HASHES)
        self._dummy_hash: str | None = None
        # redis-py types the method as the plain client's; the cluster client has it too.
        register = cast("Redis", redis).register_script
        self._create = register(_CREATE)
        self._replace = register(_REPLACE)

    def __repr__(self) -> str:
        return "Users()"

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def _matches(self, stored: str, password: str) -> bool:
        async with self._hashing:
            try:
                return await asyncio.to_thread(self._hasher.verify, stored, password)
            except (VerificationError, InvalidHashError):
                return False

    async def add(self, name: str, password: str) -> str:
        """Adds a user; returns the stored name. UserExistsError when it is taken."""
        name = normalize_username(name)
        hashed = await self._hash(check_password(password))
        # Listed first: a crash before the hash is written leaves a name that ``list`` shows
        # and ``remove`` clears, never a working account that ``list`` does not show. (The
        # set and the hash are in different slots of a Redis Cluster: no transaction holds
        # both.)
        await cast("Awaitable[int]", self._redis.sadd(USERS, name))
        made = await self._create(keys=[_key(name)], args=[hashed, secrets.token_urlsafe(16)])
        if not int(made):
            raise UserExistsError(name)
        return name

    async def set_password(self, name: str, password: str) -> str:
        """A new password (and stamp: the user's logins end). UnknownUserError if none."""
        name = normalize_username(name)
        hashed = await self._hash(check_password(password))
        changed = await self._replace(keys=[_key(name)], args=[hashed, secrets.token_urlsafe(16)])
        if not int(changed):
            raise UnknownUserError(name)
        return name

    async def remove(self, name: str) -> str:
        """Removes a user (their logins end at once). UnknownUserError if none."""
        name = normalize_username(name)
        # The account first: its logins end with it, whatever happens next.
        deleted = await cast("Awaitable[int]", self._redis.delete(_key(name)))
        unlisted = await cast("Awaitable[int]", self._redis.srem(USERS, name))
        if not deleted and not unlisted:
            raise UnknownUserError(name)
        return name

    async def names(self) -> list[str]:
        members = await cast("Awaitable[set[bytes]]", self._redis.smembers(USERS))
        return sorted(member.decode() for member in members)

    async def stamp(self, name: str) -> str | None:
        """The stamp that signs this user's logins; None when there is no such user."""
        stored = await cast("Awaitable[bytes | None]", self._redis.hget(_key(name), _STAMP))
        return None if stored is None else stored.decode()

    async def verify(self, name: str, password: str) -> str | None:
        """The stored username when ``password`` is this user's, else None. One argon2id
        verification either way (see the module's docstring)."""
        try:
            name = normalize_username(name)
            password = check_password(password)
        except InvalidCredentialError:
            name, password = "", ""
        stored = (
            await cast("Awaitable[bytes | None]", self._redis.hget(_key(name), _HASH))
            if name
            else None
        )
        if stored is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await self._matches(self._dummy_hash, password or "-")
            return None
        return name if await self._matches(stored.decode(), password) else None
