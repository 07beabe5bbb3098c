from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from chatrelay_common import SessionStore
from redis.asyncio import Redis

from tests.support.fake_upstream import SCENARIOS, FakeUpstream
from tests.support.redis_server import free_port, open_plain_redis, redis_source, redis_url
from tests.support.services import Service, run_service

# A key shaped like a real one: no response body or log line may ever contain it.
TEST_API_KEY = "sk-test-SECRETSECRETSECRET1234"


def pytest_report_header() -> str:
    return f"redis: {redis_source()}"


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """One real Redis for the whole run."""
    with redis_url() as url:
        yield url


@pytest.fixture
async def redis(redis_server_url: str) -> AsyncIterator[Redis]:
    async with open_plain_redis(redis_server_url) as client:
        yield client


@pytest.fixture
def store(redis: Redis) -> SessionStore:
    return SessionStore(redis, log_max_events=100)


@pytest.fixture(scope="session")
def service_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def fake_upstream_server() -> Iterator[FakeUpstream]:
    """One fake OpenAI-compatible upstream on a real socket for the whole run."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake_upstream(fake_upstream_server: FakeUpstream) -> FakeUpstream:
    """The shared fake upstream, with its recorded requests and disconnects forgotten."""
    fake_upstream_server.reset()
    return fake_upstream_server


def keyed_gateway_env(redis_url: str, upstream_url: str, **env: str) -> dict[str, str]:
    """The environment of a gateway that sends TEST_API_KEY to ``upstream_url``."""
    return {
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        # The model allowlist: every fake-upstream scenario is a model name.
        "OPENAI_MODELS": ",".join(SCENARIOS),
        # Every test client is 127.0.0.1: the reply caps get their own tests.
        "GATEWAY_MAX_REPLIES_PER_IP": "1000",
        "GATEWAY_MAX_REPLIES": "1000",
        **env,
    }


def _keyed_gateway(
    redis_url: str, upstream_url: str, log_dir: Path, **env: str
) -> Iterator[Service]:
    """A gateway process that sends TEST_API_KEY to ``upstream_url``."""
    with run_service(
        "gateway", keyed_gateway_env(redis_url, upstream_url, **env), log_dir
    ) as service:
        yield service


@pytest.fixture(scope="session")
def gateway(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """The gateway in front of the fake upstream, with short timeouts for the fault tests."""
    yield from _keyed_gateway(
        redis_server_url,
        fake_upstream_server.base_url,
        service_logs,
        OPENAI_MODEL="ok",
        GATEWAY_FIRST_BYTE_TIMEOUT="1.5",
        GATEWAY_IDLE_TIMEOUT="1.5",
    )


@pytest.fixture(scope="session")
def gateway_replica(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    """A second gateway process on the same Redis and upstream, as with --scale gateway=2."""
    yield from _keyed_gateway(redis_server_url, fake_upstream_server.base_url, service_logs)


@pytest.fixture(scope="session")
def unreachable_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """The gateway pointed at a port where nothing listens."""
    yield from _keyed_gateway(redis_server_url, f"http://127.0.0.1:{free_port()}/v1", service_logs)


@pytest.fixture(scope="session")
def demo_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """The gateway with no key and no upstream: the built-in demo model."""
    env = {"REDIS_URL": redis_server_url, "GATEWAY_DEMO_TOKEN_DELAY": "0.002"}
    with run_service("gateway", env, service_logs) as service:
        yield service


@pytest.fixture(scope="session")
def web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    env = {"REDIS_URL": redis_server_url, "WEB_HEARTBEAT_SECONDS": "1"}
    with run_service("web", env, service_logs) as service:
        yield service


SITE_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def locked_gateway(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """A demo gateway behind SITE_PASSWORD."""
    env = {
        "REDIS_URL": redis_server_url,
        "SITE_PASSWORD": SITE_PASSWORD,
        "GATEWAY_DEMO_TOKEN_DELAY": "0",
    }
    with run_service("gateway", env, service_logs) as service:
        yield service


@pytest.fixture(scope="session")
def locked_web(redis_server_url: str, service_logs: Path) -> Iterator[Service]:
    """The web service behind SITE_PASSWORD."""
    env = {"REDIS_URL": redis_server_url, "SITE_PASSWORD": SITE_PASSWORD}
    with run_service("web", env, service_logs) as service:
        yield service


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
        yield client
