"""The resident answerer's warm ledger (store.keep_warm): kept from its own last commit, read
again only where the files changed since, never trusted once another process changed them in
a way the journal cannot tell.

Every test here also runs the suite's check (TOKENBUDGET_STORE_CHECK): each warm read is
compared with a whole read of the same files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import truth_usage
from tests.test_hook import _append_request, run_hook, session, session_tokens, set_budgets
from tokenbudget import hook
from tokenbudget import store as store_mod
from tokenbudget.errors import CorruptLedger
from tokenbudget.fileio import stamp
from tokenbudget.store import JsonFileStore

NOW = 1_900_000_000.0  # 2030: the events' fingerprints are kept this long after


@pytest.fixture
def warm() -> Iterator[list[str]]:
    """Warm reads on, as in the answerer; how each read went ("warm", "cold")."""
    seen: list[str] = []
    real = JsonFileStore._take_warm

    def spy(self: JsonFileStore) -> Any:
        got = real(self)
        seen.append("cold" if got is None else "warm")
        return got

    store_mod.keep_warm()
    JsonFileStore._take_warm = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        JsonFileStore._take_warm = real  # type: ignore[method-assign]
        store_mod.keep_warm(False)


def _store(private_home: Path) -> JsonFileStore:
    return JsonFileStore(private_home / "tb state" / "ledger.json")


def _other_process(private_home: Path, code: str) -> None:
    """`code` run in another process (whose reads are never warm), with `s` its store."""
    prelude = (f"from tokenbudget.store import JsonFileStore\n"
               f"s = JsonFileStore({str(_store(private_home).file)!r})\n")
    subprocess.run([sys.executable, "-c", prelude + code], check=True, env=dict(os.environ))


def _mark(name: str) -> str:
    return f"s.seen_event({name!r}, {NOW!r})"


def _cold(s: JsonFileStore) -> dict[str, Any]:
    return s._read_cold()[0]


def test_the_read_after_a_commit_is_warm_and_reads_what_others_appended_since(
    private_home: Path, warm: list[str]
) -> None:
    s = _store(private_home)
    s.seen_event("mine-1", NOW)  # a new ledger: written whole, nothing kept
    s.seen_event("mine-2", NOW)  # read cold, appended: kept
    del warm[:]
    got, pos = s.read()
    assert warm == ["warm"] and "mine-2" in got["events"]
    assert got == _cold(s)
    s.seen_event("mine-3", NOW)  # its read takes the warm ledger, its commit keeps it
    _other_process(private_home, _mark("theirs-1") + "\n" + _mark("theirs-2"))
    del warm[:]
    got, pos = s.read()
    assert warm == ["warm"]
    assert {"mine-3", "theirs-1", "theirs-2"} <= set(got["events"])
    assert got == _cold(s)
    assert (pos.end, pos.seq) == (os.stat(s.journal).st_size, s._read_cold()[1].seq)


def test_a_warm_ledger_is_taken_not_shared(private_home: Path, warm: list[str]) -> None:
    # A read that changes the ledger and does not commit (a call decided from the ledger as
    # committed when the lock stays busy) leaves nothing kept: the next read is whole.
    s = _store(private_home)
    s.seen_event("a", NOW)
    s.seen_event("b", NOW)
    got, _ = s.read()
    got["events"]["not committed"] = NOW
    del warm[:]
    again, _ = s.read()
    assert warm == ["cold"] and "not committed" not in again["events"]


@pytest.mark.parametrize("change", [
    "s.checkpoint()",  # a fold (sync, a session's start, a grown journal)
    "import os; os.remove(s.journal)",  # a journal gone (its ledger's lines with it)
    "import os; os.remove(s.file)",  # a ledger deleted (uninstall --purge, by hand)
])
def test_a_change_the_journal_cannot_tell_is_read_whole(
    private_home: Path, warm: list[str], change: str
) -> None:
    s = _store(private_home)
    s.seen_event("a", NOW)
    s.seen_event("b", NOW)
    _other_process(private_home, _mark("theirs") + "\n" + change)
    del warm[:]
    got, _ = s.read()
    assert warm == ["cold"]
    cold = _cold(s)
    if not os.path.exists(s.file):
        cold["created"] = cold["updated"] = got["created"]  # a new ledger, stamped as read
    assert got == cold


def test_a_ledger_made_corrupt_meanwhile_is_not_read_warm(
    private_home: Path, warm: list[str]
) -> None:
    s = _store(private_home)
    s.seen_event("a", NOW)
    s.seen_event("b", NOW)
    Path(s.file).write_text("{not json")
    with pytest.raises(CorruptLedger):
        s.read()
    # ... and the next commit keeps it aside and starts again, as without warm reads.
    s.seen_event("c", NOW)
    assert list(Path(s.file).parent.glob("ledger.json.corrupt-*"))
    got, _ = s.read()
    assert got["rebuild"] is True and "a" not in got["events"]


def test_a_journal_line_nobody_can_use_is_read_whole_and_reported(
    private_home: Path, warm: list[str]
) -> None:
    s = _store(private_home)
    s.seen_event("a", NOW)
    s.seen_event("b", NOW)
    with open(s.journal, "ab") as f:
        f.write(b'{"not": "a line we wrote"}\n')
    del warm[:]
    got, pos = s.read()
    assert warm == ["cold"] and pos.bad == 1
    assert any("unreadable" in n for n in got["notices"])


def test_a_checkpoint_while_it_reads_the_journal_sends_it_to_the_whole_read(
    private_home: Path, warm: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkpoint replaces the snapshot, then empties the journal: a warm read that read the
    # journal across it must not pair what it read with the old snapshot's position.
    s = _store(private_home)
    s.seen_event("a", NOW)
    s.seen_event("b", NOW)
    real = JsonFileStore._since

    def racing(self: JsonFileStore, pos: Any) -> Any:
        got = real(self, pos)
        _other_process(private_home, _mark("theirs") + "\ns.checkpoint()")
        return got

    monkeypatch.setattr(JsonFileStore, "_since", racing)
    del warm[:]
    got, pos = s.read()
    assert warm == ["cold"] and "theirs" in got["events"]
    assert pos.snapshot == stamp(os.stat(s.file))


def test_the_resident_answerer_s_events_read_warm_and_count_what_others_record(
    private_home: Path, warm: list[str], recorded_day: float
) -> None:
    # The answerer's events with news, between which a command hook of the same session, a
    # sync and a budget change (config: never kept) run in processes of their own.
    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "1000M"})
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    total = truth_usage("loop").total
    event = {**a, "hook_event_name": "PostToolBatch"}

    def answer(n: int) -> None:
        later: list[Any] = []
        raw = json.dumps({**event, "n": n}).encode()
        assert hook.handle("PostToolBatch", raw, later=later) == {}
        assert len(later) == 1  # answered first, committed after
        later[0]()

    _append_request(a["transcript_path"], 1, 1000)
    answer(1)
    _append_request(a["transcript_path"], 2, 100)
    del warm[:]
    answer(2)
    assert warm[0] == "warm"
    _append_request(a["transcript_path"], 3, 10)
    assert run_hook("Stop", {**a, "hook_event_name": "Stop"})[1] == {}  # a command hook
    _append_request(a["transcript_path"], 4, 1)
    del warm[:]
    answer(3)
    assert warm[0] == "warm"  # the command hook's journal line read, and no more
    assert session_tokens(private_home, a["session_id"]) == total + 1111
    # A sync folds the journal into the snapshot: read whole once, then warm again.
    subprocess.run([sys.executable, "-c", "from tokenbudget.cli import main; main()",
                    "sync"], check=True, capture_output=True)
    for n, tokens in ((5, 1), (6, 1)):
        _append_request(a["transcript_path"], n, tokens)
        del warm[:]
        answer(n)
        assert warm[0] == ("cold" if n == 5 else "warm")
    assert session_tokens(private_home, a["session_id"]) == total + 1113
    # A rebuild sets the ledger aside and counts the transcripts again: read whole once.
    subprocess.run([sys.executable, "-c", "from tokenbudget.cli import main; main()",
                    "rebuild"], check=True, capture_output=True)
    _append_request(a["transcript_path"], 8, 1)
    del warm[:]
    answer(8)
    assert warm[0] == "cold"
    assert session_tokens(private_home, a["session_id"]) == total + 1114
    # A budget set meanwhile is read by the next event: it stops the turn.
    subprocess.run([sys.executable, "-c", "from tokenbudget.cli import main; main()",
                    "budget", "set", "total", "1k"], check=True, capture_output=True)
    _append_request(a["transcript_path"], 7, 1)
    raw = json.dumps({**event, "n": 7}).encode()
    assert hook.handle("PostToolBatch", raw, later=[])["continue"] is False


def test_what_a_change_sets_is_worked_out_after_the_reply(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The diff of a prepared change (journal.changes) walks the whole ledger: the answerer,
    # which commits after its reply, does it after the reply too.
    from tokenbudget import journal

    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": "1000M"})
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)
    calls: list[str] = []
    real = journal.changes

    def spy(before: Any, after: Any) -> Any:
        calls.append("changes")
        return real(before, after)

    monkeypatch.setattr(journal, "changes", spy)
    later: list[Any] = []
    raw = json.dumps({**a, "hook_event_name": "PostToolBatch"}).encode()
    assert hook.handle("PostToolBatch", raw, later=later) == {}
    assert calls == [] and len(later) == 1
    later[0]()
    assert calls == ["changes"]
    assert session_tokens(private_home, a["session_id"]) == truth_usage("loop").total + 1000
