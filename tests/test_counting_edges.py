"""Edges of the counting rule (ingest.py) that bench/mutation.py found unguarded.

Each test names the behaviour it protects: the usage and dollars a budget reads, however and
whenever Claude Code's transcripts reach the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.claude_lines import MODEL, Session, cost_state_line, reply_line
from tests.helpers import install_fixture
from tokenbudget import sync
from tokenbudget.ledger import Ledger
from tokenbudget.schema import HOUR_COST, HOUR_TOKENS

NOW = 1795887600.0


def _hours(ledger: Ledger, field: int) -> float:
    return sum(c[field] for cells in ledger["hours"].values() for c in cells.values())


def test_skipped_lines_add_up_across_reads(private_home: Path) -> None:
    """A bad line in each of two reads: the ledger counts two (doctor reports the sum)."""
    s = Session(private_home, "s-bad", "/home/dev/app")
    s.turn("p1", "work", NOW - 600, 1_000)
    store = sync.open_store()
    for n in (1, 2):
        with s.path.open("a") as f:
            f.write("not json at all\n")
        sync.sync_all(store, now=NOW)
        assert store.snapshot()["skipped"] == {"not JSON": n}


def test_a_transcript_replaced_by_another_file_of_the_same_size_is_read_again(
    private_home: Path,
) -> None:
    """Same path, same size, another file (a restore, an editor's save-and-rename): what it
    holds is read, not taken for the file already read because the size matches."""
    s = Session(private_home, "s-same", "/home/dev/app")
    s.turn("p1", "work", NOW - 600, 1_000)
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    text = s.path.read_text()
    other = s.path.with_name("other.tmp")
    other.write_text(text.replace("p1-m1", "p1-m2"))  # another response, as many bytes
    assert other.stat().st_size == s.path.stat().st_size
    os.replace(other, s.path)
    sync.sync_all(store, now=NOW)
    assert _hours(store.snapshot(), HOUR_TOKENS) == 2_000


def test_a_subagent_line_written_after_the_session_total_costs_what_it_would_in_order(
    private_home: Path, tmp_path: Path
) -> None:
    """The total already counted the late response as usage in no line; when its line comes,
    that usage and its dollars come off again: the dollars a budget reads are those of the
    files read whole."""
    install_fixture("agent", private_home / ".claude")
    agent = next((private_home / ".claude" / "projects").rglob("agent-*.jsonl"))
    whole_store = sync.open_store(path=tmp_path / "whole.json")
    sync.sync_all(whole_store, now=NOW)
    full = agent.read_bytes()
    lines = full.splitlines(keepends=True)
    cut = max(i for i, line in enumerate(lines) if b'"type":"assistant"' in line)
    agent.write_bytes(b"".join(lines[: cut - 1]))  # the subagent's response not on disk yet
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    agent.write_bytes(full)
    sync.sync_all(store, now=NOW)
    whole = _hours(whole_store.snapshot(), HOUR_COST)
    assert whole > 0
    assert _hours(store.snapshot(), HOUR_COST) == pytest.approx(whole, rel=1e-9)


def test_claude_codes_total_for_an_unpriced_model_that_used_nothing_sets_no_rate(
    private_home: Path,
) -> None:
    """Claude Code's total lists a model we have no price for, with no tokens and $0 (an
    aborted request): no rate can be implied from it (0 / 0), and the session's dollars stay
    those of its priced requests."""
    s = Session(private_home, "s-zero-total", "/home/dev/app")
    s.turn("p1", "go", NOW - 600, 1_000)
    s.write(reply_line(s.sid, "m0", NOW - 500, s.cwd, model="claude-unknown-1"))
    s.write(cost_state_line(s.sid, {MODEL: (1_000, 0, 0.004), "claude-unknown-1": (0, 0, 0.0)}))
    store = sync.open_store()
    report = sync.sync_all(store, now=NOW)
    assert not report.errors
    ledger = store.snapshot()
    assert "claude-unknown-1" not in ledger["rates"]
    assert _hours(ledger, HOUR_COST) == pytest.approx(0.004)


def test_a_rate_is_implied_from_claude_codes_cost_of_a_single_token(private_home: Path) -> None:
    """A model we have no price for, one input token, and Claude Code's total for it ($0.00001):
    that is its rate, so a later request of it (after the total) is priced at it."""
    s = Session(private_home, "s-one-token", "/home/dev/app")
    s.turn("p1", "go", NOW - 600)
    s.write(reply_line(s.sid, "m1", NOW - 599, s.cwd, input_tokens=1, model="claude-unknown-1"))
    s.write(cost_state_line(s.sid, {"claude-unknown-1": (1, 0, 0.00001)}))
    s.write(reply_line(s.sid, "m2", NOW - 300, s.cwd, input_tokens=1_000,
                       model="claude-unknown-1"))
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    assert _hours(store.snapshot(), HOUR_COST) == pytest.approx(0.00001 * 1_001)


def test_a_late_line_takes_its_usage_back_from_its_own_turns_correction(
    private_home: Path,
) -> None:
    """Two turns in one bucket, each with usage Claude Code's total counted before any line
    showed it: when the second turn's line comes, its usage comes off the second turn's
    correction, not the first's. Each turn (a per-command budget's run) keeps what it made,
    whatever order the lines reached the disk in."""
    s = Session(private_home, "s-late", "/home/dev/app")
    t0 = NOW - 600  # both turns inside one 15-minute bucket
    s.turn("p1", "/first", t0, 100)
    s.write(cost_state_line("s-late", {MODEL: (150, 0, 150 * 4e-6)}))  # 50 in no line
    s.turn("p2", "/second", t0 + 60, 200)
    s.write(cost_state_line("s-late", {MODEL: (380, 0, 380 * 4e-6)}))  # 30 more in no line
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    s.write(reply_line("s-late", "p2-late", t0 + 60.5, s.cwd, input_tokens=30))  # those 30
    sync.sync_all(store, now=NOW)
    first, second = store.turn_usage("s-late", "p1"), store.turn_usage("s-late", "p2")
    assert first is not None and second is not None
    assert (first[1], second[1]) == (150, 230)
    assert _hours(store.snapshot(), HOUR_TOKENS) == 380


def test_a_single_token_only_claude_codes_total_knows_is_counted(private_home: Path) -> None:
    """Claude Code's total is one token above what the session's lines showed (a request in
    no line): that one token is counted, in the session and in the hour buckets."""
    s = Session(private_home, "s-one-more", "/home/dev/app")
    s.turn("p1", "work", NOW - 600, 1_000)
    s.write(cost_state_line(s.sid, {MODEL: (1_001, 0, 1_001 * 4e-6)}))
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    ledger = store.snapshot()
    assert _hours(ledger, HOUR_TOKENS) == 1_001
    assert _hours(ledger, HOUR_COST) == pytest.approx(1_001 * 4e-6)
