"""Two machines (two HOMEs) in one team, with the real Claude Code against the fake API."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunClaude
from tests.e2e.fake_api import FakeAnthropic
from tests.team.test_team_sync import joined, ledger_of, local_totals, server_totals
from tests.test_cli import run
from tokenbudget import claude_settings
from tokenbudget.team import db, schema

pytestmark = pytest.mark.e2e


def settings() -> dict[str, Any]:
    return {"hooks": claude_settings.desired_hooks(sys.executable)}


def test_a_team_day_used_up_on_one_machine_refuses_the_next_prompt_on_the_other(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path,
    pg_dsn: str,
) -> None:
    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
    ann, bob = private_home, tmp_path / "bob home"
    bob.mkdir()
    (bob / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    bob_env = {"HOME": str(bob), "TOKENBUDGET_HOME": str(bob / "tb state")}
    joined(ann, pg_dsn, "ann@a")
    joined(bob, pg_dsn, "bob@b")
    assert run("budget", "set", "daily", "1k", "--team", home=ann).returncode == 0
    first = run_claude("Say hello.", settings=settings())
    assert first.proc.returncode == 0, first.proc.stderr[-2000:]
    assert fake_api.total_tokens() > 1000
    # Her Stop hook read the turn's last response (it waits for it when Claude Code has not
    # written it yet) and said the team's day is used up.
    stops = [said for kind, hook, said in _hooks_said(ann) if kind == "hook_success"
             and hook == "Stop"]
    assert stops and "the team's daily budget is used up" in stops[-1], _hooks_said(ann)
    # Her hooks start a detached sync that pushes what they recorded: a bounded wait until the
    # server holds all of it (an empty outbox alone would also pass before anything is
    # recorded).
    used = fake_api.total_tokens()
    for _ in range(300):
        if local_totals(ann)[0] == used and server_totals(pg_dsn)[0] == used:
            break
        time.sleep(0.1)
    assert (local_totals(ann)[0], server_totals(pg_dsn)[0]) == (used, used), (
        f"ann's usage did not reach the server: outbox {ledger_of(ann)['outbox']}")
    synced = run("team", "sync", home=bob)  # bob's machine fetches the totals
    assert synced.returncode == 0, synced.stderr
    cache = (bob / "tb state" / "team-cache.json").read_text()
    served = len(fake_api.requests)
    second = run_claude("Say hello too.", settings=settings(), env=bob_env)
    # The refusal has failed here now and then (not reproduced on demand): say what each side saw.
    assert len(fake_api.requests) == served, (
        f"the refused prompt reached the API; bob's sync said {synced.stdout!r}; his cache"
        f" before the prompt: {cache}; after: {_read(bob / 'tb state' / 'team-cache.json')};"
        f" state: {_read(bob / 'tb state' / 'team-state.json')}; his hooks said:"
        f" {_hooks_said(bob)}; stderr: {second.proc.stderr[-1000:]}")
    assert second.output is not None, second.proc.stderr[-2000:]
    text = str(second.output.get("result", ""))
    assert "blocked by hook" in text and "the team's daily budget is used up" in text


def _read(path: Path) -> str:
    try:
        return path.read_text()[:2000]
    except OSError as e:
        return f"({e})"


def _hooks_said(home: Path) -> list[tuple[Any, Any, Any]]:
    """Each hook attachment in the transcripts under `home`: its kind, hook and what it said."""
    said = []
    for path in sorted((home / ".claude" / "projects").rglob("*.jsonl")):
        for raw in path.read_text().splitlines():
            a = json.loads(raw).get("attachment") or {}
            if "hook" in str(a.get("type", "")):
                said.append((a.get("type"), a.get("hookName"),
                             a.get("stdout") or a.get("content")))
    return said
