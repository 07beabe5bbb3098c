"""The services' ports live in their settings classes; the one copy YAML needs (compose's
`x-ports` anchors, which the services and the edge read) must say the same, and nothing
else in the infrastructure, scripts, bench or test harness may spell them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from chatrelay_gateway._settings import GatewaySettings
from chatrelay_web._settings import WebSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "infra" / "compose.yaml"
DEFAULTS = {
    "gateway": GatewaySettings.model_fields["port"].default,
    "web": WebSettings.model_fields["port"].default,
}


def service_block(text: str, name: str) -> str:
    """The lines of one service in compose.yaml (two-space indented under `services:`)."""
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", text, flags=re.M)
    assert match, name
    return match.group(1)


def test_compose_anchors_are_the_settings_defaults() -> None:
    anchors = dict(re.findall(r'^  (\w+): &\1-port "(\d+)"$', COMPOSE.read_text(), flags=re.M))
    assert anchors == {name: str(port) for name, port in DEFAULTS.items()}


def test_services_and_edge_take_the_ports_from_the_anchors() -> None:
    text = COMPOSE.read_text()
    assert "      GATEWAY_PORT: *gateway-port\n" in service_block(text, "gateway")
    assert "      WEB_PORT: *web-port\n" in service_block(text, "web")
    edge = service_block(text, "nginx")
    assert "      WEB_PORT: *web-port\n" in edge
    assert "      GATEWAY_PORT: *gateway-port\n" in edge
    # The edge's entrypoint derives web:$WEB_PORT and gateway:$GATEWAY_PORT itself.
    assert "_UPSTREAM:" not in edge


def test_no_other_copy_of_the_ports() -> None:
    pattern = "|".join(str(port) for port in DEFAULTS.values())
    paths = ["infra", "scripts", "bench", "Makefile", "mk", ".ci"]
    paths += ["tests/support", "tests/browser", "tests/bench", "tests/infra"]
    found = subprocess.run(
        ["git", "grep", "--untracked", "-n", "-w", "-E", pattern, "--", *paths, ":!*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()
    assert [line.split(":", 1)[0] for line in found] == ["infra/compose.yaml"] * 2, found
