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
from tokenbudget.ingest import Ingestor, Result, compact, prune_hours
from tokenbudget.ledger import Ledger, file_identity, new_ledger
from tokenbudget.record import Record
from tokenbudget.schema import FILE_IDENT, FILE_OFFSET
from tokenbudget.store import Store
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
    folded_files: dict[str, list[Any]] | None = None
    t_now = now if now is not None else clock.now()
    with store.transaction() as ledger:
        _take_notices(ledger, report)
        if ledger["rebuild"] and not ledger["files"] and not ledger["folded"]["sessions"]:
            history.restore_into(ledger, t_now)
        known = {p: (r[FILE_IDENT], r[FILE_OFFSET]) for p, r in ledger["files"].items()}
    # Decide what to read without the lock; the reads themselves happen under it.
    todo: list[tuple[str, str, bool, int]] = []
    for path, sid, sub in transcripts.discover(dirs):
        try:
            st = os.stat(path)
        except OSError:
            continue
        prev = known.get(path)
        if prev is None:
            if folded_files is None:
                folded_files = history.folded_files()
            old = folded_files.get(path)
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
            _ingest_batch(store, batch, prices, report, folded_files)
            batch, size = [], 0
            if deadline is not None and time.monotonic() > deadline:
                report.complete = False
                return report
    if batch:
        _ingest_batch(store, batch, prices, report, folded_files)
    with store.transaction(checkpoint=True) as ledger:
        _take_notices(ledger, report)
        ledger["rebuild"] = False
        prune_hours(ledger, t_now, tz)
        report.folded = history.fold(ledger, t_now - retention_days * 86400)
        compact(ledger, t_now)
    return report


def nothing_to_read(config_dirs: list[Path] | None = None) -> bool:
    """Whether Claude Code's folders hold no transcript at all (a subagent's included)."""
    dirs = config_dirs if config_dirs is not None else paths.claude_config_dirs()
    return next(transcripts.discover(dirs), None) is None


def _ingest_batch(
    store: Store,
    batch: list[tuple[str, str, bool, int]],
    prices: Mapping[str, Mapping[str, float]] | None,
    report: SyncReport,
    folded_files: dict[str, list[Any]] | None,
) -> None:
    with store.transaction() as ledger:
        _take_notices(ledger, report)
        ing = Ingestor(ledger, prices)
        for path, sid, sub, _size in batch:
            if folded_files and path in folded_files and path not in ledger["files"]:
                history.resume_position(ledger, path, folded_files[path], sid)
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
