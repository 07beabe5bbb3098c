"""``python -m chatrelay_gateway``: serve the gateway with uvicorn."""

from __future__ import annotations

import uvicorn

from ._settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    uvicorn.run(
        "chatrelay_gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
