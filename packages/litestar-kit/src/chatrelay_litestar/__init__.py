"""The Litestar glue both services share. Kept out of ``chatrelay_common``, which stays free
of any web framework."""

from ._errors import ErrorResponse, error_response, exception_handlers
from ._health import NotReady, health_controller
from ._identity import (
    OWNER_COOKIE,
    SITE_OWNER,
    Identity,
    identity_from_cookie_header,
    identity_of,
    is_anonymous_owner,
    login_user,
    owner_cookie_middleware,
    owner_for_api_calls,
    user_owner,
)
from ._login import (
    SIGN_IN_UNAVAILABLE,
    authenticated,
    current_login,
    login_required,
    login_tokens,
)
from ._metrics import METRICS_NAMESPACE, METRICS_PATH, MetricsController, request_metrics
from ._ownership import NO_SUCH_SESSION, may_use_session, session_owner_guard
from ._provide import from_state, provide_value

__all__ = [
    "METRICS_NAMESPACE",
    "METRICS_PATH",
    "NO_SUCH_SESSION",
    "OWNER_COOKIE",
    "SIGN_IN_UNAVAILABLE",
    "SITE_OWNER",
    "ErrorResponse",
    "Identity",
    "MetricsController",
    "NotReady",
    "authenticated",
    "current_login",
    "error_response",
    "exception_handlers",
    "from_state",
    "health_controller",
    "identity_from_cookie_header",
    "identity_of",
    "is_anonymous_owner",
    "login_required",
    "login_tokens",
    "login_user",
    "may_use_session",
    "owner_cookie_middleware",
    "owner_for_api_calls",
    "provide_value",
    "request_metrics",
    "session_owner_guard",
    "user_owner",
]
