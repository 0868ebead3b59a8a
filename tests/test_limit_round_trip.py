"""Limits as written and read back: what tokenbudget prints for a limit reads as that limit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbudget.budgets import limit_arg, parse_limit
from tokenbudget.numfmt import format_limit, short_limit


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2.5000k", 2_500), ("2.50k", 2_500), ("1.50M", 1_500_000), ("0.0010M", 1_000),
        ("1.2340000B", 1_234_000_000), ("7.0T", 7_000_000_000_000), ("3.000", 3),
    ],
)
def test_a_limit_with_zeros_after_its_last_digit_reads_exactly(text: str, value: int) -> None:
    """More decimals than the unit needs are still the same whole number of tokens."""
    assert parse_limit(text) == (value, "tokens")


@pytest.mark.parametrize(("text", "value"), [("$2.5000", 2.5), ("0.100usd", 0.1), ("$0.0", None)])
def test_a_dollar_limit_with_trailing_zeros_reads_exactly(text: str, value: float | None) -> None:
    if value is None:
        with pytest.raises(Exception, match="more than 0"):
            parse_limit(text)
    else:
        assert parse_limit(text) == (value, "usd")


# Limits are floats: whole numbers are exact up to 2**53 (9,007T tokens, far past any use).
@given(st.integers(min_value=1, max_value=2**53))
def test_a_token_limit_reads_back_as_it_is_written(count: int) -> None:
    assert parse_limit(limit_arg(count, "tokens")) == (count, "tokens")
    assert parse_limit(format_limit(count, "tokens")) == (count, "tokens")


@given(st.integers(min_value=1, max_value=10**14))
def test_a_dollar_limit_reads_back_as_it_is_written(micro_dollars: int) -> None:
    dollars = micro_dollars / 10**6  # limits are kept to the millionth of a dollar
    assert parse_limit(limit_arg(dollars, "usd")) == (dollars, "usd")
    assert parse_limit(format_limit(dollars, "usd")) == (dollars, "usd")
    assert parse_limit(short_limit(dollars, "usd")) == (dollars, "usd")
