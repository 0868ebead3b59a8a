"""Bringing the ledger up to date with the transcripts: all of them, or one session's.

Work is committed in batches, each under the lock, so a crash loses at most the batch in hand
(its read positions are committed with its totals, so nothing is lost or counted twice) and
hooks of running sessions get the lock between batches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from tokenbudget import clock, history, paths, transcripts
from tokenbudget.errors import LedgerError
from tokenbudget.ingest import Ingestor, Result, compact, prune_hours
from tokenbudget.ledger import Ledger, file_identity, new_ledger
from tokenbudget.record import Record
from tokenbudget.schema import FILE_IDENT, FILE_OFFSET, FILE_SESSION, S_LAST
from tokenbudget.store import FOLD_DUE, Store
from tokenbudget.store import open_store as open_store  # the one way to the ledger

# typing costs a hook call with news about 2.5 ms to import, pathlib about 3.5 ms: transcripts
# are named by strings here (the config folders a sync is given may be Paths).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import tzinfo
    from pathlib import Path
    from typing import Any

BATCH_BYTES = 32 * 1024 * 1024
BATCH_FILES = 200
DEFAULT_RETENTION_DAYS = 2.0


class SyncReport(Record):
    """What a sync did."""

    _fields = ("files_read", "new_requests", "folded", "skipped", "errors", "notices", "complete")
    __slots__ = _fields

    def __init__(self) -> None:
        self.files_read = 0
        self.new_requests = 0
        self.folded = 0
        self.skipped: dict[str, int] = {}
        self.errors: list[str] = []
        self.notices: list[str] = []
        self.complete = True

    def add(self, r: Result) -> None:
        self.files_read += r.files
        self.new_requests += r.new_requests
        for k, v in r.skipped.items():
            self.skipped[k] = self.skipped.get(k, 0) + v
        self.errors.extend(r.errors)


def _take_notices(ledger: Ledger, report: SyncReport) -> None:
    if ledger["notices"]:
        report.notices.extend(ledger["notices"])
        ledger["notices"] = []


def sync_all(
    store: Store,
    *,
    config_dirs: list[Path] | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    deadline: float | None = None,
    now: float | None = None,
    tz: tzinfo | None = None,
) -> SyncReport:
    """Ingest everything new in every transcript, then fold sessions idle past retention."""
    report = SyncReport()
    dirs = config_dirs if config_dirs is not None else paths.claude_config_dirs()
    t_now = now if now is not None else clock.now()
    with store.transaction(_read_first(store)) as ledger:
        _take_notices(ledger, report)
        if ledger["rebuild"] and not ledger["files"] and not ledger["folded"]["sessions"]:
            history.restore_into(ledger, t_now)
        known = {p: (r[FILE_IDENT], r[FILE_OFFSET]) for p, r in ledger["files"].items()}
    # Decide what to read without the lock; the reads themselves happen under it.
    folded = _Folded()
    todo: list[tuple[str, str, bool, int]] = []
    for path, sid, sub in transcripts.discover(dirs):
        try:
            st = os.stat(path)
        except OSError:
            continue
        prev = known.get(path)
        if prev is None:
            old = folded.files().get(path)
            # A folded session's transcript, unchanged since: its usage is in history. Resuming
            # it anyway would put its read position back in the ledger, where nothing removes
            # it again (its session is no longer there to fold): the ledger would keep a record
            # for every transcript ever seen.
            prev = (old[FILE_IDENT], old[FILE_OFFSET]) if old is not None else None
        if prev == (file_identity(st), st.st_size):  # read to its end, and the same file
            continue
        todo.append((path, sid, sub, st.st_size))
    batch: list[tuple[str, str, bool, int]] = []
    size = 0
    for item in todo:
        batch.append(item)
        size += item[3]
        if size >= BATCH_BYTES or len(batch) >= BATCH_FILES:
            _ingest_batch(store, batch, prices, report, folded)
            batch, size = [], 0
            if deadline is not None and time.monotonic() > deadline:
                report.complete = False
                return report
    if batch:
        _ingest_batch(store, batch, prices, report, folded)
    # A new snapshot only for what this step changes (a fold, a prune, a compaction, notices
    # taken, a rebuild completed) or a journal grown as far as a session's start folds it
    # (store.fold_due): a shorter journal is replayed by readers at little cost, and a status
    # with nothing new must not rewrite and fsync the whole ledger under the lock.
    with store.transaction(_read_first(store), checkpoint=FOLD_DUE) as ledger:
        _take_notices(ledger, report)
        ledger["rebuild"] = False
        prune_hours(ledger, t_now, tz)
        report.folded = fold_idle(ledger, t_now - retention_days * 86400, prices)
        compact(ledger, t_now)
    return report


def fold_idle(
    ledger: Ledger, cutoff: float, prices: Mapping[str, Mapping[str, float]] | None = None,
    max_bytes: int | None = None,
) -> int:
    """Fold the sessions idle since before `cutoff` (history.fold), each read on first to
    the end of its transcripts (at most `max_bytes` of each): a line written since the last
    read is counted before the fold, while its response's request record is still there. A
    session that this shows active, or whose transcript ends in a line being written, stays."""
    idle = {sid for sid, s in ledger["sessions"].items() if s[S_LAST] < cutoff}
    if not idle:
        return 0
    mains: dict[str, str] = {}
    grown: set[str] = set()
    for path, rec in ledger["files"].items():
        sid = rec[FILE_SESSION]
        if sid in idle:
            if os.path.basename(path) == sid + ".jsonl":
                mains[sid] = path
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (file_identity(st), st.st_size) != (rec[FILE_IDENT], rec[FILE_OFFSET]):
                grown.add(sid)
    for sid in sorted(grown & set(mains)):
        _ingest_session(ledger, mains[sid], sid, prices, max_bytes)
    return history.fold(ledger, cutoff)


def _read_first(store: Store) -> tuple[Any, Ledger] | None:
    """The ledger read before the lock, for a transaction to take as `known`: under the lock
    it then reads only the journal written since. Read, checked and copied under the lock,
    the whole ledger held every hook up for ~300 ms of CPU at 2,000 live sessions (bench/
    RESULTS.md section 37). None when it cannot be read: the transaction reads it under the
    lock, which keeps a corrupt one aside and rebuilds."""
    try:
        ledger, pos = store.read()
    except LedgerError:
        return None
    return pos, ledger


def nothing_to_read(config_dirs: list[Path] | None = None) -> bool:
    """Whether Claude Code's folders hold no transcript at all (a subagent's included)."""
    dirs = config_dirs if config_dirs is not None else paths.claude_config_dirs()
    return next(transcripts.discover(dirs), None) is None


class _Folded:
    """The read positions of folded transcripts, read again whenever history has changed.

    A sync looks at the ledger and history before it takes the lock. By the time it reads a
    transcript under the lock, another process may have folded its session (the ledger's
    position gone), or read it on and folded it again (a later position in history): reading
    from what was looked at then would count again what that fold keeps."""

    def __init__(self) -> None:
        self._stamp: tuple[int, int, int, int] | None = None
        self._files: dict[str, list[Any]] = {}

    def files(self) -> dict[str, list[Any]]:
        try:
            st = os.stat(history.history_file())
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (0, 0, 0, 0)  # none yet: nothing folded
        if stamp != self._stamp:
            self._files = history.folded_files() if stamp[2] else {}
            self._stamp = stamp
        return self._files


def _ingest_batch(
    store: Store,
    batch: list[tuple[str, str, bool, int]],
    prices: Mapping[str, Mapping[str, float]] | None,
    report: SyncReport,
    folded: _Folded,
) -> None:
    with store.transaction() as ledger:
        _take_notices(ledger, report)
        ing = Ingestor(ledger, prices)
        for path, sid, sub, _size in batch:
            if path not in ledger["files"]:
                # As history holds it now, under the lock: a fold since the look before it
                # (folds write history under the lock) is read on from where it left off.
                old = folded.files().get(path)
                if old is not None:
                    history.resume_position(ledger, path, old, sid)
                    ing.keys_restored()
            ing.ingest_file(path, sid, sub)
        report.add(ing.result)


def sync_session(
    store: Store,
    transcript: str | os.PathLike[str],
    session_id: str,
    *,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    ledger: Ledger | None = None,
    max_bytes: int | None = None,
) -> Result:
    """Ingest what is new in one session's transcripts (its subagents included).

    With `ledger` given, the caller holds the lock and commits; else a transaction is used.
    """
    if ledger is not None:
        return _ingest_session(ledger, transcript, session_id, prices, max_bytes)
    with store.transaction() as held:
        return _ingest_session(held, transcript, session_id, prices, max_bytes)


def _ingest_session(
    ledger: Ledger,
    transcript: str | os.PathLike[str],
    session_id: str,
    prices: Mapping[str, Mapping[str, float]] | None,
    max_bytes: int | None = None,
) -> Result:
    ing = Ingestor(ledger, prices)
    for path, sid, sub in transcripts.session_files(transcript, session_id):
        if (
            path not in ledger["files"]
            and ledger["folded"]["sessions"]
            and _may_be_folded(path, ledger["folded"]["until"])
        ):
            old = history.folded_position(path)
            if old is not None:
                history.resume_position(ledger, path, old, sid)
                ing.keys_restored()
        ing.ingest_file(path, sid, sub, max_bytes)
    return ing.result


def rebuild(
    store: Store,
    *,
    config_dirs: list[Path] | None = None,
    prices: Mapping[str, Mapping[str, float]] | None = None,
    retention_days: float = DEFAULT_RETENTION_DAYS,
    now: float | None = None,
    tz: tzinfo | None = None,
) -> tuple[Path | None, SyncReport]:
    """Set the ledger aside and count everything again from the transcripts.

    Folded sessions stay in history (their transcripts may be gone: Claude Code deletes old
    ones); their transcripts are read on from where folding left them.
    """
    kept: Path | None = None
    with store.transaction(checkpoint=True) as ledger:
        # A ledger just found corrupt was kept already, and a half-done rebuild is not worth
        # keeping; any other is the user's previous ledger.
        if store.exists() and not ledger["rebuild"]:
            kept = store.move_aside("before-rebuild", ledger)
        ledger.clear()
        ledger.update(new_ledger())
        history.restore_into(ledger, now if now is not None else clock.now())
        # Until sync_all below finishes, hooks must know these totals are not whole yet.
        ledger["rebuild"] = True
    report = sync_all(
        store,
        config_dirs=config_dirs,
        prices=prices,
        retention_days=retention_days,
        now=now,
        tz=tz,
    )
    return kept, report


def _may_be_folded(path: str, folded_until: float) -> bool:
    """Only a transcript that began before the last folded activity can be a folded one."""
    first = transcripts.first_timestamp(path)
    return first is None or first <= folded_until
