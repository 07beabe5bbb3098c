"""chatrelay web: the page, and every session's events fanned out over SSE."""

from .app import create_app

__all__ = ["create_app"]
