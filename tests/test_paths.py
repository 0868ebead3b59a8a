"""State paths: the override, and the same folders platformdirs would give."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from tokenbudget import paths


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"XDG_DATA_HOME": "/x/data", "XDG_CONFIG_HOME": "/x/conf"},
        {"XDG_DATA_HOME": "  ", "XDG_CONFIG_HOME": ""},
        {"XDG_DATA_HOME": "relative/dir"},
        {"XDG_CONFIG_HOME": "~/conf"},
    ],
)
def test_same_folders_as_platformdirs(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.delenv("TOKENBUDGET_HOME")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert paths.data_dir() == Path(platformdirs.user_data_dir("tokenbudget", appauthor=False))
    assert paths.config_dir() == Path(platformdirs.user_config_dir("tokenbudget", appauthor=False))


def test_the_override_holds_everything(private_home: Path) -> None:
    assert paths.data_dir() == paths.config_dir() == private_home / "tb state"
    assert paths.ledger_path().parent == paths.log_path().parent == paths.data_dir()


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("0b7e4a3c-1f2d-4e5a-9b8c-7d6e5f4a3b2c", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("-leading-dash", False),
        ("../etc", False),
        ("a/b", False),
        ("abc\n", False),  # `re.match` with `$` let this one through
    ],
)
def test_is_session_id(text: str, ok: bool) -> None:
    assert paths.is_session_id(text) is ok
