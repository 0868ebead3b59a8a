"""Budgets enforced on the real Claude Code, talking to the fake API on 127.0.0.1."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ClaudeRun, RunClaude, wait_for_session_end
from tests.e2e.fake_api import FakeAnthropic
from tests.helpers import stored_ledger
from tokenbudget import claude_settings
from tokenbudget.budgets import format_amount

pytestmark = pytest.mark.e2e


@functools.cache
def _site_paths() -> tuple[str, ...]:
    paths = claude_settings.site_paths(sys.executable)
    assert paths is not None, "this interpreter cannot start the hooks without site"
    return tuple(paths)


# Set to 1, every test here runs with `install --resident`'s hooks instead (by hand:
# TOKENBUDGET_E2E_RESIDENT=1 pytest tests/e2e/test_enforcement.py).
RESIDENT = os.environ.get("TOKENBUDGET_E2E_RESIDENT") == "1"


@pytest.fixture(autouse=True)
def _answerer_ends(private_home: Path) -> Any:
    """In resident mode, the test's answerer ends with it (within a second of its key going)."""
    yield
    if RESIDENT:
        from tokenbudget import resident

        resident.remove()


def settings() -> dict[str, Any]:
    """Our hooks, as `tokenbudget install` registers them, for this interpreter (started
    without `site`); in resident mode, as `install --resident` does."""
    answerer = None
    if RESIDENT:
        from tokenbudget import resident

        answerer = resident.load()
        if answerer is None:
            answerer = resident.create()
            resident.save(answerer)
    return {"hooks": claude_settings.desired_hooks(sys.executable, _site_paths(), answerer)}


def set_budgets(home: Path, *budgets: dict[str, Any]) -> None:
    cfg = home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"version": 1, "budgets": list(budgets)}))


def settled(home: Path, *runs: ClaudeRun) -> None:
    """Once the runs' SessionEnd hooks (async: Claude Code has exited by then) are done."""
    wait_for_session_end(home / "tb state" / "ledger.json", *runs)


def ledger(home: Path) -> dict[str, Any]:
    return stored_ledger(home / "tb state")


def session_tokens(home: Path, sid: str) -> int:
    s = ledger(home)["sessions"][sid]
    return sum(sum(m[:5]) for m in s["m"].values())


def kept_stops() -> list[dict[str, Any]]:
    from tokenbudget import stops

    return stops.read()


def result_text(run: ClaudeRun) -> str:
    assert run.output is not None, run.proc.stderr[-2000:]
    return str(run.output.get("result", ""))


