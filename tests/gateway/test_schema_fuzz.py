"""Schemathesis over the gateway's own OpenAPI schema, against a real gateway process (real
Redis, the fake upstream): no response is a 5xx, and every documented response matches its
schema. Bounded: a few dozen examples per operation, no example database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import TEST_API_KEY
from tests.support.fake_upstream import FakeUpstream
from tests.support.services import Service, run_service

MAX_EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzzed_gateway(
    redis_server_url: str, fake_upstream_server: FakeUpstream, service_logs: Path
) -> Iterator[Service]:
    env = {
        "REDIS_URL": redis_server_url,
        "OPENAI_BASE_URL": fake_upstream_server.base_url,
        "OPENAI_API_KEY": TEST_API_KEY,
        "OPENAI_MODELS": "ok,json",
        "OPENAI_MODEL": "ok",
    }
    with run_service("gateway", env, service_logs) as service:
        yield service


@pytest.mark.parametrize(
    ("mode", "on_a_real_session"),
    [
        (GenerationMode.POSITIVE, False),
        (GenerationMode.POSITIVE, True),
        (GenerationMode.NEGATIVE, False),
    ],
    ids=["positive", "positive-real-session", "negative"],
)
def test_no_5xx_and_every_response_matches_the_schema(
    fuzzed_gateway: Service, mode: GenerationMode, on_a_real_session: bool
) -> None:
    """``positive-real-session``: every ``{session_id}`` is one real session, so sends,
    edits, stops and clears run for real instead of meeting 404s."""
    schema = schemathesis.openapi.from_url(f"{fuzzed_gateway.url}/schema/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the gateway's schema is valid
        operations.append(result.ok())
    session_id = httpx.post(f"{fuzzed_gateway.url}/api/sessions", json={}).json()["id"]
    failures: list[str] = []
    calls: Counter[int] = Counter()
    unsatisfiable: list[str] = []

    def on_session(case: Case[Any]) -> Case[Any]:
        if on_a_real_session and "session_id" in (case.path_parameters or {}):
            case.path_parameters = {"session_id": session_id}
        return case

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode).map(on_session))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples every run: a failure reproduces
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Case[Any]) -> None:
            response = case.call_and_validate(
                base_url=fuzzed_gateway.url,
                checks=[not_a_server_error, response_schema_conformance],
                timeout=10,
            )
            calls[response.status_code] += 1

        try:
            call()
        except Unsatisfiable:  # nothing can be wrong about a route without a body
            unsatisfiable.append(operation.label)
        except (Exception, BaseExceptionGroup) as exc:  # all operations run; failures reported
            failures.append(f"{operation.label}: {exc}")
    print(
        f"schemathesis ({mode}{', one real session' if on_a_real_session else ''}): "
        f"{len(operations)} operations, statuses {dict(sorted(calls.items()))}, "
        f"no {mode} case for {unsatisfiable}"
    )
    assert len(operations) == 16
    assert failures == []
    assert sum(calls.values()) >= 60


def test_the_schema_is_served_and_documents_every_error_as_a_detail(
    fuzzed_gateway: Service,
) -> None:
    response = httpx.get(f"{fuzzed_gateway.url}/schema/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert sorted(schema["paths"]) == [
        "/api/auth",
        "/api/login",
        "/api/logout",
        "/api/models",
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/sessions/{session_id}/export",
        "/api/sessions/{session_id}/messages",
        "/api/sessions/{session_id}/regenerate",
        "/api/sessions/{session_id}/share",
        "/api/sessions/{session_id}/stop",
    ]
    send = schema["paths"]["/api/sessions/{session_id}/messages"]["post"]
    assert send["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PostMessage"
    }
    errors = {k: v for k, v in send["responses"].items() if k >= "400"}
    assert sorted(errors) == ["400", "401", "403", "404", "409", "413", "415", "422", "429", "503"]
    for error in errors.values():
        body = error["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/ErrorBody"}
    assert schema["components"]["schemas"]["ErrorBody"] == {
        "properties": {"detail": {"type": "string"}},
        "type": "object",
        "required": ["detail"],
        "title": "ErrorBody",
    }
