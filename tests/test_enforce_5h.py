"""The 5-hour budget, measured from the buckets since the last long pause, is what the blocks of
all the activity kept would give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget import budgets as rules
from tokenbudget import enforce
from tokenbudget.budgets import Budget
from tokenbudget.ledger import BUCKET

HOUR = 3600.0
BASE = 1_780_002_000.0 - 1_780_002_000.0 % HOUR  # a UTC hour
PROJECTS = ("/p/a", "/p/b", "/q")
BUDGETS = (
    Budget("5h", 10**9),
    Budget("5h", 10**9, project="/p"),
    Budget("5h", 50, "usd", project="/p/a"),
    Budget("5h", 10**9, project="/nowhere"),
)
ZONES = (UTC, ZoneInfo("Asia/Kolkata"), ZoneInfo("America/St_Johns"))


def _reference_window(moments: list[datetime], now: datetime) -> tuple[datetime, datetime]:
    """The window as it was computed before: the blocks of every moment, the one holding now."""
    found: list[tuple[datetime, datetime]] = []
    for moment in sorted(moments):
        if found and moment < found[-1][1]:
            continue
        start = moment.replace(minute=0, second=0, microsecond=0)
        found.append((start, start + timedelta(hours=5)))
    for start, end in reversed(found):
        if start <= now < end:
            return start, end
        if end <= now:
            break
    start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return start, start + timedelta(hours=5)


def _reference(ledger: dict[str, Any], b: Budget, now: datetime) -> tuple[float, datetime, str]:
    moments = [
        datetime.fromtimestamp(cell[i], UTC)
        for per_project in ledger["hours"].values()
        for project, cell in per_project.items()
        if rules.applies_to(b, project) and cell[0]
        for i in (2, 3)
    ]
    start, end = _reference_window(moments, now)
    assert rules.window("5h", now, UTC, activity=moments) == (start, end)
    return enforce._hours_between(ledger, b, start, end), end, start.isoformat()


def _ledger(requests: list[tuple[float, str, int]]) -> dict[str, Any]:
    """Hour buckets as ingest keeps them: per 15 minutes and project, first and last request."""
    hours: dict[str, dict[str, list[Any]]] = {}
    for ts, project, tokens in requests:
        cell = hours.setdefault(str(int(ts // BUCKET)), {}).setdefault(project, [0, 0.0, ts, ts])
        cell[0] += tokens
        cell[1] += tokens / 1000
        cell[2], cell[3] = min(cell[2], ts), max(cell[3], ts)
    return {"hours": hours}


def _merge_days(ledger: dict[str, Any], before: float, zone: Any) -> None:
    """Buckets before `before` merged into one per local day, keyed by the day's midnight."""
    hours = ledger["hours"]
    for h in sorted((h for h in hours if int(h) * BUCKET < before), key=int):
        day = datetime.fromtimestamp(int(h) * BUCKET, zone).date()
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=zone).timestamp()
        key = str(int(midnight // BUCKET))
        for project, cell in hours.pop(h).items():
            merged = hours.setdefault(key, {}).setdefault(project, [0, 0.0, cell[2], cell[3]])
            if merged is not cell:
                merged[0] += cell[0]
                merged[1] += cell[1]
                merged[2], merged[3] = min(merged[2], cell[2]), max(merged[3], cell[3])


# Steps back in time between requests: a pause of exactly 5 hours, just under and just over it
# (also by less than the microsecond datetimes keep), on and off the hour and the bucket.
STEPS = st.one_of(
    st.sampled_from([0.0, 1e-7, 0.001, 60.0, 899.999, 900.0, HOUR, 4 * HOUR, 4 * HOUR + 1,
                     5 * HOUR - 0.001, 5 * HOUR - 3e-7, 5 * HOUR, 5 * HOUR + 0.001, 6 * HOUR,
                     10 * HOUR, 86400.0, 3 * 86400.0]),
    st.floats(0, 8 * HOUR),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[dict[str, Any], float]:
    now = BASE + draw(st.sampled_from([0.0, 0.001, 1800.0, HOUR - 0.001, HOUR - 3e-7]))
    # The newest request: later this hour, right at the next hour (or a rounding away from it)
    # or after, right at now, or before.
    ts = draw(st.sampled_from([now + 2 * HOUR, BASE + HOUR, BASE + HOUR - 3e-7, now + 0.5 * HOUR,
                               now + 0.001, now, now - 0.001, now - HOUR]))
    requests = []
    for step in draw(st.lists(STEPS, max_size=40)):
        ts -= step
        requests.append((ts, draw(st.sampled_from(PROJECTS)), draw(st.sampled_from([0, 1, 500]))))
    ledger = _ledger(requests)
    merge = draw(st.sampled_from([None, 2 * 86400.0, 6 * HOUR, 0.0]))
    if merge is not None:
        _merge_days(ledger, now - merge, draw(st.sampled_from(ZONES)))
    return ledger, now


@settings(max_examples=400, deadline=None)
@given(histories(), st.sampled_from(ZONES))
def test_the_walk_back_measures_what_all_the_blocks_give(
    history: tuple[dict[str, Any], float], zone: Any
) -> None:
    ledger, now_ts = history
    now = datetime.fromtimestamp(now_ts, zone)
    ctx = enforce.Context(session_id=None, project="/p/a", now=now, tz=zone)
    for b in BUDGETS:
        assert enforce.measure(b, ledger, ctx) == _reference(ledger, b, now)


def test_no_activity() -> None:
    now = datetime.fromtimestamp(BASE + 1800, UTC)
    ctx = enforce.Context(session_id=None, project="/p/a", now=now, tz=UTC)
    start = datetime.fromtimestamp(BASE, UTC)
    assert enforce.measure(BUDGETS[0], {"hours": {}}, ctx) == (
        0.0, start + timedelta(hours=5), start.isoformat()
    )


def test_activity_that_rounds_into_the_next_hour_opens_no_block_now() -> None:
    # 4h59m59s after its block's hour, within a microsecond of the next hour: datetimes round
    # it onto that hour, where it opens a block after now; the block holding now goes on.
    later = BASE + HOUR
    ledger = _ledger([(later - 3e-7, "/p/a", 1), (later - 4 * HOUR - 1, "/p/a", 1)])
    now = datetime.fromtimestamp(BASE + 1800, UTC)
    ctx = enforce.Context(session_id=None, project="/p/a", now=now, tz=UTC)
    measured = enforce.measure(BUDGETS[0], ledger, ctx)
    assert measured == _reference(ledger, BUDGETS[0], now)
    assert measured[1] == datetime.fromtimestamp(later, UTC)  # the block began 5 hours before


class _Watched(dict[str, Any]):
    """Hour buckets that remember which of them were looked up."""

    looked: set[int]

    def get(self, key: str, default: Any = None) -> Any:
        self.looked.add(int(key))
        return super().get(key, default)


def test_the_walk_stops_at_the_last_long_pause() -> None:
    # 40 days of work from 08:00 to 22:00 UTC; now is 15:20, so the block started at 08:00.
    requests = [
        (day + hour * HOUR + minute * 60, project, 100)
        for day in (BASE - BASE % 86400 - d * 86400 for d in range(40))
        for hour in range(8, 22)
        for minute in (5, 35)
        for project in PROJECTS
    ]
    ledger = _ledger(requests)
    hours = _Watched(ledger["hours"])
    hours.looked = set()
    now = datetime.fromtimestamp(BASE - BASE % 86400 + 15 * HOUR + 20 * 60, UTC)
    moments = enforce._block_activity({"hours": hours}, BUDGETS[0], now)
    assert moments[0] == now.replace(hour=8, minute=5)
    # 08:05 to 15:35 (later this hour counts too), a bucket each: its first and last.
    assert len(moments) == 16 * 3 * 2
    # Back past the night's pause by the room a merged day may take (two days), no further.
    oldest_read = (min(hours.looked) * BUCKET - now.timestamp()) / 86400
    assert -3 < oldest_read < -2


def _oldest_read_days(hours: _Watched, now: datetime) -> float:
    return (min(hours.looked) * BUCKET - now.timestamp()) / 86400


def test_the_walk_stops_at_a_pause_under_5_hours_that_starts_a_block() -> None:
    """A pause from 19:51 to 00:00 (4h09m) starts a new block whatever came before: the walk
    returns all the activity since it and reads back no further than it needs."""
    # Ten days of visits every 4h10m, each two requests a minute apart: only a pause from a
    # visit at :50 starts anew, and the end of no bucket is 5 hours before the next visit, so
    # the walk cannot stop at a bucket's end. The last visit is at 00:00.
    last = BASE - BASE % 86400
    requests = [
        (last - i * 250 * 60 + minute * 60, "/p/a", 100)
        for i in range(10 * 24 * 6 // 25)
        for minute in (0, 1)
    ]
    ledger = _ledger(requests)
    hours = _Watched(ledger["hours"])
    hours.looked = set()
    now = datetime.fromtimestamp(last + 1200, UTC)
    moments = enforce._block_activity({"hours": hours}, BUDGETS[0], now)
    visit = datetime.fromtimestamp(last, UTC)
    assert sorted(moments) == [visit, visit + timedelta(minutes=1)]
    # Two days of room for merged days before the pause (4h29m back from now), no further.
    assert -2 - 5 / 24 < _oldest_read_days(hours, now) < -2 - 4 / 24
    assert enforce.measure(BUDGETS[0], ledger, enforce.Context(None, "/p/a", now, UTC)) == (
        200.0, visit + timedelta(hours=5), visit.isoformat()
    )


def test_a_pause_from_an_hours_last_second_to_five_hours_after_its_start_ends_the_walk() -> None:
    """Activity at 05:00:00 after a pause since 00:59:59.5 starts a new block (the shortest
    such pause: 4 hours and half a second), and the walk stops there."""
    start = BASE - BASE % 86400 + 5 * HOUR
    requests = [(start - 4 * HOUR - 60, "/p/a", 1), (start - 4 * HOUR - 0.5, "/p/a", 1),
                (start, "/p/a", 1), (start + 300, "/p/a", 1)]
    now = datetime.fromtimestamp(start + 1200, UTC)
    moments = enforce._block_activity(_ledger(requests), BUDGETS[0], now)
    begun = datetime.fromtimestamp(start, UTC)
    assert sorted(moments) == [begun, begun + timedelta(minutes=5)]


def test_a_pause_over_4_hours_into_the_blocks_fifth_hour_does_not_end_the_walk() -> None:
    """Activity at 10:00, 14:30 and 15:10: the pause from 10:00 to 14:30 is over 4 hours, but
    14:30 lies in the block opened at 10:00, so the walk goes on past it; 15:10 then opens the
    block of 15:00 (not one of 14:00 holding 14:30)."""
    day = BASE - BASE % 86400
    requests = [(day + 10 * HOUR, "/p/a", 100), (day + 14.5 * HOUR, "/p/a", 20),
                (day + 15 * HOUR + 600, "/p/a", 3)]
    ledger = _ledger(requests)
    now = datetime.fromtimestamp(day + 15 * HOUR + 1200, UTC)
    moments = enforce._block_activity(ledger, BUDGETS[0], now)
    # Each request's bucket gives its first and last: the same moment.
    assert moments == [datetime.fromtimestamp(ts, UTC) for ts, _, _ in requests for _ in (0, 1)]
    begun = datetime.fromtimestamp(day + 15 * HOUR, UTC)
    assert enforce.measure(BUDGETS[0], ledger, enforce.Context(None, "/p/a", now, UTC)) == (
        3.0, begun + timedelta(hours=5), begun.isoformat()
    )
