"""Every variable a service reads is documented in ``.env.example`` (empty: the default lives
in the settings class) and passed by compose to the services that read it, empty unless
given. A new setting missing from either fails here instead of being silently ignored."""

from __future__ import annotations

import re

from chatrelay_common import ServiceSettings
from chatrelay_gateway._settings import GatewaySettings
from chatrelay_web._settings import WebSettings
from pydantic_settings import BaseSettings

from tests.infra.test_ports import COMPOSE, ROOT, service_block

# Set by compose itself (the network's addresses and ports), not by the operator.
COMPOSE_OWN = {"REDIS_URL", "GATEWAY_HOST", "GATEWAY_PORT", "WEB_HOST", "WEB_PORT"}


def _variables(settings: type[BaseSettings]) -> set[str]:
    return {
        field.validation_alias
        for field in settings.model_fields.values()
        if isinstance(field.validation_alias, str)
    }


def _compose_environment(service: str) -> dict[str, str]:
    """The service's environment: the shared ``x-service-env`` anchor it merges, and its own."""
    text = COMPOSE.read_text()
    anchor = re.search(r"^x-service-env: &service-env\n((?:  .*\n)*)", text, flags=re.M)
    assert anchor
    own = service_block(text, service)
    assert "      <<: *service-env\n" in own
    pairs = re.findall(r"^  (\w+): (.*)$", anchor.group(1), flags=re.M)
    pairs += re.findall(r"^      (\w+): (.*)$", own, flags=re.M)
    return dict(pairs)


def test_every_variable_is_in_env_example_empty() -> None:
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    for settings in (GatewaySettings, WebSettings):
        missing = _variables(settings) - listed
        assert not missing, f"{settings.__name__}: not in .env.example: {sorted(missing)}"
    for name in _variables(GatewaySettings) | _variables(WebSettings):
        if name not in COMPOSE_OWN and name != "FORWARDED_ALLOW_IPS":
            assert re.search(rf"^{name}=$", example, flags=re.MULTILINE), name


def test_compose_passes_every_variable_to_the_services_that_read_it() -> None:
    shared = _variables(ServiceSettings)
    assert shared <= _variables(GatewaySettings)
    for service, settings in (("gateway", GatewaySettings), ("web", WebSettings)):
        environment = _compose_environment(service)
        missing = _variables(settings) - set(environment)
        assert not missing, f"compose's {service} lacks {sorted(missing)}"
        for name in _variables(settings) - COMPOSE_OWN:
            assert environment[name] in (f"${{{name}:-}}", "*"), (service, name)
