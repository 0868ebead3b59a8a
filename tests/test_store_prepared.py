"""A hook call's change worked out without the lock and committed under it (store.Prepared).

A call with news reads its session's new lines and decides on the ledger read without the lock;
under the lock it only appends that change. What other sessions committed in between is read
and kept: the usage sums get both parts, anything else they share sends the call back to do its
work again under the lock. Each race here is made deterministic: the other call runs between
this call's read and its lock. Totals are compared with a fresh sync of the same transcripts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.claude_lines import Session, refused, reply_line, set_budgets
from tokenbudget import store as store_mod
from tokenbudget import sync
from tokenbudget.store import JsonFileStore

# 2027-12-15 12:00 UTC: not in 2026, where every other test's data lies.
NOW = datetime(2027, 12, 15, 12, 0, tzinfo=UTC).timestamp()
APP, OTHER = "/home/dev/app", "/home/dev/other"


def _ledger_store(home: Path) -> JsonFileStore:
    return JsonFileStore(home / "tb state" / "ledger.json")


def _outcomes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How each prepared commit went: "merged" (others had committed since its read),
    "alone" (nobody had), "again" (worked out again under the lock)."""
    seen: list[str] = []
    real = JsonFileStore._rebase

    def spy(self: JsonFileStore, prep: store_mod.Prepared) -> Any:
        at = prep.pos.end
        try:
            size = Path(self.journal).stat().st_size
        except FileNotFoundError:
            size = 0
        got = real(self, prep)
        seen.append("again" if got is store_mod._STALE else "merged" if size > at else "alone")
        return got

    monkeypatch.setattr(JsonFileStore, "_rebase", spy)
    return seen


def _race(monkeypatch: pytest.MonkeyPatch, other: Callable[[], object]) -> None:
    """Run `other` once, between the next prepared call's read and its taking the lock."""
    real = JsonFileStore.commit_prepared
    pending = [other]

    def racing(self: JsonFileStore, prep: store_mod.Prepared) -> Any:
        if pending:
            pending.pop()()
        return real(self, prep)

    monkeypatch.setattr(JsonFileStore, "commit_prepared", racing)


def _reply(s: Session, n: int, tokens: int, at: float) -> None:
    s.write(reply_line(s.sid, f"{s.sid}-r{n}", at, s.cwd, input_tokens=tokens,
                       output_tokens=7))


def _post(s: Session, n: int, now: float = NOW) -> dict[str, Any]:
    return s.event("PostToolUse", now, tool_name="Bash", tool_input={"command": f"step {n}"})


def _sums(ledger: dict[str, Any]) -> dict[str, Any]:
    """The usage sums and each session's counts, tokens exact, dollars to the cent's millionth."""
    def rounded(v: Any) -> Any:
        return [round(x, 9) if type(x) is float else x for x in v]

    return {
        "hours": {b: {p: rounded(e) for p, e in t.items()} for b, t in ledger["hours"].items()},
        "models": {m: rounded(v) for m, v in ledger["models"].items()},
        "projects": {p: rounded(v) for p, v in ledger["projects"].items()},
        "sessions": {sid: {m: rounded(v[:7]) for m, v in s["m"].items()}
                     for sid, s in ledger["sessions"].items()},
        "keys": sorted(ledger["keys"]),
    }


def _fresh(home: Path, tmp_path: Path) -> dict[str, Any]:
    """The same transcripts synced from nothing into another ledger."""
    other = JsonFileStore(tmp_path / "fresh" / "ledger.json")
    sync.sync_all(other, config_dirs=[home / ".claude"], now=NOW)
    return other.snapshot()


