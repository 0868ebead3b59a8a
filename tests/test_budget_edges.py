"""Edges of the budget rules that mutation testing found unguarded (bench/mutation.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tokenbudget import enforce
from tokenbudget.budgets import Budget, evaluate, expected_cost, parse_limit
from tokenbudget.errors import ConfigError
from tokenbudget.ledger import new_ledger
from tokenbudget.messages import resets_text

NOW = datetime(2027, 12, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("after", "text"),
    [
        (timedelta(hours=23, minutes=30), "resets at 11:30 (in 23h 30m)"),
        (timedelta(hours=24), "resets at 12:00 (in 1d)"),
        (timedelta(hours=24, minutes=30), "resets on Thu 16 Dec at 12:30 (in 1d)"),
    ],
)
def test_a_reset_more_than_a_day_away_names_its_day(after: timedelta, text: str) -> None:
    check = evaluate(Budget("weekly", 100), 10, 0, NOW, NOW + after)
    assert resets_text(check) == text


def test_the_expected_cost_refuses_bad_arguments_and_takes_the_lowest_rank() -> None:
    for kwargs in ({"recent": 0}, {"percentile": 0}, {"percentile": 1.5}):
        with pytest.raises(ValueError, match="recent must be at least 1"):
            expected_cost([1.0], **kwargs)  # type: ignore[arg-type]
    assert expected_cost([5.0, 1.0, 3.0], percentile=1e-10) == 1.0  # the lowest, never past it
    assert expected_cost([5.0, 1.0, 3.0], percentile=1) == 5.0


def test_a_negative_expected_cost_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        evaluate(Budget("daily", 100), 10, -0.5, NOW, None)


def test_an_error_quotes_the_users_text_as_typed_not_escaped() -> None:
    """A limit the user typed with a non-ASCII character is quoted back as typed: `"5€"`, not
    `"5\\u20ac"`, which the user never wrote."""
    with pytest.raises(ConfigError) as caught:
        parse_limit("5€")
    assert str(caught.value) == (
        'cannot read "5€" as tokens or dollars (write it like 200k, 1.5M, $5 or 5usd)'
    )


def test_a_token_limit_is_saved_as_a_whole_number() -> None:
    """A budget written back to a config keeps a token limit whole (`20000`, not `20000.0`),
    and a dollar limit as the number it is."""
    assert json.dumps(Budget("daily", 20_000).to_json()["limit"]) == "20000"
    assert json.dumps(Budget("daily", 2.5, "usd").to_json()["limit"]) == "2.5"


def test_the_expected_cost_rank_forgives_only_float_noise() -> None:
    """The rank `percentile * runs` is rounded to 9 decimals before its ceiling: float noise
    (0.7 * 10 = 7.000000000000001) does not skip a rank, and anything below a billionth is
    noise too; a percentile a hundred-millionth past a rank takes the next one."""
    runs = [float(n) for n in range(1, 11)]
    assert expected_cost(runs, percentile=0.7) == 7.0
    assert expected_cost(runs, percentile=0.7 + 3e-11) == 7.0
    assert expected_cost(runs, percentile=0.7 + 1e-9) == 8.0


def test_window_budgets_apply_outside_any_session_and_session_budgets_do_not() -> None:
    """Measured with no session (`status` run from a shell): the weekly and total budgets
    still apply; only a session budget has nothing to measure."""
    ctx = enforce.Context(None, None, NOW, UTC)
    kinds = ("daily", "weekly", "monthly", "total", "5h", "session")
    assert tuple(k for k in kinds if enforce.applies(Budget(k, 100), ctx)) == kinds[:5]


def test_a_context_made_without_a_week_start_starts_weeks_on_monday() -> None:
    """The week starts on Monday unless the config says otherwise (NOW is a Wednesday)."""
    _used, resets, window = enforce.measure(
        Budget("weekly", 100), new_ledger(), enforce.Context(None, None, NOW, UTC)
    )
    assert (window, resets) == ("2027-12-13T00:00:00+00:00", datetime(2027, 12, 20, tzinfo=UTC))
