"""Optional access control: with ``SITE_PASSWORD`` set, a login exchanges the password for a
cookie both services can check without sharing any state but the password itself."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["AUTH_COOKIE", "auth_token", "is_valid_auth_token"]

AUTH_COOKIE = "chatrelay_auth"
_PURPOSE = b"chatrelay login v1"


def auth_token(password: str) -> str:
    """The cookie value for ``password``: changing the password logs everyone out."""
    return hmac.new(password.encode(), _PURPOSE, hashlib.sha256).hexdigest()


def is_valid_auth_token(password: str, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(auth_token(password), token)
