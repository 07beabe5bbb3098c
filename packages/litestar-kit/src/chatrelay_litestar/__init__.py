"""The Litestar glue both services share. Kept out of ``chatrelay_common``, which stays free
of any web framework."""

from ._errors import ErrorResponse, error_response, exception_handlers
from ._health import NotReady, health_controller
from ._login import SIGN_IN_UNAVAILABLE, authenticated, login_required, login_tokens
from ._metrics import METRICS_NAMESPACE, METRICS_PATH, MetricsController, request_metrics
from ._provide import from_state, provide_value

__all__ = [
    "METRICS_NAMESPACE",
    "METRICS_PATH",
    "SIGN_IN_UNAVAILABLE",
    "ErrorResponse",
    "MetricsController",
    "NotReady",
    "authenticated",
    "error_response",
    "exception_handlers",
    "from_state",
    "health_controller",
    "login_required",
    "login_tokens",
    "provide_value",
    "request_metrics",
]
