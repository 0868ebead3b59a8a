"""Report rendering: exact text in, exact text out."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbudget.render import (
    bar,
    render_csv,
    render_table,
    shorten_middle,
    use_color,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def row(key: str, i: int, o: int, cw: int, cr: int, **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "inputTokens": i,
        "outputTokens": o,
        "cacheCreationTokens": cw,
        "cacheReadTokens": cr,
        "totalTokens": i + o + cw + cr,
        **extra,
    }


# --- shorten_middle -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "width", "out"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("8e945286-e779-410e-9516-f3c30e65f9e5", 12, "8e9452…5f9e5"),
        ("abcdefghij", 5, "ab…ij"),
        ("abcdefghij", 4, "ab…j"),
        ("abcdefghij", 2, "a…"),
        ("abcdefghij", 1, "…"),
        ("abcdefghij", 0, ""),
    ],
)
def test_shorten_middle(text: str, width: int, out: str) -> None:
    assert shorten_middle(text, width) == out
    assert len(shorten_middle(text, width)) == min(len(text), width)


def test_shorten_middle_keeps_both_ends() -> None:
    path = "/home/dev/projects/client/services/billing-api"
    assert shorten_middle(path, 21) == "/home/dev/…illing-api"


# --- render_table: golden text --------------------------------------------------------------

DAILY_ROWS = [
    row(
        "2026-11-01",
        12_345,
        4_500,
        1_200_000,
        45_600_000,
        totalCost=12.4,
        costSource="claude-code",
        modelsUsed=["claude-opus-5-5"],
    ),
    row(
        "2026-11-02",
        901,
        41,
        101,
        2_010,
        totalCost=0.005331,
        costSource="table",
        modelsUsed=["claude-opus-5-5", "claude-haiku-5-5"],
    ),
    row("2026-11-03", 5, 5, 0, 0, totalCost=None, costSource="unpriced", modelsUsed=["claude-x"]),
]
DAILY_TOTALS = row(
    "", 13_251, 4_546, 1_200_101, 45_602_010, totalCost=12.405331, costSource="mixed"
)

DAILY = """\
Daily usage
Date        Input  Output  Cache write  Cache read  Total      Cost
────────────────────────────────────────────────────────────────────
2026-11-01  12.3k    4.5k         1.2M       45.6M  46.8M    $12.40
2026-11-02    901      41          101          2k   3.1k   $0.0053*
2026-11-03      5       5            0           0     10  unpriced
────────────────────────────────────────────────────────────────────
Total       13.3k    4.5k         1.2M       45.6M  46.8M    $12.41+
* estimated from tokenbudget's price table
+ partly estimated from the price table
unmarked: Claude Code's own figure
"""


def test_daily_table_golden() -> None:
    assert render_table("Daily usage", "Date", DAILY_ROWS, DAILY_TOTALS, color=False) == DAILY


PROJECT_ROWS = [
    row(
        "/home/dev/projects/a-rather-long-client-name/services/billing-api",
        1_234_567,
        98_765,
        3_456_789,
        987_654_321,
        totalCost=1234.5,
        costSource="claude-code",
    ),
    row(
        "8e945286-e779-410e-9516-f3c30e65f9e5",
        999_950,
        999,
        0,
        0,
        totalCost=3.0,
        costSource="claude-code",
    ),
]
PROJECT_TOTALS = row(
    "", 2_234_517, 99_764, 3_456_789, 987_654_321, totalCost=1237.5, costSource="claude-code"
)

PROJECTS = """\
Projects
Project                Input  Output  Cache write  Cache read   Total       Cost
────────────────────────────────────────────────────────────────────────────────
/home/dev/…illing-api   1.2M   98.8k         3.5M      987.7M  992.4M  $1,234.50
8e945286-e…c30e65f9e5     1M     999            0           0      1M      $3.00
────────────────────────────────────────────────────────────────────────────────
Total                   2.2M   99.8k         3.5M      987.7M  993.4M  $1,237.50
"""

B, R = "\x1b[1m", "\x1b[0m"
PROJECTS_COLOR = f"""\
{B}Projects{R}
{B}Project                Input  Output  Cache write  Cache read   Total       Cost{R}
────────────────────────────────────────────────────────────────────────────────
/home/dev/…illing-api   1.2M   98.8k         3.5M      987.7M  992.4M  $1,234.50
8e945286-e…c30e65f9e5     1M     999            0           0      1M      $3.00
────────────────────────────────────────────────────────────────────────────────
{B}Total                   2.2M   99.8k         3.5M      987.7M  993.4M  $1,237.50{R}
"""


def test_long_keys_are_cut_in_the_middle_to_80_columns() -> None:
    text = render_table("Projects", "Project", PROJECT_ROWS, PROJECT_TOTALS, color=False)
    assert text == PROJECTS
    assert max(len(line) for line in text.splitlines()) == 80


def test_color_golden() -> None:
    text = render_table("Projects", "Project", PROJECT_ROWS, PROJECT_TOTALS, color=True)
    assert text == PROJECTS_COLOR
    assert plain(text) == PROJECTS


def test_no_escape_codes_without_color() -> None:
    for rows, totals in ((DAILY_ROWS, DAILY_TOTALS), (PROJECT_ROWS, PROJECT_TOTALS)):
        assert "\x1b" not in render_table("T", "Key", rows, totals, color=False)


def test_no_marker_no_legend_when_every_cost_is_claude_codes() -> None:
    text = render_table("Projects", "Project", PROJECT_ROWS, PROJECT_TOTALS, color=False)
    assert "*" not in text and "unmarked" not in text


def test_legend_on_one_line_when_it_fits() -> None:
    rows = [
        row("opus-5-5", 10, 10, 0, 0, totalCost=1.0, costSource="claude-code"),
        row("fable-5-2", 10, 10, 0, 0, totalCost=2.0, costSource="table"),
    ]
    totals = row("", 20, 20, 0, 0, totalCost=3.0, costSource="claude-code")
    text = render_table("Models", "Model", rows, totals, color=False)
    assert text.splitlines()[-1] == (
        "* estimated from tokenbudget's price table; unmarked: Claude Code's own figure"
    )
    assert "$2.00*" in text and "$1.00 " not in text


def test_rows_without_cost_source_have_no_marker() -> None:
    rows = [row("a", 1, 1, 1, 1, totalCost=0.25)]
    text = render_table("T", "Key", rows, row("", 1, 1, 1, 1, totalCost=0.25), color=False)
    assert text.splitlines()[-1].endswith("$0.25")
    assert "*" not in text


def test_totals_label_can_be_given() -> None:
    totals = {**DAILY_TOTALS, "key": "All days"}
    text = render_table("Daily usage", "Date", DAILY_ROWS, totals, color=False)
    assert "\nAll days    13.3k" in text


def test_empty_report() -> None:
    assert render_table("Daily usage", "Date", [], {}, color=False) == (
        "Daily usage\nNo usage found.\n"
    )
    assert render_table("Daily usage", "Date", [], {}, color=True) == (
        f"{B}Daily usage{R}\nNo usage found.\n"
    )


SESSION_ROWS = [
    row(
        "8e945286-e779-410e-9516-f3c30e65f9e5",
        901,
        41,
        101,
        2_010,
        totalCost=0.005331,
        costSource="claude-code",
        modelsUsed=["claude-opus-5-5", "claude-haiku-5-5"],
    ),
]
SESSION_TOTALS = row("", 901, 41, 101, 2_010, totalCost=0.005331, costSource="claude-code")


def test_extra_columns_come_after_the_key_at_100() -> None:
    text = render_table(
        "Sessions",
        "Session",
        SESSION_ROWS,
        SESSION_TOTALS,
        color=False,
        width=100,
        extra_columns=[("modelsUsed", "Models")],
    )
    rule = "─" * 100
    assert text == (
        "Sessions\n"
        "Session                  Models               Input  Output  Cache write  Cache read"
        "  Total     Cost\n"
        f"{rule}\n"
        "8e945286-e7…3c30e65f9e5  opus-5-5, haiku-5-5    901      41          101          2k"
        "   3.1k  $0.0053\n"
        f"{rule}\n"
        "Total                                           901      41          101          2k"
        "   3.1k  $0.0053\n"
    )


def test_a_list_is_cut_between_names_at_80() -> None:
    text = render_table(
        "Sessions",
        "Session",
        SESSION_ROWS,
        SESSION_TOTALS,
        color=False,
        extra_columns=[("modelsUsed", "Models")],
    )
    assert (
        text
        == """\
