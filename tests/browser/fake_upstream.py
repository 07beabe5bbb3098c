"""The names the browser tests use for what they type, from the one fake upstream
(tests/support/fake_upstream.py, scenario ``scripted``, which tests/browser/stack.py runs)."""

from __future__ import annotations

from tests.support.fake_upstream import SHOWCASE, SHOWCASE_PROMPT, XSS_PAYLOAD, slow_text

__all__ = ["SHOWCASE", "SHOWCASE_PROMPT", "XSS_PAYLOAD", "slow_text"]
