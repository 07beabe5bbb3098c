from __future__ import annotations

from chatrelay_common import ServiceSettings
from pydantic import Field, SecretStr, field_validator

from ._upstream import normalize_base_url

__all__ = ["DEMO_MODEL", "GatewaySettings"]

DEMO_MODEL = "chatrelay-demo"
OPENAI_BASE_URL = "https://api.openai.com/v1"


class GatewaySettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="GATEWAY_HOST")
    port: int = Field(default=8001, validation_alias="GATEWAY_PORT")
    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_model: str | None = Field(default=None, validation_alias="OPENAI_MODEL")
    connect_timeout: float = Field(default=10.0, gt=0, validation_alias="GATEWAY_CONNECT_TIMEOUT")
    first_byte_timeout: float = Field(
        default=60.0, gt=0, validation_alias="GATEWAY_FIRST_BYTE_TIMEOUT"
    )
    idle_timeout: float = Field(default=60.0, gt=0, validation_alias="GATEWAY_IDLE_TIMEOUT")
    max_message_bytes: int = Field(
        default=32 * 1024, ge=1024, validation_alias="GATEWAY_MAX_MESSAGE_BYTES"
    )
    # Seconds between the demo model's tokens: a human reading pace.
    demo_token_delay: float = Field(default=0.04, ge=0, validation_alias="GATEWAY_DEMO_TOKEN_DELAY")

    @field_validator("openai_api_key", "openai_base_url", "openai_model", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def demo(self) -> bool:
        """No key and no upstream named: answer from the built-in demo model. (A base URL
        without a key is a keyless server, e.g. a local one.)"""
        return self.openai_api_key is None and self.openai_base_url is None

    @property
    def upstream_base_url(self) -> str:
        if self.demo:
            return f"http://127.0.0.1:{self.port}/demo/v1"
        return normalize_base_url(self.openai_base_url or OPENAI_BASE_URL)

    @property
    def default_model(self) -> str:
        if self.demo:
            return DEMO_MODEL
        return self.openai_model or "gpt-4o-mini"

    @property
    def api_key(self) -> str | None:
        return None if self.openai_api_key is None else self.openai_api_key.get_secret_value()