@pytest.mark.parametrize("cwds", [(APP, OTHER), (APP, APP)], ids=["two projects", "one project"])
def test_another_sessions_commit_between_read_and_lock_is_added_to(
    private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    cwds: tuple[str, str],
) -> None:
    """Two sessions with news in the same 15 minutes and model (one project or two): the
    second to take the lock adds its usage to the sums the first committed, loses nothing
    and counts nothing twice, and does it by the merge, not by working it out again."""
    set_budgets(private_home, {"kind": "daily", "limit": "1B"})
    a, b = Session(private_home, "s-a", cwds[0]), Session(private_home, "s-b", cwds[1])
    a.turn("pa", "go", NOW - 120, 1_000)
    b.turn("pb", "go", NOW - 110, 2_000)
    _post(a, 0)
    _post(b, 0)
    seen = _outcomes(monkeypatch)
    for n in range(1, 4):
        _reply(a, n, 100 * n, NOW - 60 + n)
        _reply(b, n, 10 * n, NOW - 50 + n)
        _race(monkeypatch, lambda n=n: _post(b, n))
        assert _post(a, n) == {}
    assert _sums(_ledger_store(private_home).snapshot()) == _sums(_fresh(private_home, tmp_path))
    assert seen == ["alone", "merged"] * 3


