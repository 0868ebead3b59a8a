"""Usage buckets merged per local day: every day, week and month budget measures the same."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tokenbudget import burn, enforce, ingest
from tokenbudget.budgets import Budget
from tokenbudget.ledger import BUCKET, Ledger, new_ledger, validate

PROJECTS = ("/home/dev/app", "/home/dev/app/web", "/home/dev/lib", "")
HOUR = 3600.0
DAY = 86400.0


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


def _add(ledger: Ledger, ts: float, project: str, tokens: int, cost: float) -> None:
    """One request as ingest records it before this change: float seconds, unrounded cost."""
    cell = ledger["hours"].setdefault(str(int(ts // BUCKET)), {}).get(project)
    if cell is None:
        ledger["hours"][str(int(ts // BUCKET))][project] = [tokens, cost, ts, ts]
    else:
        cell[0] += tokens
        cell[1] += cost
        cell[2] = min(cell[2], ts)
        cell[3] = max(cell[3], ts)


def _history(now: float, seed: int, pause: tuple[float, float] | None = None) -> Ledger:
    """Requests at random moments of the 38 days before `now` (none in `pause`).

    Costs are whole 1/256ths of a dollar: sums in any order are exact, and so is their
    rounding to nanodollars, so a merged day must equal its buckets to the last bit.
    """
    rng = random.Random(seed)
    ledger = new_ledger()
    for _ in range(1500):
        ts = round(now - rng.uniform(0, 38 * DAY), 3)
        if pause and pause[0] <= ts < pause[1]:
            continue
        _add(
            ledger, ts, rng.choice(PROJECTS), rng.randrange(1, 50_000), rng.randrange(1, 900) / 256
        )
    return ledger


def _budgets(week_starts: range = range(7)) -> list[tuple[Budget, int]]:
    out: list[tuple[Budget, int]] = []
    for kind in ("daily", "monthly"):
        out.append((Budget(kind, 1e12), 0))
        out.append((Budget(kind, 1e9, "usd"), 0))
        out.append((Budget(kind, 1e12, project="/home/dev/app"), 0))
    for start in week_starts:
        out.append((Budget("weekly", 1e12), start))
    out.append((Budget("weekly", 1e9, "usd", project="/home/dev/lib"), 2))
    return out


def _measures(ledger: Ledger, tz: tzinfo, moments: list[float]) -> list[float]:
    out = []
    for t in moments:
        now = datetime.fromtimestamp(t, UTC)
        for b, week_start in _budgets():
            ctx = enforce.Context(None, "/home/dev/app", now, tz, week_start=week_start)
            out.append(enforce.measure(b, ledger, ctx)[0])
    return out


CASES = [
    ("UTC", "2026-11-20T12:10"),
    ("Asia/Kolkata", "2026-11-20T12:10"),  # +5:30: midnight is 18:30 UTC
    ("Asia/Kathmandu", "2026-11-20T12:10"),  # +5:45: midnight is 18:15 UTC
    ("America/New_York", "2025-11-20T12:10"),  # clocks went back on 2025-11-02
    ("America/New_York", "2026-03-25T03:50"),  # and forward on 2026-03-08
]


@pytest.mark.parametrize(("zone", "when"), CASES)
def test_merged_days_measure_every_window_as_the_buckets_did(zone: str, when: str) -> None:
    now, tz = _at(when), ZoneInfo(zone)
    plain = _history(now, seed=len(zone))
    merged = copy.deepcopy(plain)
    ingest.prune_hours(merged, now, tz)
    assert len(merged["hours"]) < len(plain["hours"]) / 3  # it did merge
    # Windows from 38 days back to now, every 11 hours (so at every hour of the local day in
    # turn), weeks starting on each weekday.
    moments = [now - k * 11 * HOUR for k in range(38 * 24 // 11)]
    assert _measures(merged, tz, moments) == _measures(plain, tz, moments)


@pytest.mark.parametrize(("zone", "when"), CASES)
def test_the_last_two_days_keep_their_buckets(zone: str, when: str) -> None:
    now, tz = _at(when), ZoneInfo(zone)
    plain = _history(now, seed=7)
    merged = copy.deepcopy(plain)
    ingest.prune_hours(merged, now, tz)
    recent = {h: v for h, v in plain["hours"].items() if int(h) * BUCKET >= now - 2 * DAY}
    assert recent and {h: merged["hours"][h] for h in recent} == recent
    # So the burn rate, which spreads the last hour's buckets over their activity, is the same.
    budget = Budget("daily", 1e12)
    assert burn.last_hour(merged, budget, now) == burn.last_hour(plain, budget, now)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kathmandu"])
def test_five_hour_blocks_are_the_same_after_a_pause(zone: str) -> None:
    """A block chains from the one before only while activity goes on: after a pause of 5 hours
    within the last 2 days, they decide every block."""
    now, tz = _at("2026-11-20T12:10"), ZoneInfo(zone)
    pause = (now - 30 * HOUR, now - 24 * HOUR)
    plain = _history(now, seed=3, pause=pause)
    t = now - 38 * DAY + 1234.5
    while t < now:  # never idle 5 hours but for the pause
        if not pause[0] <= t < pause[1]:
            _add(plain, t, "/home/dev/lib", 1000, 0.5)
        t += 2.75 * HOUR
    merged = copy.deepcopy(plain)
    ingest.prune_hours(merged, now, tz)
    for b in (Budget("5h", 1e12), Budget("5h", 1e9, "usd", project="/home/dev/lib")):
        for k in range(48):
            moment = datetime.fromtimestamp(now - k * 1800, UTC)
            ctx = enforce.Context(None, "/home/dev/lib", moment, tz)
            assert enforce.measure(b, merged, ctx) == enforce.measure(b, plain, ctx)


def test_merging_is_idempotent_and_keeps_every_total() -> None:
    now, tz = _at("2026-11-20T12:10"), ZoneInfo("Asia/Kolkata")
    plain = _history(now, seed=11)
    merged = copy.deepcopy(plain)
    ingest.prune_hours(merged, now, tz)
    # It merged: before the last two days, one bucket per local day, keyed at its midnight.
    recent = datetime.fromtimestamp(now - 2 * DAY, tz).replace(hour=0, minute=0, second=0)
    old = [datetime.fromtimestamp(int(h) * BUCKET, tz) for h in merged["hours"]
           if int(h) * BUCKET < recent.timestamp()]
    days = {t.date() for t in old}
    assert len(days) >= 35 and len(old) == len(days)
    assert all(t.time() == datetime.min.time() for t in old)
    again = copy.deepcopy(merged)
    ingest.prune_hours(again, now, tz)
    assert again == merged

    def per_project(ledger: Ledger) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for cells in ledger["hours"].values():
            for project, c in cells.items():
                t = out.setdefault(project, [0, 0.0, float("inf"), 0.0])
                t[0] += c[0]
                t[1] += c[1]
                t[2] = min(t[2], int(c[2]))
                t[3] = max(t[3], int(c[3]))
        return out

    assert per_project(merged) == per_project(plain)
    # Merged days are plain cells: the ledger's own check takes them back.
    validate(json.loads(json.dumps(merged)))


def test_a_day_merged_already_takes_late_usage_in() -> None:
    now, tz = _at("2026-11-20T12:10"), ZoneInfo("Asia/Kathmandu")
    plain = _history(now, seed=5)
    merged = copy.deepcopy(plain)
    ingest.prune_hours(merged, now, tz)
    late = now - 10 * DAY + 0.25
    for ledger in (plain, merged):
        _add(ledger, late, "/home/dev/app", 777, 0.125)  # a transcript read only now
    ingest.prune_hours(merged, now + HOUR, tz)
    day_start = datetime.fromtimestamp(late, tz).replace(hour=0, minute=0, second=0).timestamp()
    assert str(int(late // BUCKET)) not in merged["hours"]
    assert merged["hours"][str(int(day_start // BUCKET))]["/home/dev/app"][3] >= int(late)
    moments = [now - k * 7 * HOUR for k in range(30 * 24 // 7)]
    assert _measures(merged, tz, moments) == _measures(plain, tz, moments)


def test_buckets_older_than_any_window_go_by_whole_days() -> None:
    now, tz = _at("2026-11-20T12:10"), ZoneInfo("Asia/Kolkata")
    ledger = new_ledger()
    for days in (60, 41, 39.9):
        _add(ledger, now - days * DAY, "/p", 1, 0.5)
    ingest.prune_hours(ledger, now, tz)
    assert [c["/p"][2] for c in ledger["hours"].values()] == [int(now - 39.9 * DAY)]
    kept = copy.deepcopy(ledger)
    ingest.prune_hours(ledger, now + 3 * HOUR, tz)  # the day's midnight is past the cut now
    assert ledger == kept


def test_no_zone_means_utc() -> None:
    now = _at("2026-11-20T12:10")
    a, b = _history(now, seed=2), _history(now, seed=2)
    ingest.prune_hours(a, now)
    ingest.prune_hours(b, now, UTC)
    assert a["hours"] == b["hours"]
    assert all(int(h) * BUCKET % DAY == 0 for h in a["hours"] if int(h) * BUCKET < now - 3 * DAY)


def test_a_day_merged_in_another_zone_counts_by_its_old_midnight() -> None:
    """The one inexactness: days merged before the user's zone changed keep the old midnights."""
    now = _at("2026-11-20T12:10")
    old, new = ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")
    ledger = new_ledger()
    evening = now - 10 * DAY - (now % DAY) + 20 * HOUR  # 20:00 UTC: 15:00 in New York
    _add(ledger, evening, "/p", 100, 0.5)  # the next day in Kolkata
    ingest.prune_hours(ledger, now, old)
    moment = datetime.fromtimestamp(evening, UTC)
    day_in_new = enforce.Context(None, "/p", moment, new)
    day_before_in_new = enforce.Context(None, "/p", moment - timedelta(days=1), new)
    budget = Budget("daily", 1e12)
    assert enforce.measure(budget, ledger, day_in_new)[0] == 0
    assert enforce.measure(budget, ledger, day_before_in_new)[0] == 100


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_sync_merges_by_the_users_midnights(private_home: Path, zone: str) -> None:
    from tests.helpers import install_fixture
    from tokenbudget import sync

    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=_at("2026-11-28T18:00:00"), tz=ZoneInfo(zone))
    fresh = copy.deepcopy(store.snapshot()["hours"])
    assert fresh and all(int(h) * BUCKET > _at("2026-11-28T00:00:00") for h in fresh)
    sync.sync_all(store, now=_at("2026-12-03T18:00:00"), tz=ZoneInfo(zone))
    hours = store.snapshot()["hours"]
    (key,) = hours  # the session's buckets, merged into its day
    midnight = datetime.fromtimestamp(int(key) * BUCKET, ZoneInfo(zone))
    assert (midnight.hour, midnight.minute) == (0, 0) and midnight.day in (28, 29)
    for project, cell in hours[key].items():
        assert cell[0] == sum(c[project][0] for c in fresh.values() if project in c)


