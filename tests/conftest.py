"""Every test runs against a temporary HOME: nothing touches the real one.

Nor does any test depend on the day it runs or the machine's time zone. A test whose data has a
fixed date pins tokenbudget's clock (`recorded_day`); `--clock-at` runs the rest as if on another
day, which is how scripts/test checks that no test reads the real calendar.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "claude-code-2.1.328"
# 2026-11-28 17:40 UTC: the fixtures were recorded that day and the synthetic histories start
# the day before (tests/reliability_workers.py T0).
RECORDED = 1795887600.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--clock-at",
        metavar="ISO_TIME",
        help="Run as if now were this time (with its offset, e.g. 2027-03-28T01:30:00+00:00);"
        " tests that pin their own time keep it.",
    )


def _clock_at(config: pytest.Config) -> float | None:
    value = config.getoption("--clock-at")
    if not value:
        return None
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise pytest.UsageError(f"--clock-at {value}: give the offset too (+00:00)")
    return at.timestamp()


@pytest.fixture(autouse=True)
def private_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    home = tmp_path / "home dir"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TOKENBUDGET_HOME", str(home / "tb state"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TZ", "UTC")
    at = _clock_at(request.config)
    if at is None:
        monkeypatch.delenv("TOKENBUDGET_NOW", raising=False)
    else:
        monkeypatch.setenv("TOKENBUDGET_NOW", repr(at))
    return home


@pytest.fixture(autouse=True)
def journal_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Every commit in every test (hooks run as processes too) replays the ledger from its
    files and compares it with the one in memory: no change may escape the journal."""
    report = tmp_path / "journal-check.txt"
    monkeypatch.setenv("TOKENBUDGET_STORE_CHECK", str(report))
    yield
    assert not report.exists(), report.read_text()


@pytest.fixture
def recorded_day(monkeypatch: pytest.MonkeyPatch) -> float:
    """Pin tokenbudget's clock, in this process and the ones it starts, to the fixtures' day."""
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(RECORDED))
    return RECORDED
