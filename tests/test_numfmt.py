"""One way to write a number: every figure a user reads goes through numfmt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbudget import budgets, numfmt, render
from tokenbudget.numfmt import format_amount, format_cost, format_exact, format_limit, format_tokens

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (7, "7"),
        (950, "950"),
        (999, "999"),
        (999.4, "999"),
        (999.5, "1k"),  # rounds up into the next unit, never "1000"
        (1_000, "1k"),
        (1_049, "1k"),
        (1_050, "1.1k"),  # halves round up
        (1_250, "1.3k"),  # not 1.2k: round() would round this half to even
        (1_350, "1.4k"),
        (12_345, "12.3k"),
        (12_345.6, "12.3k"),
        (99_949, "99.9k"),
        (107_600, "107.6k"),  # status and report read the same
        (182_345, "182.3k"),
        (999_949, "999.9k"),
        (999_950, "1M"),  # not "1000k"
        (1_000_000, "1M"),
        (1_500_000, "1.5M"),
        (4_500_000, "4.5M"),
        (45_649_999, "45.6M"),
        (987_654_321, "987.7M"),
        (1_234_567_890, "1.2B"),
        (2e9, "2B"),
        (999_999_999_999, "1T"),
        (12_000_000_000_000, "12T"),
        (10**17, "100000T"),  # the last unit keeps counting
        (-12_345, "-12.3k"),
        (-1_250, "-1.3k"),
        (-5, "-5"),
    ],
)
def test_format_tokens(n: int | float, text: str) -> None:
    assert format_tokens(n) == text


@given(st.integers(min_value=0, max_value=10**15 - 1))
def test_format_tokens_is_short_and_close(n: int) -> None:
    text = format_tokens(n)
    assert len(text) <= 6
    match = re.fullmatch(r"(\d+(?:\.\d)?)([kMBT]?)", text)
    assert match, text
    scale = {"": 1, "k": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match[2]]
    assert abs(float(match[1]) * scale - n) <= max(0.5, 0.0005 * n + 0.05 * scale)


@given(st.integers(min_value=0, max_value=10**14), st.integers(min_value=0, max_value=10**14))
def test_format_tokens_keeps_order(a: int, b: int) -> None:
    def value(text: str) -> float:
        units = {"k": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)

    if a <= b:
        assert value(format_tokens(a)) <= value(format_tokens(b))


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (None, "unpriced"),
        (0, "$0.00"),
        (0.0, "$0.00"),
        (0.53, "$0.53"),
        (12.4, "$12.40"),
        (1234, "$1,234.00"),
        (1_234_567.891, "$1,234,567.89"),
        (0.01, "$0.01"),
        (0.125, "$0.13"),  # half up, where f"{0.125:.2f}" gives 0.12
        (1.005, "$1.01"),  # 1.005 is stored as 1.00499999...: still a half
        (0.00995, "$0.01"),  # would print as a cent anyway
        (0.009949, "$0.0099"),
        (0.0053, "$0.0053"),
        (0.005331, "$0.0053"),
        (0.0001, "$0.0001"),
        (0.00004, "<$0.0001"),
        (-2.5, "-$2.50"),
    ],
)
def test_format_cost(x: float | None, text: str) -> None:
    assert format_cost(x) == text


def test_format_amount_is_tokens_or_cost() -> None:
    assert format_amount(1_250, "tokens") == "1.3k"
    assert format_amount(0.004, "usd") == "$0.0040"  # not "$0.00" next to a $2.00 limit


def test_format_exact() -> None:
    assert [format_exact(n) for n in (0, 999, 1_000, 1_234_567, 1_249.5)] == [
        "0", "999", "1,000", "1,234,567", "1,250"
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (200_000, "200k tokens"),
        (1_250_000, "1.25M tokens"),
        (2_000_000_000, "2B tokens"),
        (1_234_567, "1,234,567 tokens"),  # exact, not "1.2M"
        (10**14, "100T tokens"),  # not "100000B tokens"
        (10**18, "1,000,000T tokens"),
        (1, "1 token"),
    ],
)
def test_format_limit_units_go_up_to_t(value: int, text: str) -> None:
    assert format_limit(value, "tokens") == text


def test_a_t_limit_reads_back() -> None:
    assert budgets.parse_limit("100T") == (10.0**14, "tokens")
    assert budgets.limit_arg(10.0**14, "tokens") == "100T"


def test_there_is_one_formatter() -> None:
    # The others are gone: a second formatter would drift from this one again.
    assert not hasattr(render, "humanize")
    assert budgets.format_amount is numfmt.format_amount
    assert budgets.format_limit is numfmt.format_limit
    package = REPO / "tokenbudget"
    found = [
        f"{p.name}: {m.group(0)}"
        for p in sorted(package.glob("*.py"))
        if p.name != "numfmt.py"
        for m in re.finditer(
            r"^def (format_tokens|format_cost|format_percent|_percent|humanize|_format_usd)\b",
            p.read_text(), re.M,
        )
    ]
    assert found == []


def test_numfmt_imports_only_math() -> None:
    code = (
        "import sys, tokenbudget.numfmt; "
        "print(sorted(m for m in sys.modules if m.startswith('tokenbudget')))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "['tokenbudget', 'tokenbudget.numfmt']"


def test_a_short_limit_keeps_dollars_as_set() -> None:
    from tokenbudget.numfmt import format_limit, short_limit

    assert short_limit(0.125, "usd") == "$0.125" == format_limit(0.125, "usd")
    assert short_limit(2, "usd") == "$2.00"
    assert short_limit(18_000, "tokens") == "18k"