Sessions
Session     Models        Input  Output  Cache write  Cache read  Total     Cost
────────────────────────────────────────────────────────────────────────────────
8e945…f9e5  opus-5-5 +1     901      41          101          2k   3.1k  $0.0053
────────────────────────────────────────────────────────────────────────────────
Total                       901      41          101          2k   3.1k  $0.0053
"""
    )


def test_extra_columns_golden_at_80() -> None:
    rows = [
        row(
            "2026-11-02",
            901,
            41,
            101,
            2_010,
            totalCost=0.005331,
            costSource="table",
            modelsUsed=["claude-opus-5-5"],
        )
    ]
    totals = row("", 901, 41, 101, 2_010, totalCost=0.005331, costSource="table")
    text = render_table(
        "Daily usage", "Date", rows, totals, color=False, extra_columns=[("modelsUsed", "Models")]
    )
    assert text == (
        "Daily usage\n"
        "Date        Models    Input  Output  Cache write  Cache read  Total     Cost\n"
        "─────────────────────────────────────────────────────────────────────────────\n"
        "2026-11-02  opus-5-5    901      41          101          2k   3.1k  $0.0053*\n"
        "─────────────────────────────────────────────────────────────────────────────\n"
        "Total                   901      41          101          2k   3.1k  $0.0053*\n"
        "* estimated from tokenbudget's price table\n"
    )


def test_long_extra_column_is_cut_to_fit_80() -> None:
    models = [f"claude-model-number-{i}" for i in range(6)]
    rows = [
        row(
            "2026-11-02",
            10**12,
            10**12,
            10**12,
            10**12,
            totalCost=123_456.78,
            costSource="mixed",
            modelsUsed=models,
        )
    ]
    text = render_table(
        "Daily usage", "Date", rows, rows[0], color=False, extra_columns=[("modelsUsed", "Models")]
    )
    assert (
        text
        == """\
