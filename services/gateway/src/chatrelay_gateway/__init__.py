"""chatrelay gateway: creates sessions, takes messages, streams the upstream into Redis."""

from .app import create_app

__all__ = ["create_app"]
