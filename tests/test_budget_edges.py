"""Edges of the budget rules that mutation testing found unguarded (bench/mutation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tokenbudget.budgets import Budget, evaluate, expected_cost
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
