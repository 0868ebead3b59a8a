"""The contract every store passes (tokenbudget.store.Store).

The usage operations come first: the same usage recorded into a store the way that backend
records it, then the same questions with the same answers. `usage_store` gives the JSON store
here; tests/team/test_team_store_contract.py runs these same tests on the team's PostgreSQL
store, against a real server. The ledger tests after them take a store from each factory in
STORES: the JSON files alone, as the team store keeps no ledger (its ledger operations raise,
tested there). The last ones fault the JSON store's own files: its journal's torn and garbage
lines, a snapshot from a future version, a checkpoint cut short.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tokenbudget import journal
from tokenbudget import store as store_mod
from tokenbudget.errors import TokenbudgetError
from tokenbudget.ledger import CorruptLedger
from tokenbudget.store import JsonFileStore, Store, open_store

REPO = Path(__file__).resolve().parent.parent

# --- the usage operations ----------------------------------------------------------------------

DAY = 1_793_577_600.0  # Monday 2026-11-02 00:00 UTC
NOW = DAY + 30 * 3600  # the next day, 06:00: every session within the retention days
SESSIONS = {  # session -> (folder, [(prompt, start, input tokens of each reply)])
    "5e55a7e2-0000-4000-8000-00000000000a": (
        "/w/app", [("fix the tests", DAY + 3600, (1000, 2000)), ("/test", DAY + 3 * 3600, (500,))]),
    "5e55a7e2-0000-4000-8000-00000000000b": ("/w/lib", [("/test", DAY + 26 * 3600, (700,))]),
    "5e55a7e2-0000-4000-8000-00000000000c": ("/w/app", [("go on", DAY + 9 * 3600, (300,))]),
}
PER_TOKEN = 4e-6  # claude_lines.MODEL's input price


class Recorded:
    """A store holding SESSIONS, how that backend names the project of a folder, and whether
    it keeps the decision state and a ledger of sessions (else those operations raise, naming
    what it does not keep)."""

    def __init__(self, store: Store, project: Callable[[str], str], decides: bool = True
                 ) -> None:
        self.store, self.project, self.decides = store, project, decides


def write_sessions(home: Path) -> None:
    """SESSIONS' transcripts, as Claude Code writes them."""
    from tests.claude_lines import Session

    for sid, (folder, turns) in SESSIONS.items():
        session = Session(home, sid, folder)
        for n, (text, start, tokens) in enumerate(turns):
            session.turn(f"{sid[-1]}-p{n}", text, start, *tokens)


def record_locally() -> Store:
    """What `tokenbudget sync` does: every transcript read into the user's ledger."""
    from tokenbudget import sync

    store = open_store()
    sync.sync_all(store, now=NOW)
    return store


@pytest.fixture(params=["json"])
def usage_store(
    request: pytest.FixtureRequest, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Recorded:
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(NOW))
    write_sessions(private_home)
    return Recorded(record_locally(), lambda folder: folder)


def _spent(tokens: int) -> tuple[int, float]:
    return tokens, pytest.approx(tokens * PER_TOKEN, abs=1e-9)  # type: ignore[return-value]


def test_usage_between_counts_each_bucket_in_its_window(usage_store: Recorded) -> None:
    store = usage_store.store
    assert store.usage_between(None, None) == _spent(4500)
    assert store.usage_between(DAY, DAY + 86400) == _spent(3800)
    assert store.usage_between(DAY + 86400, None) == _spent(700)
    assert store.usage_between(DAY + 3600, DAY + 3 * 3600) == _spent(3000)  # the end is out
    assert store.usage_between(DAY + 3 * 3600, DAY + 3 * 3600 + 900) == _spent(500)
    assert store.usage_between(DAY - 86400, DAY) == (0, 0.0)


def test_usage_between_one_project(usage_store: Recorded) -> None:
    store, project = usage_store.store, usage_store.project
    assert store.usage_between(None, None, project("/w/app")) == _spent(3800)
    assert store.usage_between(DAY + 86400, None, project("/w/app")) == (0, 0.0)
    assert store.usage_between(None, None, project("/w/lib")) == _spent(700)
    assert store.usage_between(None, None, project("/w/none")) == (0, 0.0)


def test_session_usage(usage_store: Recorded) -> None:
    store = usage_store.store
    expected = {"a": 3500, "b": 700, "c": 300}
    for sid in SESSIONS:
        assert store.session_usage(sid) == _spent(expected[sid[-1]])
    assert store.session_usage("no-such-session") == (0, 0.0)


def test_block_activity_lists_the_buckets_that_hold_usage(usage_store: Recorded) -> None:
    store = usage_store.store
    busy = [DAY + 3600, DAY + 3 * 3600, DAY + 9 * 3600, DAY + 26 * 3600]
    assert store.block_activity(None, None) == busy
    assert store.block_activity(DAY + 3600 + 1, DAY + 26 * 3600) == busy[1:3]


