"""The decisions that cost money when wrong, each pinned by the behaviour a user relies on.

Each test here kills a mutant that survived the rest of the suite (bench/mutation.py): the
test's name says the behaviour, its docstring the bug it would let through. Usage goes in as
Claude Code writes it (transcript lines) and decisions come out of the hook (`hook.handle`) or
the CLI's JSON, so that the tests hold whatever the ledger and the engine look like inside.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.claude_lines import (
    MODEL,
    Session,
    cost_state_line,
    record,
    refused,
    reply_line,
    set_budgets,
)
from tokenbudget import ingest, sync, transcripts
from tokenbudget.budgets import Budget, parse_warn_at
from tokenbudget.cli import main
from tokenbudget.errors import ConfigError

# 2027-12-15 12:00 UTC: not in 2026, where every other test's data lies.
NOW = datetime(2027, 12, 15, 12, 0, tzinfo=UTC).timestamp()
APP, OTHER = "/home/dev/app", "/home/dev/other"
PER_TOKEN = 4e-6  # dollars per input token of MODEL


def _report(monkeypatch: pytest.MonkeyPatch, by: str = "session", now: float = NOW) -> Any:
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(now))
    out = CliRunner().invoke(main, ["report", "--by", by, "--json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def _session_row(report: Any, sid: str) -> dict[str, Any]:
    (row,) = [r for r in report["sessions"] if r["sessionId"] == sid]
    return dict(row)


# ---------------------------------------------------------------- 1. every budget is checked


def test_a_budget_that_does_not_apply_does_not_end_the_check_of_the_next(
    private_home: Path,
) -> None:
    """A /command budget for another command and another project's budget, listed first: the
    daily budget after them must still refuse (checking must not stop at the first that does
    not apply)."""
    app = Session(private_home, "s-app", APP)
    app.turn("p1", "work", NOW - 600, 8_000, 8_000)
    set_budgets(
        private_home,
        {"kind": "command", "name": "/review", "limit": "1k"},
        {"kind": "daily", "limit": "1k", "project": OTHER},
        {"kind": "daily", "limit": "10k"},
    )
    reason = refused(app.prompt("go on", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the daily budget is used up.")


# ---------------------------------------------------------------- 2, 3. command budgets mid-run


def test_a_command_budget_stops_its_command_mid_run(private_home: Path) -> None:
    """The running turn is found by its session and prompt id: a lookup that never finds it
    would let a /test run go on past its budget."""
    s = Session(private_home, "s-run", APP)
    s.turn("run-1", "/test --all", NOW - 300, 10_000, 10_000, 10_000)
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": "20k"})
    reason = refused(s.tool("run-1", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the /test budget is used up.")
    # A turn of something else in the same session is not the /test budget's business.
    s.turn("chat", "just talk", NOW - 100, 30_000)
    assert refused(s.tool("chat", NOW)) is None


@pytest.mark.parametrize(("limit", "unit"), [("20k", "tokens"), ("$0.10", "usd")])
def test_a_command_budget_measures_the_running_run_of_its_own_session(
    private_home: Path, limit: str, unit: str
) -> None:
    """Mid-run, a command budget measures this session's running turn, in the budget's own
    unit: not the last run started anywhere (another session's small run, begun later), and
    not a token limit counted in dollars (which would never block)."""
    big = Session(private_home, "s-big", APP)
    big.turn("big-run", "/test", NOW - 600, 10_000, 10_000, 10_000)  # 30k tokens, $0.12
    small = Session(private_home, "s-small", APP)
    small.turn("small-run", "/test", NOW - 300, 1_000)  # begun later: 1k tokens, $0.004
    record(NOW - 60, big, small)
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": limit})
    reason = refused(big.tool("big-run", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the /test budget is used up.")
    assert refused(small.tool("small-run", NOW)) is None


# ---------------------------------------------------------------- 4. what a budget applies to


def test_window_budgets_apply_to_slash_commands_and_command_budgets_to_theirs_only(
    private_home: Path,
) -> None:
    """A used-up 5-hour budget refuses a slash command too; a /review budget refuses /review
    and never another command."""
    s = Session(private_home, "s-cmd", APP)
    s.turn("r1", "/review", NOW - 1200, 9_000)  # /review takes 9k
    s.turn("t1", "/test", NOW - 900, 8_000)  # and /test 8k
    s.turn("c1", "chat", NOW - 600, 2_000)
    set_budgets(private_home, {"kind": "5h", "limit": "10k"})
    reason = refused(s.prompt("/test --fast", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the 5-hour budget is used up.")

    set_budgets(private_home, {"kind": "command", "name": "/review", "limit": "5k"})
    assert refused(s.prompt("/test --fast", NOW, pid="n1")) is None
    assert refused(s.prompt("plain words", NOW, pid="n2")) is None
    reason = refused(s.prompt("/review", NOW, pid="n3"))
    assert reason is not None and reason.startswith("tokenbudget: /review usually takes 9k")


# ---------------------------------------------------------------- 5. project scope


@pytest.mark.parametrize(
    "budget",
    [
        {"kind": "weekly", "limit": "10k", "project": APP},
        {"kind": "total", "limit": "10k", "project": APP},
        {"kind": "daily", "limit": "$0.04", "project": APP},
        {"kind": "project", "name": APP, "limit": "10k"},
        {"kind": "session", "limit": "10k"},
    ],
    ids=["weekly", "total", "daily-usd", "project", "session"],
)
def test_a_scoped_budget_blocks_only_where_it_was_used_up(
    private_home: Path, budget: dict[str, Any]
) -> None:
    """A budget of one project (or one session) counts only the usage there, and once used up
    there it must not refuse work in another project (or session)."""
    app = Session(private_home, "s-app", APP)
    app.turn("p1", "work", NOW - 900, 8_000)  # 8k tokens, $0.032
    other = Session(private_home, "s-other", OTHER)
    other.turn("q1", "work", NOW - 800, 5_000)  # with app's, past the limit: not counted
    record(NOW - 700, app, other)
    set_budgets(private_home, budget)
    assert refused(app.prompt("more", NOW - 600, pid="p2")) is None
    app.turn("p2", "more", NOW - 600, 4_000)  # 12k tokens, $0.048: used up
    record(NOW - 60, app)
    assert refused(other.prompt("more", NOW)) is None
    assert refused(app.prompt("more", NOW)) is not None


# ---------------------------------------------------------------- 6. dollars on a command


@pytest.mark.parametrize(("limit", "blocks"), [("$0.05", True), ("$1", False)])
def test_a_dollar_budget_on_a_command_expects_the_dollar_cost_of_its_runs(
    private_home: Path, limit: str, blocks: bool
) -> None:
    """The expected cost of a run of /test, for a dollar budget, is its runs' dollars (25k
    tokens cost $0.10 here), not their token count read as dollars."""
    s = Session(private_home, "s-usd", APP)
    s.turn("t1", "/test", NOW - 900, 25_000)
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": limit})
    reason = refused(s.prompt("/test", NOW))
    if blocks:
        assert reason is not None
        assert reason.startswith("tokenbudget: /test usually takes $0.10, more than its $0.05")
    else:
        assert reason is None


# ---------------------------------------------------------------- 7. a rewritten response


def test_a_response_rewritten_larger_counts_once_with_its_larger_usage(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude Code writes one response again with a larger usage (streaming): after each line,
    every budget holds the larger usage and its cost once (the delta: not new + old), and the
    report its larger usage field by field; with no cost-state to repair the totals."""
    s = Session(private_home, "s-rw", APP)
    at = NOW - 600
    set_budgets(
        private_home,
        *({"kind": kind, "limit": limit} for kind in ("daily", "total", "session")
          for limit in ("1M", "$100")),
    )

    def state() -> tuple[list[int], list[float]]:
        row = _session_row(_report(monkeypatch), s.sid)
        fields = [row["inputTokens"], row["outputTokens"], row["cacheReadTokens"]]
        out = CliRunner().invoke(main, ["status", "--json", "--session", s.sid])
        assert out.exit_code == 0, out.output
        return fields, [b["used"] for b in json.loads(out.output)["budgets"]]

    def used(tokens: int, dollars: float) -> list[float]:
        return [tokens, pytest.approx(dollars)] * 3

    s.turn("p1", "go", at)
    s.write(reply_line(s.sid, "m1", at + 1, APP, input_tokens=1000, output_tokens=10))
    assert state() == ([1000, 10, 0], used(1010, 1000 * 4e-6 + 10 * 20e-6))
    s.write(reply_line(s.sid, "m1", at + 2, APP, input_tokens=1000, output_tokens=500,
                       cache_read=2000))
    larger = ([1000, 500, 2000], used(3500, 1000 * 4e-6 + 500 * 20e-6 + 2000 * 0.2e-6))
    assert state() == larger
    # A smaller copy after it changes nothing.
    s.write(reply_line(s.sid, "m1", at + 3, APP, input_tokens=1000, output_tokens=20))
    assert state() == larger


