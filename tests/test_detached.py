"""A command hook under a busy lock answers first and leaves its commit to a detached child
(tokenbudget/detached.py): the real hook script, the real lock, real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import truth_usage
from tests.test_hook import (
    REPO,
    _append_request,
    run_hook,
    session,
    session_tokens,
    set_budgets,
)


@contextlib.contextmanager
def held(private_home: Path) -> Iterator[None]:
    """The ledger lock held by this process, as another session's commit would hold it."""
    from filelock import FileLock

    with FileLock(str(private_home / "tb state" / "ledger.json.lock")):
        yield


def started(private_home: Path, **config: Any) -> tuple[dict[str, str], int]:
    """A session recorded, far from its budget; its tokens so far."""
    base = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "1000M"}, **config)
    assert run_hook("SessionStart", base)[0] == 0
    total = truth_usage("loop").total
    assert session_tokens(private_home, base["session_id"]) == total
    return base, total


def pending(sid: str | None = None) -> list[str]:
    from tokenbudget import detached

    return detached.pending(sid)


def child_pid(private_home: Path, sid: str) -> int:
    marker = private_home / "tb state" / "pending" / sid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = marker.read_text() if marker.exists() else ""
        if text.strip():
            return int(text)
        time.sleep(0.01)
    raise AssertionError("no pending child named")


def waited(sid: str, seconds: float = 20) -> None:
    from tokenbudget import detached

    assert detached.wait(seconds, sid) == []


def test_a_busy_lock_answers_at_once_and_a_detached_child_commits(private_home: Path) -> None:
    base, total = started(private_home, lock_timeout_seconds=30)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        t0 = time.monotonic()
        rc, out, err = run_hook("PostToolUse", base)
        elapsed = time.monotonic() - t0
        # Answered without waiting for the lock (30 s), nor for the child: it is still pending
        # after the hook's process ended and its pipes closed.
        assert (rc, out, err) == (0, {}, "")
        assert elapsed < 20, elapsed
        assert pending() == [sid]
        marker = private_home / "tb state" / "pending" / sid
        assert stat.S_IMODE(marker.stat().st_mode) == 0o600
        assert stat.S_IMODE(marker.parent.stat().st_mode) == 0o700
        assert session_tokens(private_home, sid) == total  # not recorded yet
    waited(sid)
    assert session_tokens(private_home, sid) == total + 6000
    assert not marker.exists()  # the child let it go
    log = private_home / "tb state" / "tokenbudget.log"
    assert not log.exists() or "not obtained" not in log.read_text()


def test_a_session_end_under_a_busy_lock_answers_at_once_and_its_child_records_it(
    private_home: Path,
) -> None:
    """Claude Code gives SessionEnd hooks about 1.5 s before it exits: without a child, one
    gives up on the lock after 0.5 s and leaves the session's last usage for a later hook."""
    base, total = started(private_home, lock_timeout_seconds=30)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 1000)
    with held(private_home):
        assert run_hook("SessionEnd", {**base, "reason": "exit"}) == (0, {}, "")
        assert pending() == [sid]
    waited(sid)
    assert session_tokens(private_home, sid) == total + 1000


def test_a_quiet_lock_commits_in_the_hook_itself(private_home: Path) -> None:
    base, total = started(private_home)
    _append_request(base["transcript_path"], 1, 6000)
    assert run_hook("PostToolUse", base)[:2] == (0, {})
    assert session_tokens(private_home, base["session_id"]) == total + 6000
    assert not (private_home / "tb state" / "pending").exists()


def test_a_call_finding_a_commit_pending_hands_its_news_on_to_it(private_home: Path) -> None:
    base, total = started(private_home, lock_timeout_seconds=30)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        assert run_hook("PostToolUse", base)[:2] == (0, {})
        pid = child_pid(private_home, sid)
        for n in (2, 3):
            _append_request(base["transcript_path"], n, 700)
            t0 = time.monotonic()
            rc, out, err = run_hook("PostToolUse", {**base, "tool_use_id": f"toolu_{n}"})
            # Answered at once too, and no second child: the pending one records it.
            assert (rc, out, err) == (0, {}, "") and time.monotonic() - t0 < 20
            assert pending() == [sid] and child_pid(private_home, sid) == pid
        assert session_tokens(private_home, sid) == total
    waited(sid)
    assert session_tokens(private_home, sid) == total + 7400
    assert run_hook("Stop", base)[:2] == (0, {})
    assert session_tokens(private_home, sid) == total + 7400  # nothing twice


