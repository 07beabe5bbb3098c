"""``python -m chatrelay_web``: serve the web with uvicorn."""

from __future__ import annotations

from chatrelay_common import serve

from ._settings import WebSettings


def main() -> None:
    settings = WebSettings()
    # No access rule or limit of the web reads the client address (nginx's limits apply).
    serve(
        "chatrelay_web.app:create_app",
        host=settings.host,
        port=settings.port,
        client_address=False,
    )


if __name__ == "__main__":
    main()
