"""Terminal charts for `report --by day` and `--by command`: golden text at 80 columns."""

from __future__ import annotations

import re
from datetime import UTC
from pathlib import Path

import pytest

from tests.helpers import install_fixture, truth_usage
from tokenbudget import charts, enforce, history, report, sync
from tokenbudget.budgets import Budget

ANSI = re.compile(r"\x1b\[[0-9;]*m")
DAYS = [
    ("2026-11-22", 120_000.0),
    ("2026-11-23", 480_000.0),
    ("2026-11-24", 505_000.0),
    ("2026-11-25", 0.0),
    ("2026-11-26", 1_000.0),
    ("2026-11-27", 730_000.0),
    ("2026-11-28", 350_000.0),
]
RUNS: dict[str, list[float]] = {
    "/test": [9000, 12000, 8000, 30000, 10000, 9500, 11000, 9800, 10200, 12500, 8800, 9900],
    "/review": [40000, 52000],
    "prompt": [1000, 3000, 2500, 8000],
}
LIMITS = {"/test": 25_000.0, "/review": 45_000.0}
CASES_USED = ("loop", "slash", "compacted")

# fmt: off
DAY_PLAIN = (
    'Tokens by day  (│ the daily budget, 500k tokens)\n'
    '2026-11-22  █████████▎                            │                   120k   24%\n'
    '2026-11-23  ████████████████████████████████████▉ │                   480k   96%\n'
    '2026-11-24  ██████████████████████████████████████│                   505k  101%\n'
    '2026-11-25                                        │                      0    0%\n'
    '2026-11-26  ▏                                     │                     1k    0%\n'
    '2026-11-27  ██████████████████████████████████████│█████████████████  730k  146%\n'
    '2026-11-28  ██████████████████████████▉           │                   350k   70%\n'
)
DAY_COLOR = (
    '\x1b[1mTokens by day  (│ the daily budget, 500k tokens)\x1b[0m\n'
    '2026-11-22  \x1b[32m█████████▎'
    '\x1b[0m                            │                   120k   24%\n'
    '2026-11-23  \x1b[31m████████████████████████████████████▉'
    '\x1b[0m │                   480k   96%\n'
    '2026-11-24  \x1b[31m██████████████████████████████████████'
    '\x1b[0m│                   505k  101%\n'
    '2026-11-25                                        │                      0    0%\n'
    '2026-11-26  \x1b[32m▏'
    '\x1b[0m                                     │                     1k    0%\n'
    '2026-11-27  \x1b[31m██████████████████████████████████████'
    '\x1b[0m│\x1b[31m█████████████████\x1b[0m  730k  146%\n'
    '2026-11-28  \x1b[33m██████████████████████████▉'
    '\x1b[0m           │                   350k   70%\n'
)
DAY_NOBUDGET = (
    'Tokens by day\n'
    '2026-11-22  ██████████▎                                                     120k\n'
    '2026-11-23  ████████████████████████████████████████▊                       480k\n'
    '2026-11-24  ██████████████████████████████████████████▉                     505k\n'
    '2026-11-25                                                                     0\n'
    '2026-11-26  ▏                                                                 1k\n'
    '2026-11-27  ██████████████████████████████████████████████████████████████  730k\n'
    '2026-11-28  █████████████████████████████▊                                  350k\n'
)
CMD_PLAIN = (
    'Tokens per run, by command\n'
    'Command  Runs   Mean    p90  Largest\n'
    '────────────────────────────────────────────────────────────────────────────────\n'
    '/review     2    46k    52k      52k  ████████████████████████████████████│█████\n'
    '/test      12  11.7k  12.5k      30k  ██████████▏░░░░░░░░░│░░░\n'
    'prompt      4   3.6k     8k       8k  ██████▌\n'
    '█ p90 of the last 20 runs (what a refusal expects) · ░ largest run · │ budget\n'
)
CMD_COLOR = (
    '\x1b[1mTokens per run, by command\x1b[0m\n'
    '\x1b[1mCommand  Runs   Mean    p90  Largest\x1b[0m\n'
    '────────────────────────────────────────────────────────────────────────────────\n'
    '/review     2    46k    52k      52k  '
    '\x1b[31m████████████████████████████████████\x1b[0m│\x1b[31m█████\x1b[0m\n'
    '/test      12  11.7k  12.5k      30k  \x1b[32m██████████▏\x1b[0m░░░░░░░░░│░░░\n'
    'prompt      4   3.6k     8k       8k  ██████▌\n'
    '█ p90 of the last 20 runs (what a refusal expects) · ░ largest run · │ budget\n'
)
# fmt: on


def width_of(text: str) -> int:
    return max(len(ANSI.sub("", line)) for line in text.splitlines())


@pytest.mark.parametrize(("color", "golden"), [(False, DAY_PLAIN), (True, DAY_COLOR)])
def test_day_chart_with_the_daily_budget(color: bool, golden: str) -> None:
    text = charts.day_chart(DAYS, limit=500_000, color=color)
    assert text == golden
    assert width_of(text) == 80
    assert ANSI.sub("", DAY_COLOR) == DAY_PLAIN


