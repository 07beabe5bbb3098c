"""A session's title: the default its first message gives it, and what a rename accepts."""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["DEFAULT_TITLE_MAX_CHARS", "TITLE_MAX_CHARS", "clean_title", "default_title"]

DEFAULT_TITLE_MAX_CHARS: Final = 80
TITLE_MAX_CHARS: Final = 200


def _printable(text: str) -> str:
    """Control and format characters (newlines, escapes, bidi overrides) become spaces: a
    title is one line of plain text wherever it is shown."""
    return "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)


def default_title(content: str) -> str:
    """The first non-blank line of a user's first message, at most 80 characters; "" for a
    message with no text."""
    for line in content.splitlines():
        title = " ".join(_printable(line).split())
        if title:
            return title[:DEFAULT_TITLE_MAX_CHARS]
    return ""


def clean_title(title: str) -> str | None:
    """A rename's title as kept: control characters as spaces, runs of spaces as one, no
    spaces around; None unless 1 to 200 characters are left."""
    cleaned = " ".join(_printable(title).split())
    return cleaned if 1 <= len(cleaned) <= TITLE_MAX_CHARS else None
