"""Settings both services share. Each service builds its settings in its app factory."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._auth import is_valid_auth_token

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Base for each service's settings: reads the environment, then ``.env`` if present."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # Events kept per session for Last-Event-ID resume; older ids get `reset` + `snapshot`.
    log_max_events: int = Field(default=10_000, ge=100, validation_alias="CHATRELAY_LOG_MAX_EVENTS")
    # When set, every API and events route requires the login cookie.
    site_password: SecretStr | None = Field(default=None, validation_alias="SITE_PASSWORD")

    @field_validator("site_password", mode="before")
    @classmethod
    def _empty_password_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    def is_authorized(self, cookie: str | None) -> bool:
        """True when no password is set, or ``cookie`` is the login cookie for it."""
        if self.site_password is None:
            return True
        return is_valid_auth_token(self.site_password.get_secret_value(), cookie)
