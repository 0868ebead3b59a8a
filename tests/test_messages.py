"""What a budget decision says: refusals, warnings, burn rates, hints (exact text)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tokenbudget import messages
from tokenbudget.budgets import Budget, Check, evaluate
from tokenbudget.messages import format_duration, label, reason_text, warning_text

PARIS = ZoneInfo("Europe/Paris")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


NOW = datetime(2024, 6, 10, 20, 48, tzinfo=PARIS)
MIDNIGHT = utc(2024, 6, 10, 22)
NOW_DT = datetime(2026, 11, 28, 17, 30, tzinfo=UTC)
NEXT_MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC)


def check(budget: Budget, used: float, expected: float = 0) -> Check:
    return evaluate(budget, used, expected, NOW, MIDNIGHT)


def daily(limit: float, used: float, unit: str = "tokens", **kw: Any) -> Any:
    b = Budget("daily", limit, unit, **kw)  # type: ignore[arg-type]
    return evaluate(b, used, 0, NOW_DT, NEXT_MIDNIGHT)


# ---------------------------------------------------------------- refusals and warnings


def test_a_command_that_never_fits_its_budget_says_so_plainly() -> None:
    c = check(Budget("command", 20_000, name="/test"), 0, expected=24_310)
    assert reason_text(c, raise_hint="", allow_hint="") == (
        "tokenbudget: /test usually takes 24.3k, more than its 20k budget: raise it to at least"
        " 25k, or `tokenbudget allow`."
    )
    fits = check(Budget("command", 30_000, name="/test"), 0, expected=24_310)
    assert reason_text(fits, raise_hint="", allow_hint="").startswith(
        "tokenbudget: the /test budget"
    )


def test_reason_text_when_a_command_would_exceed() -> None:
    c = check(Budget("daily", 200_000), 182_345, expected=25_000)
    assert reason_text(c, raise_hint="tokenbudget budget set daily 400k",
                       allow_hint="tokenbudget allow") == (
        "tokenbudget: the daily budget would be exceeded.\n"
        "Used 182.3k of 200k tokens; this command is expected to take about 25k more.\n"
        "Resets at 00:00 (in 3h 12m).\n"
        "To raise it: tokenbudget budget set daily 400k\n"
        "To let one prompt through: tokenbudget allow"
    )


def test_reason_text_in_dollars_when_used_up() -> None:
    c = evaluate(Budget("weekly", 5, "usd"), 5.123, 0, NOW, utc(2024, 6, 16, 22))
    assert reason_text(c, raise_hint="tokenbudget budget set weekly 10usd", allow_hint="") == (
        "tokenbudget: the weekly budget is used up.\n"
        "Used $5.12 of $5.00.\n"
        "Resets on Mon 17 Jun at 00:00 (in 6d 3h).\n"
        "To raise it: tokenbudget budget set weekly 10usd"
    )


def test_reason_text_for_budgets_that_do_not_reset() -> None:
    team = Budget("total", 4.12, "usd", project="/p", source="project")
    c = evaluate(team, 4.12, 0, NOW, None)
    assert reason_text(c, raise_hint="", allow_hint="tokenbudget allow") == (
        "tokenbudget: this project's all-time budget is used up.\n"
        "Used $4.12 of $4.12.\n"
        "Never resets.\n"
        "To let one prompt through: tokenbudget allow"
    )
    run = evaluate(Budget("command", 50_000, name="/test"), 50_000, 0, NOW, None)
    assert reason_text(run, raise_hint="", allow_hint="").splitlines()[2] == (
        "Counts each run of /test on its own."
    )


def test_warning_text() -> None:
    c = check(Budget("daily", 200_000, project="/p"), 170_000)
    assert warning_text(c) == (
        "tokenbudget: the daily budget for /p is at 85% (170k of 200k tokens); "
        "resets at 00:00 (in 3h 12m)."
    )
    # 0.29 * 100 is 28.999999999999996: the warning reads 29%, as status's bar does
    c = check(Budget("daily", 100_000, project="/p", warn_at=0.25), 29_000)
    assert "is at 29% (29k of 100k tokens)" in warning_text(c)


def test_labels() -> None:
    assert label(Budget("5h", 1)) == "the 5-hour budget"
    assert label(Budget("session", 1, source="project")) == "this project's session budget"
    assert label(Budget("command", 1, name="/test")) == "the /test budget"
    assert label(Budget("project", 1, name="/p")) == "the budget for /p"


def test_format_duration() -> None:
    assert format_duration(timedelta(hours=3, minutes=12)) == "3h 12m"
    assert format_duration(timedelta(seconds=10)) == "1m"  # never "0m" before it happens
    assert format_duration(timedelta(hours=2)) == "2h"
    assert format_duration(timedelta(days=6, hours=3, minutes=1)) == "6d 3h"


# ---------------------------------------------------------------- burn rates


@pytest.mark.parametrize(
    ("check", "rate", "text"),
    [
        (
            daily(500_000, 425_000),
            120_000,
            "Burn rate: 120k tokens/h over the last hour; at that rate it runs out in about 38m.",
        ),
        (
            daily(500_000, 425_000),
            5_000,
            "Burn rate: 5k tokens/h over the last hour; at that rate it lasts until it resets.",
        ),
        (daily(500_000, 600_000), 120_000, "Burn rate: 120k tokens/h over the last hour."),
        (daily(500_000, 425_000), 0, "Burn rate: nothing used in the last hour."),
        (
            daily(20, 16, "usd"),
            1.5,
            "Burn rate: $1.50/h over the last hour; at that rate it runs out in about 2h 40m.",
        ),
        (
            daily(20, 16, "usd"),
            0.004,
            "Burn rate: $0.0040/h over the last hour; at that rate it lasts until it resets.",
        ),
        (daily(500_000, 425_000), None, ""),
    ],
)
def test_burn_text(check: Any, rate: float | None, text: str) -> None:
    assert messages.burn_text(check, rate) == text


def test_warning_message_in_full() -> None:
    check = daily(500_000, 425_000, project="/p")
    text = messages.warning_message(
        check, rate=120_000, raise_hint="tokenbudget budget set daily 1M --project /p"
    )
    assert text == (
        "tokenbudget: the daily budget for /p is at 85% (425k of 500k tokens); resets at 00:00"
        " (in 6h 30m).\n"
        "Burn rate: 120k tokens/h over the last hour; at that rate it runs out in about 38m.\n"
        "To raise it: tokenbudget budget set daily 1M --project /p\n"
        "To let one prompt through once it blocks: tokenbudget allow"
    )


def test_a_warn_only_budget_offers_no_allow() -> None:
    check = daily(500_000, 510_000, mode="warn")
    text = messages.warning_message(check, rate=0, raise_hint="tokenbudget budget set daily 1M")
    assert text == (
        "tokenbudget: the daily budget is used up (510k of 500k tokens); resets at 00:00"
        " (in 6h 30m).\n"
        "Burn rate: nothing used in the last hour.\n"
        "To raise it: tokenbudget budget set daily 1M"
    )


def test_block_message_in_full() -> None:
    check = daily(500_000, 500_000)
    text = messages.block_message(check, rate=90_000, raise_hint="tokenbudget budget set daily 1M")
    assert text == (
        "tokenbudget: the daily budget is used up.\n"
        "Used 500k of 500k tokens.\n"
        "Resets at 00:00 (in 6h 30m).\n"
        "Burn rate: 90k tokens/h over the last hour.\n"
        "To raise it: tokenbudget budget set daily 1M\n"
        "To let one prompt through: tokenbudget allow"
    )


def test_block_message_of_a_command_has_no_rate() -> None:
    b = Budget("command", 5000, name="/test")
    check = evaluate(b, 0, 9200, NOW_DT, None)
    hint = "tokenbudget budget set command /test 10k"
    text = messages.block_message(check, rate=None, raise_hint=hint)
    assert text == (
        "tokenbudget: /test usually takes 9.2k, more than its 5k budget: raise it to at least"
        " 9.2k, or `tokenbudget allow`.\n"
        "To raise it: tokenbudget budget set command /test 10k\n"
        "To let one prompt through: tokenbudget allow"
    )


# ---------------------------------------------------------------- hints and reasons


def test_raise_hint_keeps_how_the_budget_behaves() -> None:
    weekly = Budget("weekly", 200_000, project="/my work", mode="warn", warn_at=0.5)
    scoped = check(weekly, 190_000)
    assert messages.raise_hint(scoped) == (
        "tokenbudget budget set weekly 400k --project '/my work' --mode warn --warn-at 50%"
    )
    run = check(Budget("command", 20_000, name="/test"), 0, expected=24_310)
    assert messages.raise_hint(run) == "tokenbudget budget set command /test 40k"
    folder = check(Budget("project", 1.5, "usd", name="/p"), 1.5)
    assert messages.raise_hint(folder) == "tokenbudget budget set project /p 3usd"
    team = check(Budget("daily", 100_000, source="project"), 100_000)
    assert messages.raise_hint(team) == "edit .claude/tokenbudget.json in the project (limit 200k)"


def test_refusal_and_warning_carry_the_raise_hint() -> None:
    c = daily(500_000, 500_000)
    assert messages.refusal(c, 90_000) == messages.block_message(
        c, rate=90_000, raise_hint="tokenbudget budget set daily 1M"
    )
    assert messages.warning(c, None).splitlines()[-2:] == [
        "To raise it: tokenbudget budget set daily 1M",
        "To let one prompt through once it blocks: tokenbudget allow",
    ]


def test_used_up_reason_has_no_burn_rate() -> None:
    assert messages.used_up_reason(daily(500_000, 500_000)) == (
        "tokenbudget: the daily budget is used up.\n"
        "Used 500k of 500k tokens.\n"
        "Resets at 00:00 (in 6h 30m).\n"
        "To raise it: tokenbudget budget set daily 1M\n"
        "To let one prompt through: tokenbudget allow"
    )


def test_context_hint() -> None:
    checks = [daily(500_000, 125_000), daily(5, 6, "usd")]
    assert messages.context_hint(checks) == (
        "Token budget (tokenbudget): the daily budget: 375k left; the daily budget: $0.00 left."
    )
    assert messages.context_hint([]) == ""


def test_stop_line() -> None:
    stop = {"at": NOW_DT.timestamp(), "what": "refused", "budget": "daily", "session": "s-1",
            "reason": "tokenbudget: the daily budget is used up.\nUsed 1k of 1k tokens."}
    assert messages.stop_line(stop, UTC) == (
        "tokenbudget: at 2026-11-28 17:30 the daily budget refused a prompt of session s-1:"
        " the daily budget is used up."
    )
    odd = {"at": 0, "what": "stopped", "session": "s\x1b2", "reason": "fail closed"}
    assert messages.stop_line(odd, UTC) == (
        "tokenbudget: at 1970-01-01 00:00 tokenbudget stopped a turn of session s\\x1b2:"
        " fail closed"
    )
