"""Budgets measured against the ledger: windows in time zones whose offset is not whole hours."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.helpers import install_fixture, truth_usage
from tokenbudget import enforce, history, query, sync
from tokenbudget.budgets import Budget
from tokenbudget.ledger import new_ledger


def _plain_at(private_home: Path, iso_minute: str) -> None:
    """The `plain` fixture, its request made at `iso_minute` (UTC, e.g. 2026-11-28T18:05)."""
    install_fixture("plain", private_home / ".claude")
    path = next((private_home / ".claude" / "projects").glob("*/*.jsonl"))
    text = path.read_text()
    import re

    path.write_text(re.sub(r"2026-11-28T17:\d\d", iso_minute, text))


@pytest.mark.parametrize(
    ("zone", "utc", "local_day"),
    [
        ("Asia/Kolkata", "2026-11-28T18:05", "2026-11-28"),  # 23:35 IST
        ("Asia/Kolkata", "2026-11-28T18:35", "2026-11-29"),  # 00:05 IST
        ("Asia/Kathmandu", "2026-11-28T18:10", "2026-11-28"),  # 23:55 NPT (+5:45)
        ("Asia/Kathmandu", "2026-11-28T18:20", "2026-11-29"),  # 00:05 NPT
        ("America/St_Johns", "2026-11-29T03:25", "2026-11-28"),  # 23:55 NST (-3:30)
    ],
)
def test_a_local_day_is_exact_whatever_the_offset(
    private_home: Path, zone: str, utc: str, local_day: str
) -> None:
    _plain_at(private_home, utc)
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    ledger = store.snapshot()
    tz = ZoneInfo(zone)
    days = query.group("day", query.cells(ledger, history.read_records(ledger)), tz)
    assert [(g.key, g.usage.total) for g in days] == [(local_day, truth_usage("plain").total)]
    # The daily budget of that day counts it; the day before or after does not.
    budget = Budget("daily", 1_000_000)
    the_day = date.fromisoformat(local_day)
    before, after = (str(the_day + timedelta(days=d)) for d in (-1, 1))
    for day, expected in ((local_day, truth_usage("plain").total), (before, 0), (after, 0)):
        noon = datetime.fromisoformat(day).replace(hour=12, tzinfo=tz)
        ctx = enforce.Context(session_id=None, project="/home/dev/project", now=noon, tz=tz)
        used, _, _ = enforce.measure(budget, ledger, ctx)
        if day != local_day:
            assert used == 0
        else:
            assert used == expected



NOW = datetime(2026, 11, 28, 17, 30, tzinfo=UTC).timestamp()


def test_a_command_budget_mid_run_counts_only_a_turn_of_its_command() -> None:
    """Measured during a turn (a tool call), a command budget counts that turn's usage when the
    turn runs its command, and nothing when it runs another command or is not recorded yet."""
    ledger = new_ledger()
    ledger["sessions"]["s-1"] = {
        "p": "/p", "f": NOW - 60, "l": NOW - 60, "m": {}, "x": {}, "s": {},
        "t": {"p-1": ["/test", NOW - 60, 3_000, 0.3]}, "a": {}, "adj": [], "fk": [], "cs": {},
    }

    def measured(command: str, prompt_id: str) -> tuple[float, datetime | None, str | None]:
        ctx = enforce.Context("s-1", "/p", datetime.fromtimestamp(NOW, UTC), UTC,
                              command=command, prompt_id=prompt_id)
        return enforce.measure(Budget("command", 2_000, name=command), ledger, ctx)

    assert measured("/test", "p-1") == (3_000.0, None, "p-1")
    assert measured("/review", "p-1") == (0.0, None, "p-1")  # the turn runs /test
    assert measured("/review", "p-2") == (0.0, None, "p-2")  # no turn p-2 recorded yet
