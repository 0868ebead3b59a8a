"""Forks counted where and when their usage happened (kills mutants of ingest.py's fork rule).

Each test names the behaviour it protects; bench/mutation.py found each one unguarded.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.helpers import FORK_CASES, install_fixture, session_totals, truth_usage
from tests.test_hook import run_hook
from tests.test_ingest import A, only_compacted
from tokenbudget import enforce, query, sync
from tokenbudget.ledger import BUCKET, Ledger
from tokenbudget.schema import (
    HOUR_TOKENS,
    M_USAGE,
    S_ADJUSTMENTS,
    S_MODELS,
    S_ORIGIN,
    S_TURNS,
    TURN_START,
)
from tokenbudget.store import Store

NOW = 1795887600.0


def _line_times(projects: Path) -> list[float]:
    times = []
    for path in projects.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            stamp = json.loads(line).get("timestamp") if line.strip() else None
            if isinstance(stamp, str):
                times.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
    return times


def _assert_in_their_time(ledger: Ledger, times: list[float]) -> None:
    first, last = int(min(times) // BUCKET), int(max(times) // BUCKET)
    assert all(first <= int(h) <= last for h in ledger["hours"]), sorted(ledger["hours"])
    in_hours = sum(c[HOUR_TOKENS] for cells in ledger["hours"].values() for c in cells.values())
    in_sessions = sum(sum(sum(m[M_USAGE]) for m in s[S_MODELS].values())
                      for s in ledger["sessions"].values())
    assert in_hours == in_sessions > 0


@pytest.mark.parametrize("case", FORK_CASES)
def test_a_forks_usage_is_in_the_buckets_of_its_own_time(case: str, private_home: Path) -> None:
    """Every token a fork is charged lies in a 15-minute bucket between the first and the last
    line of the transcripts: a daily or 5-hour budget counts it on the day it was used."""
    times = _line_times(install_fixture(case, private_home / ".claude"))
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    _assert_in_their_time(store.snapshot(), times)


def test_a_forks_hidden_usage_settled_late_is_in_the_bucket_of_its_own_time(
    private_home: Path, tmp_path: Path
) -> None:
    """A fork whose only work was /compact is charged its compaction once its parent's
    transcript turns up: in the bucket of the fork's activity, not at some other time."""
    project = private_home / ".claude" / "projects" / "-home-dev-project"
    only_compacted(project)
    (project / f"{A}.jsonl").rename(tmp_path / "parent.jsonl")
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    (tmp_path / "parent.jsonl").rename(project / f"{A}.jsonl")
    sync.sync_all(store, now=NOW)
    _assert_in_their_time(store.snapshot(), _line_times(project))


def test_a_team_member_sends_a_held_turns_usage_again_with_its_command(
    private_home: Path,
) -> None:
    """/helper's subagent is read before the prompt that launched it: its usage waits for the
    team under a held turn, then goes again under /helper once the prompt is read. Every
    request and correction in the outbox names the command it served."""
    install_fixture("fork-slash-agent", private_home / ".claude")
    store = sync.open_store()
    with store.transaction() as ledger:
        ledger["team"] = "core"
    sync.sync_all(store, now=NOW)
    outbox = store.snapshot()["outbox"]
    assert outbox and {row[-2] for row in outbox.values()} == {"/helper"}


