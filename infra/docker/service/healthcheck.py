"""The service image's HEALTHCHECK: exit 0 when the service answers GET /readyz.

The port is <SERVICE>_PORT when set (compose sets it), else the default in the service's
settings class, so that default lives in one place. `--print-port` prints the port only:
the image build runs it, so a renamed settings class fails the build, not the healthcheck.
"""

import importlib
import os
import sys
import urllib.request


def service_port(service: str) -> str:
    port = os.environ.get(f"{service.upper()}_PORT")
    if port:
        return port
    settings_module = importlib.import_module(f"chatrelay_{service}._settings")
    settings_class = getattr(settings_module, f"{service.capitalize()}Settings")
    return str(settings_class().port)


def main() -> None:
    service = os.environ["CHATRELAY_SERVICE"]
    port = service_port(service)
    if sys.argv[1:] == ["--print-port"]:
        print(port)
        return
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except OSError as error:
        sys.exit(f"chatrelay-{service} not ready on port {port}: {error}")


main()
