"""An empty variable means unset, in the environment and in ``.env`` alike: compose passes
every variable, empty unless given, and ``.env.example`` lists them empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from chatrelay_common import ServiceSettings

_EMPTY = ("SITE_PASSWORD", "CHATRELAY_SECRET", "ALLOW_OPEN_ACCESS", "CHATRELAY_SESSION_TTL")


def _assert_defaults(settings: ServiceSettings) -> None:
    assert settings.site_password is None
    assert settings.secret is None
    assert settings.allow_open_access is False
    assert settings.session_ttl == ServiceSettings.model_fields["session_ttl"].default


def test_empty_environment_variables_are_unset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    for name in _EMPTY:
        monkeypatch.setenv(name, "")
    _assert_defaults(ServiceSettings())


def test_empty_dotenv_entries_are_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in _EMPTY:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("".join(f"{name}=\n" for name in _EMPTY))
    _assert_defaults(ServiceSettings())


def test_set_values_still_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SITE_PASSWORD", "pw")
    monkeypatch.setenv("ALLOW_OPEN_ACCESS", "1")
    settings = ServiceSettings()
    assert settings.site_password is not None
    assert settings.site_password.get_secret_value() == "pw"
    assert settings.allow_open_access is True