@pytest.mark.parametrize(
    ("by", "since", "until", "expected"),
    [
        ("day", None, None, {"2026-11-02": 3800, "2026-11-03": 700}),
        ("day", "2026-11-03", None, {"2026-11-03": 700}),
        ("day", None, "2026-11-02", {"2026-11-02": 3800}),
        ("week", None, None, {"2026-11-02": 4500}),
        ("month", None, None, {"2026-11": 4500}),
        ("command", None, None, {"/test": 1200, "prompt": 3300}),
        ("model", None, None, {"claude-opus-5-5": 4500}),
    ],
)
def test_usage_by_groups_as_the_report_does(
    usage_store: Recorded, by: str, since: str | None, until: str | None,
    expected: dict[str, int],
) -> None:
    from datetime import UTC

    rows = usage_store.store.usage_by(by, since, until, tz=UTC)
    assert [r["key"] for r in rows] == sorted(expected)
    for r in rows:
        assert (r["totalTokens"], r["totalCost"]) == _spent(expected[r["key"]])
        assert r["inputTokens"] == r["totalTokens"] and r["outputTokens"] == 0
        assert r["modelsUsed"] == ["claude-opus-5-5"]


def test_usage_by_project_names_it_as_the_store_does(usage_store: Recorded) -> None:
    from datetime import UTC

    rows = usage_store.store.usage_by("project", tz=UTC)
    project = usage_store.project
    assert {r["key"]: r["totalTokens"] for r in rows} == {
        project("/w/app"): 3800, project("/w/lib"): 700
    }


# --- the decision state ----------------------------------------------------------------------

SID = {sid[-1]: sid for sid in SESSIONS}


def _keeps_no(recorded: Recorded, what: str, *calls: Callable[[], object]) -> bool:
    """On a backend without the decision state and ledger: each call raises, saying it keeps
    no `what`."""
    if recorded.decides:
        return False
    for call in calls:
        with pytest.raises(TokenbudgetError, match=f"keeps no {what}"):
            call()
    return True


def test_turn_usage_is_each_turns_command_and_usage(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "turns", lambda: store.turn_usage(SID["a"], "a-p0")):
        return
    assert store.turn_usage(SID["a"], "a-p0") == ("prompt", *_spent(3000))
    assert store.turn_usage(SID["a"], "a-p1") == ("/test", *_spent(500))
    assert store.turn_usage(SID["b"], "b-p0") == ("/test", *_spent(700))
    assert store.turn_usage(SID["b"], "a-p0") is None  # another session's turn
    assert store.turn_usage(SID["a"], "a-p9") is None
    assert store.turn_usage(SID["a"], None) is None
    assert store.turn_usage("no-such-session", "a-p0") is None


def test_command_runs_are_every_turn_of_the_command_oldest_first(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "turns", lambda: store.command_runs("/test")):
        return
    def runs(command: str, exclude: str | None = None) -> list[tuple[float, ...]]:
        return [(start, tokens, round(cost / PER_TOKEN))
                for start, tokens, cost in store.command_runs(command, exclude)]

    tests = [(DAY + 3 * 3600, 500, 500), (DAY + 26 * 3600, 700, 700)]
    assert runs("/test") == tests
    assert runs("/test", exclude="b-p0") == tests[:1]
    assert [r[0] for r in store.command_runs("prompt")] == [DAY + 3600, DAY + 9 * 3600]
    assert store.command_runs("/deploy") == []


def test_a_warning_is_remembered_as_given_and_the_oldest_go_first(
    usage_store: Recorded,
) -> None:
    from tokenbudget.store import MAX_WARNED

    store = usage_store.store
    if _keeps_no(usage_store, "warnings given", lambda: store.first_warning("daily|warn"),
                 lambda: store.record_warnings(["daily|warn"], NOW)):
        return
    assert store.first_warning("daily|warn") is None
    store.record_warnings(["daily|warn", "weekly|over"], NOW)
    assert store.first_warning("daily|warn") == store.first_warning("weekly|over") == NOW
    store.record_warnings(["daily|warn"], NOW + 5)  # given again: the time it was given
    assert store.first_warning("daily|warn") == NOW + 5
    store.record_warnings([f"k{n}" for n in range(MAX_WARNED - 1)], NOW + 10)
    assert store.first_warning("weekly|over") is None  # the oldest, forgotten
    assert store.first_warning("daily|warn") == NOW + 5
    assert store.first_warning(f"k{MAX_WARNED - 2}") == NOW + 10


def test_an_allow_is_granted_then_spent_on_one_prompt(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "`tokenbudget allow`", store.allow_state,
                 lambda: store.grant_allow(NOW),
                 lambda: store.take_allow(SID["a"], "a-p2", {}, NOW)):
        return
    assert store.allow_state() == {}
    store.grant_allow(NOW)
    assert store.allow_state() == {"pending": True, "at": NOW}
    store.take_allow(SID["a"], "a-p2", {"daily|tokens": 4500.0}, NOW + 60)
    assert store.allow_state() == {"session": SID["a"], "prompt_id": "a-p2", "at": NOW + 60,
                                   "base": {"daily|tokens": 4500.0}}


