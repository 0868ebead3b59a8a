"""Crash mid-write: kill -9 a writer at random moments, and at the worst moments on purpose.

Read positions and totals are committed together, so after any kill a plain `sync` must bring
the ledger to exactly what the transcripts hold: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests import reliability_fixtures
from tests.helpers import install_fixture, truth_usage
from tests.reliability_fixtures import REPO, write_config
from tests.reliability_workers import ledger_usage
from tokenbudget import hook, sync

fast_state = reliability_fixtures.fast_state  # a fixture: TOKENBUDGET_HOME on tmpfs

KILLS = 200
NOW = 1795887600.0  # 2026-11-28 17:40 UTC, the day the fixtures were recorded
LOOP_SID = "85b37d12-d6e6-4358-8473-92d2406f53a7"
PLAIN_SID = "1c990dcd-31c2-4790-9439-44f4a5ce8413"


def crash_run(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability_workers", "crash", *args],
        cwd=REPO,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_kill_minus_nine_at_random_moments(fast_state: Path) -> None:
    # Each round: the history grows, a writer forks and runs sync_all in batches of two files
    # (a rebuild one round in ten), then keeps committing to a counter; it is SIGKILLed after
    # a random delay of up to 1.3 times a whole sync, so kills land in every phase.
    r = crash_run(str(KILLS), "7", "--rebuild", "--sessions", "8")
    assert r["kills"] == KILLS and r["writer_errors"] == 0
    assert r["problems"] == []  # after every kill: parses, never more than written, no drop
    assert r["final"] == r["truth"]
    assert r["wrong_sessions"] == {}
    assert r["counter"] == r["counter_expected"]
    assert r["tmp_leftovers"] == 0  # temp files of killed writers are swept


def die_at(target: str, body: str) -> None:
    """Run `body` in a new process where `target` ("module:attr.path") SIGKILLs the process
    when called; `die()` and the original `real_target` are there for `body` to use."""
    module, _, path = target.partition(":")
    *owner, attr = path.split(".")
    code = (
        "import os, signal, importlib\n"
        f"o = importlib.import_module({module!r})\n"
        + "".join(f"o = getattr(o, {name!r})\n" for name in owner)
        + "def die(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        f"real_target = getattr(o, {attr!r})\n"
        f"setattr(o, {attr!r}, die)\n" + body
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]


def two_sessions(home: Path) -> None:
    install_fixture("loop", home / ".claude")
    install_fixture("plain", home / ".claude", unique_ids=True)


def plain_event(home: Path, prompt_id: str) -> bytes:
    path = next((home / ".claude" / "projects").glob(f"*/{PLAIN_SID}.jsonl"))
    return json.dumps(
        {
            "session_id": PLAIN_SID,
            "transcript_path": str(path),
            "prompt": "go",
            "prompt_id": prompt_id,
        }
    ).encode()


def assert_budget_still_seen(home: Path) -> None:
    """The total budget (10k) is used up by the *other* session: a ledger that lost it would
    let this prompt through without a word."""
    first = hook.handle("UserPromptSubmit", plain_event(home, "a"), now=NOW)
    said = first.get("decision") == "block" or "not enforced" in first.get("systemMessage", "")
    assert said, f"the budget was silently not enforced: {first}"
    second = hook.handle("UserPromptSubmit", plain_event(home, "b"), now=NOW)
    assert second.get("decision") == "block", second
    assert ledger_usage() == truth_usage("loop") + truth_usage("plain")


def test_killed_while_replacing_a_corrupt_ledger(private_home: Path) -> None:
    two_sessions(private_home)
    sync.sync_all(sync.open_store(), now=NOW)
    state = Path(os.environ["TOKENBUDGET_HOME"])
    (state / "ledger.json").write_bytes(b'{"schema": 1, "sessions": "oops"}')
    write_config(state, {"kind": "total", "limit": "10k"})
    # Killed after the bad file was set aside, before the rebuilt ledger was written.
    die_at(
        "tokenbudget.store:JsonFileStore._checkpoint",
        "from tokenbudget import sync\nsync.sync_all(sync.open_store())\n",
    )
    kept = list(state.glob("ledger.json.corrupt-*"))
    assert kept and kept[0].read_bytes() == b'{"schema": 1, "sessions": "oops"}'
    assert_budget_still_seen(private_home)


def test_killed_in_the_middle_of_a_rebuild(private_home: Path) -> None:
    two_sessions(private_home)
    sync.sync_all(sync.open_store(), now=NOW)
    write_config(Path(os.environ["TOKENBUDGET_HOME"]), {"kind": "total", "limit": "10k"})
    # `tokenbudget rebuild` killed after it emptied the ledger, before it read a transcript.
    die_at(
        "tokenbudget.sync:_ingest_batch",
        "from tokenbudget import sync\nsync.rebuild(sync.open_store())\n",
    )
    assert_budget_still_seen(private_home)


LATER = NOW + 30 * 86400


def fold_killed_midway(home: Path) -> None:
    install_fixture("loop", home / ".claude")
    later = LATER
    # Folding writes the session to history.jsonl, then removes it from the ledger. Killed in
    # between, the session is in both; the next sync folds it again.
    die_at(
        "tokenbudget.history:_append",
        (
            "import tokenbudget.history as h\n"
            "from tokenbudget import sync\n"
            "real = real_target\n"
            "def append_then_die(lines):\n"
            "    real(lines)\n"
            "    die()\n"
            "h._append = append_then_die\n"
            f"sync.sync_all(sync.open_store(), now={later}, retention_days=2)\n"
        ),
    )


def test_killed_between_history_and_ledger_when_folding(private_home: Path) -> None:
    fold_killed_midway(private_home)
    # The session is in history.jsonl and still in the ledger: readers count it once.
    assert ledger_usage() == truth_usage("loop")


def test_killed_between_history_and_ledger_then_folded_again(private_home: Path) -> None:
    fold_killed_midway(private_home)
    sync.sync_all(sync.open_store(), now=LATER + 60, retention_days=2)
    assert ledger_usage() == truth_usage("loop")


def resumed_after_folding(home: Path) -> Path:
    """The `plain` session, folded as idle, then continued (`claude -c`) ten days later."""
    install_fixture("plain", home / ".claude")
    later = NOW + 10 * 86400
    sync.sync_all(sync.open_store(), now=later, retention_days=2)
    path = next((home / ".claude" / "projects").glob("*/*.jsonl"))
    more = [
        line.replace("msg_fake_", "msg_more_")
        .replace("req_fake_", "req_more_")
        .replace("2026-11-28", "2026-12-08")
        for line in path.read_text().splitlines(keepends=True)
        if '"type":"assistant"' in line
    ]
    with open(path, "a") as f:
        f.writelines(more)
    sync.sync_all(sync.open_store(), now=later + 3600, retention_days=2)
    return path


def test_a_session_resumed_after_folding_is_reported_whole(private_home: Path) -> None:
    resumed_after_folding(private_home)
    assert ledger_usage() == truth_usage("plain") + truth_usage("plain")


def test_a_session_resumed_after_folding_keeps_its_session_budget(private_home: Path) -> None:
    path = resumed_after_folding(private_home)
    write_config(
        Path(os.environ["TOKENBUDGET_HOME"]),
        {"kind": "session", "limit": str(truth_usage("plain").total + 100)},
    )
    answer = hook.handle(
        "UserPromptSubmit",
        json.dumps(
            {
                "session_id": PLAIN_SID,
                "transcript_path": str(path),
                "prompt": "more",
                "prompt_id": "x",
            }
        ).encode(),
        now=NOW + 10 * 86400 + 3600,
    )
    assert answer.get("decision") == "block", answer
