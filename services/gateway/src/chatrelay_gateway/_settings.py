from __future__ import annotations

import ipaddress

import httpx
from chatrelay_common import (
    DEFAULT_SEARCH_MAX_BYTES,
    DEFAULT_SEARCH_MAX_SESSIONS,
    DEMO_MODEL,
    ServiceSettings,
)
from pydantic import Field, SecretStr, model_validator

__all__ = ["DEFAULT_FLUSH_SECONDS", "DEMO_MODEL", "GatewaySettings"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
# The writer's flush tick: text of every reply that arrives within it shares one Redis call.
# Text after a quiet spell (longer than a tick) goes out at once.
DEFAULT_FLUSH_SECONDS = 0.005


class GatewaySettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="GATEWAY_HOST")
    port: int = Field(default=8001, validation_alias="GATEWAY_PORT")
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_model: str | None = Field(default=None, validation_alias="OPENAI_MODEL")
    # The models clients may pick, comma-separated; unset: the default model alone.
    openai_models: str | None = Field(default=None, validation_alias="OPENAI_MODELS")
    # Sent upstream as max_tokens (or max_completion_tokens) with every reply.
    max_tokens: int = Field(default=4096, ge=1, validation_alias="GATEWAY_MAX_TOKENS")
    # Replies streaming at once from this process: per client IP, and in all.
    max_replies_per_ip: int = Field(default=4, ge=1, validation_alias="GATEWAY_MAX_REPLIES_PER_IP")
    max_replies: int = Field(default=64, ge=1, validation_alias="GATEWAY_MAX_REPLIES")
    # One reply's upstream stream: bytes received and total seconds.
    max_reply_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, validation_alias="GATEWAY_MAX_REPLY_BYTES"
    )
    max_reply_seconds: float = Field(
        default=600.0, gt=0, validation_alias="GATEWAY_MAX_REPLY_SECONDS"
    )
    connect_timeout: float = Field(default=10.0, gt=0, validation_alias="GATEWAY_CONNECT_TIMEOUT")
    first_byte_timeout: float = Field(
        default=60.0, gt=0, validation_alias="GATEWAY_FIRST_BYTE_TIMEOUT"
    )
    idle_timeout: float = Field(default=60.0, gt=0, validation_alias="GATEWAY_IDLE_TIMEOUT")
    max_message_bytes: int = Field(
        default=32 * 1024, ge=1024, validation_alias="GATEWAY_MAX_MESSAGE_BYTES"
    )
    # The demo endpoint receives whole conversations from this gateway, so it has its own
    # (larger) body limit.
    demo_max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, validation_alias="GATEWAY_DEMO_MAX_BODY_BYTES"
    )
    # Seconds between the demo model's tokens: a human reading pace.
    demo_token_delay: float = Field(default=0.04, ge=0, validation_alias="GATEWAY_DEMO_TOKEN_DELAY")
    # GET /api/models: how long the upstream's model list is kept, and how long a fetch of it
    # may take before the allowlist alone is offered.
    models_cache_seconds: float = Field(
        default=300.0, ge=0, validation_alias="GATEWAY_MODELS_CACHE_SECONDS"
    )
    models_timeout: float = Field(default=2.0, gt=0, validation_alias="GATEWAY_MODELS_TIMEOUT")
    # GET /api/sessions: the largest ``limit`` a page may ask for (beyond: 422); a search
    # looks at this many of the owner's newest sessions at most, reads about this many bytes
    # of their text per request at most, and takes a ``q`` this long at most (beyond: 422).
    sessions_page_max: int = Field(default=100, ge=1, validation_alias="GATEWAY_SESSIONS_PAGE_MAX")
    search_max_sessions: int = Field(
        default=DEFAULT_SEARCH_MAX_SESSIONS, ge=1, validation_alias="GATEWAY_SEARCH_MAX_SESSIONS"
    )
    search_max_bytes: int = Field(
        default=DEFAULT_SEARCH_MAX_BYTES, ge=1024, validation_alias="GATEWAY_SEARCH_MAX_BYTES"
    )
    search_max_query_chars: int = Field(
        default=200, ge=1, validation_alias="GATEWAY_SEARCH_MAX_QUERY_CHARS"
    )
    # Text of every running reply that arrives within one tick goes to Redis in one call.
    flush_seconds: float = Field(
        default=DEFAULT_FLUSH_SECONDS, gt=0, le=1, validation_alias="GATEWAY_FLUSH_SECONDS"
    )

    @model_validator(mode="after")
    def _default_model_is_allowed(self) -> GatewaySettings:
        if not self.demo and self.default_model not in self.allowed_models:
            raise ValueError(
                f"OPENAI_MODEL ({self.default_model}) must be one of OPENAI_MODELS "
                f"({', '.join(self.allowed_models)})"
            )
        return self

    @property
    def demo(self) -> bool:
        """No key and no upstream named: answer from the built-in demo model. (A base URL
        without a key is a keyless server, e.g. a local one.)"""
        return self.openai_api_key is None and self.openai_base_url is None

    @property
    def upstream_base_url(self) -> str:
        if self.demo:
            return f"http://{_reachable_host(self.host)}:{self.port}/demo/v1"
        return _normalize_base_url(self.openai_base_url or OPENAI_BASE_URL)

    @property
    def default_model(self) -> str:
        if self.demo:
            return DEMO_MODEL
        listed = self._listed_models()
        return self.openai_model or (listed[0] if listed else "gpt-4o-mini")

    @property
    def allowed_models(self) -> tuple[str, ...]:
        """The allowlist: no client spends the key on a model the operator did not name."""
        if self.demo:
            return (DEMO_MODEL,)
        return self._listed_models() or (self.default_model,)

    def _listed_models(self) -> tuple[str, ...]:
        names = (self.openai_models or "").split(",")
        return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))

    @property
    def api_key(self) -> str | None:
        return None if self.openai_api_key is None else self.openai_api_key.get_secret_value()


def _normalize_base_url(url: str) -> str:
    """``http://host:port`` and ``http://host:port/`` mean ``http://host:port/v1``; any other
    path (``/v1``, ``/openai/v1``, ``/v1beta/openai``) is kept as given."""
    url = url.rstrip("/")
    return url + "/v1" if httpx.URL(url).path in ("", "/") else url


def _reachable_host(listen_host: str) -> str:
    """Where this process reaches itself, as a URL host: a gateway listening on one address
    answers only there, one listening on all of them answers on loopback too."""
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:  # a name, e.g. localhost
        return listen_host
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return f"[{address}]" if address.version == 6 else str(address)
