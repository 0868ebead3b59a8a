"""The replay of a budget over real Claude Code sessions agrees with the live hooks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunClaude
from tests.e2e.fake_api import FakeAnthropic
from tests.e2e.test_enforcement import kept_stops, set_budgets, settings

pytestmark = pytest.mark.e2e
LIMIT = 10_000  # the 4th request of a loop crosses it, in either run (each is ~3k tokens)


def simulate(home: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "HOME": str(home), "TOKENBUDGET_HOME": str(home / "tb state")}
    proc = subprocess.run(
        [sys.executable, "-m", "tokenbudget.cli", "budget", "simulate", *args, "--json"],
        capture_output=True, text=True, check=False, env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_the_replay_predicts_the_stop_and_the_refusal_the_hooks_then_make(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> None:
    # Without a budget: a loop of several requests, then one more prompt.
    free = run_claude("please LOOP 6", settings=settings(), cwd=tmp_path / "free")
    run_claude("Say hello.", settings=settings(), cwd=tmp_path / "free", args=["-c"])
    sizes = [r.total_tokens() for r in fake_api.requests]
    assert len(sizes) >= 6
    predicted = simulate(private_home, "session", str(LIMIT))
    (window,) = [w for w in predicted["windows"] if w["sessionId"] == free.session_id]
    spent = window["used"] - window["savedTokens"]
    assert window["refused"] == 1 and window["blockedAt"] is not None

    # The same under the budget, in a new session.
    set_budgets(private_home, {"kind": "session", "limit": LIMIT})
    before = len(fake_api.requests)
    bound = run_claude("please LOOP 6", settings=settings(), cwd=tmp_path / "bound")
    refused = run_claude("Say hello.", settings=settings(), cwd=tmp_path / "bound", args=["-c"])
    assert bound.output is not None and bound.output["terminal_reason"] == "hook_stopped"
    served = len(fake_api.requests) - before
    # The replay let through exactly as many requests as the hooks did, and refused the prompt
    # they refused.
    assert spent == sum(sizes[:served])
    stops = [(b["what"], b["session"]) for b in kept_stops()]
    assert stops == [("stopped", bound.session_id), ("refused", refused.session_id)]

    # Replayed over the budgeted session itself: nothing left to save, the same refusal.
    after = simulate(private_home, "session", str(LIMIT))
    (window,) = [w for w in after["windows"] if w["sessionId"] == bound.session_id]
    assert (window["savedTokens"], window["blockedAt"] is not None) == (0, True), window
    assert window["used"] == sum(r.total_tokens() for r in fake_api.requests[before:])
    assert window["refused"] == 1, window