def test_a_held_turns_correction_goes_to_the_team_again_with_the_command_once_it_is_read(
    private_home: Path,
) -> None:
    """A correction kept under a turn held for its subagent (read before the prompt) waits
    for the team; once a later sync reads the prompt, the correction goes again under the
    command it served, even when the outbox was pushed (emptied) in between."""
    projects = install_fixture("fork-slash-agent", private_home / ".claude")
    sid, turn = "f60de4ad-60e1-44d1-a881-eea48164349f", "fc96bff1-68f2-44bb-89c9-6fac768564c3"
    main = next(projects.glob(f"*/{sid}.jsonl"))
    whole = main.read_text()
    main.write_text("".join(whole.splitlines(keepends=True)[:5]))  # before /helper's prompt
    store = sync.open_store()
    with store.transaction() as ledger:
        ledger["team"] = "core"
    sync.sync_all(store, now=NOW)
    with store.transaction() as ledger:
        session = ledger["sessions"][sid]
        assert session[S_TURNS][turn][TURN_START] == 0  # held: its prompt is not read yet
        hour = int((NOW - 86400) // BUCKET)
        session[S_ADJUSTMENTS].append([hour, "claude-opus-5-5", 10, 0, 0, 0, 0, 0.001, turn])
        ledger["outbox"] = {}  # pushed
    main.write_text(whole)
    sync.sync_all(store, now=NOW)
    corrections = {k: row for k, row in store.snapshot()["outbox"].items()
                   if k.startswith("adj-")}
    assert [row[2:8] + row[-2:] for row in corrections.values()] == [
        [10, 0, 0, 0, 0, hour, "/helper", "/home/dev/project"]]


def test_a_subagent_launched_from_a_note_counts_for_the_command_the_note_continues(
    private_home: Path,
) -> None:
    """A /helper turn's notification launches a subagent, whose transcript is read first: its
    turn is held, then joins /helper's once the note is read. Every request and correction
    of the session then counts for /helper, none for a plain prompt."""
    projects = install_fixture("agent", private_home / ".claude")
    sid = "8e945286-e779-410e-9516-f3c30e65f9e5"
    launching, note = "e1fb9928-8dba-4eae-9c5a-27858b8eb42a", "23cf6c6f-b517-4d6b-bc2c-b7940b565cbd"
    main = next(projects.glob(f"*/{sid}.jsonl"))
    main.write_text(main.read_text().replace("please AGENT", "/helper AGENT"))
    (agent,) = projects.glob(f"*/{sid}/subagents/agent-*.jsonl")
    agent.write_text(agent.read_text().replace(launching, note))  # launched by the note's turn
    store = sync.open_store()
    sync.sync_all(store, now=NOW)  # the subagent is read first
    ledger = store.snapshot()
    assert ledger["sessions"][sid]["a"] == {note: launching}
    groups = query.group("command", query.cells(ledger, {}), UTC)
    assert [g.key for g in groups] == ["/helper"]


def _with_an_earlier_turn(main: Path, hidden: int) -> None:
    """Put a plain turn (prompt id sorting after every other of the session) before the
    transcript's first: its prompt, one response, and Claude Code's total then, `hidden` input
    tokens more than the response (usage in no line); the final total grows by as much."""
    lines = main.read_text().splitlines()
    first = next(i for i, ln in enumerate(lines) if json.loads(ln).get("type") == "user")
    reply = next(i for i, ln in enumerate(lines) if json.loads(ln).get("type") == "assistant")
    prompt = json.loads(lines[first])
    prompt["promptId"], prompt["message"]["content"] = "f" * 8 + "-0000-4000-8000-" + "0" * 12, "hi"
    prompt["timestamp"] = "2026-11-28T17:10:00.000Z"  # minutes before the /helper turn
    reply_line = json.loads(lines[reply])
    reply_line["message"]["id"], reply_line["requestId"] = "msg_fake_00091", "req_fake_00091"
    reply_line["timestamp"] = "2026-11-28T17:10:01.000Z"
    answer = json.dumps(reply_line)
    usage = reply_line["message"]["usage"]
    final = json.loads(lines[-1])
    model = final["modelUsage"]["claude-opus-5-5"]
    earlier = dict(final, modelUsage={"claude-opus-5-5": dict(
        model, inputTokens=usage["input_tokens"] + hidden, outputTokens=usage["output_tokens"],
        cacheReadInputTokens=usage["cache_read_input_tokens"],
        cacheCreationInputTokens=usage["cache_creation_input_tokens"])})
    # Written as that earlier process ended, just after its answer (17:10:01.000): its own
    # `startTime + totalDuration` says so, as Claude Code's would.
    earlier["startTime"] = int(datetime(2026, 11, 28, 17, 9, 50, tzinfo=UTC).timestamp() * 1000)
    earlier["totalDuration"] = 11_100
    for field, extra in (("inputTokens", usage["input_tokens"] + hidden),
                         ("outputTokens", usage["output_tokens"]),
                         ("cacheReadInputTokens", usage["cache_read_input_tokens"]),
                         ("cacheCreationInputTokens", usage["cache_creation_input_tokens"])):
        model[field] += extra
    main.write_text("\n".join([json.dumps(prompt), answer, json.dumps(earlier), *lines[:-1],
                               json.dumps(final)]) + "\n")


def _by_command(ledger: Ledger) -> dict[str, tuple[int, ...]]:
    return {g.key: tuple(g.usage) for g in query.group("command", query.cells(ledger, {}), UTC)}


def test_a_held_turn_joining_its_turn_leaves_the_sessions_other_turns_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain prompt, with usage in no line (40,000 input tokens in Claude Code's total), then
    a /helper turn whose note launches a subagent: when the subagent is read first, its turn is
    held, and when the note joins /helper's turn only the held turn's requests and corrections
    go with it. The plain prompt keeps its response and its hidden usage whichever file is read
    first (less at most the subagent's 903 input tokens, which the order of reading may credit
    to either turn: the totals counted them before the subagent's line said which), and the
    session's usage is the same."""
    sid = "8e945286-e779-410e-9516-f3c30e65f9e5"
    launching, note = "e1fb9928-8dba-4eae-9c5a-27858b8eb42a", "23cf6c6f-b517-4d6b-bc2c-b7940b565cbd"
    totals = []
    for subagent_first in (False, True):
        home = tmp_path / f"home {subagent_first}"
        projects = install_fixture("agent", home / ".claude")
        main = next(projects.glob(f"*/{sid}.jsonl"))
        main.write_text(main.read_text().replace("please AGENT", "/helper AGENT"))
        _with_an_earlier_turn(main, hidden=40_000)
        (agent,) = projects.glob(f"*/{sid}/subagents/agent-*.jsonl")
        agent.write_text(agent.read_text().replace(launching, note))
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("TOKENBUDGET_HOME", str(home / "tb state"))
        store = sync.open_store()
        if not subagent_first:  # the main transcript first: no turn is held
            agent.rename(tmp_path / "agent.jsonl")
            sync.sync_all(store, now=NOW)
            (tmp_path / "agent.jsonl").rename(agent)
        sync.sync_all(store, now=NOW)
        ledger = store.snapshot()
        assert ledger["sessions"][sid]["a"] == {note: launching}
        by = _by_command(ledger)
        assert set(by) == {"/helper", "prompt"}, by
        assert by["prompt"][1:] == (41, 101, 0, 2010), by  # its response's line, whole
        assert 901 + 40_000 - 903 <= by["prompt"][0] <= 901 + 40_000, by
        totals.append(tuple(map(sum, zip(*by.values(), strict=True))))
    assert totals[0] == totals[1]


def test_a_forks_own_response_rewritten_larger_leaves_its_hidden_usage_whole(
    private_home: Path,
) -> None:
    """A fork's own response is written again with more output (streaming), and its total holds
    usage in no line (30,000 input and 300 output tokens): the fork is charged its response at
    the larger size and all of that hidden usage. Its own growth is no copy of the parent's: it
    must not raise what the fork is taken to have inherited, which would eat its hidden output."""
    projects = install_fixture("forked", private_home / ".claude")
    parent, fork = "41481808-d348-404b-a183-6d629348bbef", "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    path = next(projects.glob(f"*/{fork}.jsonl"))
    lines = [json.loads(ln) for ln in path.read_text().splitlines()]
    own = [d for d in lines
           if d.get("type") == "assistant" and d["message"]["id"] == "msg_fake_00005"]
    own[-1]["message"]["usage"]["output_tokens"] = 545  # was 45, as on the line before it
    total = lines[-1]["modelUsage"]["claude-opus-5-5"]
    total["outputTokens"] += 500 + 300
    total["inputTokens"] += 30_000
    path.write_text("".join(json.dumps(d) + "\n" for d in lines))
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    ledger = store.snapshot()
    assert enforce.session_used(ledger, fork)[0] == (905 + 545 + 105 + 2050) + 30_300
    assert enforce.session_used(ledger, parent)[0] == 3610 + 170 + 8100 + 410


def test_a_session_naming_the_same_parent_but_holding_none_of_the_forks_lines_is_not_its_parent(
    private_home: Path,
) -> None:
    """Beside a fork lies another session whose copies name the same parent but whose lines
    are none of the fork's (other uuids): it is weighed as a candidate and passed over, and
    the parent and the fork are each charged exactly their own requests."""
    projects = install_fixture("forked", private_home / ".claude")
    parent, fork = "41481808-d348-404b-a183-6d629348bbef", "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    other = "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
    path = next(projects.glob(f"*/{fork}.jsonl"))
    copies = []
    for n, text in enumerate(path.read_text().splitlines()):
        line = json.loads(text)
        if line.get("type") == "assistant" and "requestSessionId" not in text:
            break  # the fork's own first response: its copies end here
        if "uuid" in line:
            line["uuid"] = f"00000000-0000-4000-8000-{n:012d}"
        if line.get("sessionId") == fork:
            line["sessionId"] = other
        copies.append(json.dumps(line))
    assert any("requestSessionId" in c for c in copies)
    (path.parent / f"{other}.jsonl").write_text("".join(c + "\n" for c in copies))
    store = sync.open_store()
    result = sync.sync_all(store, now=NOW)
    assert not result.errors
    per_session = session_totals(store)
    assert per_session[parent] == truth_usage("forked", parent)
    assert per_session[fork] == truth_usage("forked", fork)
    assert store.snapshot()["sessions"][other][S_ORIGIN] == parent  # named as the fork's is


def _each_charged_its_own(store: Store, case: str, *sessions: str) -> None:
    per_session = session_totals(store)
    assert {sid: per_session[sid] for sid in sessions} == {
        sid: truth_usage(case, sid) for sid in sessions
    }


def test_a_fork_read_when_only_its_first_total_is_written_is_charged_only_its_own_requests(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interactive fork's transcript gets its total (its parent's carried in) before the
    lines it copies. Read then, it is not yet known as a fork, and its total looks like its
    own hidden usage: a fold before the rest is read (a sync, any session's start) must not put
    it in history that way, where the fork rule can no longer take the parent's part back."""
    projects = install_fixture("forked", private_home / ".claude")
    parent, fork = "41481808-d348-404b-a183-6d629348bbef", "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    path = next(projects.glob(f"*/{fork}.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])["type"] == "cost-state"
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(NOW))
    path.write_text(lines[-1])  # what Claude Code wrote first
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    with path.open("a") as f:
        f.writelines(lines)  # then the copies, the fork's own request, its total again
    sync.sync_all(store, now=NOW)
    _each_charged_its_own(store, "forked", parent, fork)


def test_a_fork_whose_total_comes_before_its_lines_is_not_charged_its_own_request_twice(
    private_home: Path,
) -> None:
    """The same layout read by the hooks: the fork's SessionStart hook has dated the session
    already (before its own prompt), and the next hook reads the whole transcript in one pass,
    its total first. The fork's own request, in the lines after that total, is one the total
    holds: it must not be counted again on top of it. (Claude Code's `startTime +
    totalDuration` falls before that request, so it cannot date the total.)"""
    projects = install_fixture("forked", private_home / ".claude")
    parent, fork = "41481808-d348-404b-a183-6d629348bbef", "fd4b2298-2ab6-44e1-8473-ac50d60f614d"
    path = next(projects.glob(f"*/{fork}.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("")
    event = {"session_id": fork, "transcript_path": str(path), "cwd": "/home/dev/project"}
    started = datetime(2026, 11, 28, 17, 39, 33, tzinfo=UTC).timestamp()  # before its prompt
    for name, at in (("SessionStart", started), ("SessionEnd", NOW)):
        if name == "SessionEnd":
            path.write_text(lines[-1] + "".join(lines))  # as Claude Code writes it, at its exit
        code, _, err = run_hook(
            name, dict(event, hook_event_name=name), env={"TOKENBUDGET_NOW": repr(at)}
        )
        assert code == 0, err
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    _each_charged_its_own(store, "forked", parent, fork)


def test_a_fork_whose_first_total_does_not_hold_its_parents_next_is_charged_its_compaction(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interactive parent writes its total only at its exit. A fork made while it waited
    for its next prompt copied its last response and started from nothing; the fork's first
    total holds its own requests and its compaction but not that response, which the parent's
    total after the fork point holds: that total was written after the fork was made, and the
    fork inherited the one before the point (none here), not nothing known."""
    from tests.claude_lines import prompt_line, reply_line
    from tests.helpers import ORDERS, discover_in
    from tokenbudget import transcripts

    parent, fork = "0506e5e2-5161-4133-b840-dcb0c298e448", "12321ccd-a5aa-4912-874f-52965e4e7d08"
    cwd, t = "/home/dev/project", NOW - 600

    def total(sid: str, i: int, o: int) -> dict[str, object]:
        return {"type": "cost-state", "sessionId": sid, "modelUsage": {"claude-opus-5-5": {
            "inputTokens": i, "outputTokens": o, "cacheReadInputTokens": 0,
            "cacheCreationInputTokens": 0, "costUSD": 0.0}}}

    asked = prompt_line(parent, "p1", "hello", t, cwd)
    answer = dict(reply_line(parent, "msg_1", t + 1, cwd, input_tokens=90_000, output_tokens=10),
                  parentUuid=asked["uuid"])
    own = prompt_line(fork, "p2", "hello from the fork", t + 60, cwd)
    own_answer = reply_line(fork, "msg_2", t + 62, cwd, input_tokens=200, output_tokens=20)
    copies = [dict(asked, sessionId=fork), dict(answer, sessionId=fork, requestSessionId=parent)]
    folder = private_home / ".claude" / "projects" / "-home-dev-project"
    folder.mkdir(parents=True)
    for sid, objs in ((parent, [asked, answer, total(parent, 90_000, 10)]),
                      (fork, [*copies, own, own_answer, total(fork, 200 + 300, 20 + 30)])):
        (folder / f"{sid}.jsonl").write_text(
            "".join(json.dumps(o, separators=(",", ":")) + "\n" for o in objs))
    for order in ORDERS:
        monkeypatch.setattr(transcripts, "discover", lambda dirs, o=order: discover_in(o, dirs))
        store = sync.open_store()
        Path(store.file).unlink(missing_ok=True)
        sync.sync_all(store, now=NOW)
        got = {sid: (u.input, u.output) for sid, u in session_totals(store).items()}
        assert got == {parent: (90_000, 10), fork: (500, 50)}, order
