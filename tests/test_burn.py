"""Burn rate and projection: numbers from hour buckets, and the hook messages that carry them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_fixture
from tokenbudget import burn, hook
from tokenbudget.budgets import Budget, evaluate
from tokenbudget.ledger import new_ledger

NOW_DT = datetime(2026, 11, 28, 17, 30, tzinfo=UTC)
NOW = NOW_DT.timestamp()
# The usage buckets are 15 minutes long; these tests look back one hour from 17:37:30.
NOW_B = NOW + 450
B = 900


def bucket(hh: int, mm: int) -> int:
    return int(at(hh, mm) // B)


MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC)


def at(hh: int, mm: int) -> float:
    return datetime(2026, 11, 28, hh, mm, tzinfo=UTC).timestamp()


def ledger_with_hours() -> dict[str, Any]:
    ledger = new_ledger()
    ledger["hours"] = {
        # 16:30-16:45, spread evenly: half of it lies after 16:37:30.
        str(bucket(16, 30)): {"/p": [120_000, 1.20, at(16, 30), at(16, 45)]},
        str(bucket(17, 0)): {
            "/p": [60_000, 0.60, at(17, 0), at(17, 14)],
            "/q": [1_000_000, 10.0, at(17, 10), at(17, 10)],
        },
        str(bucket(16, 15)): {"/p": [999_999, 9.0, at(16, 15), at(16, 29)]},  # too old
    }
    return ledger


def daily(limit: float, used: float, unit: str = "tokens", **kw: Any) -> Any:
    b = Budget("daily", limit, unit, **kw)  # type: ignore[arg-type]
    return evaluate(b, used, 0, NOW_DT, MIDNIGHT)


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "lo", "hi", "part"),
    [
        (0, 100, 50, 150, 50.0),  # half the span lies inside
        (0, 100, 0, 100, 100.0),
        (0, 100, 200, 300, 0.0),
        (10, 10, 0, 20, 100.0),  # one moment: all or nothing
        (10, 10, 11, 20, 0.0),
    ],
)
def test_spread(first: float, last: float, lo: float, hi: float, part: float) -> None:
    assert burn.spread(100.0, first, last, lo, hi) == pytest.approx(part)


def test_last_hour_takes_the_current_bucket_and_part_of_the_previous() -> None:
    ledger = ledger_with_hours()
    mine = Budget("daily", 500_000, project="/p")
    assert burn.last_hour(ledger, mine, NOW_B) == pytest.approx(120_000)
    assert burn.last_hour(ledger, Budget("daily", 5, "usd", project="/p"), NOW_B) == (
        pytest.approx(1.20)
    )
    assert burn.last_hour(ledger, Budget("daily", 500_000), NOW_B) == pytest.approx(1_120_000)
    assert burn.last_hour(ledger, Budget("project", 1, name="/q"), NOW_B) == pytest.approx(1e6)
    assert burn.last_hour(ledger, Budget("command", 1, name="/t"), NOW_B) is None
    assert burn.last_hour(new_ledger(), mine, NOW_B) == 0


def test_last_hour_of_a_session_counts_only_its_requests() -> None:
    ledger = ledger_with_hours()
    ledger["sessions"]["s1"] = {
        "p": "/p",
        "adj": [[bucket(17, 0), "m", 100, 0, 0, 0, 0, 0.001, "-"]],
    }
    ledger["keys"] = {
        "a": ["s1", "m", 1000, 200, 0, 0, 800, bucket(17, 0), 0.01, "-"],
        "b": [
            "s1",
            "m",
            4000,
            0,
            0,
            0,
            0,
            bucket(16, 30),
            0.04,
            "-",
        ],  # half of it in the last hour
        "c": ["s2", "m", 9999, 0, 0, 0, 0, bucket(17, 0), 0.5, "-"],
    }
    session = Budget("session", 10_000)
    assert burn.last_hour(ledger, session, NOW_B, "s1") == pytest.approx(2100 + 2000)
    assert burn.last_hour(ledger, Budget("session", 1, "usd"), NOW_B, "s1") == (
        pytest.approx(0.011 + 0.02)
    )
    assert burn.last_hour(ledger, session, NOW_B, "nobody") == 0


def test_runs_out_in() -> None:
    assert burn.runs_out_in(daily(500_000, 425_000), 120_000) == timedelta(minutes=37.5)
    assert burn.runs_out_in(daily(500_000, 500_000), 120_000) is None
    assert burn.runs_out_in(daily(500_000, 1), 0) is None


# --- through the hook -------------------------------------------------------------------------


def hook_event(private_home: Path, budgets: list[dict[str, Any]], prompt_id: str) -> bytes:
    install_fixture("loop", private_home / ".claude")
    transcript = next((private_home / ".claude" / "projects").glob("*/*.jsonl"))
    cfg = private_home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"version": 1, "budgets": budgets}))
    return json.dumps(
        {
            "session_id": transcript.stem,
            "transcript_path": str(transcript),
            "cwd": "/home/dev/project",
            "prompt": "go on",
            "prompt_id": prompt_id,
        }
    ).encode()


def test_hook_refusal_shows_the_burn_rate(private_home: Path) -> None:
    raw = hook_event(private_home, [{"kind": "session", "limit": "10k"}], "p-1")
    out = hook.handle("UserPromptSubmit", raw, now=NOW)
    assert out == {
        "decision": "block",
        "reason": (
            "tokenbudget: the session budget is used up.\n"
            "Used 18.5k of 10k tokens.\n"
            "Resets when a new session starts.\n"
            "Burn rate: 18.5k tokens/h over the last hour.\n"
            "To raise it: tokenbudget budget set session 20k\n"
            "To let one prompt through: tokenbudget allow"
        ),
    }


def test_hook_warning_shows_rate_projection_and_commands(private_home: Path) -> None:
    raw = hook_event(
        private_home,
        [{"kind": "daily", "limit": "20k"}, {"kind": "session", "limit": "15k", "mode": "warn"}],
        "p-2",
    )
    out = hook.handle("UserPromptSubmit", raw, now=NOW)
    assert out == {
        "systemMessage": (
            "tokenbudget: the daily budget is at 92% (18.5k of 20k tokens); resets at 00:00"
            " (in 6h 30m).\n"
            "Burn rate: 18.5k tokens/h over the last hour; at that rate it runs out in about 5m.\n"
            "To raise it: tokenbudget budget set daily 40k\n"
            "To let one prompt through once it blocks: tokenbudget allow\n"
            "tokenbudget: the session budget is used up (18.5k of 15k tokens); resets when a new"
            " session starts.\n"
            "Burn rate: 18.5k tokens/h over the last hour.\n"
            "To raise it: tokenbudget budget set session 30k --mode warn"
        )
    }
    # Two hours later the same session has burned nothing in the last hour.
    later = hook.handle("UserPromptSubmit", raw.replace(b'"p-2"', b'"p-3"'), now=NOW + 2 * 3600)
    assert later == {}  # each warning is given once per window
