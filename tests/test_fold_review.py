"""Folds against resumes, subagents, compaction, rebuild, forks and the team outbox.

Each response counts once whatever folds between its lines; a transcript whose last line was
cut short long ago still folds. The tests marked xfail show what the fold still gets wrong: with
hooks alone, a line longer than a session's start reads keeps its session out of history until
a sync; and a resumed session's later, larger line of a response counted before the fold is
lost unless a cost-state brings it back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.claude_lines import Session, prompt_line, reply_line
from tests.helpers import ledger_total, session_totals
from tokenbudget import history, sync
from tokenbudget.hook import FOLD_READ_PER_FILE
from tokenbudget.usage import Usage

T = 1795887600.0
LATER = T + 10 * 86400  # every session is idle past retention (2 days) by its own times


def test_a_last_line_that_never_completes_does_not_keep_its_session_live(
    private_home: Path,
) -> None:
    # Claude Code killed while writing a line: the rest never comes.
    s = Session(private_home, "s-torn", "/home/dev/project")
    s.turn("p1", "go", T, *([100] * 50))
    with s.path.open("a") as f:
        f.write('{"type":"assistant","mess')
    store = sync.open_store()
    sync.sync_all(store, now=LATER)
    # Written a moment ago: its writer may still end the line, and the session stays live.
    assert s.sid in store.snapshot()["sessions"]
    old = time.time() - history.ABANDONED - 60  # the file's clock is the real one
    os.utime(s.path, (old, old))
    store = sync.open_store()
    for k in range(5):
        sync.sync_all(store, now=LATER + k * 30 * 86400)
    ledger = store.snapshot()
    assert ledger_total(store) == Usage(5000, 0, 0, 0, 0)
    assert ledger["keys"] == {}, "its request records are never compacted"
    assert s.sid not in ledger["sessions"], "nor is it folded"


@pytest.mark.xfail(strict=True, reason="a session's start reads 1 MiB and stops short of it")
def test_a_line_longer_than_a_starts_read_after_the_last_hook_lets_the_session_fold(
    private_home: Path,
) -> None:
    # A large tool result written after the session's last hook: with hooks alone, each
    # session's start reads FOLD_READ_PER_FILE of it, finds no line end, and keeps the session.
    s = Session(private_home, "s-big", "/home/dev/project")
    s.turn("p1", "go", T, 100)
    s.event("Stop", T + 5)
    big = prompt_line(s.sid, "p1", "x" * (FOLD_READ_PER_FILE + 1024), T + 6, s.cwd)
    del big["promptId"]
    s.write(big)
    for k in range(3):
        Session(private_home, f"s-start-{k}", "/home/dev/project").event(
            "SessionStart", LATER + k, source="startup")
    assert s.sid not in sync.open_store().snapshot()["sessions"]


@pytest.mark.xfail(strict=True, reason="README: what the fold kept stands (an undercount)")
def test_a_larger_later_line_of_a_folded_response_counts_its_difference(
    private_home: Path,
) -> None:
    # An older Claude Code's early line held a placeholder output count; the response's last
    # line comes after the fold.
    s = Session(private_home, "s-larger", "/home/dev/project")
    s.write(prompt_line(s.sid, "p1", "go", T, s.cwd),
            reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=1))
    store = sync.open_store()
    assert sync.sync_all(store, now=LATER).folded == 1
    s.write(reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=500))
    sync.sync_all(store, now=LATER)
    assert ledger_total(store) == Usage(1000, 500, 0, 0, 0)


def test_a_subagents_line_after_the_fold_counts_once(private_home: Path) -> None:
    s = Session(private_home, "s-sub", "/home/dev/project")
    s.turn("p1", "go", T, 10)
    sub = s.path.parent / s.sid / "subagents" / "agent-a1.jsonl"
    sub.parent.mkdir(parents=True)
    line = json.dumps({**reply_line(s.sid, "sm1", T + 2, s.cwd, input_tokens=300),
                       "isSidechain": True}) + "\n"
    sub.write_text(line)
    store = sync.open_store()
    assert sync.sync_all(store, now=LATER).folded == 1
    with sub.open("a") as f:
        f.write(line)  # the same response's next line
    s.turn("p2", "more", T + 60, 1)
    sync.sync_all(store, now=T + 100)
    assert ledger_total(store) == Usage(311, 0, 0, 0, 0)


def test_compacted_then_folded_then_resumed_twice_counts_once(private_home: Path) -> None:
    s = Session(private_home, "s-compact", "/home/dev/project")
    s.turn("p1", "go", T, 10, 20)
    store = sync.open_store()
    sync.sync_all(store, now=T + 3 * 3600)  # compacted, not folded
    assert store.snapshot()["keys"] == {}
    sync.sync_all(store, now=LATER)  # folded
    s.write(reply_line(s.sid, "p1-m2", T + 2, s.cwd, input_tokens=20))
    s.turn("p2", "more", T + 60, 1)
    sync.sync_all(store, now=T + 100)
    sync.sync_all(store, now=T + 100 + 3 * 3600)  # compacted again
    sync.sync_all(store, now=LATER + 86400)  # folded again
    s.write(reply_line(s.sid, "p1-m1", T + 1, s.cwd, input_tokens=10),
            reply_line(s.sid, "p2-m1", T + 61, s.cwd, input_tokens=1))
    sync.sync_all(store, now=T + 200)
    assert ledger_total(store) == Usage(31, 0, 0, 0, 0)


def test_a_rebuild_after_a_resumed_fold_gives_the_ledgers_totals(private_home: Path) -> None:
    a = Session(private_home, "s-rebuild-a", "/home/dev/project")
    a.write(prompt_line(a.sid, "p1", "go", T, a.cwd),
            reply_line(a.sid, "m1", T + 1, a.cwd, input_tokens=1000, output_tokens=1))
    b = Session(private_home, "s-rebuild-b", "/home/dev/project")
    b.turn("q1", "go", T, 10, 20)
    store = sync.open_store()
    sync.sync_all(store, now=LATER)
    a.write(reply_line(a.sid, "m1", T + 1, a.cwd, input_tokens=1000, output_tokens=1))
    a.turn("p2", "more", T + 100, 7)
    sync.sync_all(store, now=T + 200)  # resumed, live
    live = session_totals(store)
    sync.sync_all(store, now=LATER + 86400)  # folded again
    assert session_totals(store) == live == {a.sid: Usage(1007, 1, 0, 0, 0),
                                             b.sid: Usage(30, 0, 0, 0, 0)}
    sync.rebuild(store, now=LATER + 86400)
    assert session_totals(store) == live


def test_a_fork_of_a_folded_parent_and_the_parent_resumed_count_once(private_home: Path) -> None:
    p = Session(private_home, "s-parent", "/home/dev/project")
    p.write(prompt_line(p.sid, "p1", "go", T, p.cwd),
            reply_line(p.sid, "m1", T + 1, p.cwd, input_tokens=1000, output_tokens=1))
    store = sync.open_store()
    assert sync.sync_all(store, now=LATER).folded == 1
    f = Session(private_home, "s-fork", "/home/dev/project")
    copy = {**reply_line(f.sid, "m1", T + 1, f.cwd, input_tokens=1000, output_tokens=1),
            "requestSessionId": p.sid}
    f.write(prompt_line(f.sid, "f1", "go", T + 50, f.cwd), copy,
            reply_line(f.sid, "fm1", T + 51, f.cwd, input_tokens=5))
    p.write(reply_line(p.sid, "m1", T + 1, p.cwd, input_tokens=1000, output_tokens=1))
    p.turn("p2", "more", T + 60, 3)
    sync.sync_all(store, now=T + 100)
    assert session_totals(store) == {p.sid: Usage(1003, 1, 0, 0, 0), f.sid: Usage(5, 0, 0, 0, 0)}


def test_a_resumed_sessions_line_of_a_folded_response_is_not_sent_to_the_team_again(
    private_home: Path,
) -> None:
    s = Session(private_home, "s-team", "/home/dev/project")
    store = sync.open_store()
    with store.transaction() as ledger:
        ledger["team"] = "core"
    s.write(prompt_line(s.sid, "p1", "go", T, s.cwd),
            reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=10))
    sync.sync_all(store, now=LATER)
    with store.transaction() as ledger:
        assert [row[2:7] for row in ledger["outbox"].values()] == [[1000, 10, 0, 0, 0]]
        ledger["outbox"] = {}  # pushed
    s.write(reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=10))
    s.turn("p2", "more", T + 60, 3)
    sync.sync_all(store, now=T + 100)
    assert [row[2:7] for row in store.snapshot()["outbox"].values()] == [[3, 0, 0, 0, 0]]