def test_an_event_is_seen_once_within_the_event_memory(usage_store: Recorded) -> None:
    from tokenbudget.store import EVENT_MEMORY

    store = usage_store.store
    if _keeps_no(usage_store, "hook events", lambda: store.seen_event("f1", NOW)):
        return
    assert store.seen_event("f1", NOW) is False
    assert store.seen_event("f1", NOW + 1) is True
    assert store.seen_event("f2", NOW + 1) is False
    assert store.seen_event("f1", NOW + EVENT_MEMORY) is True  # remembered from its first
    assert store.seen_event("f1", NOW + EVENT_MEMORY + 1) is False  # forgotten: seen anew
    assert store.seen_event("f1", NOW + EVENT_MEMORY + 2) is True


def test_a_note_counts_for_its_turn_and_folded_turns_stay_runs(usage_store: Recorded) -> None:
    # The local store alone (the team's keeps no turns, above): a background task's note
    # reads as the turn it came in, and a session folded into history keeps its turns as
    # the command's runs.
    from tokenbudget import history
    from tokenbudget.schema import S_ALIASES

    store = usage_store.store
    runs = {c: store.command_runs(c) for c in ("/test", "prompt")}
    with store.transaction() as ledger:
        ledger["sessions"][SID["a"]][S_ALIASES]["a-n1"] = "a-p1"
    assert store.turn_usage(SID["a"], "a-n1") == ("/test", *_spent(500))
    with store.transaction() as ledger:
        assert history.fold(ledger, NOW + 86400) == 3
    assert store.turn_usage(SID["a"], "a-p1") is None  # no session: its turns are runs now
    assert {c: store.command_runs(c) for c in runs} == runs


# --- the local ledger's reads: its sessions, turns and cells, through one read (Store.view) ---


def _usage_by_cell(store: Store) -> dict[tuple[str, float, str], int]:
    out: dict[tuple[str, float, str], int] = {}
    for c, source in store.cells():
        assert source == "t" and c.model == "claude-opus-5-5"  # schema.SOURCE_TABLE
        key = (c.sid[-1], c.hour * 900.0, c.command)
        out[key] = out.get(key, 0) + c.usage.total
    return out


CELLS = {("a", DAY + 3600, "prompt"): 3000, ("a", DAY + 3 * 3600, "/test"): 500,
         ("b", DAY + 26 * 3600, "/test"): 700, ("c", DAY + 9 * 3600, "prompt"): 300}
RUNS = {"/test": [(DAY + 3 * 3600, 500), (DAY + 26 * 3600, 700)],
        "prompt": [(DAY + 3600, 3000), (DAY + 9 * 3600, 300)]}


def _runs(store: Store) -> dict[str, list[tuple[float, float]]]:
    runs = store.turn_runs()
    for v in runs.values():
        for _start, tokens, cost in v:
            assert cost == pytest.approx(tokens * PER_TOKEN, abs=1e-9)
    return {c: [(start, tokens) for start, tokens, _ in v] for c, v in runs.items()}


def test_cells_are_every_session_bucket_and_command_of_usage(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "ledger", store.view, store.cells):
        return
    assert _usage_by_cell(store) == CELLS
    assert sum(c.usage.total for c, _ in store.cells()) == store.usage_between(None, None)[0]
    assert {c.project for c, _ in store.cells() if c.sid == SID["b"]} == {"/w/lib"}


def test_turn_runs_are_every_turn_of_every_command_oldest_first(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "ledger", store.turn_runs):
        return
    assert _runs(store) == RUNS


def test_sessions_are_known_by_folder_and_last_activity(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "ledger", lambda: store.session_seen(SID["a"]),
                 lambda: store.has_session(SID["a"]), lambda: store.latest_session("/w"),
                 store.ledger_counts):
        return
    project, last = store.session_seen(SID["a"])
    assert project == "/w/app" and last is not None and DAY + 3 * 3600 <= last < DAY + 4 * 3600
    assert store.session_seen("no-such-session") == (None, None)
    assert store.has_session(SID["b"]) and not store.has_session("no-such-session")
    assert store.latest_session("/w/app") == SID["c"]  # c's turn came after a's last
    assert store.latest_session("/w/lib") == SID["b"]
    assert store.latest_session("/w") == SID["b"]
    assert store.latest_session("/elsewhere") == SID["b"]  # none there: the latest anywhere
    assert store.ledger_counts() == (3, 0, 3)


def _recorded(store: Store) -> dict[str, tuple[Any, ...]]:
    """Each session's (folder, live, turns, requests, cells), tokens and buckets as times."""
    out = {}
    for r in store.recorded_sessions():
        assert r.first <= min(start for _, _, start, _, _ in r.turns)
        for _, _, _, tokens, cost in r.turns:
            assert cost == pytest.approx(tokens * PER_TOKEN, abs=1e-9)
        out[r.sid[-1]] = (
            r.project, r.live,
            [(pid, cmd, start, tokens) for pid, cmd, start, tokens, _ in r.turns],
            [(pid, bucket * 900.0, tokens) for pid, bucket, tokens, _ in r.requests],
            [(bucket * 900.0, cmd, tokens) for bucket, cmd, tokens, _ in r.cells])
    return out


