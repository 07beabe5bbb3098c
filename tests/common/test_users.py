"""Accounts in Redis: argon2id hashes, the username rules, and login tokens that carry the
user and die with a new password or the user's removal."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable
from typing import Any, Literal, cast

import pytest
from argon2 import PasswordHasher
from chatrelay_common import LoginTokens
from chatrelay_common._users import (
    InvalidCredentialError,
    UnknownUserError,
    UserExistsError,
    Users,
    normalize_username,
)
from redis.asyncio import Redis


class CountingHasher(PasswordHasher):
    """argon2id, cheap enough for tests, counting its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


def unique(prefix: str = "user") -> str:
    """Users live in the shared Redis: each test gets names of its own."""
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def users(redis: Redis, hasher: CountingHasher) -> Users:
    return Users(redis, hasher)


async def test_a_user_is_stored_as_an_argon2id_hash(users: Users, redis: Redis) -> None:
    name = unique("Alice")
    stored = await users.add(name, "pässword one")
    assert stored == name.lower()
    assert stored in await users.names()
    record = await cast("Awaitable[dict[bytes, bytes]]", redis.hgetall(f"chatrelay:user:{stored}"))
    assert set(record) == {b"hash", b"stamp"}
    assert record[b"hash"].startswith(b"$argon2id$")
    assert "pässword" not in record[b"hash"].decode()
    # Case-insensitive names; the same password in NFD form (a composed "ä" typed otherwise).
    assert await users.verify(name.upper(), "pa\u0308ssword one") == stored
    assert await users.verify(name, "pässword two") is None
    assert repr(users) == "Users()"


async def test_add_refuses_a_taken_name_and_bad_credentials(users: Users) -> None:
    name = await users.add(unique(), "first")
    with pytest.raises(UserExistsError):
        await users.add(name.upper(), "second")
    assert await users.verify(name, "first") == name
    for bad in ["", "a" * 65, "has space", "üser", "a/b", "a:b"]:
        with pytest.raises(InvalidCredentialError):
            await users.add(bad, "pw")
    for bad_password in ["", "x" * 1025]:
        with pytest.raises(InvalidCredentialError):
            await users.add(unique(), bad_password)
    assert normalize_username("A.b_c-9") == "a.b_c-9"
    assert normalize_username("x" * 64) == "x" * 64


async def test_passwd_and_remove(users: Users, redis: Redis) -> None:
    name = await users.add(unique(), "old")
    stamp = await users.stamp(name)
    await users.set_password(name, "new")
    assert await users.verify(name, "old") is None
    assert await users.verify(name, "new") == name
    assert await users.stamp(name) not in (None, stamp)
    await users.remove(name)
    assert name not in await users.names()
    assert await redis.exists(f"chatrelay:user:{name}") == 0
    assert await users.verify(name, "new") is None
    with pytest.raises(UnknownUserError):
        await users.remove(name)
    with pytest.raises(UnknownUserError):
        await users.set_password(name, "again")
    assert await redis.exists(f"chatrelay:user:{name}") == 0


@pytest.mark.parametrize(
    ("name", "password"),
    [("known", "wrong"), ("unknown", "whatever"), ("", "x"), ("a" * 5000, "y" * 5000)],
)
async def test_every_failed_check_costs_one_argon2_verification(
    users: Users, hasher: CountingHasher, name: str, password: str
) -> None:
    """Unknown and malformed names are checked against a dummy hash: the work done (hence
    the time taken) does not tell whether a user exists."""
    known = await users.add(unique(), "right")
    asked = known if name == "known" else name
    before = hasher.verified
    assert await users.verify(asked, password) is None
    assert hasher.verified == before + 1
    assert await users.verify(known, "right") == known
    assert hasher.verified == before + 2


async def test_a_token_carries_its_user_and_dies_with_a_new_password_or_removal(
    users: Users, redis: Redis
) -> None:
    tokens = LoginTokens(redis, users=users, max_age=3600)
    name = await users.add(unique(), "pw")
    token = await tokens.issue(name)
    version, _issued, login_id, _user, _signature = token.split(".")
    assert version == "u1"
    login = await tokens.login(token)
    assert login is not None
    assert (login.login_id, login.user) == (login_id, name)

    # Another user's name swapped in fails the signature.
    other = await users.add(unique(), "pw")
    forged = token.split(".")
    forged[3] = (await tokens.issue(other)).split(".")[3]
    assert await tokens.login(".".join(forged)) is None

    await users.set_password(name, "pw2")
    assert await tokens.login(token) is None
    fresh = await tokens.issue(name)
    assert await tokens.login(fresh) is not None
    await tokens.revoke(fresh)
    assert await tokens.login(fresh) is None
    third = await tokens.issue(name)
    await users.remove(name)
    assert await tokens.login(third) is None
    with pytest.raises(ValueError, match="existing user"):
        await tokens.issue(name)

    # A SITE_PASSWORD cookie is no account login, and the other way round.
    site = LoginTokens(redis, password="pw", max_age=3600)
    assert await tokens.login(await site.issue()) is None
    assert await site.login(await tokens.issue(other)) is None


async def test_settings_refuse_accounts_with_a_site_password(monkeypatch: Any) -> None:
    from chatrelay_common import ServiceSettings
    from pydantic import ValidationError

    monkeypatch.setenv("CHATRELAY_ACCOUNTS", "1")
    monkeypatch.setenv("SITE_PASSWORD", "hunter2-site-password")
    with pytest.raises(ValidationError, match="accounts replace the shared password") as refused:
        ServiceSettings(_env_file=None)  # type: ignore[call-arg]
    # The startup error shows no input: it would have printed the password.
    assert "hunter2" not in str(refused.value)
    monkeypatch.delenv("SITE_PASSWORD")
    settings = ServiceSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.accounts
    assert settings.login_in_force


async def test_a_name_listed_without_an_account_is_no_user_and_remove_clears_it(
    users: Users, redis: Redis
) -> None:
    """As an add that crashed between listing the name and writing the account leaves it."""
    name = unique()
    await cast("Awaitable[int]", redis.sadd("chatrelay:users", name))
    assert name in await users.names()
    assert await users.verify(name, "pw") is None
    assert await users.stamp(name) is None
    assert await users.remove(name) == name
    assert name not in await users.names()
    with pytest.raises(UnknownUserError):
        await users.remove(name)
    # And the name can be added for real.
    assert await users.add(name, "pw") == name
    assert await users.verify(name, "pw") == name


async def test_an_add_run_again_after_a_lost_answer_is_no_conflict(users: Users) -> None:
    """The client sends a command again when its answer was lost: the account it wrote (its
    own stamp) is no taken name; another add's is."""
    key = f"chatrelay:user:{unique()}"
    assert await users._create(keys=[key], args=["hash", "stamp-1"]) == 1
    assert await users._create(keys=[key], args=["hash", "stamp-1"]) == 1
    assert await users._create(keys=[key], args=["other", "stamp-2"]) == 0
