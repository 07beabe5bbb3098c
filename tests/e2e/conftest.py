"""End-to-end tests against a running stack; `make e2e` (scripts/e2e.sh) starts it.

Without E2E_BASE_URL in the environment (e.g. under `make test`) every test here is skipped.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e._client import Stack


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("E2E_BASE_URL"):
        return
    skip = pytest.mark.skip(reason="end-to-end: run with `make e2e` (needs a running stack)")
    for item in items:
        if "tests/e2e/" in item.nodeid.replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack() -> Stack:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed: the SSE clients are `curl --http2`")
    return Stack.from_env()


@pytest.fixture(scope="session")
def compose_stack(stack: Stack) -> Stack:
    if stack.mode != "compose":
        pytest.skip("needs the compose stack (native runner in use)")
    return stack


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client