Daily usage
Date        Models   Input  Output  Cache write  Cache read  Total         Cost
────────────────────────────────────────────────────────────────────────────────
2026-11-02  mod…r-5     1T      1T           1T          1T     4T  $123,456.78+
────────────────────────────────────────────────────────────────────────────────
2026-11-02  mod…r-5     1T      1T           1T          1T     4T  $123,456.78+
+ partly estimated from the price table
"""
    )


def test_wider_terminal_shows_more_of_the_key() -> None:
    text = render_table("Projects", "Project", PROJECT_ROWS, PROJECT_TOTALS, color=False, width=120)
    lines = text.splitlines()
    assert lines[3].startswith("/home/dev/projects/a-rather-lo…ient-name/services/billing-api  ")
    assert lines[4].startswith("8e945286-e779-410e-9516-f3c30e65f9e5  ")  # whole: it fits
    assert max(len(line) for line in lines) == 120


KEYS = st.text(
    alphabet=st.characters(codec="ascii", categories=("L", "N", "P", "S")),
    min_size=1,
    max_size=200,
)
TOKENS = st.integers(min_value=0, max_value=10**15 - 1)
COSTS = st.one_of(st.none(), st.floats(min_value=0, max_value=999_999.99))
SOURCES = st.sampled_from(["claude-code", "table", "mixed", "unpriced"])


@given(
    st.lists(
        st.tuples(KEYS, TOKENS, TOKENS, TOKENS, TOKENS, COSTS, SOURCES), min_size=1, max_size=5
    ),
    TOKENS,
    COSTS,
)
def test_no_line_exceeds_80_columns(
    data: list[tuple[str, int, int, int, int, float | None, str]],
    total: int,
    total_cost: float | None,
) -> None:
    rows = [row(k, i, o, cw, cr, totalCost=c, costSource=s) for k, i, o, cw, cr, c, s in data]
    totals = row("", total, total, total, total, totalCost=total_cost, costSource="mixed")
    for color in (False, True):
        text = render_table("Sessions", "Session", rows, totals, color=color)
        for line in plain(text).splitlines():
            assert len(line) <= 80, line
        assert text.endswith("\n")


# --- render_csv -----------------------------------------------------------------------------

CSV = """\
date,inputTokens,outputTokens,cacheCreationTokens,cacheReadTokens,totalTokens,totalCost,costSource,modelsUsed
2026-11-01,12345,4500,1200000,45600000,46816845,12.400000,claude-code,claude-opus-5-5
2026-11-02,901,41,101,2010,3053,0.005331,table,claude-opus-5-5 claude-haiku-5-5
2026-11-03,5,5,0,0,10,,unpriced,claude-x
"""


def test_csv_golden() -> None:
    assert render_csv("date", DAILY_ROWS) == CSV


def test_csv_quotes_what_needs_quoting_and_reads_back() -> None:
    rows = [row('/tmp/a "quoted", path', 1, 2, 3, 4, totalCost=1 / 3)]
    text = render_csv("project", rows)
    assert text.splitlines()[1] == '"/tmp/a ""quoted"", path",1,2,3,4,10,0.333333,,'
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["project"] == '/tmp/a "quoted", path'
    assert parsed[0]["totalTokens"] == "10"


def test_csv_of_nothing_is_just_the_header() -> None:
    assert render_csv("week", []).count("\n") == 1


# --- bar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0, "[░░░░░░░░] 0%"),
        (0.29, "[██░░░░░░] 29%"),  # not 28%: 0.29 * 100 is 28.999999999999996
        (0.62, "[█████░░░] 62%"),
        (0.999, "[███████░] 99%"),  # a full bar only when the budget is spent
        (1.0, "[████████] 100%"),
        (1.5, "[████████] 150%"),  # bar clamped, percent real
        (-0.1, "[░░░░░░░░] -10%"),
        (float("nan"), "[░░░░░░░░] 0%"),
        (float("inf"), "[████████] >9999%"),
    ],
)
def test_bar(fraction: float, text: str) -> None:
    assert bar(fraction, 8, color=False) == text


G, Y, RED = "\x1b[32m", "\x1b[33m", "\x1b[31m"


@pytest.mark.parametrize(
    ("fraction", "code"),
    [(0.5, G), (0.699, G), (0.70, Y), (0.85, Y), (0.90, Y), (0.901, RED), (1.2, RED)],
)
def test_bar_colors(fraction: float, code: str) -> None:
    text = bar(fraction, 10, color=True)
    assert text.startswith(f"[{code}█")
    assert plain(text) == bar(fraction, 10, color=False)


def test_bar_without_color_has_no_escape_codes() -> None:
    for fraction in (0.1, 0.75, 0.95, 3.0):
        assert "\x1b" not in bar(fraction, 20, color=False)


def test_empty_bar_has_nothing_to_color() -> None:
    assert bar(0.0, 8, color=True) == "[░░░░░░░░] 0%"


@given(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=0, max_value=60))
def test_bar_has_exactly_width_cells(fraction: float, width: int) -> None:
    inner = plain(bar(fraction, width, color=True)).split("]")[0][1:]
    assert len(inner) == width
    assert set(inner) <= {"█", "░"}


# --- use_color ------------------------------------------------------------------------------


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def color_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("NO_COLOR", raising=False)  # conftest sets it for every test
    monkeypatch.setenv("TERM", "xterm-256color")
    return monkeypatch


def test_color_on_a_terminal(color_env: pytest.MonkeyPatch) -> None:
    assert use_color(FakeStream(tty=True)) is True


def test_no_color_when_not_a_terminal(color_env: pytest.MonkeyPatch) -> None:
    assert use_color(FakeStream(tty=False)) is False
    assert use_color(io.StringIO()) is False


@pytest.mark.parametrize("value", ["1", "", "0", "false"])
def test_no_color_set_to_anything_disables(color_env: pytest.MonkeyPatch, value: str) -> None:
    color_env.setenv("NO_COLOR", value)
    assert use_color(FakeStream(tty=True)) is False


def test_dumb_terminal_disables(color_env: pytest.MonkeyPatch) -> None:
    color_env.setenv("TERM", "dumb")
    assert use_color(FakeStream(tty=True)) is False


def test_missing_term_is_fine(color_env: pytest.MonkeyPatch) -> None:
    color_env.delenv("TERM")
    assert use_color(FakeStream(tty=True)) is True


def test_closed_or_odd_streams(color_env: pytest.MonkeyPatch) -> None:
    closed = io.StringIO()
    closed.close()
    assert use_color(closed) is False
    assert use_color(object()) is False  # type: ignore[arg-type]


def test_render_module_does_not_import_csv_up_front() -> None:
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    code = "import sys, tokenbudget.render; print('csv' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo
    )
    assert out.stdout.strip() == "False"


# --- control characters ---------------------------------------------------------------------


def test_escape_controls_writes_every_control_character_visibly() -> None:
    from tokenbudget.render import escape_controls

    assert escape_controls("a\x00b\tc\nd\x1b[2Je\x7ff\x9bg\x85h") == (
        "a\\x00b\\x09c\\x0ad\\x1b[2Je\\x7ff\\x9bg\\x85h"
    )
    # Printable text, however far from ASCII, is left alone.
    assert escape_controls("/home/dév/プロジェクト ✓ \\x1b") == "/home/dév/プロジェクト ✓ \\x1b"


HOSTILE = "/p/\x1b]0;pwned\x07\x1b[2J\x9b31m"


def test_table_escapes_control_characters_in_keys_and_names() -> None:
    rows = [
        row(HOSTILE, 1, 1, 1, 1, totalCost=0.25, modelsUsed=["opus\x1b[8m"], runs=2),
        row("/ok", 1, 1, 1, 1, totalCost=0.25, note="a\rb"),
    ]
    totals = row("Tot\x1bal", 2, 2, 2, 2, totalCost=0.5)
    text = render_table(
        "T",
        "Key",
        rows,
        totals,
        color=False,
        width=120,
        extra_columns=[("modelsUsed", "Models"), ("note", "Note")],
    )
    assert not any((ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) < 0xA0 for ch in text)
    assert "/p/\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m" in text
    assert "opus\\x1b[8m" in text and "a\\x0db" in text and "Tot\\x1bal" in text


def test_csv_escapes_control_characters_visibly() -> None:
    rows = [row(HOSTILE, 1, 2, 3, 4, totalCost=0.5, costSource="table", modelsUsed=["m\x1b"])]
    text = render_csv("project", rows)
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text
    assert text.splitlines()[1] == (
        "/p/\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m,1,2,3,4,10,0.500000,table,m\\x1b"
    )


def test_status_line_escapes_a_budget_name() -> None:
    from datetime import UTC, datetime

    from tokenbudget.budgets import Budget, evaluate
    from tokenbudget.status_view import render_status

    budget = Budget("command", 1000, name="/x\x1b[2J")
    check = evaluate(budget, 500, 0, datetime(2026, 11, 28, tzinfo=UTC), None)
    text = render_status([check], color=False, tz=UTC)
    assert "\x1b" not in text
    assert text.startswith("command /x\\x1b[2J ")
    assert "counts each run of /x\\x1b[2J on its own" in text