def test_a_child_that_gives_up_leaves_the_news_for_the_next_hook(private_home: Path) -> None:
    base, total = started(private_home, lock_timeout_seconds=1)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        assert run_hook("PostToolUse", base)[:2] == (0, {})
        _append_request(base["transcript_path"], 2, 700)
        assert run_hook("PostToolUse", {**base, "tool_use_id": "toolu_2"})[:2] == (0, {})
        # Held longer than the child waits for it (the lock bound, 1 s here): it gives up,
        # says why in the log, and leaves the news unread, as a call that misses the lock does.
        waited(sid)
    assert session_tokens(private_home, sid) == total
    log = (private_home / "tb state" / "tokenbudget.log").read_text()
    assert "PostToolUse: its usage was not recorded after its answer (the ledger lock" in log
    assert run_hook("Stop", base)[:2] == (0, {})
    assert session_tokens(private_home, sid) == total + 6700


def test_the_sessions_next_hook_committing_first_counts_nothing_twice(private_home: Path) -> None:
    """The child's commit (hook._commit_later on the change its parent prepared) landing after
    the session's next hook committed the same news and more: its change went stale (its own
    session's records moved), is worked out again on the ledger as it is, and finds nothing
    left to read. Run in this process for the order to be certain; the child runs the same."""
    import json

    from tokenbudget import hook

    base, total = started(private_home)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 6000)
    later: list[Any] = []
    assert hook.handle("PostToolUse", json.dumps(base).encode(), later=later) == {}
    assert len(later) == 1 and session_tokens(private_home, sid) == total
    _append_request(base["transcript_path"], 2, 700)
    assert run_hook("PostToolUse", {**base, "tool_use_id": "toolu_2"})[:2] == (0, {})
    assert session_tokens(private_home, sid) == total + 6700
    later[0]()
    assert session_tokens(private_home, sid) == total + 6700
    from tests.test_hook import ledger

    # Both calls' events are recorded as seen: the stale one's too, worked out again.
    assert len(ledger(private_home)["events"]) == 3  # with the SessionStart's


def test_a_child_killed_while_it_waits_leaves_the_news_for_the_next_hook(
    private_home: Path,
) -> None:
    base, total = started(private_home, lock_timeout_seconds=30)
    sid = base["session_id"]
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        assert run_hook("PostToolUse", base)[:2] == (0, {})
        os.kill(child_pid(private_home, sid), signal.SIGKILL)
        waited(sid)  # its marker is let go with it
        _append_request(base["transcript_path"], 2, 700)
        # Not pending any more: the next call under the busy lock hands its commit on again.
        assert run_hook("PostToolUse", {**base, "tool_use_id": "toolu_2"})[:2] == (0, {})
        assert pending() == [sid]
    waited(sid)
    assert session_tokens(private_home, sid) == total + 6700


@pytest.mark.parametrize("step", ["append.opened", "append.half", "append.written",
                                  "append.synced"])
def test_a_child_killed_while_it_commits_loses_nothing_and_doubles_nothing(
    private_home: Path, tmp_path: Path, step: str
) -> None:
    from tokenbudget.store import CRASH_ENV

    base, total = started(private_home, lock_timeout_seconds=30)
    sid = base["session_id"]
    ready = tmp_path / "ready"
    env = {CRASH_ENV: f"{step}:pause", CRASH_ENV + "_READY": str(ready)}
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        assert run_hook("PostToolUse", base, env=env)[:2] == (0, {})
        assert not ready.exists()  # the hook itself committed nothing
    deadline = time.monotonic() + 20
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(int(ready.read_text()), signal.SIGKILL)  # the child, stopped at the step
    waited(sid)
    _append_request(base["transcript_path"], 2, 700)
    assert run_hook("PostToolUse", {**base, "tool_use_id": "toolu_2"})[:2] == (0, {})
    assert session_tokens(private_home, sid) == total + 6700


def test_fail_closed_waits_for_the_lock_as_before(private_home: Path) -> None:
    base, total = started(private_home, lock_timeout_seconds=1, fail_closed=True)
    _append_request(base["transcript_path"], 1, 6000)
    with held(private_home):
        t0 = time.monotonic()
        rc, out, err = run_hook("PostToolUse", base)
        assert time.monotonic() - t0 >= 1
        assert rc == 0 and "not obtained" in err and "last committed" in out["systemMessage"]
    assert pending() == []
    assert session_tokens(private_home, base["session_id"]) == total


def test_without_fork_the_hook_waits_for_the_lock_as_before(private_home: Path) -> None:
    import json
    import subprocess

    base, total = started(private_home, lock_timeout_seconds=1)
    _append_request(base["transcript_path"], 1, 6000)
    code = "import os; del os.fork; from tokenbudget.hook import main; main()"
    with held(private_home):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-P", "-c", code, "PostToolUse"], cwd=REPO,
                           input=json.dumps(base).encode(), capture_output=True, timeout=30)
        assert time.monotonic() - t0 >= 1
    assert p.returncode == 0 and "last committed" in json.loads(p.stdout)["systemMessage"]
    assert pending() == []
    assert session_tokens(private_home, base["session_id"]) == total
