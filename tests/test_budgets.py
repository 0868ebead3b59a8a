"""The budget rules: limits, windows, 5-hour blocks, merging, checks and decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbudget.budgets import (
    Budget,
    Check,
    anew_from,
    applies_to,
    blocks,
    current_block,
    decide,
    evaluate,
    expected_cost,
    format_limit,
    limit_arg,
    merge,
    parse_limit,
    parse_warn_at,
    project_matches,
    starts_anew,
    suggest_limit,
    warn_key,
    window,
)
from tokenbudget.errors import ConfigError

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200000", (200_000, "tokens")),
        ("200k", (200_000, "tokens")),
        ("200K", (200_000, "tokens")),
        ("1.5M", (1_500_000, "tokens")),
        ("1.5m", (1_500_000, "tokens")),
        ("2B", (2_000_000_000, "tokens")),
        ("1.1k", (1_100, "tokens")),
        ("2_000_000", (2_000_000, "tokens")),
        ("1,000,000", (1_000_000, "tokens")),
        (" 200k tokens ", (200_000, "tokens")),
        ("$5", (5.0, "usd")),
        ("5usd", (5.0, "usd")),
        ("5 USD", (5.0, "usd")),
        ("$0.50", (0.5, "usd")),
        ("$5.00", (5.0, "usd")),
        ("$1,250", (1250.0, "usd")),
        (200_000, (200_000, "tokens")),
    ],
)
def test_parse_limit_reads(text: str | int, expected: tuple[float, str]) -> None:
    assert parse_limit(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("12x", 'cannot read "12x" as tokens or dollars'),
        ("", 'cannot read "" as tokens or dollars'),
        ("k", 'cannot read "k" as tokens or dollars'),
        ("$", 'cannot read "$" as tokens or dollars'),
        ("-5", 'cannot read "-5" as tokens or dollars'),
        ("1,5M", 'cannot read "1,5M" as tokens or dollars'),  # a decimal comma, not 15M
        ("5 usd tokens", 'cannot read "5 usd tokens" as tokens or dollars'),
        ("0", 'a limit must be more than 0, not "0"'),
        ("$0", 'a limit must be more than 0, not "$0"'),
        ("0.5", '"0.5" is not a whole number of tokens'),
        ("1.2345k", '"1.2345k" is not a whole number of tokens'),
        (True, "cannot read true as tokens or dollars"),
    ],
)
def test_parse_limit_refuses_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_limit(text)
    assert str(e.value).startswith(problem)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("text", "expected"), [("80", 0.8), ("80%", 0.8), ("0.8", 0.8), (0.5, 0.5), ("100%", 1.0),
                           ("1", 1.0), ("12.5 %", 0.125)]
)
def test_parse_warn_at(text: str, expected: float) -> None:
    assert parse_warn_at(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["0", "150%", "abc", "-10", ""])
def test_parse_warn_at_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_warn_at(text)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (200_000, "tokens", "200k tokens"),
        (1_500_000, "tokens", "1.5M tokens"),
        (2_000_000_000, "tokens", "2B tokens"),
        (1_234_567, "tokens", "1,234,567 tokens"),  # exact, not "1.2M"
        (950, "tokens", "950 tokens"),
        (1, "tokens", "1 token"),
        (5, "usd", "$5.00"),
        (0.5, "usd", "$0.50"),
        (1234.5, "usd", "$1,234.50"),
    ],
)
def test_format_limit(value: float, unit: str, text: str) -> None:
    assert format_limit(value, unit) == text  # type: ignore[arg-type]


@given(st.integers(min_value=1, max_value=10**12))
def test_token_limits_read_back_exactly(count: int) -> None:
    assert parse_limit(format_limit(count, "tokens")) == (count, "tokens")
    assert parse_limit(limit_arg(count, "tokens")) == (count, "tokens")


@given(st.integers(min_value=1, max_value=10**8))
def test_dollar_limits_read_back_exactly(cents: int) -> None:
    value = cents / 100
    assert parse_limit(format_limit(value, "usd")) == (value, "usd")
    assert parse_limit(limit_arg(value, "usd")) == (value, "usd")
    assert "$" not in limit_arg(value, "usd")  # a shell would expand it


# ---------------------------------------------------------------- budgets


def test_budget_ids_and_normalising() -> None:
    assert Budget("daily", 1).id == "daily"
    assert Budget("command", 1, name="test").id == "command /test"
    assert Budget("daily", 1, project="/path/proj/").id == "daily@/path/proj"
    assert Budget("project", 1, name="/a/b/../c").id == "project /a/c"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"kind": "hourly", "limit": 1}, "kind"),
        ({"kind": "daily", "limit": 0}, "limit"),
        ({"kind": "daily", "limit": 1.5}, "limit"),
        ({"kind": "daily", "limit": 1, "unit": "eur"}, "unit"),
        ({"kind": "daily", "limit": 1, "mode": "stop"}, "mode"),
        ({"kind": "daily", "limit": 1, "warn_at": 80}, "warn_at"),
        ({"kind": "command", "limit": 1}, "name"),
        ({"kind": "command", "limit": 1, "name": "/test --fast"}, "name"),
        ({"kind": "project", "limit": 1, "name": "relative/dir"}, "name"),
        ({"kind": "daily", "limit": 1, "name": "x"}, "name"),
        ({"kind": "session", "limit": 1, "project": "/p"}, "project"),
    ],
)
def test_budget_refuses_nonsense(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}: "):
        Budget(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("warn_at", [True, False, "0.5", None])
def test_a_budgets_warning_threshold_must_be_a_number(warn_at: object) -> None:
    """A warning threshold given as a bool (a number to Python: True would mean 100%) or as
    text is refused with one line naming the field, not taken or left to fail later."""
    with pytest.raises(ConfigError) as e:
        Budget("daily", 1000, warn_at=warn_at)  # type: ignore[arg-type]
    assert str(e.value).startswith("warn_at: must be a number, not ")
    assert "\n" not in str(e.value)


def test_budget_json_round_trip() -> None:
    for budget in [
        Budget("daily", 200_000),
        Budget("5h", 4.5, "usd", mode="warn", warn_at=0.5, project="/p"),
        Budget("command", 50_000, name="/test"),
        Budget("project", 2e6, name="/p"),
    ]:
        assert Budget.from_json(budget.to_json()) == budget
    assert Budget("daily", 200_000).to_json() == {
        "kind": "daily", "limit": 200000, "unit": "tokens", "mode": "block", "warn_at": 0.8,
    }


def test_budget_from_hand_written_json() -> None:
    b = Budget.from_json({"kind": "Daily", "limit": "$5", "warn_at": "90%"}, source="project")
    assert (b.kind, b.limit, b.unit, b.warn_at, b.source) == ("daily", 5.0, "usd", 0.9, "project")
    assert Budget.from_json({"kind": "daily", "limit": "5", "unit": "usd"}).limit == 5.0
    assert Budget.from_json({"kind": "daily", "limit": "0.50", "unit": "usd"}).limit == 0.5
    assert Budget.from_json({"kind": "daily", "limit": 2.5, "unit": "usd"}).limit == 2.5
    assert parse_limit("0.5", "usd") == (0.5, "usd")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'b[2]: must be an object like {"kind": "daily", "limit": "200k"}'),
        ({"kind": "daily"}, "b[2].limit: missing"),
        ({"limit": 5}, "b[2].kind: missing"),
        ({"kind": "daily", "limit": "12x"}, 'b[2].limit: cannot read "12x" as tokens or dollars'),
        ({"kind": "daily", "limit": 5, "limt": 6}, 'b[2]: unknown key "limt"'),
        ({"kind": "daily", "limit": "$5", "unit": "tokens"},
         'b[2].unit: "tokens" disagrees with limit "$5"'),
        ({"kind": "daily", "limit": "5 tokens", "unit": "usd"},
         'b[2].unit: "usd" disagrees with limit "5 tokens"'),
        ({"kind": "daily", "limit": 5, "unit": "eur"}, 'b[2].unit: unknown unit "eur"'),
        ({"kind": "daily", "limit": 2.5}, 'b[2].limit: 2.5 is not a whole number of tokens'),
        ({"kind": "fortnightly", "limit": 5}, 'b[2].kind: unknown kind "fortnightly"'),
        ({"kind": "daily", "limit": 5, "warn_at": "lots"}, 'b[2].warn_at: cannot read "lots"'),
        ({"kind": "daily", "limit": 5, "mode": 1}, "b[2].mode: must be a string, not 1"),
    ],
)
def test_budget_json_errors_name_the_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        Budget.from_json(data, where="b[2]")
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_project_scope() -> None:
    assert project_matches("/p", "/p")
    assert project_matches("/p", "/p/sub/dir")
    assert not project_matches("/p", "/pq")
    assert applies_to(Budget("daily", 1), None)
    assert applies_to(Budget("daily", 1, project="/p"), "/p/src")
    assert not applies_to(Budget("daily", 1, project="/p"), "/q")
    assert not applies_to(Budget("daily", 1, project="/p"), None)
    assert applies_to(Budget("project", 1, name="/p"), "/p")
    assert not applies_to(Budget("project", 1, name="/p"), "/elsewhere")


# ---------------------------------------------------------------- merge


def test_merge_lower_limit_wins_from_either_side() -> None:
    user, team = Budget("daily", 100), Budget("daily", 300, source="project")
    assert merge([user], [team]) == [Budget("daily", 100)]
    assert merge([Budget("daily", 300)], [Budget("daily", 100, source="project")]) == [
        Budget("daily", 100, source="project")
    ]


def test_merge_block_beats_warn_from_either_side() -> None:
    warn, block = Budget("daily", 100, mode="warn"), Budget("daily", 100, source="project")
    assert [b.mode for b in merge([warn], [block])] == ["block"]
    soft_team = Budget("daily", 100, mode="warn", source="project")
    assert [b.mode for b in merge([Budget("daily", 100)], [soft_team])] == ["block"]


def test_merge_lower_warn_at_wins_from_either_side() -> None:
    a, b = Budget("daily", 100, warn_at=0.5), Budget("daily", 100, warn_at=0.9, source="project")
    assert [x.warn_at for x in merge([a], [b])] == [0.5]
    assert [x.warn_at for x in merge([b], [a])] == [0.5]


def test_merge_stricter_field_by_field() -> None:
    user = Budget("daily", 100, mode="warn", warn_at=0.9)
    team = Budget("daily", 200, mode="block", warn_at=0.5, source="project")
    assert merge([user], [team]) == [Budget("daily", 100, warn_at=0.5)]


def test_merge_keeps_different_budgets_apart() -> None:
    user = [Budget("daily", 100), Budget("command", 5, name="/test")]
    team = [
        Budget("daily", 5, "usd", source="project"),  # another unit: both apply
        Budget("daily", 50, project="/p", source="project"),  # another scope: both apply
        Budget("command", 9, name="/deploy", source="project"),
    ]
    assert merge(user, team) == user + team


# ---------------------------------------------------------------- calendar windows


def test_day_in_new_york() -> None:
    start, end = window("daily", utc(2024, 6, 11, 3, 59), NEW_YORK)  # 23:59 on the 10th there
    assert (start, end) == (utc(2024, 6, 10, 4), utc(2024, 6, 11, 4))
    assert window("daily", utc(2024, 6, 11, 4), NEW_YORK)[0] == utc(2024, 6, 11, 4)  # midnight


@pytest.mark.parametrize(
    ("zone", "now", "start", "end", "hours"),
    [
        (PARIS, utc(2024, 3, 31, 12), utc(2024, 3, 30, 23), utc(2024, 3, 31, 22), 23),
        (PARIS, utc(2024, 10, 27, 12), utc(2024, 10, 26, 22), utc(2024, 10, 27, 23), 25),
        (NEW_YORK, utc(2024, 3, 10, 12), utc(2024, 3, 10, 5), utc(2024, 3, 11, 4), 23),
        (NEW_YORK, utc(2024, 11, 3, 12), utc(2024, 11, 3, 4), utc(2024, 11, 4, 5), 25),
    ],
)
def test_dst_days_are_23_or_25_hours(
    zone: ZoneInfo, now: datetime, start: datetime, end: datetime, hours: int
) -> None:
    got_start, got_end = window("daily", now, zone)
    assert (got_start, got_end) == (start, end)
    assert got_end - got_start == timedelta(hours=hours)  # type: ignore[operator]


def test_day_starting_in_a_skipped_midnight() -> None:
    # Chile springs forward at midnight: 8 Sep 2024 begins at 01:00 local (04:00 UTC).
    start, _ = window("daily", utc(2024, 9, 8, 12), ZoneInfo("America/Santiago"))
    assert start == utc(2024, 9, 8, 4)


def test_week_in_new_york_across_dst() -> None:
    sunday_noon = datetime(2024, 3, 10, 12, tzinfo=NEW_YORK)
    start, end = window("weekly", sunday_noon, NEW_YORK)
    assert (start, end) == (utc(2024, 3, 4, 5), utc(2024, 3, 11, 4))  # Monday to Monday
    assert end - start == timedelta(hours=167)  # type: ignore[operator]
    start, end = window("weekly", sunday_noon, NEW_YORK, week_start=6)
    assert (start, end) == (utc(2024, 3, 10, 5), utc(2024, 3, 17, 4))  # Sunday to Sunday


def test_week_boundary_in_paris() -> None:
    last = datetime(2024, 6, 9, 23, 59, 59, tzinfo=PARIS)  # a Sunday
    assert window("weekly", last, PARIS)[1] == utc(2024, 6, 9, 22)
    assert window("weekly", last + timedelta(seconds=1), PARIS)[0] == utc(2024, 6, 9, 22)


def test_month_boundary_in_paris_at_dst() -> None:
    # 31 Mar 2024: the DST switch, then April starts at local midnight = 22:00 UTC.
    assert window("monthly", utc(2024, 3, 31, 21, 59), PARIS) == (
        utc(2024, 2, 29, 23), utc(2024, 3, 31, 22))
    assert window("monthly", utc(2024, 3, 31, 22), PARIS) == (
        utc(2024, 3, 31, 22), utc(2024, 4, 30, 22))


def test_month_and_year_end_in_new_york() -> None:
    assert window("monthly", datetime(2024, 12, 31, 23, 30, tzinfo=NEW_YORK), NEW_YORK) == (
        utc(2024, 12, 1, 5), utc(2025, 1, 1, 5))
    assert window("monthly", utc(2025, 1, 1, 3), NEW_YORK)[0] == utc(2024, 12, 1, 5)


@pytest.mark.parametrize("kind", ["total", "session", "command", "project"])
def test_unbounded_kinds_have_no_window(kind: str) -> None:
    assert window(kind, utc(2024, 6, 1), PARIS) == (None, None)


def test_window_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        window("daily", datetime(2024, 6, 1), PARIS)


# ---------------------------------------------------------------- 5-hour blocks


def test_block_starts_on_the_utc_hour_of_first_activity() -> None:
    [block] = blocks([utc(2024, 6, 1, 10, 17), utc(2024, 6, 1, 12), utc(2024, 6, 1, 14, 59)])
    assert (block.start, block.end) == (utc(2024, 6, 1, 10), utc(2024, 6, 1, 15))
    assert (block.first, block.last) == (utc(2024, 6, 1, 10, 17), utc(2024, 6, 1, 14, 59))


def test_activity_crossing_the_block_end_opens_a_new_block() -> None:
    found = blocks([utc(2024, 6, 1, 14, 50), utc(2024, 6, 1, 10, 17), utc(2024, 6, 1, 15, 10)])
    assert [(b.start, b.end, b.first) for b in found] == [
        (utc(2024, 6, 1, 10), utc(2024, 6, 1, 15), utc(2024, 6, 1, 10, 17)),
        (utc(2024, 6, 1, 15), utc(2024, 6, 1, 20), utc(2024, 6, 1, 15, 10)),
    ]
    # The end is exclusive, like every reset time.
    assert len(blocks([utc(2024, 6, 1, 10), utc(2024, 6, 1, 15)])) == 2


def test_gap_of_more_than_five_hours() -> None:
    found = blocks([utc(2024, 6, 1, 10, 17), utc(2024, 6, 1, 16, 30), utc(2024, 6, 1, 17)])
    assert [(b.start, b.last) for b in found] == [
        (utc(2024, 6, 1, 10), utc(2024, 6, 1, 10, 17)),
        (utc(2024, 6, 1, 16), utc(2024, 6, 1, 17)),
    ]


def test_block_hour_is_utc_not_local() -> None:
    india = ZoneInfo("Asia/Kolkata")  # UTC+5:30: the local hour floor would differ
    [block] = blocks([datetime(2024, 6, 1, 10, 45, tzinfo=india)])
    assert block.start == utc(2024, 6, 1, 5)


def test_current_block() -> None:
    activity = [utc(2024, 6, 1, 10, 17), utc(2024, 6, 1, 12)]
    block = current_block(activity, utc(2024, 6, 1, 14, 59))
    assert block is not None and block.start == utc(2024, 6, 1, 10)
    assert current_block(activity, utc(2024, 6, 1, 15)) is None  # idle past the end
    assert current_block([], utc(2024, 6, 1, 15)) is None


def test_5h_window() -> None:
    activity = [utc(2024, 6, 1, 10, 17)]
    assert window("5h", utc(2024, 6, 1, 11), PARIS, activity=activity) == (
        utc(2024, 6, 1, 10), utc(2024, 6, 1, 15))
    # Idle: work now would open a block at this hour.
    assert window("5h", utc(2024, 6, 1, 16, 40), PARIS, activity=activity) == (
        utc(2024, 6, 1, 16), utc(2024, 6, 1, 21))
    india_now = datetime(2024, 6, 1, 22, 10, tzinfo=ZoneInfo("Asia/Kolkata"))  # 16:40 UTC
    assert window("5h", india_now, PARIS, activity=activity)[0] == utc(2024, 6, 1, 16)


# ---------------------------------------------------------------- expected cost


def test_expected_cost_nearest_rank() -> None:
    assert expected_cost([]) == 0
    assert expected_cost([5, 1, 9, 3, 7]) == 9  # rank ceil(0.9 * 5) = 5
    assert expected_cost([5, 1, 9, 3, 7], percentile=0.5) == 5  # rank 3
    assert expected_cost([10.0 * i for i in range(1, 11)]) == 90  # rank 9
    # 0.28 * 25 computes as 7.000000000000001: still rank 7, not 8.
    assert expected_cost(list(range(1, 26)), recent=25, percentile=0.28) == 7


def test_expected_cost_uses_only_recent_runs() -> None:
    runs = [1_000_000.0] * 5 + [100.0] * 20  # oldest first: the big runs are too old
    assert expected_cost(runs) == 100
    assert expected_cost(runs, recent=25) == 1_000_000


# ---------------------------------------------------------------- checks and decisions

NOW = datetime(2024, 6, 10, 20, 48, tzinfo=PARIS)
MIDNIGHT = utc(2024, 6, 10, 22)


def check(budget: Budget, used: float, expected: float = 0) -> Check:
    return evaluate(budget, used, expected, NOW, MIDNIGHT)


def test_evaluate_states() -> None:
    daily = Budget("daily", 100)
    assert (check(daily, 10).state, check(daily, 10).blocks) == ("ok", False)
    assert (check(daily, 80).state, check(daily, 80).blocks) == ("warn", False)
    over = check(daily, 100)
    assert (over.state, over.blocks, over.fraction) == ("over", True, 1.0)
    projected = check(daily, 50, expected=51)
    assert (projected.state, projected.would_exceed, projected.blocks) == ("warn", True, True)
    assert not check(daily, 50, expected=50).would_exceed  # exactly the limit still fits
    warn_only = check(Budget("daily", 100, mode="warn"), 150)
    assert (warn_only.state, warn_only.blocks) == ("over", False)


def test_decide_priorities() -> None:
    assert decide([]).action == "allow"
    assert decide([check(Budget("daily", 100), 10)]).action == "allow"
    near = check(Budget("weekly", 100), 90)
    soft_over = check(Budget("monthly", 100, mode="warn"), 300)
    assert decide([near, soft_over]) == decide([soft_over, near])
    assert decide([near, soft_over]).checks == (soft_over, near)
    assert decide([near]).action == "warn"
    slightly = check(Budget("daily", 100), 101)
    far = check(Budget("5h", 100), 250)
    projected = check(Budget("total", 100), 90, expected=500)
    decision = decide([near, soft_over, slightly, projected, far])
    assert decision.action == "block"
    # Budgets already over come first, the furthest over first; then those that would be.
    assert decision.checks == (far, slightly, projected)
    assert decision.primary is far


def test_warn_key_once_per_window() -> None:
    daily = Budget("daily", 100)
    assert warn_key(daily, utc(2024, 6, 10, 22)) == (
        "daily|tokens|2024-06-10T22:00:00+00:00|warn|100"
    )
    same_instant = datetime(2024, 6, 11, 0, tzinfo=PARIS)
    assert warn_key(daily, same_instant) == warn_key(daily, utc(2024, 6, 10, 22))
    assert warn_key(daily, utc(2024, 6, 11, 22)) != warn_key(daily, utc(2024, 6, 10, 22))
    assert warn_key(daily, None, "over") == "daily|tokens|all|over|100"
    assert warn_key(Budget("session", 5, "usd"), "abc") == "session|usd|abc|warn|5"
    # A new limit is a new threshold: crossing it is news again.
    assert warn_key(Budget("daily", 200), utc(2024, 6, 10, 22)) != warn_key(
        daily, utc(2024, 6, 10, 22)
    )


# ---------------------------------------------------------------- suggested limits


def test_suggest_limit() -> None:
    assert suggest_limit(check(Budget("daily", 200_000), 190_000)) == 400_000
    assert suggest_limit(check(Budget("daily", 200_000), 190_000, expected=700_000)) == 890_000
    assert suggest_limit(evaluate(Budget("daily", 5, "usd"), 5, 0, NOW, None)) == 10


def test_a_rounded_limit_is_never_below_its_target() -> None:
    from tokenbudget.budgets import round_limit

    assert round_limit(0.004, "usd") == 0.01
    assert round_limit(0.0123, "usd") == 0.02
    assert round_limit(1.234, "usd") == 1.3
    assert round_limit(24_310, "tokens") == 25_000


@given(st.integers(0, 4 * 10**9), st.integers(-10**6, 10**6) | st.sampled_from([-1, 0, 1]))
def test_anew_from_is_starts_anew_in_whole_seconds(previous: int, near_us: int) -> None:
    # The 5-hour walk tests each bucket's bound this way, without building datetimes. Moments
    # within a second of where starts_anew turns true, the microseconds either side of it.
    at = datetime.fromtimestamp(previous, UTC)
    edge = at.replace(minute=0, second=0, microsecond=0) + timedelta(hours=5)
    for moment in (edge + timedelta(microseconds=near_us), at, at + timedelta(hours=6)):
        assert (moment.timestamp() >= anew_from(previous)) == starts_anew(moment, at), moment