# ---------------------------------------------------------------- 8. a model with no price


def test_a_model_with_no_price_is_priced_from_claude_codes_own_cost(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model missing from the price table takes the rate Claude Code's own cost implies:
    its later requests cost that rate times their tokens."""
    s = Session(private_home, "s-new-model", APP)
    s.write(reply_line(s.sid, "m1", NOW - 600, APP, input_tokens=1_000_000,
                       model="claude-future-9"))
    s.write(cost_state_line(s.sid, {"claude-future-9": (1_000_000, 0, 3.0)}))
    assert _session_row(_report(monkeypatch), s.sid)["totalCost"] == pytest.approx(3.0)
    s.write(reply_line(s.sid, "m2", NOW - 300, APP, input_tokens=500_000,
                       model="claude-future-9"))
    assert _session_row(_report(monkeypatch), s.sid)["totalCost"] == pytest.approx(4.5)
    # Other kinds of tokens at the ratios of every Claude price list: output 5x input, cache
    # writes 1.25x, cache reads 0.1x.
    s.write(reply_line(s.sid, "m3", NOW - 200, APP, output_tokens=100_000, cache_write=200_000,
                       cache_read=1_000_000, model="claude-future-9"))
    expected = 4.5 + 3e-6 * (5 * 100_000 + 1.25 * 200_000 + 0.1 * 1_000_000)
    assert _session_row(_report(monkeypatch), s.sid)["totalCost"] == pytest.approx(expected)


def test_an_unpriced_models_one_hour_cache_writes_cost_twice_its_input_rate(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate Claude Code's cost implies for a model with no price is spread over the
    kinds of tokens at Claude's ratios: a 1-hour cache write costs 2x an input token (a
    5-minute one 1.25x)."""
    s = Session(private_home, "s-new-model-1h", APP)
    s.write(reply_line(s.sid, "m1", NOW - 600, APP, input_tokens=1_000_000,
                       model="claude-future-9"))
    s.write(cost_state_line(s.sid, {"claude-future-9": (1_000_000, 0, 3.0)}))
    line = reply_line(s.sid, "m2", NOW - 300, APP, cache_write=300_000, model="claude-future-9")
    line["message"]["usage"]["cache_creation"] = {
        "ephemeral_5m_input_tokens": 100_000, "ephemeral_1h_input_tokens": 200_000}
    s.write(line)
    expected = 3.0 + 3e-6 * (1.25 * 100_000 + 2 * 200_000)
    assert _session_row(_report(monkeypatch), s.sid)["totalCost"] == pytest.approx(expected)


# ---------------------------------------------------------------- lesser ones


def test_a_transcript_that_vanishes_before_it_is_read_is_passed_over(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Claude Code deletes old transcripts: one listed and gone by the time sync reads it must
    not stop the others from being counted."""
    s = Session(private_home, "s-kept", APP)
    s.turn("p1", "go", NOW - 600, 1_234)
    ghost = s.path.parent / "0000-gone.jsonl"
    listed = transcripts.discover

    def with_a_ghost(dirs: Any) -> Any:
        yield ghost, "0000-gone", False
        yield from listed(dirs)

    monkeypatch.setattr(transcripts, "discover", with_a_ghost)
    sync.sync_all(sync.open_store(), now=NOW)
    assert _session_row(_report(monkeypatch), s.sid)["inputTokens"] == 1_234
    # Gone between the listing and the read: one error line, nothing else changes.
    reader = ingest.Ingestor(sync.open_store().snapshot())
    reader.ingest_file(ghost, "0000-gone", False)
    assert len(reader.result.errors) == 1 and reader.result.errors[0].startswith(str(ghost))
    assert "0000-gone" not in reader.L["sessions"]


def test_compacting_an_unpriced_request_adds_no_cost(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose price is unknown has no cost; compacting it must not invent one."""
    s = Session(private_home, "s-unpriced", APP)
    s.write(reply_line(s.sid, "m1", NOW - 3 * 3600, APP, input_tokens=700,
                       model="claude-unknown-1"))
    s.write(reply_line(s.sid, "m2", NOW - 3 * 3600 + 5, APP, input_tokens=300))
    before = _session_row(_report(monkeypatch, now=NOW - 3 * 3600 + 60), s.sid)  # not idle yet
    with sync.open_store().transaction() as ledger:
        assert ingest.compact(ledger, NOW) == 2
    after = _session_row(_report(monkeypatch), s.sid)
    costs = {m["modelName"]: m["cost"] for m in after["modelBreakdowns"]}
    assert costs == {"claude-unknown-1": 0.0, MODEL: pytest.approx(300 * PER_TOKEN)}
    assert after["modelBreakdowns"] == before["modelBreakdowns"]
    assert after["totalCost"] is None and after["costSource"] == "mixed"


def test_compacting_checks_every_transcript_after_a_missing_one(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session whose transcript has unread lines is not compacted (a larger copy of a counted
    response may be among them), even when another idle session's transcript is gone."""
    gone = Session(private_home, "s-gone", APP)
    gone.turn("g1", "go", NOW - 3 * 3600, 100)
    growing = Session(private_home, "s-growing", APP)
    growing.write(reply_line(growing.sid, "m1", NOW - 3 * 3600, APP, input_tokens=100))
    store = sync.open_store()
    sync.sync_all(store, now=NOW - 3 * 3600 + 60)
    os.unlink(gone.path)
    growing.write(reply_line(growing.sid, "m1", NOW - 3 * 3600 + 1, APP, input_tokens=300))
    with store.transaction() as ledger:
        assert next(iter(ledger["files"])) == str(gone.path)  # the missing one comes first
        ingest.compact(ledger, NOW)
    assert _session_row(_report(monkeypatch), growing.sid)["inputTokens"] == 300


def test_warn_at_takes_one_and_refuses_zero_and_below() -> None:
    """A warning threshold is above 0% and at most 100%."""
    assert Budget("daily", 100, warn_at=1).warn_at == 1.0
    assert parse_warn_at("100%") == parse_warn_at("1") == 1.0
    for bad in (0, -0.5):
        with pytest.raises(ConfigError, match="warn_at"):
            Budget("daily", 100, warn_at=bad)
    for text in ("0", "0%", "-5%", "101%"):
        with pytest.raises(ConfigError, match="warn_at must be above 0% and at most 100%"):
            parse_warn_at(text)


@pytest.mark.parametrize("order", ["session first", "daily first"])
def test_a_refusal_names_the_budget_most_over(private_home: Path, order: str) -> None:
    """With two budgets used up, the refusal names the one most over (daily at 300% here, not
    the session budget at 120%), whatever their order in the config."""
    earlier = Session(private_home, "s-earlier", APP)
    earlier.turn("e1", "work", NOW - 3600, 18_000)
    s = Session(private_home, "s-now", APP)
    s.turn("p1", "work", NOW - 600, 12_000)
    record(NOW - 60, earlier, s)
    budgets = [{"kind": "session", "limit": "10k"}, {"kind": "daily", "limit": "10k"}]
    set_budgets(private_home, *(budgets if order == "session first" else budgets[::-1]))
    reason = refused(s.prompt("more", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the daily budget is used up.")
    assert "Used 30k of 10k tokens." in reason


def test_hidden_usage_of_an_ended_session_is_read_past_a_missing_transcript(
    private_home: Path,
) -> None:
    """After /clear, the ended session's last cost-state (usage in no transcript line, such as
    a compaction) is read by the next session's hooks: every ended transcript of the folder is
    checked, not only those before the first one that is gone."""
    gone = Session(private_home, "s-gone", APP)
    gone.turn("g1", "go", NOW - 900, 100)
    ended = Session(private_home, "s-ended", APP)
    ended.turn("e1", "go", NOW - 600, 6_000)
    record(NOW - 500, gone, ended)
    os.unlink(gone.path)
    # Written by the ended process after its last hook: 5k tokens beyond its lines.
    ended.write(cost_state_line(ended.sid, {MODEL: (11_000, 0, 0.044)}))
    os.utime(ended.path, (NOW - 10, NOW - 10))
    set_budgets(private_home, {"kind": "daily", "limit": "10k"})
    after = Session(private_home, "s-after", APP)
    after.event("SessionStart", NOW, source="clear")
    reason = refused(after.prompt("hello", NOW))
    assert reason is not None and "Used 11.1k of 10k tokens." in reason  # 100 + 6k + 5k


def test_a_refusal_names_the_budget_a_command_would_exceed_most(private_home: Path) -> None:
    """Neither budget is used up yet: the refusal names the one the command would take furthest
    past its limit (/test's 60k against its 40k, 150%; not the daily's 30k + 60k of 80k, 113%,
    though more of the daily is used)."""
    s = Session(private_home, "s-most", APP)
    s.turn("t1", "/test", NOW - 86400, 60_000)  # yesterday: /test takes 60k
    s.turn("c1", "chat", NOW - 600, 30_000)
    record(NOW - 60, s)
    set_budgets(
        private_home,
        {"kind": "daily", "limit": "80k"},
        {"kind": "command", "name": "/test", "limit": "40k"},
    )
    reason = refused(s.prompt("/test", NOW))
    assert reason is not None
    assert reason.startswith("tokenbudget: /test usually takes 60k, more than its 40k budget")


def test_a_window_budget_a_command_would_exceed_is_named_as_such(private_home: Path) -> None:
    """A 5-hour budget that /test (60k) would take past its 40k is "would be exceeded", with
    what it has used: the wording for a command budget no run fits in is for those alone."""
    s = Session(private_home, "s-5h", APP)
    s.turn("t1", "/test", NOW - 86400, 60_000)  # yesterday: /test takes 60k
    s.turn("c1", "chat", NOW - 600, 10_000)
    record(NOW - 60, s)
    set_budgets(private_home, {"kind": "5h", "limit": "40k"})
    reason = refused(s.prompt("/test", NOW))
    assert reason is not None
    assert reason.startswith(
        "tokenbudget: the 5-hour budget would be exceeded.\nUsed 10k of 40k tokens; this command"
        " is expected to take about 60k more."
    )


def test_a_project_5h_budget_sees_its_activity_beside_another_projects(
    private_home: Path,
) -> None:
    """The 5-hour block of a project's budget starts at that project's first activity, even when
    another project was busy in the same quarter hour (and was read first)."""
    morning = datetime(2027, 12, 15, 8, 10, tzinfo=UTC).timestamp()
    other = Session(private_home, "s-other", OTHER)
    other.turn("q1", "work", morning, 1_000)  # 08:10
    app = Session(private_home, "s-app", APP)
    app.turn("p1", "work", morning + 120, 8_000)  # 08:12: the block runs 08:00 to 13:00
    app.turn("p2", "more", morning + 8_400, 4_000)  # 10:30
    record(morning + 9_000, other, app)
    set_budgets(private_home, {"kind": "5h", "limit": "10k", "project": APP})
    reason = refused(app.prompt("again", NOW))  # 12:00
    assert reason is not None and "Used 12k of 10k tokens." in reason


def test_status_shows_a_command_budget_by_its_last_run_and_nothing_left_when_over(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`status` measures a command budget by the command's latest run (not its first, nor its
    biggest), 0 for a command never run, and a used-up budget has 0 remaining."""
    s = Session(private_home, "s-status", APP)
    s.turn("t1", "/test", NOW - 900, 30_000)
    s.turn("t2", "/test", NOW - 300, 5_000)  # the latest run
    set_budgets(
        private_home,
        {"kind": "command", "name": "/test", "limit": "50k"},
        {"kind": "command", "name": "/lint", "limit": "50k"},
        {"kind": "total", "limit": "10k"},
    )
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(NOW))
    monkeypatch.chdir(private_home)
    out = CliRunner().invoke(main, ["status", "--json"])
    assert out.exit_code == 0, out.output
    rows = {b["budget"]: b for b in json.loads(out.output)["budgets"]}
    assert rows["command /test"]["used"] == 5_000
    assert rows["command /lint"]["used"] == 0
    assert (rows["total"]["used"], rows["total"]["remaining"]) == (35_000, 0)


def test_a_dollar_session_budget_of_a_session_not_yet_recorded_allows(private_home: Path) -> None:
    """A session's first prompt, before any of its usage is recorded, has used $0 of it."""
    s = Session(private_home, "s-new", APP)
    set_budgets(private_home, {"kind": "session", "limit": "$1"})
    assert s.prompt("hello", NOW) == {}


def test_a_response_with_no_usage_leaves_the_session_priced(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A response that used nothing (an aborted request) of a model with no price costs $0:
    it does not make the session's cost unknown."""
    s = Session(private_home, "s-zero", APP)
    s.turn("p1", "go", NOW - 600, 1_000)
    s.write(reply_line(s.sid, "m0", NOW - 500, APP, model="claude-unknown-1"))
    row = _session_row(_report(monkeypatch), s.sid)
    assert row["totalCost"] == pytest.approx(1_000 * PER_TOKEN)


def test_a_rewritten_response_counts_toward_its_running_command(private_home: Path) -> None:
    """A response rewritten larger mid-run adds its growth to the turn that made it: a /test
    budget sees it and stops the run."""
    s = Session(private_home, "s-grow", APP)
    s.turn("run-1", "/test", NOW - 300)
    s.write(reply_line(s.sid, "m1", NOW - 299, APP, input_tokens=15_000))
    set_budgets(private_home, {"kind": "command", "name": "/test", "limit": "20k"})
    assert refused(s.tool("run-1", NOW - 200)) is None
    s.write(reply_line(s.sid, "m1", NOW - 298, APP, input_tokens=15_000, output_tokens=10_000))
    answer = s.tool("run-1", NOW)
    reason = refused(answer)
    assert reason is not None and "Used 25k of 20k tokens." in reason


def test_an_allow_lets_through_its_own_turn_and_no_later_one(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tokenbudget allow` lets one refused prompt through, and that turn's tool calls go on;
    a tool call of any other turn of the session is stopped, whatever its prompt id (one that
    sorts after the allowed one's too)."""
    s = Session(private_home, "s-allow", APP)
    s.turn("p1", "work", NOW - 600, 8_000)
    set_budgets(private_home, {"kind": "daily", "limit": "5k"})
    assert refused(s.prompt("go on", NOW - 120, pid="p-0")) is not None
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(NOW - 90))
    assert CliRunner().invoke(main, ["allow"]).exit_code == 0
    assert refused(s.prompt("go on", NOW - 60, pid="p-a")) is None
    assert refused(s.tool("p-a", NOW - 30)) is None
    reason = refused(s.tool("p-b", NOW))
    assert reason is not None and reason.startswith("tokenbudget: the daily budget is used up.")
