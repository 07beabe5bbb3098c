"""``GET /metrics`` in Prometheus text format, and request counts and durations per route.

Each service runs as one process per container (compose scales by replicas), so
prometheus-client's default registry is the whole story: every metric a module defines at
import, plus the library's own process, platform and garbage-collector collectors. No
multiprocess mode. Labels never carry a raw path, a session id, message text or a key.
"""

from __future__ import annotations

from litestar.middleware.base import DefineMiddleware
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from prometheus_client import disable_created_metrics

__all__ = ["METRICS_NAMESPACE", "METRICS_PATH", "MetricsController", "request_metrics"]

# Every chatrelay metric is named chatrelay_<subsystem>_<name>.
METRICS_NAMESPACE = "chatrelay"
METRICS_PATH = "/metrics"
# Probes and scrapes every few seconds would drown the requests people make.
_UNCOUNTED = [f"^{path}$" for path in (METRICS_PATH, "/healthz", "/readyz")]

# A ``*_created`` timestamp series beside every counter and histogram would double what a
# scraper stores, for a value nobody graphs.
disable_created_metrics()  # type: ignore[no-untyped-call]


class MetricsController(PrometheusController):
    """Litestar's exporter of the default registry, kept out of the OpenAPI schema: it is
    for a scraper, not for API clients."""

    path = METRICS_PATH
    include_in_schema = False


def request_metrics(service: str) -> DefineMiddleware:
    """Litestar's request middleware: ``chatrelay_http_requests_total``,
    ``chatrelay_http_request_duration_seconds``, ``chatrelay_http_requests_in_progress`` and
    ``chatrelay_http_requests_error_total``, labelled ``method``, ``path`` (the route
    template, e.g. ``/api/sessions/{session_id}/messages``: a raw path would make one
    series per session), ``status_code`` and ``app_name`` (``service``). It runs on routed
    requests only: a 404 for an unknown path, and the web's events streams (answered before
    the router), never reach it."""
    return PrometheusConfig(
        app_name=service,
        prefix=f"{METRICS_NAMESPACE}_http",
        group_path=True,
        exclude=_UNCOUNTED,
    ).middleware
