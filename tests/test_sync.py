"""sync.py: a sync, a rebuild and hooks racing them count each request once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import (
    _transcript,
    install_fixture,
    ledger_total,
    truth_usage,
)
from tokenbudget import sync
from tokenbudget.store import JsonFileStore


def test_sync_twice_changes_nothing(private_home: Path) -> None:
    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    first, files = store.snapshot(), _ledger_files(store)
    report = sync.sync_all(store, now=1795887600.0)
    assert report.new_requests == 0 and report.files_read == 0
    assert ledger_total(store) == truth_usage("loop")
    assert store.snapshot() == first
    assert _ledger_files(store) == files  # nothing to write: nothing written


RACER = """
import sys
from pathlib import Path
from tokenbudget import sync
store = sync.open_store(lock_timeout=60)
transcript, sid, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(15):
    if mode == "hook":
        sync.sync_session(store, transcript, sid)
    else:
        sync.sync_all(store, now=1795887600.0)
"""


def test_hooks_and_syncs_racing_count_each_request_once(private_home: Path) -> None:
    import os
    import subprocess
    import sys

    install_fixture("agent", private_home / ".claude")
    path = _transcript(private_home, "agent")
    sid = path.stem
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 3]))
    env = dict(os.environ)
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(path), sid, mode], env=env)
        for mode in ("hook", "hook", "sync", "sync")
    ]
    # The session goes on while they race: its remaining lines arrive in small appends.
    rest = lines[len(lines) // 3 :]
    for i in range(0, len(rest), 3):
        with open(path, "a") as f:
            f.writelines(rest[i : i + 3])
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = sync.open_store()
    sync.sync_all(store, now=1795887600.0)
    assert ledger_total(store) == truth_usage("agent")


def test_rollups_by_project_and_model_survive_rebuild(private_home: Path) -> None:
    for case in ("plain", "agent"):
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    expected = truth_usage("plain").total + truth_usage("agent").total
    sync.sync_all(store, now=1795887600.0 + 7 * 86400)  # both fold into history
    ledger = store.snapshot()
    assert ledger["models"] == {"claude-opus-5-5": [expected, pytest.approx(0.026841)]}
    assert ledger["projects"]["/home/dev/project"][0] == expected
    sync.rebuild(store, now=1795887600.0 + 7 * 86400)
    rebuilt = store.snapshot()
    assert rebuilt["models"]["claude-opus-5-5"][0] == expected
    assert rebuilt["projects"]["/home/dev/project"][0] == expected
    assert ledger_total(store).total == expected


def _ledger_files(store: JsonFileStore) -> dict[str, tuple[int, int, bytes]]:
    """The snapshot, the journal and the hot view's shared file, each as (inode, mtime, bytes):
    a commit that writes nothing leaves all three as they were."""
    from tokenbudget import hot

    out = {}
    for path in (store.file, store.journal, hot.paths(store.file)[0]):
        st = os.stat(path)
        out[os.path.basename(path)] = (st.st_ino, st.st_mtime_ns, Path(path).read_bytes())
    return out


@pytest.mark.parametrize(
    "command", [["status", "--json"], ["sync"], ["report", "--json"], ["budget", "suggest"]]
)
def test_a_command_with_nothing_new_writes_nothing(
    command: list[str], private_home: Path, recorded_day: float
) -> None:
    """Every read-only command brings the ledger up to date first: with nothing new, that
    writes nothing (the snapshot was rewritten and fsynced whole by every call, 4.7 MB at
    2,000 live sessions), and a short journal is left to readers, as a session's start does."""
    from click.testing import CliRunner

    from tokenbudget.cli import main

    install_fixture("loop", private_home / ".claude")
    runner = CliRunner()
    assert runner.invoke(main, ["sync"]).exit_code == 0
    store = sync.open_store()
    with store.transaction() as ledger:  # one commit since: a journal far from due
        ledger["warned"]["daily@test"] = 1.0
    assert os.path.getsize(store.journal) > 0 and not store.fold_due()
    before = _ledger_files(store)
    for _ in range(2):
        result = runner.invoke(main, command)
        assert result.exit_code == 0, result.output
        assert _ledger_files(store) == before
    assert store.snapshot()["warned"]["daily@test"] == 1.0
    assert ledger_total(store) == truth_usage("loop")


