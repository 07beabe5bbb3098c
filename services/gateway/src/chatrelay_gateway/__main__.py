"""``python -m chatrelay_gateway``: serve the gateway with uvicorn; ``python -m
chatrelay_gateway users ...`` manages the accounts (``_users_cli``)."""

from __future__ import annotations

import sys

from chatrelay_common import serve

from ._settings import GatewaySettings
from ._users_cli import users_main


def main() -> None:
    if sys.argv[1:2] == ["users"]:
        sys.exit(users_main(sys.argv[2:]))
    settings = GatewaySettings()
    serve("chatrelay_gateway.app:create_app", host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
