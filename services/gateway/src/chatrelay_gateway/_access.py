"""Who may use the gateway at all, checked on every route before any handler runs:

- With a real API key and no ``SITE_PASSWORD``, only this machine (unless
  ``ALLOW_OPEN_ACCESS``): nobody else spends the operator's key by default.
- State-changing requests from a browser must come from this site (``Origin``,
  ``Sec-Fetch-Site``), as well as the cookie's SameSite, against cross-site request forgery.
- A request body declared as anything but JSON is refused (a form cannot post JSON).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import Guard

from ._settings import GatewaySettings

__all__ = ["LOCAL_ONLY_DETAIL", "LocalAddresses", "access_guards"]

logger = logging.getLogger("chatrelay.gateway")

# Orchestrators probe these from wherever they run; they reveal nothing and cost nothing.
_UNGUARDED_PATHS = frozenset({"/healthz", "/readyz"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOCAL_ONLY_DETAIL = (
    "This chatrelay spends a paid API key and has no SITE_PASSWORD, so it serves only "
    "clients on its own machine. To open it up, set SITE_PASSWORD (recommended) or "
    "ALLOW_OPEN_ACCESS=1."
)
_PROC_ROUTE = Path("/proc/net/route")
# Docker and Podman mark their containers with these files.
_CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


def _default_gateways(route_table: str) -> set[ipaddress.IPv4Address]:
    """The default-route gateways in a ``/proc/net/route`` text (little-endian hex)."""
    found = set()
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
            found.add(ipaddress.IPv4Address(int(fields[2], 16).to_bytes(4, "little")))
    return found


def _in_container() -> bool:
    return any(marker.exists() for marker in _CONTAINER_MARKERS)


class LocalAddresses:
    """ "This machine": loopback, plus, in a container, its default gateway. Under Docker the
    host's own browser reaches nginx through port publishing, so the edge sees the bridge
    network's gateway address as the client, and nginx passes that on. Outside a container
    the default gateway is a router, which may forward the internet: not local."""

    def __init__(self, route_table: str | None = None, *, in_container: bool | None = None) -> None:
        if in_container is None:
            in_container = _in_container()
        if route_table is None:
            try:
                route_table = _PROC_ROUTE.read_text() if in_container else ""
            except OSError:
                route_table = ""
        self.gateways = _default_gateways(route_table) if in_container else set()

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback or address in self.gateways


def local_only(settings: GatewaySettings) -> bool:
    """A real key with no login (SITE_PASSWORD or accounts) and no explicit opt-in: serve this
    machine only. Demo mode and a keyless upstream (a local model server) cost nothing, so
    they stay open."""
    return (
        settings.api_key is not None
        and not settings.login_in_force
        and not settings.allow_open_access
    )


def _log_access_mode(settings: GatewaySettings, local: LocalAddresses) -> None:
    if local_only(settings):
        gateways = ", ".join(sorted(str(a) for a in local.gateways)) or "none"
        logger.warning(
            "access: only this machine is served (loopback; container gateway: %s) because an "
            "API key is set without SITE_PASSWORD; set SITE_PASSWORD or ALLOW_OPEN_ACCESS=1 "
            "to open it up",
            gateways,
        )
    elif settings.api_key is not None and not settings.login_in_force:
        logger.warning("access: ALLOW_OPEN_ACCESS=1: anyone who reaches this gateway uses the key")


def _host_and_port(authority: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{authority}")
    try:
        return (parts.hostname or "", parts.port)
    except ValueError:  # a port that is not a number
        return ("", None)


def _same_origin(origin: str, own_authority: str) -> bool:
    """``origin`` names the host this request was sent to. nginx passes ``$host`` (no port),
    so a port is compared only when both sides carry one."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    try:
        origin_port = parts.port
    except ValueError:
        return False
    own_host, own_port = _host_and_port(own_authority)
    if parts.hostname != own_host:
        return False
    return origin_port is None or own_port is None or origin_port == own_port


def _check_origin(connection: ASGIConnection[Any, Any, Any, State]) -> None:
    headers = connection.headers
    if headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise PermissionDeniedException(detail="Cross-site requests are not allowed")
    origin = headers.get("origin")
    if origin is None:  # not a browser (curl, scripts): SameSite and the login still apply
        return
    own = headers.get("x-forwarded-host") or headers.get("host") or ""
    if not _same_origin(origin, own.split(",")[0].strip()):
        raise PermissionDeniedException(
            detail=f"Origin {origin[:100]!r} does not match this site; cross-site requests "
            "are not allowed"
        )


def _check_json_body(connection: ASGIConnection[Any, Any, Any, State]) -> None:
    headers = connection.headers
    has_body = headers.get("content-length", "0") not in ("", "0") or (
        "transfer-encoding" in headers
    )
    content_type = headers.get("content-type")
    # No Content-Type is read as JSON (curl, scripts); a browser form always declares one.
    if has_body and content_type is not None:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise HTTPException(
                status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                detail="Request bodies must be JSON (Content-Type: application/json)",
            )


def access_guards(settings: GatewaySettings, local: LocalAddresses | None = None) -> list[Guard]:
    """The app-wide guards for these settings; says in the log who is served."""
    local = local or LocalAddresses()
    _log_access_mode(settings, local)
    restrict = local_only(settings)

    async def access_guard(connection: ASGIConnection[Any, Any, Any, State], _: object) -> None:
        if connection.url.path in _UNGUARDED_PATHS:
            return
        if restrict and (connection.client.host if connection.client else None) not in local:
            raise PermissionDeniedException(detail=LOCAL_ONLY_DETAIL)
        if connection.scope.get("method") in _STATE_CHANGING:
            _check_origin(connection)
            _check_json_body(connection)

    return [access_guard]