def test_the_same_sessions_commit_between_read_and_lock_is_not_counted_twice(
    private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two calls of one session (parallel tools) read the same new lines: the one that comes
    second finds its session changed, works it out again under the lock, and counts the lines
    once."""
    set_budgets(private_home, {"kind": "daily", "limit": "1B"})
    a = Session(private_home, "s-a", APP)
    a.turn("pa", "go", NOW - 120, 1_000)
    _post(a, 0)
    seen = _outcomes(monkeypatch)
    _reply(a, 1, 500, NOW - 30)
    _race(monkeypatch, lambda: _post(a, 100))
    assert _post(a, 1) == {}
    assert _sums(_ledger_store(private_home).snapshot()) == _sums(_fresh(private_home, tmp_path))
    assert seen == ["alone", "again"]


def test_a_budget_crossed_by_another_session_meanwhile_is_enforced(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision made without the lock is made again on what others committed meanwhile:
    their usage carries a shared budget past its limit, and this call stops its turn."""
    set_budgets(private_home, {"kind": "daily", "limit": "10k"})
    a, b = Session(private_home, "s-a", APP), Session(private_home, "s-b", OTHER)
    a.turn("pa", "go", NOW - 120, 1_000)
    b.turn("pb", "go", NOW - 110, 1_000)
    _post(a, 0)
    _post(b, 0)
    seen = _outcomes(monkeypatch)
    _reply(a, 1, 100, NOW - 30)  # a alone stays far under the limit
    _reply(b, 1, 9_000, NOW - 20)  # b's response carries the day past it
    _race(monkeypatch, lambda: _post(b, 1))
    reason = refused(_post(a, 1))
    assert reason is not None and "daily" in reason
    assert seen[-1] == "again"


def test_a_change_that_touches_what_only_others_changed_commits_alone(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nobody committed between the read and the lock: the change is appended as worked out,
    one journal line, and the ledger replays to it (the suite's replay check)."""
    set_budgets(private_home, {"kind": "daily", "limit": "1B"})
    a = Session(private_home, "s-a", APP)
    a.turn("pa", "go", NOW - 120, 1_000)
    _post(a, 0)
    seen = _outcomes(monkeypatch)
    journal = Path(_ledger_store(private_home).journal)
    lines = journal.read_bytes().count(b"\n") if journal.exists() else 0
    _reply(a, 1, 500, NOW - 30)
    assert _post(a, 1) == {}
    assert seen == ["alone"]
    assert journal.read_bytes().count(b"\n") == lines + 1
    s = _ledger_store(private_home).snapshot()["sessions"]["s-a"]
    assert sum(sum(m[:5]) for m in s["m"].values()) == 1_000 + 500 + 7


@pytest.mark.parametrize(
    ("before", "mine", "theirs", "want"),
    [
        (None, [10, 0.5], None, [10, 0.5]),
        (None, [10, 0.5], [4, 0.25], [14, 0.75]),
        ([1, 0.125], [11, 0.625], [5, 0.25], [15, 0.75]),
        ([1, 0.125], [11, 0.625], [1, 0.125], [11, 0.625]),
        ([1, 0.125], [11, 0.625], None, store_mod._STALE),
        ([1, 0.125], {"x": 1}, [5, 0.25], store_mod._STALE),
    ],
)
def test_a_sum_adds_what_each_side_added(before: Any, mine: Any, theirs: Any, want: Any) -> None:
    assert store_mod._sum("models", 2, before, mine, theirs) == want


def test_an_hour_keeps_the_first_and_last_second_of_both() -> None:
    got = store_mod._sum("hours", 2, {"p": [1, 0.5, 100, 200]},
                         {"p": [3, 1.5, 100, 300], "q": [2, 0.25, 250, 260]},
                         {"p": [6, 1.0, 50, 220], "r": [9, 2.0, 10, 20]})
    assert got == {"p": [8, 2.0, 50, 300], "r": [9, 2.0, 10, 20], "q": [2, 0.25, 250, 260]}
    assert json.dumps(got)  # a journal line can hold it


_WORKER = """
import json, os, sys, time
from tokenbudget import hook
sid, path, cwd, who, calls, now, start = sys.argv[1:8]
while time.time() < float(start):
    time.sleep(0.002)
for n in range(int(calls)):
    line = {"type": "assistant", "isSidechain": False, "sessionId": sid, "cwd": cwd,
            "uuid": f"u-{who}-{n}", "requestId": f"req-{who}-{n}", "timestamp":
            "2027-12-15T11:59:00Z", "message": {"id": f"msg-{who}-{n}", "type": "message",
            "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [],
            "usage": {"input_tokens": 100 + n, "output_tokens": 3}}}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.write(fd, (json.dumps(line) + "\\n").encode())  # one write: whole lines only
    os.close(fd)
    event = {"session_id": sid, "transcript_path": path, "cwd": cwd,
             "hook_event_name": "PostToolUse", "tool_name": "Bash",
             "tool_input": {"command": f"{who} {n}"}}
    out = hook.handle("PostToolUse", json.dumps(event).encode(), now=float(now))
    assert "systemMessage" not in out or "last committed" in out["systemMessage"], out
"""


def test_processes_racing_on_one_session_and_on_several_lose_and_double_nothing(
    private_home: Path, tmp_path: Path
) -> None:
    """Five processes at once, each appending responses and running the hook: three sessions,
    one of them with two processes (parallel tools). The ledger ends exactly as a fresh sync
    of the same transcripts has it, and every commit replays to it (the suite's check)."""
    import subprocess
    import sys
    import time

    set_budgets(private_home, {"kind": "daily", "limit": "1B"})
    sessions = [Session(private_home, "s-0", APP), Session(private_home, "s-1", APP),
                Session(private_home, "s-2", OTHER)]
    for k, s in enumerate(sessions):
        s.turn(f"p{k}", "go", NOW - 300, 1_000)
        _post(s, 0)
    start = time.time() + 1.0
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, s.sid, str(s.path), s.cwd, who,
                               "12", repr(NOW), repr(start)])
             for who, s in [("a", sessions[0]), ("b", sessions[0]), ("c", sessions[1]),
                            ("d", sessions[2]), ("e", sessions[1])]]
    assert [p.wait(timeout=120) for p in procs] == [0] * 5
    for s in sessions:
        _post(s, 999)  # what a call that missed the lock left unread
    got = _sums(_ledger_store(private_home).snapshot())
    assert got == _sums(_fresh(private_home, tmp_path))
    assert len(got["keys"]) == 3 + 5 * 12


@pytest.mark.parametrize("how", ["exit", "kill"])
@pytest.mark.parametrize("step", ["append.opened", "append.cut", "append.half",
                                  "append.written", "view.shared", "append.synced"])