def test_session_budget_refuses_the_next_prompt(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    set_budgets(private_home, {"kind": "session", "limit": "2k"})
    first = run_claude("Say hello.", settings=settings())
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    served = len(fake_api.requests)
    assert served == 1
    # The hooks recorded the turn: exactly what the fake served.
    settled(private_home, first)
    assert session_tokens(private_home, first.session_id) == fake_api.total_tokens()
    second = run_claude("And again.", settings=settings(), args=["-c"])
    assert len(fake_api.requests) == served, "the refused prompt reached the API"
    text = result_text(second)
    assert "blocked by hook" in text and "session budget is used up" in text
    assert "tokenbudget allow" in text


@pytest.mark.parametrize("tool", ["succeeds", "fails"])
def test_runaway_loop_is_stopped_at_the_tool_call(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path, tool: str
) -> None:
    limit = 10_000
    set_budgets(private_home, {"kind": "session", "limit": limit})
    # A failing tool fires PostToolUseFailure instead of PostToolUse: PostToolBatch stops it.
    fails = "; exit 1" if tool == "fails" else ""
    fake_api.bash_command = f"echo step {{step}} >> {tmp_path / 'ran.txt'}{fails}"
    run = run_claude("please LOOP forever", settings=settings())
    assert run.output is not None, run.proc.stderr[-2000:]
    assert run.output["terminal_reason"] == "hook_stopped"
    served = fake_api.requests
    totals = [sum(r.total_tokens() for r in served[: i + 1]) for i in range(len(served))]
    crossed = next(i for i, t in enumerate(totals) if t >= limit)
    # No request after the one whose response used the budget up: PostToolBatch of its tool call
    # stopped the turn.
    assert len(served) == crossed + 1, totals
    # The first hook after that response is PostToolBatch (no PreToolUse is registered): the
    # tool that response asked for ran, and nothing after it.
    stops = kept_stops()
    assert [(b["session"], b["event"]) for b in stops] == [(run.session_id, "PostToolBatch")]
    ran = (tmp_path / "ran.txt").read_text().splitlines()
    assert len(ran) == len(served)
    settled(private_home, run)
    assert session_tokens(private_home, run.session_id) == fake_api.total_tokens()


def test_a_stopped_print_mode_turn_is_told_by_status_check(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    # Per session: the second run, a new session, is stopped in its turn too, not refused.
    set_budgets(private_home, {"kind": "session", "limit": "10k"})
    sid = str(uuid.uuid4())  # as README's script pattern names the session
    run = run_claude("please LOOP 30", settings=settings(), args=["--session-id", sid])
    assert run.output is not None, run.proc.stderr[-2000:]
    assert run.proc.returncode == 0 and run.output["terminal_reason"] == "hook_stopped"
    assert run.session_id == sid
    # What `claude -p` shows of the stop, in JSON and in stream-json: nothing. The day this
    # fails, Claude Code shows the reason itself: say so in README ("In scripts").
    stream = run_claude(
        "please LOOP 30", settings=settings(), args=["--output-format", "stream-json", "--verbose"]
    )
    assert '"terminal_reason":"hook_stopped"' in stream.proc.stdout.replace(" ", "")
    assert "used up" not in run.proc.stdout + run.proc.stderr + stream.proc.stderr
    # Nor of a PostToolBatch stop (a PreToolUse stop's deny reason showed as the tool's result).
    assert "used up" not in stream.proc.stdout
    assert run.output["result"] == ""
    # The pattern README gives scripts.
    check = subprocess.run(
        [sys.executable, "-m", "tokenbudget.cli", "status", "--check", "--session", sid],
        capture_output=True, text=True, check=False, env=_cli_env(private_home),
    )
    assert check.returncode == 1, check.stderr
    assert f"the session budget stopped a turn of session {sid}" in check.stderr
    assert "tokenbudget: the session budget is used up." in check.stderr


def _cli_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "TOKENBUDGET_HOME": str(home / "tb state")}


def test_slash_command_budget_refuses_that_command_only(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / ".claude" / "commands").mkdir(parents=True)
    (project / ".claude" / "commands" / "test.md").write_text("Run the tests. please LOOP 2\n")
    learnt = run_claude("/test", settings=settings(), cwd=project)
    assert learnt.proc.returncode == 0, learnt.proc.stderr[-2000:]
    one_run = fake_api.total_tokens()
    assert one_run > 5_000
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": "5k"})
    before = len(fake_api.requests)
    refused = run_claude("/test --fast", settings=settings(), cwd=project)
    assert len(fake_api.requests) == before
    usual = format_amount(one_run, "tokens")
    assert f"/test usually takes {usual}, more than its 5k budget" in result_text(refused)
    plain = run_claude("Say hello.", settings=settings(), cwd=project)
    assert plain.proc.returncode == 0 and len(fake_api.requests) == before + 1
    assert "blocked" not in result_text(plain)


def test_two_sessions_at_once_share_a_daily_budget_exactly(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    runs: list[ClaudeRun] = []
    # Made once: with resident hooks, two threads making them at once could each make an
    # answerer's key, the second replacing the first that one session's hooks then name.
    hooks = settings()

    def go(name: str) -> None:
        runs.append(run_claude("please LOOP 3", settings=hooks, cwd=tmp_path / name))

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(runs) == 2 and all(r.proc.returncode == 0 for r in runs)
    settled(private_home, *runs)
    led = ledger(private_home)
    per_session = {
        sid: sum(sum(m[:5]) for m in s["m"].values()) for sid, s in led["sessions"].items()
    }
    assert set(per_session) == {r.session_id for r in runs}
    assert sum(per_session.values()) == fake_api.total_tokens()
    assert sum(cell[0] for hour in led["hours"].values() for cell in hour.values()) == (
        fake_api.total_tokens()
    )


def test_warn_mode_blocks_nothing_and_warns(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    run_claude("Say hello.", settings=settings())
    # Set once the first turn is over, so that the warning comes with the next prompt: given
    # at a -p run's Stop, Claude Code may exit before it writes the message anywhere.
    set_budgets(private_home, {"kind": "session", "limit": "2k", "mode": "warn"})
    second = run_claude("And again.", settings=settings(), args=["-c"])
    assert second.proc.returncode == 0
    assert len(fake_api.requests) == 2, "warn mode must not block"
    assert "blocked" not in result_text(second)
    # Claude Code shows a hook's systemMessage to the user and keeps it in the transcript.
    shown = [
        line["attachment"]["content"]
        for line in second.transcript()
        if line.get("type") == "attachment"
        and line["attachment"].get("type") == "hook_system_message"
    ]
    assert any("session budget is used up" in m for m in shown), shown
    assert sum("session budget is used up" in m for m in shown) == 1, "warned more than once"


def test_the_first_warning_comes_at_the_first_hook_past_the_threshold(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    limit = 40_000
    set_budgets(private_home, {"kind": "daily", "limit": limit})
    run = run_claude("please LOOP 30", settings=settings())
    assert run.output is not None and run.output["terminal_reason"] == "hook_stopped"
    served = fake_api.requests
    totals = [sum(r.total_tokens() for r in served[: i + 1]) for i in range(len(served))]
    crossed = next(i for i, t in enumerate(totals) if t >= 0.8 * limit)
    shown = [
        line["attachment"]["content"]
        for line in run.transcript()
        if line.get("type") == "attachment"
        and line["attachment"].get("type") == "hook_system_message"
        and "daily budget is at" in line["attachment"]["content"]
    ]
    # Said once, and with the usage of the response that crossed 80%: no later.
    assert len(shown) == 1, shown
    assert f"daily budget is at {100 * totals[crossed] // limit}%" in shown[0], (totals, shown)


def test_an_async_session_end_reads_what_claude_code_writes_as_it_exits(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    run = run_claude("please LOOP 2", settings=settings())
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    # Claude Code writes the session's cost-state line as it exits, after the Stop hook ran: only
    # SessionEnd, which nobody waits for (2.1.328 lets it finish after the exit), reads it.
    lines = run.transcript()
    assert lines[-1]["type"] == "cost-state", lines[-1]
    settled(private_home, run)
    assert session_tokens(private_home, run.session_id) == fake_api.total_tokens()
