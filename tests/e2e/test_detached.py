"""The real Claude Code under a busy ledger lock: `tokenbudget install`'s command hooks answer
first and leave their commits to detached children (tokenbudget/detached.py)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ClaudeRun, RunClaude
from tests.e2e.fake_api import FakeAnthropic
from tests.e2e.test_enforcement import _site_paths, ledger, session_tokens, settled
from tokenbudget import claude_settings

pytestmark = pytest.mark.e2e

LOCK_BOUND = 10.0  # the config's lock_timeout_seconds: a hook that waited would show


def test_a_turn_under_a_busy_lock_is_answered_and_recorded_once_the_lock_is_free(
    run_claude: RunClaude, fake_api: FakeAnthropic, private_home: Path
) -> None:
    from filelock import FileLock

    from tokenbudget import detached

    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({
        "version": 1, "budgets": [{"kind": "daily", "limit": "1000M"}],
        "lock_timeout_seconds": LOCK_BOUND}))
    # `tokenbudget install`'s command hooks (the resident answerer commits after its answer
    # on its own: hook._commit_later).
    hooks = {"hooks": claude_settings.desired_hooks(sys.executable, _site_paths(), None)}
    runs: list[ClaudeRun] = []
    turn = threading.Thread(target=lambda: runs.append(run_claude("please LOOP 3",
                                                                  settings=hooks)))
    turn.start()
    try:
        # The session started and its prompt was answered (both with the lock free): from
        # the turn's first request on, another session holds the lock, for the whole turn.
        fake_api.wait_for(1)
        with FileLock(str(state / "ledger.json.lock")):
            held_at = time.monotonic()
            turn.join(timeout=120)
            held_for = time.monotonic() - held_at
            (run,) = runs
            assert run.proc.returncode == 0 and run.output is not None, run.proc.stderr[-2000:]
            assert len(fake_api.requests) == 4
            # No hook waited for the lock (one that did would have waited LOCK_BOUND s, and
            # said so): each answered, and left its commit to a child, still pending.
            assert held_for < LOCK_BOUND, held_for
            log = state / "tokenbudget.log"
            said = log.read_text() if log.exists() else ""
            assert "not obtained" not in said and "not recorded" not in said, said
            assert detached.pending(run.session_id) == [run.session_id]
            recorded = ledger(private_home)["sessions"].get(run.session_id)
            assert recorded is None or session_tokens(
                private_home, run.session_id) < fake_api.total_tokens()
    finally:
        turn.join(timeout=120)
    # The lock let go: the child records the turn, exactly what the fake API served.
    assert detached.wait(60, run.session_id) == []
    settled(private_home, run)
    assert session_tokens(private_home, run.session_id) == fake_api.total_tokens()
    log = state / "tokenbudget.log"
    assert not log.exists() or "not recorded" not in log.read_text()