def test_a_sync_with_news_records_it(private_home: Path, recorded_day: float) -> None:
    install_fixture("loop", private_home / ".claude")
    path = _transcript(private_home, "loop")
    full = path.read_text()
    path.write_text("".join(full.splitlines(keepends=True)[:5]))
    store = sync.open_store()
    sync.sync_all(store)
    path.write_text(full)
    report = sync.sync_all(store)
    assert report.new_requests > 0
    assert ledger_total(sync.open_store()) == truth_usage("loop")


@pytest.mark.parametrize("change", ["a rebuild completed", "sessions folded"])
def test_what_the_last_step_changes_goes_into_a_new_snapshot(
    change: str, private_home: Path, recorded_day: float
) -> None:
    """A rebuild's end (`rebuild` cleared) and sessions folded into history are written as a
    new snapshot, as before: durable once sync returns, the journal folded into it."""
    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store)
    with store.transaction() as ledger:
        ledger["rebuild"] = change == "a rebuild completed"
        ledger["warned"]["daily@test"] = 1.0
    was = os.stat(store.file).st_ino
    later = recorded_day + (3 * 86400 if change == "sessions folded" else 0)
    report = sync.sync_all(store, now=later)
    assert os.stat(store.file).st_ino != was
    assert os.path.getsize(store.journal) == 0
    raw = json.loads(Path(store.file).read_bytes())
    assert raw["rebuild"] is False and raw["warned"] == {"daily@test": 1.0}
    assert (report.folded, raw["folded"]["sessions"]) == (
        (1, 1) if change == "sessions folded" else (0, 0))
    assert ledger_total(store) == truth_usage("loop")


def test_a_sync_reads_the_ledger_before_the_lock(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under the lock only the journal written since is read: the whole ledger, read and
    copied under it, held every hook up for ~300 ms of CPU at 2,000 live sessions."""
    from tokenbudget import lock
    from tokenbudget import store as store_mod

    install_fixture("loop", private_home / ".claude")
    store = sync.open_store()
    sync.sync_all(store)
    with store.transaction() as ledger:  # a commit since, for the read under the lock
        ledger["warned"]["daily@test"] = 1.0
    monkeypatch.delenv(store_mod.CHECK_ENV)  # its check reads the whole ledger under the lock
    locked = [False]
    whole_reads: list[bool] = []
    real_acquire, real_read = lock.acquire, JsonFileStore._read_once

    def acquire(path: str, timeout: float) -> object:
        release = real_acquire(path, timeout)
        locked[0] = True

        def done() -> None:
            locked[0] = False
            release()

        return done

    def read_once(self: JsonFileStore, *lazy: bool) -> object:
        whole_reads.append(locked[0])
        return real_read(self, *lazy)

    monkeypatch.setattr(lock, "acquire", acquire)
    monkeypatch.setattr(JsonFileStore, "_read_once", read_once)
    sync.sync_all(store)
    assert whole_reads and not any(whole_reads)
    assert store.snapshot()["warned"]["daily@test"] == 1.0


@pytest.mark.parametrize("when_looked", ["live", "folded"])
def test_a_sync_resumes_a_session_from_where_the_last_fold_left_it(
    private_home: Path, monkeypatch: pytest.MonkeyPatch, when_looked: str
) -> None:
    # A sync decides what to read before it takes the lock. Between that look and its read,
    # another sync (or a session starting) reads the session on and folds it: the read must
    # go on from that fold, not from the ledger or history the sync looked at.
    from tests.claude_lines import Session

    t, later = 1795887600.0, 1795887600.0 + 10 * 86400  # idle past retention: syncs fold it
    s = Session(private_home, "s-race", "/home/dev/project")
    s.turn("p1", "go", t, 1000)
    store = sync.open_store()
    if when_looked == "live":
        s.event("Stop", later)  # a hook reads it (hooks fold only at a session's start)
    else:
        sync.sync_all(store, now=later)  # read and folded
    assert (s.sid in store.snapshot()["sessions"]) == (when_looked == "live")
    s.turn("p2", "go on", t + 60, 200)
    ingest_batch = sync._ingest_batch
    other: list[sync.SyncReport] = []

    def other_sync_first(*args: object) -> None:
        if not other:
            monkeypatch.setattr(sync, "_ingest_batch", ingest_batch)
            other.append(sync.sync_all(store, now=later))
            monkeypatch.setattr(sync, "_ingest_batch", other_sync_first)
        ingest_batch(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(sync, "_ingest_batch", other_sync_first)
    sync.sync_all(store, now=later)
    assert other and other[0].folded == 1
    assert ledger_total(store).input == 1200
