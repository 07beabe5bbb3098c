"""Settings both services share. Each service builds its settings in its app factory."""

from __future__ import annotations

from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._auth import LoginThrottle, LoginTokens
from ._redis import DEFAULT_CONNECT_TIMEOUT, DEFAULT_SOCKET_TIMEOUT, AnyRedis
from ._store import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_LOG_MAX_BYTES,
    DEFAULT_LOG_MAX_EVENTS,
    DEFAULT_SESSION_MAX_BYTES,
    DEFAULT_SESSION_TTL_SECONDS,
    SessionStore,
)
from ._users import Users

__all__ = ["DEMO_MODEL", "ServiceSettings"]

# The gateway's built-in model (no API key needed); the page badges it as a demo.
DEMO_MODEL = "chatrelay-demo"


class ServiceSettings(BaseSettings):
    """Base for each service's settings: reads the environment, then ``.env`` if present."""

    # An empty variable means unset (compose passes every variable, empty unless given).
    # An error never shows the inputs: they hold SITE_PASSWORD and OPENAI_API_KEY.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        hide_input_in_errors=True,
    )

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # Events kept per session for Last-Event-ID resume; older ids get `reset` + `snapshot`.
    log_max_events: int = Field(
        default=DEFAULT_LOG_MAX_EVENTS, ge=100, validation_alias="CHATRELAY_LOG_MAX_EVENTS"
    )
    # ... and at most this many bytes of event data.
    log_max_bytes: int = Field(
        default=DEFAULT_LOG_MAX_BYTES, ge=64 * 1024, validation_alias="CHATRELAY_LOG_MAX_BYTES"
    )
    # Message text per session; a message that would pass it is refused (SessionFullError).
    session_max_bytes: int = Field(
        default=DEFAULT_SESSION_MAX_BYTES,
        ge=64 * 1024,
        validation_alias="CHATRELAY_SESSION_MAX_BYTES",
    )
    # Seconds without a write after which every key of a session expires.
    session_ttl: int = Field(
        default=DEFAULT_SESSION_TTL_SECONDS, ge=60, validation_alias="CHATRELAY_SESSION_TTL"
    )
    # A reply whose gateway has not refreshed its lease for this long is closed as interrupted.
    lease_seconds: float = Field(
        default=DEFAULT_LEASE_SECONDS, ge=1, le=300, validation_alias="CHATRELAY_LEASE_SECONDS"
    )
    redis_socket_timeout: float = Field(
        default=DEFAULT_SOCKET_TIMEOUT, gt=0, validation_alias="REDIS_SOCKET_TIMEOUT"
    )
    redis_connect_timeout: float = Field(
        default=DEFAULT_CONNECT_TIMEOUT, gt=0, validation_alias="REDIS_CONNECT_TIMEOUT"
    )
    # When set, every API and events route requires the login cookie.
    site_password: SecretStr | None = Field(default=None, validation_alias="SITE_PASSWORD")
    # Accounts (``python -m chatrelay_gateway users ...``): each login is a user's, and each
    # user sees only their own conversations. Refused together with SITE_PASSWORD.
    accounts: bool = Field(default=False, validation_alias="CHATRELAY_ACCOUNTS")
    # Signs login cookies. Unset: one is generated once into Redis and shared by every replica.
    secret: SecretStr | None = Field(default=None, validation_alias="CHATRELAY_SECRET")
    login_max_age: int = Field(
        default=30 * 24 * 3600, ge=60, validation_alias="CHATRELAY_LOGIN_MAX_AGE"
    )
    # Failed logins allowed per client address per window; then 429 until the window ends.
    login_max_failures: int = Field(default=5, ge=1, validation_alias="LOGIN_MAX_FAILURES")
    login_window_seconds: int = Field(default=60, ge=1, validation_alias="LOGIN_WINDOW_SECONDS")
    # Accounts: failed logins allowed per username (from any address) per window. Higher than
    # the per-address limit, so that a stranger cannot easily lock a user out.
    login_max_failures_per_user: int = Field(
        default=20, ge=1, validation_alias="LOGIN_MAX_FAILURES_PER_USER"
    )
    # With a real API key and no SITE_PASSWORD the gateway serves only this machine unless set.
    allow_open_access: bool = Field(default=False, validation_alias="ALLOW_OPEN_ACCESS")

    @model_validator(mode="after")
    def _one_kind_of_login(self) -> Self:
        if self.accounts and self.site_password is not None:
            raise ValueError(
                "CHATRELAY_ACCOUNTS=1 and SITE_PASSWORD are both set: accounts replace the "
                "shared password; unset one of them"
            )
        return self

    @property
    def login_in_force(self) -> bool:
        """Whether the API and the page need a login (SITE_PASSWORD or accounts)."""
        return self.accounts or self.site_password is not None

    def login_tokens(self, redis: AnyRedis) -> LoginTokens | None:
        """The login cookie signer, or None when no login is in force."""
        secret = None if self.secret is None else self.secret.get_secret_value()
        if self.accounts:
            return LoginTokens(
                redis, users=Users(redis), max_age=self.login_max_age, configured_secret=secret
            )
        if self.site_password is None:
            return None
        return LoginTokens(
            redis,
            password=self.site_password.get_secret_value(),
            max_age=self.login_max_age,
            configured_secret=secret,
        )

    def session_store(self, redis: AnyRedis) -> SessionStore:
        return SessionStore(
            redis,
            log_max_events=self.log_max_events,
            log_max_bytes=self.log_max_bytes,
            session_max_bytes=self.session_max_bytes,
            session_ttl_seconds=self.session_ttl,
            lease_seconds=self.lease_seconds,
        )

    def login_throttle(self, redis: AnyRedis) -> LoginThrottle:
        return LoginThrottle(
            redis, max_failures=self.login_max_failures, window=self.login_window_seconds
        )

    def user_login_throttle(self, redis: AnyRedis) -> LoginThrottle:
        """Accounts: failed logins counted per username (key ``user:<name>``)."""
        return LoginThrottle(
            redis, max_failures=self.login_max_failures_per_user, window=self.login_window_seconds
        )
