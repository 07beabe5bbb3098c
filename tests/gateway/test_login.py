"""SITE_PASSWORD on the gateway: a signed login cookie that logout revokes, throttled guessing."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import AUTH_COOKIE, LoginTokens
from redis.asyncio import Redis

from tests.conftest import SITE_PASSWORD
from tests.support.services import Service, run_service

# A fresh documentation-range address per test: the throttle counts failures per address
# in the shared Redis, so tests must not eat into each other's allowance.
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))
FIXED_SECRET = "test-secret-0123456789abcdef0123456789"
SHORT_MAX_AGE = 3600


def from_address(address: str | None = None) -> dict[str, str]:
    """Headers making the gateway see the request as coming from ``address`` (uvicorn takes
    the client address from X-Forwarded-For, which nginx overwrites at the edge)."""
    return {"x-forwarded-for": address or next(_addresses)}


async def log_in(client: httpx.AsyncClient, url: str, password: str = SITE_PASSWORD) -> str:
    response = await client.post(
        f"{url}/api/login", json={"password": password}, headers=from_address()
    )
    assert response.status_code == 204, response.text
    token = response.cookies[AUTH_COOKIE]
    assert token
    return token


def with_cookie(token: str) -> dict[str, str]:
    return {"cookie": f"{AUTH_COOKIE}={token}"}


@pytest.fixture(scope="module")
def fixed_secret_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """A locked gateway with CHATRELAY_SECRET set and one-hour cookies."""
    env = {
        "REDIS_URL": redis_server_url,
        "SITE_PASSWORD": SITE_PASSWORD,
        "CHATRELAY_SECRET": FIXED_SECRET,
        "CHATRELAY_LOGIN_MAX_AGE": str(SHORT_MAX_AGE),
    }
    with run_service("gateway", env, service_logs) as service:
        yield service


async def test_the_api_requires_the_login_cookie(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    sessions = f"{locked_gateway.url}/api/sessions"
    refused = await client.post(sessions, json={})
    assert (refused.status_code, refused.json()) == (401, {"detail": "Login required"})
    forged = await client.post(sessions, json={}, headers=with_cookie("forged"))
    assert forged.status_code == 401

    login = await client.post(
        f"{locked_gateway.url}/api/login", json={"password": SITE_PASSWORD}, headers=from_address()
    )
    assert login.status_code == 204
    cookie = login.headers["set-cookie"]
    token = login.cookies[AUTH_COOKIE]
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "secure", "samesite=strict", "path=/", "max-age=2592000"} <= attributes
    assert SITE_PASSWORD not in cookie
    # v1.<issued at>.<login id>.<signature>
    version, issued_at, login_id, signature = token.split(".")
    assert version == "v1"
    assert abs(int(issued_at) - time.time()) < 60
    assert len(login_id) == 22
    assert len(signature) == 43

    created = await client.post(sessions, json={}, headers=with_cookie(token))
    assert created.status_code == 201
    session_id = created.json()["id"]
    for method, path in [("GET", ""), ("POST", "/stop"), ("DELETE", "/messages")]:
        url = f"{sessions}/{session_id}{path}"
        assert (await client.request(method, url)).status_code == 401
        assert (await client.request(method, url, headers=with_cookie(token))).status_code < 400
    # Health stays open for orchestrators.
    assert (await client.get(f"{locked_gateway.url}/readyz")).status_code == 200


async def test_a_tampered_cookie_is_refused(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    token = await log_in(client, locked_gateway.url)
    version, issued_at, login_id, signature = token.split(".")
    tampered = [
        f"{version}.{int(issued_at) + 1}.{login_id}.{signature}",
        f"{version}.{issued_at}.{'A' * 22}.{signature}",
        f"{version}.{issued_at}.{login_id}.{'A' * 43}",
        f"v2.{issued_at}.{login_id}.{signature}",
        f"{token}.x",
        "",
    ]
    auth = f"{locked_gateway.url}/api/auth"
    assert (await client.get(auth, headers=with_cookie(token))).json()["authenticated"] is True
    for value in tampered:
        answer = await client.get(auth, headers=with_cookie(value))
        assert answer.json() == {
            "required": True,
            "authenticated": False,
            "mode": "password",
            "user": None,
        }, value


@pytest.mark.parametrize(
    ("body", "status"), [(b'{"password": "wrong"}', 401), (b"{", 400), (b"{}", 422)]
)
async def test_a_bad_login_gets_no_cookie(
    client: httpx.AsyncClient, locked_gateway: Service, body: bytes, status: int
) -> None:
    response = await client.post(
        f"{locked_gateway.url}/api/login",
        content=body,
        headers={"content-type": "application/json", **from_address()},
    )
    assert response.status_code == status
    assert "set-cookie" not in response.headers


async def test_logout_revokes_that_login_everywhere(
    client: httpx.AsyncClient, locked_gateway: Service, redis: Redis
) -> None:
    auth = f"{locked_gateway.url}/api/auth"
    kept = await log_in(client, locked_gateway.url)
    other = await log_in(client, locked_gateway.url)
    assert (await client.get(auth, headers=with_cookie(kept))).json()["authenticated"] is True

    response = await client.post(f"{locked_gateway.url}/api/logout", headers=with_cookie(kept))
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith(f'{AUTH_COOKIE}="";')
    assert "Max-Age=0" in response.headers["set-cookie"]

    # A copy of the cookie saved before logout no longer works...
    assert (await client.get(auth, headers=with_cookie(kept))).json()["authenticated"] is False
    refused = await client.post(
        f"{locked_gateway.url}/api/sessions", json={}, headers=with_cookie(kept)
    )
    assert refused.status_code == 401
    # ...while another login (another browser) stays signed in.
    assert (await client.get(auth, headers=with_cookie(other))).json()["authenticated"] is True
    # The revocation lives as long as the cookie would have, and no longer.
    ttl = await redis.ttl(f"chatrelay:auth:revoked:{kept.split('.')[2]}")
    assert 30 * 24 * 3600 - 120 < ttl <= 30 * 24 * 3600
    # Logging out without a cookie (or with a bad one) is harmless.
    assert (await client.post(f"{locked_gateway.url}/api/logout")).status_code == 204


async def test_cookies_expire_and_follow_the_secret_and_the_password(
    client: httpx.AsyncClient,
    locked_gateway: Service,
    fixed_secret_gateway: Service,
    redis: Redis,
) -> None:
    auth = f"{fixed_secret_gateway.url}/api/auth"

    async def authenticated(token: str, url: str = auth) -> bool:
        answer: bool = (await client.get(url, headers=with_cookie(token))).json()["authenticated"]
        return answer

    # The configured secret signs: a token made with it and the password is good until
    # CHATRELAY_LOGIN_MAX_AGE has passed since its issue time.
    tokens = LoginTokens(
        redis, password=SITE_PASSWORD, max_age=SHORT_MAX_AGE, configured_secret=FIXED_SECRET
    )
    assert await authenticated(await tokens.issue())
    real_time = time.time
    for age, valid in [(SHORT_MAX_AGE - 60, True), (SHORT_MAX_AGE + 1, False)]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(time, "time", lambda age=age: real_time() - age)
            old = await tokens.issue()
        assert await authenticated(old) is valid, age
    assert await authenticated(await log_in(client, fixed_secret_gateway.url))

    # Signed with the secret kept in Redis, a cookie means nothing where CHATRELAY_SECRET
    # differs; and a new password voids every cookie made under the old one.
    assert not await authenticated(await log_in(client, locked_gateway.url))
    other_password = LoginTokens(
        redis, password="another password", max_age=SHORT_MAX_AGE, configured_secret=FIXED_SECRET
    )
    assert not await authenticated(await other_password.issue())
    assert repr(tokens) == "LoginTokens(max_age=3600)"


async def test_the_secret_is_made_once_and_shared(
    client: httpx.AsyncClient,
    locked_gateway: Service,
    redis: Redis,
    redis_server_url: str,
    service_logs: Path,
) -> None:
    token = await log_in(client, locked_gateway.url)
    secret = await redis.get("chatrelay:auth:secret")
    assert secret is not None
    assert len(secret) == 43
    # A replica started later reads the same secret: the cookie works there too.
    env = {"REDIS_URL": redis_server_url, "SITE_PASSWORD": SITE_PASSWORD}
    with run_service("gateway", env, service_logs) as replica:
        answer = await client.get(f"{replica.url}/api/auth", headers=with_cookie(token))
        assert answer.json()["authenticated"] is True
        assert secret.decode() not in replica.log()
    assert await redis.get("chatrelay:auth:secret") == secret


async def test_replicas_never_stay_split_over_the_secret(
    client: httpx.AsyncClient, locked_gateway: Service, locked_web: Service, redis: Redis
) -> None:
    page = f"{locked_web.url}/"

    async def accepted(token: str) -> tuple[bool, int]:
        at_gateway = await client.get(f"{locked_gateway.url}/api/auth", headers=with_cookie(token))
        at_web = await client.get(page, headers=with_cookie(token))
        return at_gateway.json()["authenticated"], at_web.status_code

    before = await log_in(client, locked_gateway.url)
    assert await accepted(before) == (True, 200)

    # Redis lost the secret (no volume, a flush): the next login puts the one in use back,
    # so the cookies already out keep working.
    await redis.delete("chatrelay:auth:secret")
    after_loss = await log_in(client, locked_gateway.url)
    assert await redis.get("chatrelay:auth:secret") is not None
    assert await accepted(before) == (True, 200)
    assert await accepted(after_loss) == (True, 200)

    # Another replica stored a different one first: everyone adopts it on first sight of a
    # cookie signed with it, and signs new logins with it.
    await redis.set("chatrelay:auth:secret", "replaced-secret-0123456789abcdefghijklmnopq")
    elsewhere = LoginTokens(redis, password=SITE_PASSWORD, max_age=30 * 24 * 3600)
    assert await accepted(await elsewhere.issue()) == (True, 200)
    assert await accepted(await log_in(client, locked_gateway.url)) == (True, 200)


async def test_parallel_guessing_is_throttled(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    login = f"{locked_gateway.url}/api/login"
    guesser = from_address()

    async def guess(n: int) -> httpx.Response:
        return await client.post(login, json={"password": f"guess {n}"}, headers=guesser)

    started = time.monotonic()
    answers = await asyncio.gather(*(guess(n) for n in range(60)))
    elapsed = time.monotonic() - started
    statuses = Counter(answer.status_code for answer in answers)
    print(f"60 parallel wrong passwords: {dict(statuses)} in {elapsed:.2f} s")
    assert statuses == {401: 5, 429: 55}
    for answer in answers:
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60
            assert answer.json()["detail"].startswith("Too many failed sign-ins; retry in ")
        assert "set-cookie" not in answer.headers

    # The right password waits too, from that address; other addresses are not affected.
    right = await client.post(login, json={"password": SITE_PASSWORD}, headers=guesser)
    assert right.status_code == 429
    assert int(right.headers["retry-after"]) >= 1
    elsewhere = await client.post(login, json={"password": SITE_PASSWORD}, headers=from_address())
    assert elsewhere.status_code == 204


async def test_a_right_password_gives_its_attempt_back(
    client: httpx.AsyncClient, locked_gateway: Service
) -> None:
    login = f"{locked_gateway.url}/api/login"
    user = from_address()
    for _ in range(20):
        ok = await client.post(login, json={"password": SITE_PASSWORD}, headers=user)
        assert ok.status_code == 204
    for _ in range(5):
        wrong = await client.post(login, json={"password": "typo"}, headers=user)
        assert wrong.status_code == 401
    assert (await client.post(login, json={"password": "typo"}, headers=user)).status_code == 429


async def test_the_page_can_ask_whether_a_login_is_needed(
    client: httpx.AsyncClient, locked_gateway: Service, gateway: Service
) -> None:
    auth = f"{locked_gateway.url}/api/auth"
    signed_out = {"required": True, "authenticated": False, "mode": "password", "user": None}
    assert (await client.get(auth)).json() == signed_out
    token = await log_in(client, locked_gateway.url)
    assert (await client.get(auth, headers=with_cookie(token))).json() == {
        **signed_out,
        "authenticated": True,
    }
    open_auth = await client.get(f"{gateway.url}/api/auth")
    assert open_auth.json() == {
        "required": False,
        "authenticated": True,
        "mode": "open",
        "user": None,
    }
