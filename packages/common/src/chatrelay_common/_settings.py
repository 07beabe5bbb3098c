"""Settings both services share. Each service builds its settings in its app factory."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ServiceSettings"]


class ServiceSettings(BaseSettings):
    """Base for each service's settings: reads the environment, then ``.env`` if present."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    redis_url: str = Field(default="redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    # Events kept per session for Last-Event-ID resume; older ids get `reset` + `snapshot`.
    log_max_events: int = Field(default=10_000, ge=100, validation_alias="CHATRELAY_LOG_MAX_EVENTS")