def test_recorded_sessions_hold_each_turn_and_request(usage_store: Recorded) -> None:
    store = usage_store.store
    if _keeps_no(usage_store, "ledger", store.recorded_sessions):
        return
    # Synced after the sessions went quiet: their requests are compacted into cells.
    t1, t3 = DAY + 3600, DAY + 3 * 3600
    assert _recorded(store)["a"] == (
        "/w/app", True, [("a-p0", "prompt", t1, 3000), ("a-p1", "/test", t3, 500)], [],
        [(t1, "prompt", 3000), (t3, "/test", 500)])
    assert _recorded(store)["b"][1:] == (
        True, [("b-p0", "/test", DAY + 26 * 3600, 700)], [], [(DAY + 26 * 3600, "/test", 700)])
    assert len(store.recorded_sessions()) == 3


def test_a_live_sessions_requests_are_recorded_in_the_order_read(
    private_home: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The local store alone: synced while session a is still active, before its requests
    # are compacted.
    from tokenbudget import sync

    t1, t3 = DAY + 3600, DAY + 3 * 3600
    monkeypatch.setenv("TOKENBUDGET_NOW", repr(t3 + 600))
    write_sessions(private_home)
    store = open_store()
    sync.sync_all(store, now=t3 + 600)
    assert _recorded(store)["a"][2:] == (
        [("a-p0", "prompt", t1, 3000), ("a-p1", "/test", t3, 500)],
        [("a-p0", t1, 1000), ("a-p0", t1, 2000), ("a-p1", t3, 500)], [])


def test_a_view_answers_from_its_own_read_and_folded_sessions_stay_known(
    usage_store: Recorded,
) -> None:
    # The local store alone (the team's keeps no ledger, above): a view taken before a commit
    # answers as it read; folded into history, sessions keep their cells, runs and folder.
    from tokenbudget import history

    store = usage_store.store
    view = store.view()
    with store.transaction() as ledger:
        assert history.fold(ledger, NOW + 86400) == 3
    assert view.has_session(SID["a"]) and view.ledger_counts() == (3, 0, 3)
    assert not store.has_session(SID["a"]) and store.latest_session("/w") is None
    assert store.ledger_counts() == (0, 3, 0)
    assert _usage_by_cell(store) == CELLS and _usage_by_cell(view) == CELLS
    assert _runs(store) == RUNS
    project, last = store.session_seen(SID["b"])
    assert project == "/w/lib" and last is not None and last >= DAY + 26 * 3600
    t1, t3 = DAY + 3600, DAY + 3 * 3600
    assert _recorded(store)["a"] == (
        "/w/app", False, [(None, "prompt", t1, 3000), (None, "/test", t3, 500)], [],
        [(t1, "prompt", 3000), (t3, "/test", 500)])
    assert [r.live for r in view.recorded_sessions()] == [True] * 3


# --- the ledger ----------------------------------------------------------------------------------

# name -> a store in a folder, opened as every process opens it (the folder may not exist yet).
STORES: dict[str, Callable[[Path], Store]] = {
    "json": lambda folder: open_store(path=folder / "ledger.json", lock_timeout=60),
}


@pytest.fixture(params=sorted(STORES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A new handle on one store each call, as another process would open it."""
    folder = tmp_path / "state dir 'quoted'"
    return lambda: STORES[request.param](folder)


def _bump(ledger: dict[str, Any], who: str, n: int) -> None:
    """One committed change of each kind: a counter, a new entry, a nested one, a deletion."""
    ledger["folded"]["sessions"] += 1
    ledger["warned"][f"{who}-{n}"] = float(n)
    ledger["ended"].pop(f"{who}-{n - 1}", None)
    ledger["ended"][f"{who}-{n}"] = [who, float(n)]


def test_what_is_committed_is_read_back_by_another_handle(make_store: Any) -> None:
    store = make_store()
    assert not store.exists()
    with store.transaction() as ledger:
        ledger["notices"].append("one")
        ledger["projects"]["/p q"] = [10, 0.5]
    with store.transaction() as ledger:
        assert ledger["notices"] == ["one"]
        ledger["projects"]["/p q"][0] += 5
        ledger["commands"]["/s"] = [[1, 2.5, None, True, {"a": "b"}]]
    other = make_store()
    seen = other.snapshot()
    assert other.exists() and seen["notices"] == ["one"]
    assert seen["projects"] == {"/p q": [15, 0.5]}
    assert seen["commands"]["/s"] == [[1, 2.5, None, True, {"a": "b"}]]
    ledger, position = other.read()
    assert ledger == seen and position is not None


def test_the_decision_state_is_the_held_ledgers_inside_a_transaction(make_store: Any) -> None:
    # One decision reads one ledger: inside a transaction the operations read and change the
    # ledger it holds, committed with it (or not at all); outside, a change commits alone.
    store = make_store()
    with store.transaction() as ledger:
        ledger["warned"]["daily|warn"] = 5.0
        assert store.first_warning("daily|warn") == 5.0  # held, not committed yet
        store.grant_allow(7.0)
        assert ledger["allow"] == {"pending": True, "at": 7.0}
        assert store.seen_event("f1", 8.0) is False and ledger["events"] == {"f1": 8.0}
        assert make_store().allow_state() == {}  # another handle reads what is committed
    other = make_store()
    assert other.allow_state() == {"pending": True, "at": 7.0}
    assert other.first_warning("daily|warn") == 5.0 and other.seen_event("f1", 9.0) is True
    with pytest.raises(RuntimeError), store.transaction():
        store.record_warnings(["dropped"], 9.0)
        store.take_allow("s", "p", {}, 9.0)
        raise RuntimeError
    assert make_store().first_warning("dropped") is None
    assert make_store().allow_state() == {"pending": True, "at": 7.0}
    store.record_warnings(["alone"], 10.0)
    assert make_store().first_warning("alone") == 10.0


def test_a_transaction_that_raises_commits_nothing(make_store: Any) -> None:
    store = make_store()
    with store.transaction() as ledger:
        ledger["notices"].append("kept")
    with pytest.raises(RuntimeError), store.transaction() as ledger:
        ledger["notices"].append("dropped")
        raise RuntimeError
    assert make_store().snapshot()["notices"] == ["kept"]


def test_every_commit_replays_to_the_same_ledger_before_and_after_a_checkpoint(
    make_store: Any,
) -> None:
    store = make_store()
    for n in range(1, 30):
        with store.transaction() as ledger:
            _bump(ledger, "a", n)
            if n % 7 == 0:
                ledger["warned"] = dict(reversed(ledger["warned"].items()))  # a new order
    before = make_store().snapshot()
    assert before["folded"]["sessions"] == 29 and len(before["warned"]) == 29
    assert list(before["ended"]) == ["a-29"]
    make_store().checkpoint()
    after = make_store().snapshot()
    assert json.dumps({**after, "updated": 0}) == json.dumps({**before, "updated": 0})


def test_a_known_read_is_brought_up_to_date_under_the_lock(make_store: Any) -> None:
    store = make_store()
    with store.transaction() as ledger:
        _bump(ledger, "a", 1)
    known = tuple(reversed(store.read()))
    with make_store().transaction() as ledger:  # another process commits after that read
        _bump(ledger, "b", 1)
    with store.transaction(known) as ledger:
        assert ledger["folded"]["sessions"] == 2 and "b-1" in ledger["warned"]
        _bump(ledger, "a", 2)
    assert make_store().snapshot()["folded"]["sessions"] == 3


def test_checkpoints_are_idempotent(make_store: Any) -> None:
    store = make_store()
    for n in range(1, 6):
        with store.transaction() as ledger:
            _bump(ledger, "a", n)
    before = make_store().snapshot()
    for _ in range(3):
        make_store().checkpoint()
        now = make_store().snapshot()
        assert {**now, "updated": 0} == {**before, "updated": 0}


_WORKER = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.test_store_contract import STORES, _bump
store = STORES[sys.argv[1]](Path(sys.argv[2]))
who, n = sys.argv[3], int(sys.argv[4])
for i in range(1, n + 1):
    if who == "checkpointer":
        store.checkpoint()
        continue
    with store.transaction() as ledger:
        _bump(ledger, who, i)
"""


def run_workers(kind: str, folder: Path, workers: dict[str, int]) -> None:
    """Start one process per worker at once; each commits its count (or checkpoints)."""
    code = _WORKER.format(repo=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", code, kind, str(folder), who, str(n)])
        for who, n in workers.items()
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(procs)


@pytest.mark.parametrize("kind", sorted(STORES))
def test_concurrent_transactions_and_checkpoints_lose_nothing(
    kind: str, tmp_path: Path
) -> None:
    folder = tmp_path / "shared"
    workers = {"a": 40, "b": 40, "c": 40, "checkpointer": 15}
    run_workers(kind, folder, workers)
    ledger = STORES[kind](folder).snapshot()
    assert ledger["folded"]["sessions"] == 120  # not one increment lost, none counted twice
    assert sorted(ledger["warned"]) == sorted(f"{w}-{i}" for w in "abc" for i in range(1, 41))
    assert sorted(ledger["ended"]) == ["a-40", "b-40", "c-40"]


# --- the JSON store's own files ----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> JsonFileStore:
    return open_store(path=tmp_path / "tb" / "ledger.json")


def committed(store: JsonFileStore, n: int, who: str = "a") -> None:
    for i in range(1, n + 1):
        with store.transaction() as ledger:
            _bump(ledger, who, i)


def test_a_commit_appends_one_private_line_and_leaves_the_snapshot(
    store: JsonFileStore,
) -> None:
    committed(store, 1)  # the first commit writes the snapshot: there was none
    snapshot = Path(store.file).read_bytes()
    assert not os.path.exists(store.journal)
    committed(store, 3, "b")
    assert Path(store.file).read_bytes() == snapshot
    lines = Path(store.journal).read_bytes().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert os.stat(store.journal).st_mode & 0o777 == 0o600
    assert json.loads(lines[0])["set"][0] == [["folded", "sessions"], 2]


def test_nothing_changed_writes_nothing(store: JsonFileStore) -> None:
    committed(store, 2)
    files = {p: p.stat().st_mtime_ns for p in Path(store.folder).iterdir()}
    with store.transaction():
        pass
    assert {p: p.stat().st_mtime_ns for p in Path(store.folder).iterdir()} == files
    assert Path(store.journal).read_bytes().count(b"\n") == 1


def test_a_torn_last_line_is_ignored_then_cut_off_by_the_next_writer(
    store: JsonFileStore,
) -> None:
    committed(store, 3)  # the first commit wrote the snapshot, the next two a line each
    good = Path(store.journal).read_bytes()
    with open(store.journal, "ab") as f:
        f.write(b'{"seq":3,"set":[[["folded","sessions"],99]')  # a writer killed mid-line
    assert store.snapshot()["folded"]["sessions"] == 3
    with store.transaction() as ledger:
        assert ledger["folded"]["sessions"] == 3 and not ledger["notices"]
        ledger["folded"]["sessions"] += 1
    data = Path(store.journal).read_bytes()
    assert data.startswith(good) and data.count(b"\n") == 3 and data.endswith(b"\n")
    assert json.loads(data.splitlines()[-1])["seq"] == 3
    assert store.snapshot()["folded"]["sessions"] == 4


def test_a_torn_last_line_is_cut_off_by_a_commit_that_appends_nothing(
    store: JsonFileStore,
) -> None:
    """A writer killed inside a long write leaves part of its line (a write of many pages
    stops at a page when the process is killed). The next commit may change nothing: it cuts
    the torn part as an append would, so the hot view it writes names the files as they are
    (the suite's check compares them after every commit)."""
    from tokenbudget import hot

    committed(store, 3)
    good = Path(store.journal).read_bytes()
    with open(store.journal, "ab") as f:
        f.write(b'{"seq":3,"set":[[["folded","sessions"],99]' + b"x" * 5000)
    with store.transaction():
        pass  # nothing changed
    assert Path(store.journal).read_bytes() == good
    assert hot.differences(store.file, store.journal, store.snapshot()) == []
    assert hot.read(store.file, store.journal, None) is not None


def test_a_commit_that_appends_nothing_stands_when_the_torn_line_cannot_be_cut(
    store: JsonFileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cutting a torn line is a tidy-up: a journal that cannot be cut now (an I/O error)
    fails no commit; the hot view then names a size the journal does not have, so no quick
    call trusts it (the suite's after-commit check, which says so, is off here); the next
    append cuts the line and brings the view back. Nothing is lost or counted twice."""
    from tokenbudget import hot

    monkeypatch.delenv("TOKENBUDGET_STORE_CHECK")
    committed(store, 3)
    with open(store.journal, "ab") as f:
        f.write(b'{"seq":3,"set":[[["folded","sessions"],99]')
    real = os.ftruncate

    def failing(fd: int, length: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "ftruncate", failing)
    with store.transaction():
        pass  # nothing changed: no error
    assert hot.read(store.file, store.journal, None) is None
    monkeypatch.setattr(os, "ftruncate", real)
    with store.transaction() as ledger:
        ledger["folded"]["sessions"] += 1
    assert store.snapshot()["folded"]["sessions"] == 4
    assert Path(store.journal).read_bytes().endswith(b"\n")
    assert hot.differences(store.file, store.journal, store.snapshot()) == []


@pytest.mark.parametrize(
    "garbage",
    [b"not json", b"{}", b'{"seq":2,"set":[[["no","such","table"],1]],"del":[]}', b"[1]",
     b'{"seq":"2","set":[],"del":[]}', b""],
)
def test_garbage_lines_are_skipped_kept_and_reported_never_a_reset(
    store: JsonFileStore, garbage: bytes
) -> None:
    committed(store, 3)
    lines = Path(store.journal).read_bytes().splitlines(keepends=True)
    lines.insert(1, garbage + b"\n")
    Path(store.journal).write_bytes(b"".join(lines))
    seen = store.snapshot()  # a reader skips it, reads on, and says so
    assert seen["folded"]["sessions"] == 3 and sorted(seen["warned"]) == ["a-1", "a-2", "a-3"]
    assert seen["notices"] == [
        "tokenbudget: the ledger's journal had 1 unreadable line; skipped (a copy is kept"
        " beside the ledger)"
    ]
    with store.transaction() as ledger:
        assert ledger["folded"]["sessions"] == 3 and ledger["notices"] == seen["notices"]
        ledger["notices"] = []  # given to the user
    [kept] = Path(store.folder).glob("ledger.journal.jsonl.corrupt-*")
    assert kept.read_bytes() == b"".join(lines)
    assert Path(store.journal).read_bytes() == b""  # folded into the snapshot
    assert store.snapshot()["folded"]["sessions"] == 3 and not store.snapshot()["notices"]


def test_a_future_schema_is_refused_and_kept_aside_with_its_journal(
    store: JsonFileStore,
) -> None:
    committed(store, 2)
    data = json.loads(Path(store.file).read_bytes())
    data["schema"] = 99
    Path(store.file).write_text(json.dumps(data))
    with store.transaction() as ledger:
        assert ledger["rebuild"] is True and ledger["folded"]["sessions"] == 0
        assert "schema 99, newer than" in ledger["notices"][0]
    [kept] = Path(store.folder).glob("ledger.json.corrupt-*")
    assert json.loads(kept.read_text())["schema"] == 99
    [kept_journal] = Path(store.folder).glob("ledger.journal.jsonl.corrupt-*")
    assert kept_journal.read_bytes().count(b"\n") == 1


def test_a_journal_without_its_snapshot_is_kept_not_applied(store: JsonFileStore) -> None:
    committed(store, 3)
    os.unlink(store.file)
    assert store.snapshot()["folded"]["sessions"] == 0
    committed(store, 1, "b")
    [kept] = Path(store.folder).glob("ledger.journal.jsonl.orphan-*")
    assert kept.read_bytes().count(b"\n") == 2
    assert store.snapshot()["folded"]["sessions"] == 1


def test_lines_already_in_the_snapshot_are_not_replayed(store: JsonFileStore) -> None:
    # A checkpoint that ended after its rename but before emptying the journal.
    committed(store, 4)
    stale = Path(store.journal).read_bytes()
    with store.transaction(checkpoint=True) as ledger:
        ledger["folded"]["sessions"] = 100  # its own change goes straight to the snapshot
    Path(store.journal).write_bytes(stale)
    assert json.loads(Path(store.file).read_bytes())["journal"] == 3
    assert store.snapshot()["folded"]["sessions"] == 100  # not 4 again
    committed(store, 1, "b")
    assert store.snapshot()["folded"]["sessions"] == 101


def test_the_commit_that_passes_the_bound_checkpoints(tmp_path: Path) -> None:
    store = JsonFileStore(tmp_path / "ledger.json", journal_bound=600)
    committed(store, 12)
    assert json.loads(Path(store.file).read_bytes())["journal"] > 0
    assert os.path.getsize(store.journal) <= 600
    assert store.snapshot()["folded"]["sessions"] == 12


@pytest.mark.parametrize("cold", ["sync", "rebuild", "SessionStart"])
def test_the_cold_paths_checkpoint(
    cold: str, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import hook, sync

    # A session's start folds a journal that has grown to a quarter of its bound (below).
    monkeypatch.setattr(store_mod, "JOURNAL_BOUND", 1000)
    default = sync.open_store()
    committed(default, 3)
    assert os.path.getsize(default.journal) * 4 >= 1000
    assert os.path.getsize(default.journal) > 0
    if cold == "sync":
        sync.sync_all(default, config_dirs=[])
    elif cold == "rebuild":
        sync.rebuild(default, config_dirs=[])
    else:
        hook.handle("SessionStart", json.dumps({"session_id": "s-1", "cwd": "/w"}).encode())
    assert os.path.getsize(default.journal) == 0
    expected = 0 if cold == "rebuild" else 3
    assert default.snapshot()["folded"]["sessions"] == expected
    if cold == "rebuild":  # the ledger set aside is the whole one, journal included
        [kept] = Path(default.folder).glob("ledger.json.before-rebuild-*")
        assert json.loads(kept.read_bytes())["folded"]["sessions"] == 3


def test_a_session_start_leaves_a_short_journal_for_later(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fold rewrites the whole ledger, and every `claude -p` run starts a session: a journal
    under a quarter of the size at which a commit folds it stays, and reads the same."""
    from tokenbudget import hook, sync

    default = sync.open_store()
    committed(default, 3)
    size = os.path.getsize(default.journal)
    monkeypatch.setattr(store_mod, "JOURNAL_BOUND", size * 4 + 4)
    snapshot = Path(default.file).read_bytes()
    hook.handle("SessionStart", json.dumps({"session_id": "s-1", "cwd": "/w"}).encode())
    assert Path(default.file).read_bytes() == snapshot
    assert os.path.getsize(sync.open_store().journal) > size  # the start's own line
    ledger = sync.open_store().snapshot()
    assert ledger["folded"]["sessions"] == 3 and "s-1" in ledger["sessions"]


def test_a_fold_is_due_at_a_quarter_of_the_bound_a_large_snapshot_raises(
    tmp_path: Path,
) -> None:
    """A commit folds once the journal passes max(bound, a quarter of the snapshot); a
    session's start, once the journal reaches a quarter of that."""
    store = JsonFileStore(tmp_path / "ledger.json", journal_bound=100)
    assert not store.fold_due()  # no journal
    with store.transaction() as ledger:  # the snapshot: far over 16 times the bound
        ledger["warned"].update({f"w-{i:04d}": float(i) for i in range(400)})
    snapshot = os.path.getsize(store.file)
    assert snapshot // 4 > 4 * 100

    def journal_size() -> int:
        return os.path.getsize(store.journal) if os.path.exists(store.journal) else 0

    n = 0
    while journal_size() * 4 < snapshot // 4:
        assert not store.fold_due()
        n += 1
        with store.transaction() as ledger:
            ledger["notices"].append(f"n-{n}")
    assert os.path.getsize(store.file) == snapshot  # appended all along, never folded
    assert store.fold_due()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # same items, new order
        ({"a": 1}, {"b": 2, "a": 1}),  # a new dict with a new key first
        ({"a": {"x": 1}}, {"a": {"x": 1.0, "y": [1]}}),  # int to float, nested
        ({"a": {"x": {"y": {"z": {"w": 1}}}}}, {"a": {"x": {"y": {"z": {"w": 2}}}}}),
        ({"a": [1, 2], "b": 1}, {"a": [1], "c": None}),
        ({"a": {"b": 1}}, {"a": 5}),
    ],
)
def test_a_replay_of_the_changes_gives_the_same_json(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    sets, dels = journal.changes({"t": before}, {"t": after})
    line = journal.encode(1, sets, dels)
    [(_seq, s, d)] = journal.parse(line, 0).entries
    replayed = journal.copy({"t": before})
    assert journal.applies(replayed, s, d)
    journal.apply(replayed, s, d)
    assert json.dumps(replayed) == json.dumps({"t": after})


def test_a_hook_call_tells_of_garbage_lines_once(private_home: Path) -> None:
    from tokenbudget import hook, sync

    store = sync.open_store()
    committed(store, 3)
    with open(store.journal, "ab") as f:
        f.write(b"\x00\x00 a disk block of zeros\n")
    event = json.dumps({"session_id": "s-1", "cwd": str(private_home)}).encode()
    first = hook.handle("PreToolUse", event)
    assert "journal had 1 unreadable line" in first["systemMessage"]
    assert hook.handle("PreToolUse", event) == {}
    assert store.snapshot()["folded"]["sessions"] == 3


def test_a_lost_line_ends_the_replay_and_what_follows_it_is_kept_aside(
    store: JsonFileStore,
) -> None:
    # A crash of the machine can lose a line that was written but not yet synced while the
    # next one was: the commits after it were made on top of it, so they are not applied.
    committed(store, 5)  # the snapshot, then lines 1 to 4
    lines = Path(store.journal).read_bytes().splitlines(keepends=True)
    lost = b"\x00" * (len(lines[1]) - 1) + b"\n"
    Path(store.journal).write_bytes(b"".join([lines[0], lost, *lines[2:]]))
    seen = store.snapshot()
    assert seen["folded"]["sessions"] == 2  # the snapshot's commit and line 1
    assert seen["notices"] == [
        "tokenbudget: the ledger's journal had 3 unreadable lines; skipped (a copy is kept"
        " beside the ledger)"
    ]
    with store.transaction() as ledger:
        ledger["notices"] = []
        _bump(ledger, "b", 1)
    [kept] = Path(store.folder).glob("ledger.journal.jsonl.corrupt-*")
    assert kept.read_bytes().count(b"\n") == 4
    assert store.snapshot()["folded"]["sessions"] == 3 and not store.snapshot()["notices"]


def test_a_journal_line_of_the_wrong_shape_is_caught_like_a_hand_edited_ledger(
    store: JsonFileStore,
) -> None:
    committed(store, 2)
    bad = journal.encode(2, [[["sessions", "s-1"], {"p": 1}]], [])
    with open(store.journal, "ab") as f:
        f.write(bad)
    with pytest.raises(CorruptLedger, match="sessions have the wrong shape"):
        store.read()
    with store.transaction() as ledger:  # kept aside with its journal, rebuilt
        assert ledger["rebuild"] is True
    assert len(list(Path(store.folder).glob("ledger.journal.jsonl.corrupt-*"))) == 1


def test_the_local_store_counts_from_the_transcripts_alone(usage_store: Recorded) -> None:
    from tokenbudget.errors import LedgerError

    with pytest.raises(LedgerError, match="from the transcripts only"):
        usage_store.store.record([{"key": "k", "input": 1}])
    assert usage_store.store.usage_between(None, None) == _spent(4500)


@pytest.mark.parametrize("case", ["nothing to fold", "a change of its own", "a grown journal"])
def test_a_fold_when_due_writes_only_what_there_is_to_fold(case: str, tmp_path: Path) -> None:
    """`checkpoint=FOLD_DUE` (sync's last step): a new snapshot for a change of the
    transaction's own or a journal grown as far as `fold_due` says; else nothing is written,
    a short journal left as it is."""
    store = JsonFileStore(tmp_path / "ledger.json", journal_bound=600)
    committed(store, 3 if case == "a grown journal" else 1)  # 1: only the first snapshot
    committed(store, 1, "b")
    assert store.fold_due() == (case == "a grown journal")
    files = [(p.name, p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
             for p in (Path(store.file), Path(store.journal))]
    before = store.snapshot()
    with store.transaction(checkpoint=store_mod.FOLD_DUE) as ledger:
        if case == "a change of its own":
            _bump(ledger, "c", 1)
    after = [(p.name, p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
             for p in (Path(store.file), Path(store.journal))]
    if case == "nothing to fold":
        assert after == files and store.snapshot() == before
        return
    assert after[0][1] != files[0][1] and after[1][3] == b""  # folded into a new snapshot
    assert store.snapshot()["folded"]["sessions"] == before["folded"]["sessions"] + (
        1 if case == "a change of its own" else 0)
