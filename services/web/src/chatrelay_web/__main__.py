"""``python -m chatrelay_web``: serve the web service with uvicorn."""

from __future__ import annotations

import uvicorn

from ._settings import WebSettings


def main() -> None:
    settings = WebSettings()
    uvicorn.run(
        "chatrelay_web.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        proxy_headers=True,
        forwarded_allow_ips="*",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
