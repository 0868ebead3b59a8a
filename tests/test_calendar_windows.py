"""Day, week and month windows as properties: from 2026 to 2035, in zones whose offsets are not
whole hours and zones with DST, every instant lies in exactly one window of each kind, the
windows tile time without gaps or overlaps, and each begins and ends at a local midnight."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbudget.budgets import window

ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("Asia/Kolkata"),  # +05:30
    ZoneInfo("Asia/Kathmandu"),  # +05:45
    timezone(timedelta(hours=-3, minutes=-30)),  # -03:30, no DST
    ZoneInfo("America/St_Johns"),  # -03:30 with DST
    ZoneInfo("America/New_York"),
    ZoneInfo("Europe/Berlin"),
    ZoneInfo("Australia/Lord_Howe"),  # DST of half an hour
    ZoneInfo("Pacific/Kiritimati"),  # +14
]
KINDS = ("daily", "weekly", "monthly")
TICK = timedelta(microseconds=1)

anywhere = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2035, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)


@st.composite
def instants(draw: st.DrawFn) -> tuple[datetime, tzinfo]:
    """An instant of 2026-2035 and a zone; half of them within two seconds of a local
    midnight, where windows turn."""
    zone = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        return draw(anywhere), zone
    day = draw(st.dates(min_value=date(2026, 1, 2), max_value=date(2035, 12, 30)))
    midnight = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    shift = draw(st.integers(-2_000_000, 2_000_000))
    return midnight + timedelta(microseconds=shift), zone


def _midnight(moment: datetime, zone: tzinfo) -> bool:
    return moment.astimezone(zone).time() == time(0)


@settings(max_examples=300, deadline=None)
@given(instants(), st.sampled_from(KINDS), st.integers(0, 6))
def test_every_instant_lies_in_exactly_one_window_and_windows_tile(
    at: tuple[datetime, tzinfo], kind: str, week_start: int
) -> None:
    now, zone = at
    start, end = window(kind, now, zone, week_start)
    assert start is not None and end is not None
    assert start <= now < end
    # The same window from its first and its last instant; the next one begins where this
    # ends and the one before ends where this begins: no gap, no overlap.
    assert window(kind, start, zone, week_start) == (start, end)
    assert window(kind, end - TICK, zone, week_start) == (start, end)
    assert window(kind, end, zone, week_start)[0] == end
    assert window(kind, start - TICK, zone, week_start)[1] == start


@settings(max_examples=300, deadline=None)
@given(instants(), st.integers(0, 6))
def test_windows_reset_at_local_midnight(at: tuple[datetime, tzinfo], week_start: int) -> None:
    now, zone = at
    today = now.astimezone(zone).date()
    day = window("daily", now, zone)
    week = window("weekly", now, zone, week_start)
    month = window("monthly", now, zone)
    for start, end in (day, week, month):
        assert start is not None and end is not None
        assert _midnight(start, zone) and _midnight(end, zone)
    assert [d.astimezone(zone).date() for d in day] == [today, today + timedelta(days=1)]  # type: ignore[union-attr]
    first = week[0].astimezone(zone).date()  # type: ignore[union-attr]
    assert first.weekday() == week_start and first <= today < first + timedelta(days=7)
    assert week[1].astimezone(zone).date() == first + timedelta(days=7)  # type: ignore[union-attr]
    begins, ends = (d.astimezone(zone).date() for d in month)  # type: ignore[union-attr]
    assert begins == today.replace(day=1)
    assert ends == (begins + timedelta(days=31)).replace(day=1)


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_the_monthly_window_of_december_2027_runs_to_new_year_2028(zone: tzinfo) -> None:
    """An odd year's December: the month after it is January of the next year."""
    now = datetime(2027, 12, 15, 12, tzinfo=zone)
    start, end = window("monthly", now, zone)
    assert start == datetime(2027, 12, 1, tzinfo=zone).astimezone(UTC)
    assert end == datetime(2028, 1, 1, tzinfo=zone).astimezone(UTC)
