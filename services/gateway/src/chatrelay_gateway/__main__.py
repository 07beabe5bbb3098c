"""``python -m chatrelay_gateway``: serve the gateway with uvicorn."""

from __future__ import annotations

from chatrelay_common import serve

from ._settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    serve("chatrelay_gateway.app:create_app", host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