def test_a_prepared_commit_killed_at_any_step_loses_and_doubles_nothing(
    step: str, how: str, tmp_path: Path
) -> None:
    """A child reads the ledger, changes a usage sum and an entry, lets another writer commit
    (and leave a torn line), then commits its change by the merge and dies at `step`: its
    change is wholly in the ledger or not at all, the other writer's always, once."""
    import os
    import signal
    import time

    from tokenbudget import journal
    from tokenbudget.store import CRASH_ENV

    store = JsonFileStore(tmp_path / "tb" / "ledger.json", lock_timeout=30)
    with store.transaction() as ledger:
        ledger["projects"]["/p"] = [0, 0.0]
    ready = tmp_path / "ready"
    visible = step in ("append.written", "view.shared", "append.synced")
    crashed = 0
    for n in range(1, 6):
        ready.unlink(missing_ok=True)
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                child = JsonFileStore(store.file, lock_timeout=30)
                data, pos = child.read()
                assert pos is not None
                base = journal.copy(data)
                data["projects"]["/p"][0] += 1
                data["warned"][f"crash-{n}"] = float(n)
                with JsonFileStore(store.file).transaction() as other:
                    other["projects"]["/p"][0] += 100
                if step == "append.cut":
                    with open(store.journal, "ab") as f:
                        f.write(b'{"seq":999,"set":[[["folded","tokens"],12')
                os.environ[CRASH_ENV] = step + (":pause" if how == "kill" else "")
                os.environ[CRASH_ENV + "_READY"] = str(ready)
                prep = store_mod.Prepared(pos, base, data, None, lambda _ledger: True)
                with child.commit_prepared(prep) as held:
                    assert held is None  # merged, not worked out again
            finally:
                os._exit(0)  # the step was never reached: the parent fails on this
        if how == "kill":
            deadline = time.monotonic() + 30
            while not ready.exists():
                assert time.monotonic() < deadline, f"the child never reached {step}"
                time.sleep(0.001)
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        if how == "kill":
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        else:
            assert os.waitstatus_to_exitcode(status) == 70, f"the child did not stop at {step}"
        crashed += visible
        seen = JsonFileStore(store.file).snapshot()
        assert seen["projects"]["/p"][0] == 100 * n + crashed
        assert (f"crash-{n}" in seen["warned"]) == visible
        assert not seen["notices"]
    with store.transaction() as ledger:  # the next writer cleans up after the dead
        ledger["projects"]["/p"][0] += 1000
    store.checkpoint()
    final = JsonFileStore(store.file).snapshot()
    assert final["projects"]["/p"][0] == 100 * 5 + crashed + 1000
    assert not [p.name for p in Path(store.folder).glob("*.tmp")]


def _prepared(change: Callable[[dict[str, Any]], None]) -> store_mod.Prepared:
    """A change of session "s-a" made on a small ledger with another session "s-b" in it."""
    from tokenbudget import journal
    from tokenbudget.ledger import new_ledger

    base = new_ledger()
    for sid in ("s-a", "s-b"):
        base["sessions"][sid] = {"m": {"x": [1, 0, 0, 0, 0, 0.5, 1, "t"]}, "l": 1.0}
        base["files"][f"/t/{sid}.jsonl"] = ["1:2", "h", 10, sid, None]
    base["hours"]["7"] = {"/p": [1, 0.5, 100, 100]}
    base["events"]["old"] = 1.0
    data = journal.copy(base)
    change(data)
    pos = store_mod.Position((1,), 1.0, None, 0, 0, 0, 100)
    return store_mod.Prepared(pos, base, data, "s-a", lambda _ledger: True)


def _ours(data: dict[str, Any]) -> None:
    data["sessions"]["s-a"]["m"]["x"][0] += 5
    data["files"]["/t/s-a.jsonl"][2] = 20
    data["hours"]["7"]["/p"][0] += 5
    data["events"]["new-a"] = 2.0
    del data["events"]["old"]


