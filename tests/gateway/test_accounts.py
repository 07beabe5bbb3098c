"""Accounts mode on a real gateway (CHATRELAY_ACCOUNTS=1): the users CLI end to end, login
by username and password, throttling per address and per user, a session seen only by its
owner (404 for another account, the same answer as an unknown session), and the reply cap
per account."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE
from chatrelay_gateway._users_cli import _RefusedError, read_password
from redis.asyncio import Redis

from tests.conftest import keyed_gateway_env
from tests.support import fake_upstream as fake
from tests.support.accounts import (
    add_user,
    from_address,
    log_in,
    new_username,
    run_users_cli,
    with_cookie,
)
from tests.support.redis_server import free_port
from tests.support.services import Service, run_service

PER_USER_FAILURES = 3
WRONG = {"detail": "Wrong username or password"}
NO_SUCH_SESSION = {"detail": "No such session"}


@pytest.fixture(scope="module")
def accounts_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """A demo gateway in accounts mode."""
    env = {
        "REDIS_URL": redis_server_url,
        "CHATRELAY_ACCOUNTS": "1",
        "GATEWAY_DEMO_TOKEN_DELAY": "0",
        "LOGIN_MAX_FAILURES_PER_USER": str(PER_USER_FAILURES),
    }
    with run_service("gateway", env, service_logs) as service:
        yield service


async def test_the_users_cli_end_to_end(
    client: httpx.AsyncClient, accounts_gateway: Service, redis_server_url: str, redis: Redis
) -> None:
    url = accounts_gateway.url
    name = new_username("Cli")
    stored = name.lower()
    added = run_users_cli(redis_server_url, "add", name, stdin="first password\n")
    assert (added.code, added.out, added.err) == (0, f"added user {stored!r}\n", "")

    taken = run_users_cli(redis_server_url, "add", stored, stdin="other\n")
    assert (taken.code, taken.out) == (1, "")
    assert taken.err == f"error: user {stored!r} already exists\n"

    listed = run_users_cli(redis_server_url, "list")
    assert listed.code == 0
    assert stored in listed.out.splitlines()

    # The user logs in (any case of the name), and the password is never echoed.
    old = await log_in(client, url, name.upper(), "first password")
    for result in (added, taken, listed):
        assert "first password" not in result.out + result.err
    assert "first password" not in accounts_gateway.log()

    changed = run_users_cli(redis_server_url, "passwd", stored, stdin="second password\r\n")
    assert changed.code == 0
    assert changed.out == f"changed the password of {stored!r}; their logins have ended\n"
    auth = f"{url}/api/auth"
    assert (await client.get(auth, headers=with_cookie(old))).json()["authenticated"] is False
    refused = await client.post(f"{url}/api/sessions", json={}, headers=with_cookie(old))
    assert (refused.status_code, refused.json()) == (401, {"detail": "Login required"})
    old_password = await client.post(
        f"{url}/api/login",
        json={"username": stored, "password": "first password"},
        headers=from_address(),
    )
    assert (old_password.status_code, old_password.json()) == (401, WRONG)
    new = await log_in(client, url, stored, "second password")
    created = await client.post(f"{url}/api/sessions", json={}, headers=with_cookie(new))
    session_id = created.json()["id"]
    assert await redis.exists(f"chatrelay:{{{session_id}}}:session") == 1
    assert await redis.exists(f"chatrelay:owner:u:{stored}") == 1

    removed = run_users_cli(redis_server_url, "remove", stored)
    assert (removed.code, removed.out) == (
        0,
        f"removed user {stored!r} and their 1 conversation(s); their logins have ended\n",
    )
    assert (await client.get(auth, headers=with_cookie(new))).json()["authenticated"] is False
    # Their conversations went with them: someone added later under that name starts afresh.
    assert await redis.exists(f"chatrelay:{{{session_id}}}:session") == 0
    assert await redis.exists(f"chatrelay:owner:u:{stored}") == 0
    gone = await client.post(
        f"{url}/api/login",
        json={"username": stored, "password": "second password"},
        headers=from_address(),
    )
    assert (gone.status_code, gone.json()) == (401, WRONG)
    assert stored not in run_users_cli(redis_server_url, "list").out.splitlines()

    again = run_users_cli(redis_server_url, "remove", stored)
    assert (again.code, again.err) == (1, f"error: there is no user {stored!r}\n")
    unknown = run_users_cli(redis_server_url, "passwd", stored, stdin="x\n")
    assert (unknown.code, unknown.err) == (1, f"error: there is no user {stored!r}\n")
    bad_name = run_users_cli(redis_server_url, "add", "no spaces", stdin="x\n")
    assert bad_name.code == 1
    assert bad_name.err == (
        "error: A username is 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'\n"
    )
    empty = run_users_cli(redis_server_url, "add", new_username(), stdin="\n")
    assert (empty.code, empty.err) == (1, "error: A password is 1 to 1024 characters\n")
    assert run_users_cli(redis_server_url, "rename", stored).code == 2
    assert run_users_cli(redis_server_url).code == 2
    away = run_users_cli(f"redis://127.0.0.1:{free_port()}/0", "list")
    assert away.code == 3
    assert away.err.startswith("error: Redis is unreachable")


def test_on_a_terminal_the_password_is_typed_twice() -> None:
    typed = iter(["pässword", "pässword"])
    assert read_password(io.StringIO(), lambda _: next(typed), tty=True) == "pässword"
    differing = iter(["one", "two"])
    with pytest.raises(_RefusedError, match="the two passwords differ; nothing changed"):
        read_password(io.StringIO(), lambda _: next(differing), tty=True)
    # Piped: the first line, without its line ending; spaces are the password's own.
    assert read_password(io.StringIO(" piped \r\nnext\n"), tty=False) == " piped "


async def test_login_by_username_and_password(
    client: httpx.AsyncClient, accounts_gateway: Service, redis_server_url: str
) -> None:
    url = accounts_gateway.url
    password = "pässwörd ☃ 🔑"
    name = add_user(redis_server_url, password)
    auth = f"{url}/api/auth"
    assert (await client.get(auth)).json() == {
        "required": True,
        "authenticated": False,
        "mode": "accounts",
        "user": None,
    }
    ok = await client.post(
        f"{url}/api/login", json={"username": name, "password": password}, headers=from_address()
    )
    assert ok.status_code == 204
    attributes = {part.strip().lower() for part in ok.headers["set-cookie"].split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/"} <= attributes
    token = ok.cookies[AUTH_COOKIE]
    # u1.<issued at>.<login id>.<username, base64url>.<signature>: the token carries the user.
    assert token.split(".")[0] == "u1"
    assert (await client.get(auth, headers=with_cookie(token))).json() == {
        "required": True,
        "authenticated": True,
        "mode": "accounts",
        "user": name,
    }
    created = await client.post(f"{url}/api/sessions", json={}, headers=with_cookie(token))
    assert created.status_code == 201

    # A wrong password and an unknown user get the very same answer.
    for body in (
        {"username": name, "password": "wrong"},
        {"username": new_username("nobody"), "password": password},
    ):
        answer = await client.post(f"{url}/api/login", json=body, headers=from_address())
        assert (answer.status_code, answer.json()) == (401, WRONG)
        assert "set-cookie" not in answer.headers

    # The site password's body, or a username breaking the rules: 422, saying why.
    cases = [
        ({"password": password}, "This site has accounts: send a username and password"),
        ({"username": "x" * 65, "password": password}, None),
        ({"username": "ünïcode", "password": password}, None),
        ({"username": name, "password": "p" * 1025}, "A password is 1 to 1024 characters"),
        ({"username": name, "password": ""}, "A password is 1 to 1024 characters"),
    ]
    for body, detail in cases:
        answer = await client.post(f"{url}/api/login", json=body, headers=from_address())
        assert answer.status_code == 422, body
        assert password not in answer.text
        if detail is not None:
            assert answer.json() == {"detail": detail}
    huge = await client.post(
        f"{url}/api/login",
        json={"username": name, "password": "p" * 100_000},
        headers=from_address(),
    )
    assert huge.status_code == 413

    # Logout revokes this login.
    assert (await client.post(f"{url}/api/logout", headers=with_cookie(token))).status_code == 204
    assert (await client.get(auth, headers=with_cookie(token))).json()["authenticated"] is False
    assert password not in accounts_gateway.log()


async def test_guessing_is_throttled_per_address_and_per_user(
    client: httpx.AsyncClient, accounts_gateway: Service, redis_server_url: str
) -> None:
    url = f"{accounts_gateway.url}/api/login"
    name = add_user(redis_server_url, "right")
    other = add_user(redis_server_url, "right")
    # From as many addresses as it takes: the user's allowance runs out all the same.
    for _ in range(PER_USER_FAILURES):
        wrong = await client.post(
            url, json={"username": name, "password": "nope"}, headers=from_address()
        )
        assert wrong.status_code == 401
    fresh_address = from_address()
    locked = await client.post(
        url, json={"username": name.upper(), "password": "right"}, headers=fresh_address
    )
    assert locked.status_code == 429
    assert locked.json()["detail"].startswith("Too many failed sign-ins; retry in ")
    assert 0 < int(locked.headers["retry-after"]) <= 60
    # Another user signs in from that very address.
    assert (await log_in(client, accounts_gateway.url, other, "right")).startswith("u1.")

    # Per address (LOGIN_MAX_FAILURES, 5): unknown names count too.
    guesser = from_address()
    for _ in range(5):
        body = {"username": new_username("guess"), "password": "nope"}
        assert (await client.post(url, json=body, headers=guesser)).status_code == 401
    right = await client.post(url, json={"username": other, "password": "right"}, headers=guesser)
    assert right.status_code == 429


async def _until_ended(client: httpx.AsyncClient, url: str, cookie: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snapshot = (await client.get(url, headers=cookie)).json()
        if snapshot["messages"] and snapshot["messages"][-1]["status"] != "streaming":
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the reply at {url} did not end within 30 s")


async def test_each_session_is_its_owners_alone(
    client: httpx.AsyncClient, accounts_gateway: Service, redis_server_url: str
) -> None:
    url = accounts_gateway.url
    alice = with_cookie(await log_in(client, url, add_user(redis_server_url, "a"), "a"))
    bob = with_cookie(await log_in(client, url, add_user(redis_server_url, "b"), "b"))
    created = await client.post(f"{url}/api/sessions", json={}, headers=alice)
    session = f"{url}/api/sessions/{created.json()['id']}"
    sent = await client.post(f"{session}/messages", json={"content": "hello"}, headers=alice)
    assert sent.status_code == 202
    await _until_ended(client, session, alice)
    before = (await client.get(session, headers=alice)).json()
    unknown = f"{url}/api/sessions/AAAAAAAAAAAAAAAAAAAAAA"

    routes = [
        ("GET", "", None),
        ("PATCH", "", {"system": "mine now"}),
        ("POST", "/messages", {"content": "hijack"}),
        ("POST", "/regenerate", None),
        ("POST", "/stop", None),
        ("DELETE", "/messages", None),
        ("GET", "/export?format=json", None),
        ("POST", "/share", None),
        ("DELETE", "/share", None),
        ("DELETE", "", None),
    ]
    for method, path, body in routes:
        for target in (session, unknown):
            answer = await client.request(method, f"{target}{path}", json=body, headers=bob)
            assert (answer.status_code, answer.json()) == (404, NO_SUCH_SESSION), (method, path)
        signed_out = await client.request(method, f"{session}{path}", json=body)
        assert signed_out.status_code == 401, (method, path)

    # Nothing of Alice's changed, and she still has every route.
    assert (await client.get(session, headers=alice)).json() == before
    own = await client.get(f"{session}/export?format=json", headers=alice)
    assert own.status_code == 200
    patched = await client.patch(session, json={"system": "still mine"}, headers=alice)
    assert patched.status_code == 200
    assert (await client.delete(session, headers=alice)).status_code == 204


@pytest.fixture(scope="module")
def capped_accounts_gateway(
    redis_server_url: str, fake_upstream_server: fake.FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """Accounts, slow answers, and one reply at a time per account."""
    env = keyed_gateway_env(
        redis_server_url,
        fake_upstream_server.base_url,
        CHATRELAY_ACCOUNTS="1",
        OPENAI_MODEL="slow",
        GATEWAY_MAX_REPLIES_PER_IP="1",
        # The tests stand in for clients on other machines (X-Forwarded-For).
        ALLOW_OPEN_ACCESS="1",
    )
    with run_service("gateway", env, service_logs) as service:
        yield service


async def test_the_reply_cap_is_per_account(
    client: httpx.AsyncClient, capped_accounts_gateway: Service, redis_server_url: str
) -> None:
    url = capped_accounts_gateway.url
    alice = with_cookie(await log_in(client, url, add_user(redis_server_url, "a"), "a"))
    bob = with_cookie(await log_in(client, url, add_user(redis_server_url, "b"), "b"))

    async def session_of(cookie: dict[str, str]) -> str:
        created = await client.post(f"{url}/api/sessions", json={}, headers=cookie)
        return f"{url}/api/sessions/{created.json()['id']}"

    async def send(session: str, cookie: dict[str, str], address: str) -> httpx.Response:
        return await client.post(
            f"{session}/messages",
            json={"content": "go"},
            headers={**cookie, **from_address(address)},
        )

    first, second, bobs = await session_of(alice), await session_of(alice), await session_of(bob)
    assert (await send(first, alice, "192.0.2.10")).status_code == 202
    # Another address does not make another account...
    capped = await send(second, alice, "192.0.2.11")
    assert (capped.status_code, capped.json(), capped.headers["retry-after"]) == (
        429,
        {"detail": "At most 1 replies may stream at once per account; try again in 5 s"},
        "5",
    )
    # ...and the same address does not share an account's cap.
    assert (await send(bobs, bob, "192.0.2.10")).status_code == 202
    for session, cookie in ((first, alice), (bobs, bob)):
        await client.post(f"{session}/stop", headers=cookie)
        await _until_ended(client, session, cookie)
    assert (await send(second, alice, "192.0.2.11")).status_code == 202
    await client.post(f"{second}/stop", headers=alice)
    await _until_ended(client, second, alice)
