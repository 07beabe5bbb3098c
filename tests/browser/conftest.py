"""Fixtures for the browser tests: the real stack behind nginx (TLS + HTTP/2) and Debian's
chromium driven by Playwright.

Without the playwright package these tests are not collected (so `pytest` still runs the
rest on a venv that lacks it); under CI=true they are, and fail loudly instead.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("playwright") is None and os.environ.get("CI") != "true":
    collect_ignore_glob = ["test_*.py"]
else:
    from tests.browser._fixtures import (  # noqa: F401  (fixtures are found by name)
        auth_stack,
        browser,
        chromium,
        context,
        contexts,
        stack,
        watch,
    )