@pytest.mark.parametrize(
    ("theirs", "merges"),
    [
        # another session's records, events and the sums: merged
        ([[["sessions", "s-b", "m", "x"], [2, 0, 0, 0, 0, 0.5, 2, "t"]],
          [["files", "/t/s-b.jsonl"], ["1:2", "h", 30, "s-b", None]],
          [["events", "new-b"], 2.0], [["hours", "7", "/p"], [3, 0.75, 90, 100]]], True),
        # its own session's record, even another part of it (ingest reads it whole)
        ([[["sessions", "s-a", "l"], 5.0]], False),
        # where its own transcripts were read to
        ([[["files", "/t/s-a.jsonl"], ["1:2", "h", 20, "s-a", None]]], False),
        # a transcript of its own session that it had not read
        ([[["files", "/t/s-a-sub.jsonl"], ["1:3", "h", 5, "s-a", None]]], False),
        # what it read besides: rates, a note
        ([[["rates", "x"], 1e-6]], False),
        ([[["notices"], ["hello"]]], False),
        # a fork's record
        ([[["sessions", "s-b", "po"], "s-a"]], False),
        # a whole table of sums replaced (a session starting prunes them)
        ([[["hours"], {}]], False),
        # the same event, another value
        ([[["events", "new-a"], 3.0]], False),
    ],
)
def test_what_others_changed_decides_whether_the_change_merges(
    theirs: list[Any], merges: bool
) -> None:
    prep = _prepared(_ours)
    got = store_mod._merge(prep, [(1, theirs, [])])
    assert (got is not None) == merges
    if merges:
        assert got is not None and [["hours", "7", "/p"], [8, 0.75, 90, 100]] in got


def test_both_deleting_an_old_event_is_the_same_change() -> None:
    prep = _prepared(_ours)
    assert store_mod._merge(prep, [(1, [], [["events", "old"]])]) == [
        [["hours", "7", "/p"], [6, 0.5, 100, 100]]]
    assert store_mod._merge(prep, [(1, [[["events", "old"], 9.0]], [])]) is None


def test_a_whole_table_of_sums_set_by_the_change_is_not_merged() -> None:
    def whole(data: dict[str, Any]) -> None:
        _ours(data)
        data["hours"] = {"8": {"/p": [1, 0.5, 100, 100]}, **data["hours"]}  # keys reordered

    prep = _prepared(whole)
    assert [p for p, _v in prep.sets if p[0] == "hours"] == [["hours"]]
    assert store_mod._merge(prep, [(1, [[["hours", "7", "/p"], [3, 0.75, 90, 100]]], [])]) is None


def test_the_journal_since_a_read_is_read_only_from_the_journal_that_read_saw(
    tmp_path: Path,
) -> None:
    # store._since, for the prepared commit and a transaction given its read: what others
    # committed since, or None when the journal cannot tell it (then the whole ledger is read).
    store = JsonFileStore(tmp_path / "ledger.json")
    with store.transaction() as ledger:
        ledger["warned"]["a"] = 1.0  # the snapshot: no journal yet
    _, fresh = store.read()
    with store.transaction() as ledger:
        ledger["warned"]["b"] = 2.0
    _, pos = store.read()
    with store.transaction() as ledger:
        ledger["warned"]["c"] = 3.0
    journal_file = Path(store.journal)
    got = store._since(fresh)  # no journal when read: one begun since on that snapshot
    assert got is not None and [e[0] for e in got[0].entries] == [1, 2]
    got = store._since(pos)
    assert got is not None and [e[0] for e in got[0].entries] == [2]
    assert got[1] == (journal_file.stat().st_dev, journal_file.stat().st_ino)
    other = tmp_path / "restored.jsonl"
    other.write_bytes(journal_file.read_bytes())
    other.replace(journal_file)  # the same lines in another file (a copy put back)
    assert store._since(pos) is None
    _, pos = store.read()
    with open(journal_file, "r+b") as f:
        f.truncate(pos.end - 1)  # shorter than it was read, in place
    assert store._since(pos) is None
    journal_file.unlink()
    assert store._since(pos) is None  # gone since it was read
    assert store._since(fresh) is not None and store._since(fresh)[0].entries == []


