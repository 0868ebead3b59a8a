"""State paths: the override, and the same folders platformdirs would give."""

from __future__ import annotations

import stat
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


def test_a_shared_folder_is_never_narrowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state folder set to /tmp or the home folder must not take them from everyone else."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp is
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    monkeypatch.setenv("HOME", str(home))
    own = tmp_path / "own"
    own.mkdir()
    own.chmod(0o755)
    for folder in (shared, home, own):
        paths.ensure_private_dir(folder)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(home.stat().st_mode) == 0o755
    assert stat.S_IMODE(own.stat().st_mode) == 0o700  # the user's own loose folder still is
