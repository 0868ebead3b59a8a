"""Budgets enforced on the real Claude Code, talking to the fake API on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ClaudeRun, RunClaude
from tests.e2e.fake_api import FakeAnthropic
from tokenbudget import claude_settings

pytestmark = pytest.mark.e2e


def settings() -> dict[str, Any]:
    """Our hooks, as `tokenbudget install` registers them, for this interpreter."""
    return {"hooks": claude_settings.desired_hooks(sys.executable)}


def set_budgets(home: Path, *budgets: dict[str, Any]) -> None:
    cfg = home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"version": 1, "budgets": list(budgets)}))


def ledger(home: Path) -> dict[str, Any]:
    return json.loads((home / "tb state" / "ledger.json").read_text())


def session_tokens(home: Path, sid: str) -> int:
    s = ledger(home)["sessions"][sid]
    return sum(sum(m[:5]) for m in s["m"].values())


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
    # The Stop hook recorded the turn: exactly what the fake served.
    assert session_tokens(private_home, first.session_id) == fake_api.total_tokens()
    second = run_claude("And again.", settings=settings(), args=["-c"])
    assert len(fake_api.requests) == served, "the refused prompt reached the API"
    text = result_text(second)
    assert "blocked by hook" in text and "session budget is used up" in text
    assert "tokenbudget allow" in text


def test_runaway_loop_is_stopped_at_the_tool_call(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    limit = 10_000
    set_budgets(private_home, {"kind": "session", "limit": limit})
    fake_api.bash_command = f"echo step {{step}} >> {tmp_path / 'ran.txt'}"
    run = run_claude("please LOOP forever", settings=settings())
    assert run.output is not None, run.proc.stderr[-2000:]
    assert run.output["terminal_reason"] == "hook_stopped"
    served = fake_api.requests
    totals = [sum(r.total_tokens() for r in served[: i + 1]) for i in range(len(served))]
    crossed = next(i for i, t in enumerate(totals) if t > limit)
    # At most one request past the limit: the one that crossed it ends the turn.
    assert len(served) - 1 <= crossed + 1, totals
    # The tool of the stopping call did not run: one echo per earlier tool call only.
    ran = (tmp_path / "ran.txt").read_text().splitlines() if (tmp_path / "ran.txt").exists() else []
    assert len(ran) == len(served) - 1
    assert session_tokens(private_home, run.session_id) == fake_api.total_tokens()


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
    assert "/test budget would be exceeded" in result_text(refused)
    plain = run_claude("Say hello.", settings=settings(), cwd=project)
    assert plain.proc.returncode == 0 and len(fake_api.requests) == before + 1
    assert "blocked" not in result_text(plain)


def test_two_sessions_at_once_share_a_daily_budget_exactly(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    set_budgets(private_home, {"kind": "daily", "limit": "10M"})
    runs: list[ClaudeRun] = []

    def go(name: str) -> None:
        runs.append(run_claude("please LOOP 3", settings=settings(), cwd=tmp_path / name))

    threads = [threading.Thread(target=go, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(runs) == 2 and all(r.proc.returncode == 0 for r in runs)
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
    set_budgets(private_home, {"kind": "session", "limit": "2k", "mode": "warn"})
    run_claude("Say hello.", settings=settings())
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