def test_the_copy_before_the_news_is_the_ledger_as_it_was_whatever_the_reading_changed() -> None:
    """A call's copy of the ledger before it reads its session's news shares the other
    sessions' records and read positions with the ledger (copying them all cost the call most
    of its time at 2,000 live sessions); whatever the reading then changes, its own records or
    theirs (a fork's, a held request's), the copy given back is the ledger as it was."""
    import marshal

    from tokenbudget.ingest import Ingestor
    from tokenbudget.ledger import new_ledger

    ledger = new_ledger()
    ing = Ingestor(ledger)
    for sid in ("s-1", "s-2", "s-3"):
        ing.session(sid, f"/home/dev/{sid}", 1.0)
        ledger["files"][f"/t/{sid}.jsonl"] = ["1:2", "h", 10, sid, None]
    ledger["hours"]["7"] = {"/home/dev/s-1": [1, 0.5, 7, 8]}
    was = marshal.dumps(ledger)

    def reading(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
        data = marshal.loads(was)
        give = store_mod.copy_before_news(data, "s-1")
        change(data)
        base = give()
        assert json.dumps(base) == json.dumps(marshal.loads(was))  # values and their order
        return base

    def own(d: dict[str, Any]) -> None:  # the reading's usual changes: its own records
        d["sessions"]["s-1"]["t"]["p-1"] = ["prompt", 2.0, 5, 0.1]
        d["files"]["/t/s-1.jsonl"][2] = 20
        d["files"]["/t/s-1/agent-1.jsonl"] = ["1:3", "h", 5, "s-1", None]
        d["hours"]["7"]["/home/dev/s-1"][0] += 5
        d["keys"]["k"] = ["s-1", "m", 1, 1, 0, 0, 0, 7, 0.1, "p-1"]

    base = reading(own)
    assert base["sessions"]["s-2"] is not None
    for change in (
        lambda d: d["sessions"]["s-2"]["m"].update({"m": [1, 1, 0, 0, 0, 0.1, 1, "t"]}),
        lambda d: d["sessions"]["s-3"].update({"hd": {"k": "s-1"}}),
        lambda d: d["files"]["/t/s-2.jsonl"].__setitem__(2, 99),
        lambda d: d["sessions"].pop("s-2"),
        lambda d: (own(d), d["sessions"]["s-2"]["t"].update({"p-9": ["prompt", 1.0, 1, 0.0]})),
    ):
        reading(change)
    # Left alone, they are the ledger's own: nothing of theirs was copied.
    data = marshal.loads(was)
    give = store_mod.copy_before_news(data, "s-1")
    own(data)
    base = give()
    assert base["sessions"]["s-2"] is data["sessions"]["s-2"]
    assert base["files"]["/t/s-3.jsonl"] is data["files"]["/t/s-3.jsonl"]
    assert base["sessions"]["s-1"] is not data["sessions"]["s-1"]


def test_a_call_whose_news_grows_another_sessions_request_counts_it_once(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of another session's request (an older fork's: no requestSessionId) with a
    larger usage than its requester's line: the reading before the lock adds the growth to
    the requester's records, which the copy taken before it shares with the ledger read: the
    change committed holds the growth (the suite's check replays every commit), once."""
    set_budgets(private_home, {"kind": "daily", "limit": "1B"})
    a, b = Session(private_home, "s-a", APP), Session(private_home, "s-b", APP)
    a.turn("pa", "go", NOW - 120, 1_000)
    b.turn("pb", "go", NOW - 110)
    _post(a, 0)
    _post(b, 0)
    seen = _outcomes(monkeypatch)
    b.write(reply_line("s-b", "pa-m1", NOW - 60, APP, input_tokens=1_500))
    assert _post(b, 1) == {}
    ledger = _ledger_store(private_home).snapshot()
    assert ledger["sessions"]["s-a"]["m"]["claude-opus-5-5"][:7] == [1_500, 0, 0, 0, 0, 0.006, 1]
    assert ledger["sessions"]["s-b"]["m"] == {}
    assert ledger["models"]["claude-opus-5-5"][0] == 1_500
    assert seen == ["alone"]  # the prepared change, committed as worked out
