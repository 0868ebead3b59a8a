"""`tokenbudget report`: sessions a user can find again, the active block's pace, exact numbers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import install_fixture
from tests.test_cli import one_line, run
from tokenbudget import report

# The fixtures ran on 2026-11-28 between 17:14 and 17:40 UTC: one 5-hour block, 17:00-22:00.
AT_18 = datetime(2026, 11, 28, 18, 0, tzinfo=UTC).timestamp()
UTC_ENV = {"TZ": "UTC"}


@pytest.fixture
def three_sessions(private_home: Path, recorded_day: float) -> Path:
    for case in ("plain", "forked", "loop"):
        install_fixture(case, private_home / ".claude")
    return private_home


def test_session_table_has_whole_short_ids_project_and_last_activity(three_sessions: Path) -> None:
    proc = run("report", "--by", "session", home=three_sessions, env=UTC_ENV)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:7] == [
        "Usage by session",
        "Session   Project            Last activity     Input  Output  Total     Cost",
        "─" * 77,
        # Sorted by last activity, the latest last; ids as /resume shows them, never cut.
        "1c990dcd  /home/dev/project  2026-11-28 17:14    901      41   3.1k  $0.0053",
        "85b37d12  /home/dev/project  2026-11-28 17:14   1.8k      91   6.2k    $0.01*",
        "41481808  /home/dev/project  2026-11-28 17:39   2.7k     129   9.2k    $0.02*",
        "─" * 77,
    ]
    assert proc.stdout.endswith(
        "Total includes cache writes and reads; --csv and --json list them, and full ids.\n"
    )


def test_session_csv_has_the_same_columns_with_full_ids(three_sessions: Path) -> None:
    proc = run("report", "--by", "session", "--csv", home=three_sessions, env=UTC_ENV)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["Session"][:8], r["projectPath"], r["lastActivity"][:16]) for r in rows] == [
        ("1c990dcd", "/home/dev/project", "2026-11-28T17:14"),
        ("85b37d12", "/home/dev/project", "2026-11-28T17:14"),
        ("41481808", "/home/dev/project", "2026-11-28T17:39"),
    ]
    assert all(len(r["Session"]) == 36 for r in rows)  # whole ids, to paste into --resume
    whole = json.loads(run("report", "--json", home=three_sessions).stdout)["totals"]
    assert sum(int(r["totalTokens"]) for r in rows) == whole["totalTokens"]


def test_a_session_is_shown_by_its_first_8_characters_unless_another_shares_them() -> None:
    assert report.session_label("41481808-d348", {"41481808-d348", "1c990dcd-31c2"}) == "41481808"
    # Two sessions that start alike are both shown whole, never cut elsewhere.
    ids = {"41481808-aaaa", "41481808-bbbb"}
    assert report.session_label("41481808-aaaa", ids) == "41481808-aaaa"


def test_active_block_has_elapsed_remaining_and_projection(
    three_sessions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(AT_18))
    proc = run("report", "--by", "block", "--json", home=three_sessions, env=UTC_ENV)
    (block,) = json.loads(proc.stdout)["blocks"]
    total = block["totalTokens"]
    # First activity in the 17:00 bucket (the 17:14 sessions): 60 minutes of burn at 18:00,
    # 240 left, so the block ends near five times what it has used.
    assert (block["isActive"], block["elapsedMinutes"]) == (True, 60)
    assert block["burnRate"]["tokensPerMinute"] == round(total / 60, 1)
    assert block["projection"] == {
        "totalTokens": total * 5,
        "totalCost": round(block["totalCost"] * 5, 6),
        "remainingMinutes": 240,
    }
    table = run("report", "--by", "block", home=three_sessions, env=UTC_ENV)
    lines = table.stdout.splitlines()
    assert lines[3].startswith("2026-11-28 17:00  active")
    assert lines[-1] == (
        "Active block: 1h elapsed, 4h left (ends 22:00); "
        "at 18.5k tokens/h ($0.03/h) it ends near 92.6k tokens ($0.16)."
    )


def test_a_finished_block_has_no_pace(
    three_sessions: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(AT_18 + 4 * 3600))  # 22:00: the block is over
    proc = run("report", "--by", "block", "--json", home=three_sessions, env=UTC_ENV)
    (block,) = json.loads(proc.stdout)["blocks"]
    assert (block["isActive"], block["burnRate"], block["projection"]) == (False, None, None)
    table = run("report", "--by", "block", home=three_sessions, env=UTC_ENV)
    assert "Active block" not in table.stdout


def test_exact_prints_whole_numbers_with_separators(three_sessions: Path) -> None:
    proc = run("report", "--by", "day", "--exact", home=three_sessions, env=UTC_ENV)
    total = json.loads(run("report", "--json", home=three_sessions).stdout)["totals"]["totalTokens"]
    assert total > 1000
    assert f"  {total:,}  " in proc.stdout.splitlines()[3]
    rounded = run("report", "--by", "day", home=three_sessions, env=UTC_ENV)
    assert f"{total:,}" not in rounded.stdout


def test_exact_is_for_the_table(private_home: Path) -> None:
    proc = run("report", "--exact", "--json", home=private_home)
    assert proc.returncode == 2
    assert "--exact is for the table" in one_line(proc)


@pytest.mark.parametrize("command", [("report", "--json"), ("sync",)])
def test_a_broken_config_warns_once_and_reports(
    three_sessions: Path, command: tuple[str, ...]
) -> None:
    state = three_sessions / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text('{"budgets": [')
    proc = run(*command, home=three_sessions)
    assert proc.returncode == 0, proc.stderr
    line = one_line(proc)
    assert "warning: the config is broken" in line and "config.json" in line
    if command[0] == "report":
        assert json.loads(proc.stdout)["totals"]["totalTokens"] > 0


def test_a_missing_project_folder_with_no_usage_is_refused(three_sessions: Path) -> None:
    # A folder deleted since keeps its report (the fixtures' /home/dev/project: see test_cli);
    # a path that neither exists nor was ever used is a typo.
    missing = three_sessions / "no such folder"
    proc = run("report", "--project", str(missing), home=three_sessions)
    assert proc.returncode == 2
    assert f"{missing} does not exist and no usage was recorded in it" in one_line(proc)


@pytest.mark.parametrize("line", [
    '{"sid": "abc"}',
    '{"sid": "abc", "p": "/x", "f": 1, "l": 2, "m": {}, "hours": {"abc": {}}, "turns": []}',
    '{"sid": "abc", "p": "/x", "f": 1, "l": 2, "m": {}, "hours": {}, "turns": [[1]]}',
])
def test_a_history_line_of_the_wrong_shape_is_passed_over(
    three_sessions: Path, line: str
) -> None:
    from tokenbudget import history

    assert run("sync", home=three_sessions).returncode == 0
    whole = json.loads(run("report", "--json", home=three_sessions).stdout)["totals"]
    path = history.history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")
    for args in (["report", "--json"], ["budget", "simulate", "daily", "10k", "--json"]):
        proc = run(*args, home=three_sessions)
        assert (proc.returncode, proc.stderr) == (0, ""), (args, proc.stderr)
    assert json.loads(run("report", "--json", home=three_sessions).stdout)["totals"] == whole