def test_a_fixed_offset_standing_in_for_a_zone_is_not_merged() -> None:
    from datetime import timezone

    now = _at("2026-11-28T12:00:00")
    ledger = _history(now, seed=5)
    before = copy.deepcopy(ledger["hours"])
    ingest.prune_hours(ledger, now, timezone(timedelta(hours=1)))  # e.g. from TZ=CET-1CEST,...
    assert len(before) > 1000 and ledger["hours"] == before  # 38 days: none too old to keep


@pytest.mark.parametrize(("after", "merged"), [(0.0, True), (-1.0, False)])
def test_the_last_two_days_are_counted_to_the_second(after: float, merged: bool) -> None:
    """Exactly two days after a midnight, the day before that midnight is merged; a second
    earlier, it still keeps its buckets."""
    tz = ZoneInfo("Asia/Kolkata")
    midnight = datetime(2027, 12, 13, tzinfo=tz).timestamp()
    ledger = new_ledger()
    for minutes in (30, 90):  # two buckets on the evening before that midnight
        _add(ledger, midnight - minutes * 60, "/p", 10, 0.5)
    ingest.prune_hours(ledger, midnight + 2 * DAY + after, tz)
    day_before = str(int((midnight - DAY) // BUCKET))
    assert (list(ledger["hours"]) == [day_before]) is merged
    assert len(ledger["hours"]) == (1 if merged else 2)


def test_a_merged_days_dollars_are_kept_to_the_nanodollar() -> None:
    """A day merged into one cell keeps its dollars rounded to 9 decimals (a nanodollar is
    less than any one token costs) and its moments to whole seconds."""
    now, tz = _at("2026-11-20T12:10"), UTC
    ledger = new_ledger()
    _add(ledger, now - 10 * DAY, "/p", 1, 0.12345678912)
    _add(ledger, now - 10 * DAY + HOUR + 0.75, "/p", 2, 0.00000000043)
    ingest.prune_hours(ledger, now, tz)
    midnight = datetime.fromtimestamp(now - 10 * DAY, tz).replace(hour=0, minute=0).timestamp()
    assert ledger["hours"] == {str(int(midnight // BUCKET)): {
        "/p": [3, 0.123456790, int(now - 10 * DAY), int(now - 10 * DAY + HOUR + 0.75)]}}