def test_day_chart_without_a_budget() -> None:
    assert charts.day_chart(DAYS, limit=None, color=True).endswith(DAY_NOBUDGET.split("\n", 1)[1])
    assert charts.day_chart(DAYS, limit=None, color=False) == DAY_NOBUDGET


def test_day_chart_in_dollars_with_an_unpriced_day() -> None:
    text = charts.day_chart(
        [("2026-11-27", 12.5), ("2026-11-28", None)], limit=5, unit="usd", color=False, width=60
    )
    assert text == (
        "Cost by day  (│ the daily budget, $5.00)\n"
        "2026-11-27  ████████████│███████████████████    $12.50  250%\n"
        "2026-11-28              │                     unpriced\n"
    )


@pytest.mark.parametrize(("color", "golden"), [(False, CMD_PLAIN), (True, CMD_COLOR)])
def test_command_chart(color: bool, golden: str) -> None:
    text = charts.command_chart(charts.run_stats(RUNS, {}), LIMITS, color=color)
    assert text == golden
    assert width_of(text) == 80


def test_empty_charts_say_so() -> None:
    assert charts.day_chart([], limit=5, color=False) == (
        "Tokens by day  (│ the daily budget, 5 tokens)\nNo usage found.\n"
    )
    assert charts.command_chart([], {}, color=False) == (
        "Tokens per run, by command\nNo command runs found.\n"
    )


@pytest.mark.parametrize(
    ("value", "cells", "text"),
    [
        (0, 4, "    "),
        (1, 4, "▏   "),
        (50, 4, "██  "),
        (51, 4, "██  "),
        (53, 4, "██▏ "),
        (100, 4, "████"),
        (250, 4, "████"),
        (float("nan"), 3, "   "),
    ],
)
def test_bar_cells_to_an_eighth(value: float, cells: int, text: str) -> None:
    assert charts.bar_cells(value, 100, cells) == text


def test_mark_column() -> None:
    assert charts.mark_column(50, 100, 10) == 5
    assert charts.mark_column(100, 100, 10) == 9  # the top stays inside the chart
    assert charts.mark_column(0, 100, 10) is None


def test_run_stats_order_and_numbers() -> None:
    stats = charts.run_stats(RUNS, {"/test": [1.0, 2.0, 3.0]})
    assert [s.command for s in stats] == ["/review", "/test", "prompt"]
    test = stats[1]
    assert (test.runs, test.mean, test.p90, test.largest) == (12, 11725.0, 3.0, 30000.0)
    assert charts.stats_json(stats[:1]) == {
        "/review": {"meanTokens": 46000.0, "p90Tokens": 52000.0, "largestRunTokens": 52000.0}
    }


def test_daily_budget_choice() -> None:
    usd, tokens = Budget("daily", 5, "usd"), Budget("daily", 100)
    mine = Budget("daily", 50, project="/p")
    assert charts.daily_budget([usd, tokens, Budget("weekly", 1)]) is tokens
    assert charts.daily_budget([usd, tokens, mine], project="/p") is mine
    assert charts.daily_budget([Budget("weekly", 1)]) is None


# --- from the ledger, as `report` would print them ------------------------------------------


def fixture_ledger(private_home: Path) -> tuple[dict[str, object], dict[str, dict[str, object]]]:
    for case in CASES_USED:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store)
    ledger = store.snapshot()
    return ledger, history.read_records(ledger)


def test_p90_is_what_a_refusal_expects(private_home: Path) -> None:
    ledger, records = fixture_ledger(private_home)
    stats = {s.command: s for s in charts.ledger_run_stats(ledger, records)}
    assert set(stats) == {"/test", "/compact", "prompt"}
    for command in ("/test", "/compact"):
        assert stats[command].p90 == enforce.expected(ledger, command)[0]
    assert stats["/test"].runs == 1 and stats["/test"].largest == 9198


def test_for_report(private_home: Path) -> None:
    ledger, records = fixture_ledger(private_home)
    budgets = [Budget("daily", 100_000), Budget("command", 20_000, name="/test")]
    rows, _ = report.build("day", ledger, records, UTC)
    day = charts.for_report("day", rows, budgets=budgets, color=False)
    truth = sum(truth_usage(case).total for case in CASES_USED)
    assert [r["totalTokens"] for r in rows] == [truth] == [49_355]  # all on one day
    assert day == (
        "Tokens by day  (│ the daily budget, 100k tokens)\n"
        "2026-11-28  ███████████████████████████▋                           │  49.4k  49%\n"
    )
    rows, _ = report.build("command", ledger, records, UTC)
    stats = charts.ledger_run_stats(ledger, records)
    text = charts.for_report("command", rows, budgets=budgets, stats=stats, color=False)
    # Its 20k budget is marked; its one run is its p90 and its largest.
    assert text.splitlines()[3] == (
        "/test        1   9.2k   9.2k     9.2k  ██████████████████▉                     │"
    )
    assert charts.for_report("model", rows, budgets=budgets, color=False) == ""
