"""history.py: folded sessions keep their totals, and resumed ones count only what is new."""

from __future__ import annotations

import json
from pathlib import Path

from tests.claude_lines import Session, prompt_line, reply_line
from tests.helpers import (
    ALL_CASES,
    _transcript,
    install_fixture,
    ledger_total,
    session_totals,
    truth_usage,
)
from tokenbudget import history, sync
from tokenbudget.usage import Usage


def test_folded_sessions_keep_their_totals(private_home: Path) -> None:
    for case in ALL_CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    expected = sum((truth_usage(c) for c in ALL_CASES), Usage())
    # A week later every session is idle past retention: they fold into history.
    report = sync.sync_all(store, now=1795887600.0 + 7 * 86400)
    assert report.folded == len(list(private_home.glob(".claude/projects/*/*.jsonl")))
    ledger = store.snapshot()
    assert ledger["sessions"] == {} and ledger["keys"] == {} and ledger["files"] == {}
    assert ledger_total(store) == expected
    assert sum(p[0] for p in ledger["projects"].values()) == expected.total
    # Nothing new: a further sync reads nothing and counts nothing twice.
    report = sync.sync_all(store, now=1795887600.0 + 8 * 86400)
    assert report.files_read == 0
    assert ledger_total(store) == expected


def _plain_asks_again(private_home: Path) -> None:
    """The `plain` session, resumed: one more request, the same usage as its first."""
    path = _transcript(private_home, "plain")
    extra = [
        line.replace("msg_fake_00001", "msg_fake_00042").replace("req_fake_00001", "req_y")
        for line in path.read_text().splitlines(keepends=True)
        if '"type":"assistant"' in line
    ]
    with open(path, "a") as f:
        f.writelines(extra)


def test_a_folded_session_resumed_counts_only_what_is_new(private_home: Path) -> None:
    install_fixture("plain", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)
    _plain_asks_again(private_home)
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)
    assert ledger_total(store) == truth_usage("plain") + truth_usage("plain")


def test_a_fork_of_a_folded_session_does_not_count_the_copies_again(private_home: Path) -> None:
    projects = install_fixture("forked", private_home / ".claude") / "-home-dev-project"
    parent = "41481808-d348-404b-a183-6d629348bbef"
    fork = "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    moved = private_home / "not yet forked"
    moved.mkdir()
    (projects / f"{fork}.jsonl").rename(moved / f"{fork}.jsonl")  # not forked yet
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0, retention_days=0)  # the parent is folded
    assert parent not in store.snapshot()["sessions"]
    (moved / f"{fork}.jsonl").rename(projects / f"{fork}.jsonl")
    sync.sync_session(store, projects / f"{fork}.jsonl", fork)
    per_session = session_totals(store)
    assert per_session[parent] == truth_usage("forked", parent)
    assert per_session[fork] == truth_usage("forked", fork)


def test_a_folded_session_resumed_with_a_cost_state_counts_only_what_is_new(
    private_home: Path,
) -> None:
    # `claude -c` days later: the new process's cost-state covers the session's whole life.
    install_fixture("continued", private_home / ".claude")
    path = _transcript(private_home, "continued")
    lines = path.read_text().splitlines(keepends=True)
    first_exit = next(i for i, line in enumerate(lines) if '"cost-state"' in line)
    path.write_text("".join(lines[: first_exit + 1]))  # the first process only
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)  # folded: idle for days
    assert not store.snapshot()["sessions"]
    first = ledger_total(store)
    path.write_text("".join(lines))  # the second process, with its own cost-state
    sync.sync_all(store, now=1795887600.0 + 7 * 86400, retention_days=30)
    assert ledger_total(store) == truth_usage("continued")
    live = next(iter(store.snapshot()["sessions"].values()))
    assert live["x"] == {}  # nothing taken for usage in no line
    assert first.total < truth_usage("continued").total


def test_a_held_turn_in_a_resumed_session_whose_running_turn_was_folded(
    private_home: Path,
) -> None:
    # The running turn lived before the fold; the note continuing it comes after the resume.
    projects = install_fixture("agent", private_home / ".claude")
    sid = "8e945286-e779-410e-9516-f3c30e65f9e5"
    launching, note = "e1fb9928-8dba-4eae-9c5a-27858b8eb42a", "23cf6c6f-b517-4d6b-bc2c-b7940b565cbd"
    main = next(projects.glob(f"*/{sid}.jsonl"))
    (agent,) = projects.glob(f"*/{sid}/subagents/agent-*.jsonl")
    lines = main.read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if "<task-notification>" in line)
    agent_text = agent.read_text().replace(launching, note)
    agent.unlink()
    main.write_text("".join(lines[:cut]))
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0 + 10 * 86400)  # folded
    assert not store.snapshot()["sessions"]
    main.write_text("".join(lines))
    agent.write_text(agent_text)
    sync.sync_all(store, now=1795887600.0 + 10 * 86400 + 60)
    assert ledger_total(store) == truth_usage("agent")


