"""`tokenbudget status --check`: how a script learns that `claude -p` was refused or stopped.

In print mode Claude Code shows its user no hook's stop reason (claude-code-facts.md), so the
hooks keep every refusal and stop in the ledger and this command reports them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import run
from tests.test_hook import run_hook, session, set_budgets

# The loop fixture's session, read on the day it was recorded (not folded yet).
pytestmark = pytest.mark.usefixtures("recorded_day")


def test_nothing_to_report_exits_0_and_says_nothing(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"})
    run_hook("Stop", base)
    proc = run("status", "--check", "--session", base["session_id"], home=private_home)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_a_stopped_session_exits_1_and_says_why(private_home: Path) -> None:
    base = session(private_home)
    sid = base["session_id"]
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    out = run_hook("PreToolUse", {**base, "tool_name": "Bash", "tool_input": {"command": "t"}})[1]
    assert out["continue"] is False
    proc = run("status", "--check", "--session", sid, home=private_home)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "tokenbudget: the session budget is used up.\nUsed 18.5k of 10k tokens." in proc.stderr
    assert f"the session budget stopped a turn of session {sid}: " in proc.stderr
    # Another session is a new start for a session budget, and was never stopped.
    other = run("status", "--check", "--session", "another", home=private_home)
    assert other.returncode == 0
    assert other.stderr == (
        "tokenbudget: no session another in the ledger (a typo, not started yet, or idle for"
        " over 2 days); only the budgets were checked\n"
    )
    as_json = run("status", "--check", "--session", sid, "--json", home=private_home)
    assert as_json.returncode == 1
    data = json.loads(as_json.stdout)
    assert data["ok"] is False and data["session"] == sid
    assert [(b["budget"], b["used"], b["limit"]) for b in data["usedUp"]] == [
        ("session", 18_513.0, 10_000.0)
    ]
    assert [(s["what"], s["event"], s["used"]) for s in data["stops"]] == [
        ("stopped", "PreToolUse", 18_513.0)
    ]


def test_a_used_up_window_exits_1_without_a_session(private_home: Path) -> None:
    base = session(private_home)
    set_budgets(
        private_home, {"kind": "daily", "limit": "10k"}, {"kind": "weekly", "limit": "5k",
                                                          "mode": "warn"}
    )
    run_hook("Stop", base)
    proc = run("status", "--check", home=private_home)
    assert proc.returncode == 1
    assert "tokenbudget: the daily budget is used up.\nUsed 18.5k of 10k tokens." in proc.stderr
    assert "weekly" not in proc.stderr  # a warn-only budget never blocks
    set_budgets(private_home, {"kind": "daily", "limit": "10k", "mode": "warn"})
    assert run("status", "--check", home=private_home).returncode == 0


def test_a_broken_config_is_not_ok_and_says_so_in_json(private_home: Path) -> None:
    cfg = private_home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("{ not json")
    proc = run("status", "--check", "--json", home=private_home)
    assert proc.returncode == 1
    data = json.loads(proc.stdout)
    assert data["ok"] is False and "config" in data["error"]
    plain = run("status", "--check", home=private_home)
    assert plain.returncode == 1 and plain.stderr.startswith("tokenbudget: ")


def test_an_empty_session_id_is_a_usage_error(private_home: Path) -> None:
    proc = run("status", "--check", "--session", "", home=private_home)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--session" in proc.stderr and "give a session id" in proc.stderr


def test_a_busy_lock_answers_from_the_ledger_as_committed(private_home: Path) -> None:
    from filelock import FileLock

    base = session(private_home)
    set_budgets(private_home, {"kind": "session", "limit": "1M"}, lock_timeout_seconds=0.3)
    run_hook("Stop", base)
    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        proc = run("status", "--check", "--session", base["session_id"], home=private_home)
        assert proc.returncode == 0, proc.stderr  # nothing used up: not a failure
        assert "showing the ledger as last committed" in proc.stderr
        set_budgets(private_home, {"kind": "session", "limit": "10k"}, lock_timeout_seconds=0.3)
        proc = run("status", "--check", "--session", base["session_id"], home=private_home)
        assert proc.returncode == 1 and "Used 18.5k of 10k tokens." in proc.stderr