def test_a_fold_cut_short_after_a_resume_keeps_the_earlier_period(private_home: Path) -> None:
    import copy

    install_fixture("plain", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)  # folded: the first period
    _plain_asks_again(private_home)
    sync.sync_all(store, now=1795887600.0 + 7 * 86400, retention_days=30)  # resumed: live
    # A fold killed between writing history and committing the ledger: the live period is
    # in both. It counts once, and the period folded before still counts.
    history.fold(copy.deepcopy(store.snapshot()), float("inf"))
    assert ledger_total(store) == truth_usage("plain") + truth_usage("plain")
    from click.testing import CliRunner

    from tokenbudget.cli import main

    result = CliRunner().invoke(main, ["report", "--json"])
    assert result.exit_code == 0, result.output
    total = json.loads(result.stdout)["totals"]["totalTokens"]
    assert total == (truth_usage("plain") + truth_usage("plain")).total


# --- a session folded while it is still being written -------------------------------------------
# With the clock ahead of the transcripts (or a session resumed after idling past retention),
# a session can fold between two lines of one response. Whatever the order of the fold and the
# reads, each response counts once.

T = 1795887600.0
LATER = T + 10 * 86400  # every session is idle past retention (2 days) by its own times


def test_a_response_whose_next_line_comes_after_the_fold_counts_once(private_home: Path) -> None:
    # Claude Code writes a line per content block of a response, each with its usage.
    s = Session(private_home, "s-fold-1", "/home/dev/project")
    s.write(prompt_line(s.sid, "p1", "go", T, s.cwd),
            reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=10))
    s.event("Stop", LATER)
    store = sync.open_store()
    assert sync.sync_all(store, now=LATER).folded == 1
    s.write(reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=10))
    s.event("Stop", LATER)
    sync.sync_all(store, now=LATER)
    assert ledger_total(store) == Usage(1000, 10, 0, 0, 0)


def test_a_session_whose_last_line_is_half_written_does_not_fold(private_home: Path) -> None:
    # An older Claude Code's early line of a response held a placeholder output count; the
    # response's last line, larger, is half-written when the fold comes.
    s = Session(private_home, "s-fold-2", "/home/dev/project")
    last = json.dumps(reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000,
                                 output_tokens=500)) + "\n"
    s.write(prompt_line(s.sid, "p1", "go", T, s.cwd),
            reply_line(s.sid, "m1", T + 1, s.cwd, input_tokens=1000, output_tokens=1))
    with s.path.open("a") as f:
        f.write(last[:40])
    s.event("Stop", LATER)
    store = sync.open_store()
    sync.sync_all(store, now=LATER)
    assert s.sid in store.snapshot()["sessions"]  # still being written: not idle
    with s.path.open("a") as f:
        f.write(last[40:])
    s.event("Stop", LATER)
    assert sync.sync_all(store, now=LATER).folded == 1  # read to its end: now it folds
    assert ledger_total(store) == Usage(1000, 500, 0, 0, 0)


def test_a_sync_that_resumes_a_session_after_reading_another_knows_its_folded_keys(
    private_home: Path,
) -> None:
    # One pass reads another session's news first (looking up its keys), then resumes this
    # one: the keys it counted before its fold must be known to that pass too.
    first = Session(private_home, "s-fold-a", "/home/dev/project")
    other = Session(private_home, "s-fold-0", "/home/dev/project")  # read first: sorted
    first.write(prompt_line(first.sid, "p1", "go", T, first.cwd),
                reply_line(first.sid, "m1", T + 1, first.cwd, input_tokens=1000))
    other.turn("q1", "go", T, 10)
    store = sync.open_store()
    assert sync.sync_all(store, now=LATER).folded == 2
    first.write(reply_line(first.sid, "m1", T + 1, first.cwd, input_tokens=1000))
    other.turn("q2", "go on", T + 60, 20)
    sync.sync_all(store, now=LATER)
    assert session_totals(store) == {first.sid: Usage(1000, 0, 0, 0, 0),
                                     other.sid: Usage(30, 0, 0, 0, 0)}


def test_a_session_start_reads_an_idle_session_on_before_folding_it(private_home: Path) -> None:
    # A session's last lines often come after its last hook (Claude Code writes its total as
    # it exits): with hooks alone, the next session's start reads them, then folds it.
    s = Session(private_home, "s-fold-3", "/home/dev/project")
    s.turn("p1", "go", T, 1000)
    s.event("Stop", LATER)
    s.write(reply_line(s.sid, "m2", T + 5, s.cwd, input_tokens=7))
    store = sync.open_store()
    Session(private_home, "s-fold-4", "/home/dev/project").event("SessionStart", LATER,
                                                                 source="startup")
    assert s.sid not in store.snapshot()["sessions"]
    assert session_totals(store)[s.sid] == Usage(1007, 0, 0, 0, 0)
