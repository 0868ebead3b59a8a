"""Where the ledger is kept: a JSON snapshot and a write-ahead journal, changed under a lock.

A commit takes the lock, brings the ledger it holds up to date, and appends what it changed to
the journal as one fsynced line (tokenbudget/journal.py); a checkpoint writes the whole ledger
as a new snapshot (temp file, fsync, rename, folder fsync) recording the last journal line it
holds, then empties the journal. Readers take the snapshot and the journal's complete lines, so
they see a whole commit or none, and read positions and totals are always committed together.
A hook's commit can be worked out before the lock (`Prepared`, `commit_prepared`): under the
lock it is checked against what was committed since it was read, its part of the usage sums
added to theirs, and appended; whatever else came between sends it back to be worked out again.
Nothing is ever silently reset: a file we cannot read is kept aside and the caller rebuilds
from the transcripts; a journal line we cannot read is skipped, kept aside and reported.
A ledger of an older schema is migrated as it is read (tokenbudget/schema.py), with the journal
its writer left replayed onto it; the first commit writes it back in this schema as a new
snapshot, the old files kept aside once (`ledger.json.schema1-<time>`) for going back.

Every caller goes through the `Store` interface (`open_store`), so another backend can follow.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager

from tokenbudget import clock, hot, index, journal, lazy, lock
from tokenbudget.errors import LedgerError, LockTimeout
from tokenbudget.fileio import fsync_folder, replace_atomically
from tokenbudget.fileio import stamp as _stamp
from tokenbudget.ledger import HEAD_UPDATED as _UPDATED
from tokenbudget.ledger import (
    CorruptLedger,
    Ledger,
    _check_records,
    new_ledger,
    resolve_turn,
    validate,
)
from tokenbudget.schema import (
    FILE_SESSION,
    RUN_START,
    S_CANDIDATES,
    S_FORK_KEYS,
    S_HELD,
    S_INHERIT_AT,
    S_INHERITED,
    S_INHERITED_UNKNOWN,
    S_ORIGIN,
    S_PARENT,
    S_TURNS,
    SCHEMA,
    TURN_COMMAND,
    TURN_COST,
    TURN_START,
    TURN_TOKENS,
)

TYPE_CHECKING = False  # typing and pathlib stay off a hook call's imports (~10 ms)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from tokenbudget.ledger_cells import Cell
    from tokenbudget.ledger_usage import RecordedSession



# The journal is folded into the snapshot once it passes this many bytes, or a quarter of the
# snapshot if that is more: a reader then parses at most 1.25 ledgers, and a checkpoint's cost
# (the old full rewrite) is paid once per many commits.
JOURNAL_BOUND = 256 * 1024
# `transaction(checkpoint=FOLD_DUE)`: fold only a journal grown as far as `fold_due` says, or
# what the transaction itself changed; with neither, nothing is written (sync's last step: a
# command with nothing new must not rewrite the whole ledger).
FOLD_DUE = "due"
# Test-only: "STEP" or "STEP:pause" stops a commit at that step (exits at once, or waits to be
# killed), for the crash tests (tests/test_store_crash.py); STEPs are in _step's callers.
CRASH_ENV = "TOKENBUDGET_STORE_CRASH_AT"
# Test-only: a file to which every commit whose replay differs from the ledger in memory is
# reported (the suite sets it and fails on any line: no change may escape the journal).
CHECK_ENV = "TOKENBUDGET_STORE_CHECK"
ALLOW_TTL = 3600.0  # a `tokenbudget allow` not used within this many seconds lapses
MAX_WARNED = 500  # warnings remembered; the oldest go first
EVENT_MEMORY = 600.0  # seconds an event fingerprint is kept to spot a second registration
# The usage sums that every session's commit adds to. A change worked out without the lock
# (`Prepared`) adds its part of them to what others committed meanwhile, as it would have
# under the lock; any other table another commit touched must not be one it changed or read.
MERGED = ("hours", "models", "projects", "skipped")
# What other sessions' commits may change under a prepared change: their own records, keys,
# files and events, the team's outbox, and what only the decision reads (warnings given, allow,
# finished runs), which `Prepared.holds` judges again. Anything else (rates, folded history,
# notes, a rebuild...) makes it be worked out again on the ledger as it is.
_FREE = frozenset(("updated", "events", "keys", "sessions", "files", "outbox", "warned", "allow",
                   "commands"))
# A session record holding one of these is a fork or holds a fork's requests: its usage and
# its parent's are worked out from each other (ingest), so they never go through a merge.
_FORKED = (S_ORIGIN, S_HELD, S_INHERITED, S_INHERITED_UNKNOWN, S_PARENT, S_CANDIDATES,
           S_INHERIT_AT)
_STALE = object()
# The resident answerer (one warm process, one call at a time) keeps the ledger each commit
# of its own leaves, and where that commit ended, for its next read (keep_warm): that read
# takes it and reads only the journal written since, as a commit under the lock does, instead
# of parsing the whole ledger again; the commit's own journal line, which must still end where
# it was written. None: off (a command hook reads once and exits).
_warm: dict[str, tuple[Position, Ledger, bytes]] | None = None


def keep_warm(on: bool = True) -> None:
    """Keep each commit's ledger for this process's next read of it (the resident answerer:
    its calls come one at a time, and a commit's ledger is not touched after it)."""
    global _warm
    _warm = {} if on else None


class Position:
    """Where a read of the ledger ended: which snapshot, how far into the journal.

    A transaction given it (with the ledger read) reads only the journal written since.
    """

    __slots__ = ("bad", "end", "head", "journal", "migrated", "relayout", "seq", "size",
                 "snapshot")

    def __init__(
        self,
        snapshot: tuple[int, ...] | None,
        head: Any,
        journal: tuple[int, int] | None,
        end: int,
        seq: int,
        bad: int,
        size: int,
        migrated: int = 0,
        relayout: bool = False,
    ) -> None:
        self.snapshot = snapshot  # the snapshot file's stamp (None: there is none)
        self.head = head  # its commit time, "updated" at its head
        self.journal = journal  # the journal's device and inode (None: there is none)
        self.end = end  # bytes of the journal read: up to the end of its last complete line
        self.seq = seq  # the last sequence applied
        self.bad = bad  # unusable lines found
        self.size = size  # the snapshot's size in bytes
        self.migrated = migrated  # the older schema the snapshot has (0: this one)
        # The snapshot looks like the layout of one record a line (lazy.encode) but is not
        # quite it (edited by hand): the next commit writes it again, before the hot view
        # names it and the quick reader trusts its lines.
        self.relayout = relayout


class Prepared:
    """A change to the ledger worked out without the lock, for `JsonFileStore.commit_prepared`.

    `base`: the ledger as read at `pos`, unchanged; `data`: the same ledger after the change
    (a hook's call: its session's new transcript lines and its event recorded); `session`:
    the session whose records it changed. `holds(ledger)`: whether the change still stands on
    the ledger as others' commits left it (asked only when there were any); False has it
    worked out again under the lock. What changed is found at the commit, before the lock
    (the resident answerer commits after its reply: not before the reply).
    """

    __slots__ = ("_change", "base", "data", "holds", "pos", "session")

    def __init__(self, pos: Position, base: Ledger, data: Ledger, session: str | None,
                 holds: Callable[[Ledger], bool]) -> None:
        self.pos = pos
        self.base = base
        self.data = data
        self.session = session
        self.holds = holds
        self._change: tuple[list[Any], list[Any]] | None = None

    @property
    def sets(self) -> list[Any]:
        """What the change sets, as [path, value] (journal.changes)."""
        return self.change()[0]

    @property
    def dels(self) -> list[Any]:
        """What the change deletes, as paths."""
        return self.change()[1]

    def change(self) -> tuple[list[Any], list[Any]]:
        """What turns `base` into `data`, found once."""
        if self._change is None:
            self._change = journal.changes(self.base, self.data)
        return self._change


class Store:
    """Where usage lives: what every backend offers.

    Two backends: the JSON files here (`JsonFileStore`, each machine's own ledger and the
    source of its truth) and the team's PostgreSQL database (team/pgstore.py, every member's
    pushed usage, one row per request). tests/test_store_contract.py is the contract both pass.

    The ledger operations (`read`, `snapshot`, `load`, `transaction`, `move_aside`) belong to
    the local store alone: `read` and `snapshot` never wait for the lock; `transaction` holds
    it, yields the ledger and commits it on a clean exit. The team database keeps no ledger (a
    hook never waits on the network), so there they raise TeamError. `checkpoint` compacts
    what a backend keeps beside its committed state: the team database keeps nothing beside
    it, and its checkpoint does nothing.

    The usage operations (`usage_between`, `session_usage`, `block_activity`, `usage_by`)
    answer the same questions on both: from the ledger and history here, from the usage rows
    there. `record` adds usage rows (a push) to the team store alone: the local store counts
    from the transcripts (ingest), and nothing else may add to it. Projects are named as each
    store names them: a folder here (its subfolders included), the team's git-remote name there.

    The decision state (`turn_usage`, `command_runs`, `first_warning`, `record_warnings`,
    `allow_state`, `grant_allow`, `take_allow`, `seen_event`) is what the decision engine reads
    and records beside the usage. Here, inside a transaction, each reads and changes the ledger
    the transaction holds (committed with it): one decision reads one ledger; outside one, a
    question reads the ledger as last committed and a change commits on its own. `held(ledger)`
    gives the same operations on one ledger read (a snapshot, the hot view's part). The team
    database keeps none of it (warnings, allow and events are each machine's; its rows name no
    turn), so there they raise TeamError.
    """

    location: str

    def read(self, lazy: bool = False) -> tuple[Ledger, Any]:
        """The ledger as last committed, and a position to hand back to `transaction`.
        `lazy`: its records may be decoded when first read (a store may ignore it)."""
        raise NotImplementedError

    def snapshot(self) -> Ledger:
        """The ledger as last committed, read without the lock."""
        return self.read()[0]

    def load(self) -> Ledger:
        """The same as `snapshot`: the ledger as last committed."""
        return self.read()[0]

    def transaction(self, known: Any = None, checkpoint: bool | str = False) -> Any:
        """Context manager: lock, yield the ledger, commit it on a clean exit.

        `known`: (position, ledger) from `read`, the ledger left unchanged: only what was
        committed since is read again. `checkpoint`: fold everything into the snapshot (the
        cold paths: rebuild, a session starting once the journal has grown); FOLD_DUE: only
        when the transaction changed the ledger or the journal has grown (sync).
        """
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Fold what was committed since the last checkpoint into the snapshot."""
        raise NotImplementedError

    def exists(self) -> bool:
        """Whether a ledger has been committed here."""
        raise NotImplementedError

    def move_aside(self, label: str = "corrupt", ledger: Ledger | None = None) -> Path:
        """Keep the stored ledger (or `ledger`) under a new name; return where."""
        raise NotImplementedError

    # --- usage (tokenbudget/ledger_usage.py here; cold paths, never a hook's) ---------------

    def usage_between(
        self, start: float | None, end: float | None, project: str | None = None
    ) -> tuple[int, float]:
        """(tokens, dollars) in the 15-minute buckets starting in [start, end) (None: open)."""
        from tokenbudget import ledger_usage

        return ledger_usage.usage_between(self.snapshot(), start, end, project)

    def session_usage(self, session: str) -> tuple[int, float]:
        """(tokens, dollars) of one Claude Code session."""
        from tokenbudget import ledger_usage

        return ledger_usage.session_usage(self.snapshot(), session)

    def block_activity(self, start: float | None, end: float | None) -> list[float]:
        """The starts of the 15-minute buckets in [start, end) that hold usage, oldest first."""
        from tokenbudget import ledger_usage

        return ledger_usage.block_activity(self.snapshot(), start, end)

    def usage_by(self, by: str, since: str | None = None, until: str | None = None,
                 tz: Any = None, week_start: int = 0) -> list[dict[str, Any]]:
        """Usage grouped `by` day, week, month, model, command or project, from `since` to
        `until` (ISO dates, included), ordered by key (report rows: key, token counts,
        totalTokens, totalCost, modelsUsed). `tz` and `week_start`: the calendar (the
        team store keeps the team's own)."""
        from datetime import date

        from tokenbudget import ledger_usage

        if tz is None:
            from tokenbudget import config

            cfg = config.load_config()
            tz, week_start = cfg.tz(), cfg.week_start
        return ledger_usage.usage_by(
            self.snapshot(), by, date.fromisoformat(since) if since else None,
            date.fromisoformat(until) if until else None, tz, week_start,
        )

    def record(self, rows: list[dict[str, Any]]) -> int:
        """Add usage rows, keeping each request's larger usage; how many rows changed. The
        team store's push: the local store counts from the transcripts alone."""
        raise LedgerError("the local ledger counts usage from the transcripts only")

    # --- the local ledger's reads: sessions, turns and cells, asked of one read of it -------

    def view(self) -> HeldLedger:
        """One read of the ledger as last committed (the folded history read beside it when
        a question needs it), as a Store: every question asked of it answers from that read,
        so the parts of one report agree. The team database keeps no ledger: it raises."""
        return HeldLedger(self.snapshot())

    def cells(self) -> list[tuple[Cell, str]]:
        """Every hour-by-model cell of usage, live and folded, with where its cost came from
        (schema.SOURCE_*): what every report groups (query.group)."""
        return self.view().cells()

    def turn_runs(self) -> dict[str, list[list[float]]]:
        """Every recorded turn of every command ("prompt" or a "/command"), live and folded,
        each [start, tokens, dollars] (schema.RUN_*), oldest first."""
        return self.view().turn_runs()

    def session_seen(self, session: str) -> tuple[str | None, float | None]:
        """(project folder, last activity) of a live or folded session; None for what is not
        known (a folded record may lack the exact time)."""
        return self.view().session_seen(session)

    def has_session(self, session: str) -> bool:
        """Whether `session` is live in the ledger (not yet folded into history)."""
        return self.view().has_session(session)

    def latest_session(self, project: str) -> str | None:
        """The most recently active live session in `project` or a subfolder (else anywhere);
        None when there is none."""
        return self.view().latest_session(project)

    def recorded_sessions(self) -> list[RecordedSession]:
        """Every session with its turns and usage as recorded, live ones first (in the
        ledger's order), then those folded into history: what `simulate` replays."""
        return self.view().recorded_sessions()

    def ledger_counts(self) -> tuple[int, int, int]:
        """(live sessions, sessions folded into history, transcripts whose read position is
        kept): how big the ledger is, for doctor."""
        return self.view().ledger_counts()

    # --- decision state: what a decision reads and records, beside the usage -------------

    def turn_usage(self, session: str | None, prompt_id: str | None
                   ) -> tuple[str, float, float] | None:
        """(command, tokens, dollars) of the turn `prompt_id` of `session` (a background
        task's note counts for the turn it came in); None if none is recorded."""
        raise NotImplementedError

    def command_runs(self, command: str, exclude: str | None = None) -> list[list[float]]:
        """The runs of `command` ("prompt" or a "/command"), each [start, tokens, dollars]
        (schema.RUN_*), oldest first: every turn of it but the turn `exclude`."""
        raise NotImplementedError

    def first_warning(self, key: str) -> float | None:
        """When the warning `key` (budgets.warn_key: one budget, window and level) was given;
        None if it was not, and the next one would be the first."""
        raise NotImplementedError

    def record_warnings(self, keys: Iterable[str], now: float) -> None:
        """Record warnings as given at `now` (each is given once); past MAX_WARNED
        remembered, the oldest are forgotten."""
        raise NotImplementedError

    def allow_state(self) -> dict[str, Any]:
        """`tokenbudget allow`: {} none; {"pending": True, "at"} granted, not yet spent;
        {"session", "prompt_id", "at", "base"} spent on that prompt, whose turn may use one
        more of each budget beyond `base` (check key -> used when it passed)."""
        raise NotImplementedError

    def grant_allow(self, now: float) -> None:
        """`tokenbudget allow`: the next prompt the budgets refuse, within ALLOW_TTL of
        `now`, passes."""
        raise NotImplementedError

    def take_allow(self, session: str | None, prompt_id: str | None, base: dict[str, float],
                   now: float) -> None:
        """Spend the granted allow on the prompt `prompt_id` of `session` (`base`: what
        each budget had used when it passed)."""
        raise NotImplementedError

    def seen_event(self, fingerprint: str, now: float) -> bool:
        """Whether a hook event with this fingerprint was seen within EVENT_MEMORY seconds
        (one hook registered twice: answered once); if not, it is remembered from `now`
        and those older are forgotten."""
        raise NotImplementedError


class HeldLedger(Store):
    """One ledger read, as a Store: the ledger a transaction holds (what the operations
    change is committed with it), a snapshot or the hot view's part of one (changes stay in
    memory). The decision engine asks it, so that one decision reads one ledger."""

    location = "(a ledger in memory)"

    def __init__(self, ledger: Ledger, folded: dict[str, dict[str, Any]] | None = None
                 ) -> None:
        self.ledger = ledger
        self._folded = folded  # the folded history, as history.read_records gives it

    def read(self, lazy: bool = False) -> tuple[Ledger, Any]:
        return self.ledger, None

    def exists(self) -> bool:
        return True

    def view(self) -> HeldLedger:
        return self

    def folded(self) -> dict[str, dict[str, Any]]:
        """The folded sessions' history records beside this read (read once, when first
        asked): a period still live is the ledger's."""
        if self._folded is None:
            from tokenbudget import history

            self._folded = history.read_records(self.ledger)
        return self._folded

    def cells(self) -> list[tuple[Cell, str]]:
        from tokenbudget import ledger_cells

        return list(ledger_cells.cells(self.ledger, self.folded()))

    def turn_runs(self) -> dict[str, list[list[float]]]:
        from tokenbudget import ledger_usage

        return ledger_usage.turn_runs(self.ledger, self.folded())

    def session_seen(self, session: str) -> tuple[str | None, float | None]:
        from tokenbudget import ledger_usage

        return ledger_usage.session_seen(self.ledger, self.folded(), session)

    def has_session(self, session: str) -> bool:
        return session in self.ledger["sessions"]

    def latest_session(self, project: str) -> str | None:
        from tokenbudget import ledger_usage

        return ledger_usage.latest_session(self.ledger, project)

    def recorded_sessions(self) -> list[RecordedSession]:
        from tokenbudget import ledger_usage

        return ledger_usage.recorded_sessions(self.ledger, self.folded())

    def ledger_counts(self) -> tuple[int, int, int]:
        ledger = self.ledger
        return len(ledger["sessions"]), ledger["folded"]["sessions"], len(ledger["files"])

    def turn_usage(self, session: str | None, prompt_id: str | None
                   ) -> tuple[str, float, float] | None:
        s = self.ledger["sessions"].get(session or "")
        if s is None or prompt_id is None:
            return None
        t = s[S_TURNS].get(resolve_turn(s, prompt_id))
        if t is None:
            return None
        return t[TURN_COMMAND], float(t[TURN_TOKENS]), float(t[TURN_COST])

    def command_runs(self, command: str, exclude: str | None = None) -> list[list[float]]:
        runs = [list(r) for r in self.ledger["commands"].get(command, [])]
        for s in self.ledger["sessions"].values():
            for pid, t in s[S_TURNS].items():
                if t[TURN_COMMAND] == command and pid != exclude:
                    runs.append([t[TURN_START], t[TURN_TOKENS], t[TURN_COST]])
        runs.sort(key=lambda r: r[RUN_START])
        return runs

    def first_warning(self, key: str) -> float | None:
        at = self.ledger["warned"].get(key)
        return None if at is None else float(at)

    def record_warnings(self, keys: Iterable[str], now: float) -> None:
        warned = self.ledger["warned"]
        for key in keys:
            warned[key] = now
        if len(warned) > MAX_WARNED:
            for k in sorted(warned, key=warned.get)[: len(warned) - MAX_WARNED]:
                del warned[k]

    def allow_state(self) -> dict[str, Any]:
        return dict(self.ledger["allow"])

    def grant_allow(self, now: float) -> None:
        self.ledger["allow"] = {"pending": True, "at": now}

    def take_allow(self, session: str | None, prompt_id: str | None, base: dict[str, float],
                   now: float) -> None:
        self.ledger["allow"] = {"session": session, "prompt_id": prompt_id, "at": now,
                                "base": base}

    def keep_allow(self) -> None:
        """Decide as if no allow were granted: a reading that commits nothing cannot spend
        it, so it is kept for one that will."""
        if self.ledger["allow"].get("pending"):
            self.ledger["allow"] = {}

    def seen_event(self, fingerprint: str, now: float) -> bool:
        events = self.ledger["events"]
        at = events.get(fingerprint)
        if at is not None and now - at <= EVENT_MEMORY:
            return True
        events[fingerprint] = now
        for k in [k for k, t in events.items() if now - t > EVENT_MEMORY]:
            del events[k]
        return False


def copy_before_news(ledger: Ledger, session: str) -> Callable[[], Ledger]:
    """Take the copy of `ledger` that a hook call keeps before it reads `session`'s news into
    it (a transaction's `known` ledger, a `Prepared` change's base); return what gives that
    copy back once the news is read: `ledger` as it was, whole.

    The whole ledger's copy cost 50 ms at 2,000 live sessions, almost all of it the other
    sessions' records and their transcripts' read positions, which reading one session's news
    leaves alone but for a fork's or a request held for another session (ingest). So the copy
    shares those with `ledger`, and whether they were left alone is checked: their bytes
    (marshal) after the reading must be the bytes before it, else the copy is made from the
    bytes taken before. (Equal bytes are equal values in the same order; bytes that differ
    only by how often an unchanged value is referred to just cost the copy.)
    """
    sessions, files = ledger["sessions"], ledger["files"]
    rest = journal.copy({k: v for k, v in ledger.items() if k not in ("sessions", "files")})
    # Tables read a record at a time (lazy.Table) share the texts not decoded yet, which
    # nothing changes (each table decodes its own value): only the values decoded are checked.
    theirs = sessions.share() if type(sessions) is lazy.Table else dict(sessions)
    if session in sessions:
        theirs[session] = journal.copy(sessions[session])
    positions = files.share() if type(files) is lazy.Table else dict(files)
    needle = f'"{session}"'.encode() if lazy.written_as_is(session) else None
    ours = lazy.entries_with(files, needle, (index.SESSION, session)) if needle else files.items()
    mine = {path: rec for path, rec in ours
            if type(rec) is list and len(rec) > FILE_SESSION and rec[FILE_SESSION] == session}
    positions.update(journal.copy(mine))
    base = {k: theirs if k == "sessions" else positions if k == "files" else rest[k]
            for k in ledger}  # in the ledger's order: a diff reads it
    shared = [(t, k) for t in (theirs, positions) for k, v in dict.items(t)
              if type(v) is not lazy.Raw and not (t is theirs and k == session)
              and not (t is positions and k in mine)]
    before = marshal.dumps([dict.__getitem__(t, k) for t, k in shared])

    def settled() -> Ledger:
        if marshal.dumps([dict.__getitem__(t, k) for t, k in shared]) != before:
            for (t, k), v in zip(shared, marshal.loads(before), strict=True):
                dict.__setitem__(t, k, v)
        return base

    return settled


def held(ledger: Ledger, folded: dict[str, dict[str, Any]] | None = None) -> HeldLedger:
    """The Store of one ledger read (see HeldLedger), with the folded history read beside it
    (`history.read_records(ledger)`; None: read when a question needs it)."""
    return HeldLedger(ledger, folded)


def open_store(
    lock_timeout: float = 2.0, path: str | os.PathLike[str] | None = None
) -> JsonFileStore:
    """The user's ledger store (or the one at `path`)."""
    if path is None:
        from tokenbudget import paths

        path = paths.ledger_file()
    return JsonFileStore(path, lock_timeout=lock_timeout)


class JsonFileStore(Store):
    """The ledger as `ledger.json` (the snapshot) and `ledger.journal.jsonl` (commits since),
    beside `ledger.json.lock`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        lock_timeout: float = 2.0,
        journal_bound: int | None = None,
    ) -> None:
        self.file = os.fspath(path)
        self.location = self.file
        self.folder, self.name = os.path.split(self.file)
        self.journal = hot.journal_path(self.file)
        self.lock_path = self.file + ".lock"
        self.lock_timeout = lock_timeout
        self.journal_bound = JOURNAL_BOUND if journal_bound is None else journal_bound
        self._held: Ledger | None = None  # the ledger a transaction holds, while it does

    @property
    def path(self) -> Path:
        """The snapshot file."""
        from pathlib import Path  # off the hook's imports

        return Path(self.file)

    def _ensure_dir(self) -> None:
        from tokenbudget.paths import ensure_private_dir

        ensure_private_dir(self.folder or ".")

    def exists(self) -> bool:
        return os.path.exists(self.file)

    def fold_due(self) -> bool:
        """Whether the journal has grown to a quarter of the size at which a commit folds it
        into the snapshot: a session's start folds it from there, off the per-request path.
        A shorter one is left: a reader replays it at little cost, and a fold rewrites the
        whole ledger (about 20 ms at 0.6 MB), which every `claude -p` run would pay."""
        try:
            size = os.stat(self.journal).st_size
        except OSError:
            return False
        try:
            snapshot = os.stat(self.file).st_size
        except OSError:
            snapshot = 0
        return self._grown(size, snapshot)

    def _grown(self, journal_size: int, snapshot_size: int) -> bool:
        """fold_due's rule, on sizes in bytes."""
        return journal_size * 4 >= max(self.journal_bound, snapshot_size // 4)

    # --- reading -------------------------------------------------------------------------

    def read(self, lazy: bool = False) -> tuple[Ledger, Position | None]:
        """The ledger as last committed and where the read ended (None: no ledger yet).
        `lazy`: its sessions and read positions may be decoded a record at a time, when each
        is first read (lazy.Table; a hook call with news touches a few of thousands)."""
        warm = self._take_warm() if _warm is not None else None
        if warm is not None:
            return warm
        return self._read_cold(lazy)

    def _read_cold(self, lazy: bool = False) -> tuple[Ledger, Position | None]:
        for _ in range(20):
            got = self._read_once(lazy)
            if got is not None:
                return got
        raise LedgerError(f"the ledger {self.file} kept changing while it was read")

    def _read_once(self, lazy_ok: bool = False) -> tuple[Ledger, Position | None] | None:
        try:
            with open(self.file, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return new_ledger(), None  # a journal without its snapshot is an orphan: ignored
        except OSError as e:
            raise LedgerError(f"cannot read the ledger {self.file}: {e.strerror}") from None
        if not raw.strip():
            raise CorruptLedger("the ledger file is empty")
        relayout = False
        # A snapshot the hot view names was checked when it was written or first read: its
        # records are not checked again (14 ms of each full read at 2,000 live sessions). In
        # the layout of one record a line, it is written by this code's checkpoint (a file
        # that looks like it but is not is written again by the first commit that reads it
        # whole, below, before the view names it): its records are decoded when first read.
        # The index beside a large one (index.py) names its file by its stamp and commit time:
        # where its rows are is taken from it only when both are this file's.
        ix = None
        if lazy_ok and len(raw) >= index.FROM_BYTES:
            ix = index.open_for(index.file_of(self.file), _stamp(st))
        data = lazy.decode(raw, ix.rows() if ix is not None else None) if lazy_ok else None
        if data is not None and ix is not None and ix.head != data.get("updated"):
            ix = None  # another snapshot's, with this file's stamp: cut again without it
            data = lazy.decode(raw)
        if data is not None and not (
                data.get("schema") == SCHEMA and type(data.get("journal", 0)) is int
                and hot.names_snapshot(self.file, _stamp(st), data.get("updated"), laid=True)):
            data = None
        if data is not None:
            checked = True
            if ix is not None:
                for name in lazy.TABLES:  # before the journal changes them
                    data[name].index = (ix, name, list(dict.keys(data[name])))
        else:
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError):
                raise CorruptLedger("the ledger is not valid JSON") from None
            checked = (isinstance(data, dict) and data.get("schema") == SCHEMA
                       and hot.names_snapshot(self.file, _stamp(st), data.get("updated")))
            # Only a file the view does not name is compared with the layout (it costs a
            # serialisation): one it names was written or compared before the view named it,
            # unless an older version (no layout) wrote the view: it names a file edited by
            # hand as it is.
            relayout = isinstance(data, dict) and not (checked and hot.names_snapshot(
                self.file, _stamp(st), data.get("updated"), laid=True)) \
                and _unlike_layout(data, raw)
        seq = data.pop("journal", 0) if isinstance(data, dict) else 0
        if type(seq) is not int:
            raise CorruptLedger("the ledger's journal sequence is not a number")
        schema = data.get("schema") if isinstance(data, dict) else None
        # Migrated in memory; the first commit writes it back.
        data = validate(data, records=not checked)
        migrated = schema if type(schema) is int and schema != data["schema"] else 0
        try:
            with open(self.journal, "rb") as j:
                jst = os.fstat(j.fileno())
                lines = journal.parse(j.read(), seq)
            where: tuple[int, int] | None = (jst.st_dev, jst.st_ino)
        except FileNotFoundError:
            lines, where = journal.parse(b"", seq), None
        except OSError as e:
            raise LedgerError(f"cannot read the ledger {self.journal}: {e.strerror}") from None
        try:
            if _stamp(os.stat(self.file)) != _stamp(st):
                return None  # a checkpoint replaced the snapshot meanwhile: read both again
        except FileNotFoundError:
            return None
        head = data["updated"]
        if lines.entries:
            _replay(data, lines)
            _check_records(_touched(data, lines.entries))  # the snapshot's were checked
        if lines.bad:
            # Said by every read until a writer folds the journal (and keeps a copy): a call
            # that would answer without the lock takes the locked way, which does that.
            data["notices"].append(
                f"tokenbudget: the ledger's journal had {lines.bad} unreadable"
                f" line{'s' if lines.bad > 1 else ''}; skipped (a copy is kept beside the"
                " ledger)"
            )
        position = Position(
            _stamp(st), head, where, lines.end, lines.last, lines.bad, len(raw), migrated,
            relayout,
        )
        return data, position

    def _take_warm(self) -> tuple[Ledger, Position] | None:
        """The ledger this process's last commit left (keep_warm), brought up to date with
        the journal written since; None (and nothing kept) when there is none or the files
        changed in a way the journal cannot tell: a checkpoint (a fold, a rebuild, a corrupt
        ledger kept aside), a journal replaced or cut, a line that cannot be used. Taken, not
        shared: the caller may change it; the next commit keeps its own."""
        assert _warm is not None
        kept = _warm.pop(self.file, None)
        if kept is None:
            return None
        pos, data, line = kept
        since = self._since(pos)
        try:
            # Without the lock a checkpoint may come between: it replaces the snapshot before
            # it empties the journal, so the same snapshot now says the lines read are its.
            # A journal cut in place and written again past the kept end (a backup put back,
            # a journal emptied by hand) is the same file, longer: its bytes before that end
            # are no longer the kept commit's line.
            if since is None or _stamp(os.stat(self.file)) != pos.snapshot \
                    or not self._ends_with(pos.end, line):
                return None
        except OSError:
            return None
        lines, where = since
        if lines.bad:
            return None  # the whole read reports them
        if lines.entries:
            _replay(data, lines)
            if lines.bad:
                return None
            try:
                _check_records(_touched(data, lines.entries))
            except LedgerError:
                return None  # the whole read meets it again and says so
        now = Position(pos.snapshot, pos.head, where, pos.end + lines.end, lines.last, 0,
                       pos.size)
        if os.environ.get(CHECK_ENV):
            self._check_warm(data, now)
        return data, now

    def _keep_warm(self, pos: Position | None, data: Ledger, line: bytes) -> None:
        """Keep a commit's ledger, at `pos` where it ended, for the next read (keep_warm);
        `line`: the commit's journal line, which ends at `pos` (b"": at the journal's start)."""
        if _warm is not None and pos is not None and pos.snapshot is not None \
                and not pos.bad and not pos.migrated and (line or not pos.end):
            _warm[self.file] = (pos, data, line)

    def _ends_with(self, end: int, line: bytes) -> bool:
        """Whether the journal's bytes before `end` are `line`."""
        if not line:
            return True
        with open(self.journal, "rb") as j:
            j.seek(end - len(line))
            return j.read(len(line)) == line

    def _check_warm(self, data: Ledger, pos: Position) -> None:
        """Test-only: a warm read must give what a whole read of the same files gives."""
        cold, at = self._read_cold()
        if at is None or (at.snapshot, at.journal, at.end, at.seq) != (
                pos.snapshot, pos.journal, pos.end, pos.seq):
            return  # another commit came between: nothing to compare
        if json.dumps(cold, allow_nan=False) != json.dumps(data, allow_nan=False):
            with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as f:
                f.write(f"{self.file}: a warm read differs from the committed ledger\n")
            raise AssertionError(f"{self.file}: the warm ledger is not the committed one")

    def _committed_at(self) -> float | None:
        """The "updated" time at the head of the snapshot, without parsing the rest."""
        try:
            with open(self.file, "rb") as f:
                head = f.read(256)
        except OSError:
            return None
        found = _UPDATED.search(head)
        return float(found.group(1)) if found else None

    def _since(self, pos: Position) -> tuple[journal.Lines, tuple[int, int] | None] | None:
        """The journal lines committed since a read that ended at `pos`, and the journal's
        device and inode (call with the lock held); None when what changed since cannot be
        told from the journal: a checkpoint came between, or the journal is another one."""
        try:
            st = os.stat(self.file)
        except OSError:
            return None
        # Every checkpoint replaces the snapshot and stamps "updated" first thing in it: the
        # same inode, size and mtime (which coarse clocks and inode reuse could fool) and the
        # same commit time say this is still the snapshot read.
        if _stamp(st) != pos.snapshot or self._committed_at() != pos.head:
            return None
        try:
            with open(self.journal, "rb") as j:
                jst = os.fstat(j.fileno())
                where = (jst.st_dev, jst.st_ino)
                # No journal when it was read: a commit since began one (on the same snapshot).
                if pos.journal not in (None, where) or jst.st_size < pos.end:
                    return None
                j.seek(pos.end)
                return journal.parse(j.read(), pos.seq), where
        except FileNotFoundError:
            if pos.journal is not None:
                return None
            return journal.parse(b"", pos.seq), None

    def _read_since(self, pos: Position, data: Ledger, base: Ledger) -> Position | None:
        """Bring a ledger read at `pos` (and its copy `base`) up to date by reading only the
        journal written since (call with the lock held); None if that cannot be done."""
        since = self._since(pos)
        if since is None:
            return None
        lines, where = since
        if lines.entries:
            again = journal.Lines()
            again.entries = journal.copy(lines.entries)  # base must share nothing with data
            again.last = lines.last
            _replay(data, lines)
            _replay(base, again)
        if lines.bad:
            return None  # read it all again: the full read reports them
        return Position(
            pos.snapshot,
            pos.head,
            where,
            pos.end + lines.end,
            lines.last,
            0,
            pos.size,
            pos.migrated,
            pos.relayout,
        )

    # --- decision state: on the ledger the transaction holds --------------------------------
    # Inside a transaction every operation reads and changes the ledger it holds (committed
    # with it), so that one decision sees one ledger; outside one, a question reads the ledger
    # as last committed and a change commits on its own.

    def _reading(self) -> HeldLedger:
        return HeldLedger(self._held if self._held is not None else self.snapshot())

    def view(self) -> HeldLedger:
        return self._reading()

    def _changing(self, change: Callable[[HeldLedger], Any]) -> Any:
        if self._held is not None:
            return change(HeldLedger(self._held))
        with self.transaction() as ledger:
            return change(HeldLedger(ledger))

    def turn_usage(self, session: str | None, prompt_id: str | None
                   ) -> tuple[str, float, float] | None:
        return self._reading().turn_usage(session, prompt_id)

    def command_runs(self, command: str, exclude: str | None = None) -> list[list[float]]:
        return self._reading().command_runs(command, exclude)

    def first_warning(self, key: str) -> float | None:
        return self._reading().first_warning(key)

    def record_warnings(self, keys: Iterable[str], now: float) -> None:
        keys = list(keys)
        self._changing(lambda s: s.record_warnings(keys, now))

    def allow_state(self) -> dict[str, Any]:
        return self._reading().allow_state()

    def grant_allow(self, now: float) -> None:
        self._changing(lambda s: s.grant_allow(now))

    def take_allow(self, session: str | None, prompt_id: str | None, base: dict[str, float],
                   now: float) -> None:
        self._changing(lambda s: s.take_allow(session, prompt_id, base, now))

    def seen_event(self, fingerprint: str, now: float) -> bool:
        return bool(self._changing(lambda s: s.seen_event(fingerprint, now)))

    # --- the transaction -----------------------------------------------------------------

    @contextmanager
    def transaction(
        self, known: tuple[Position | None, Ledger] | None = None,
        checkpoint: bool | str = False,
    ) -> Iterator[Ledger]:
        """Lock, yield the ledger, commit it on a clean exit (see Store.transaction)."""
        with self._locked(known, checkpoint, None) as data:
            assert data is not None
            yield data

    def commit_prepared(self, prepared: Prepared) -> contextlib.AbstractContextManager[
            Ledger | None]:
        """Context manager: lock, and commit a change worked out without the lock if it still
        holds (yield None: done); else yield the ledger brought up to date, to change again
        and commit on a clean exit, as `transaction` does.

        The change holds when nothing was committed since `prepared` was read, or when what
        was (other sessions' commits) touched nothing it changed or read, but for the usage
        sums (`MERGED`), which it adds its part to, and `prepared.holds` accepts the result.
        The lock is then held only to read what was committed meanwhile, append one line and
        bring the hot view along: the transcripts were read and the decision made before it.
        """
        prepared.change()  # before the lock
        return self._locked((prepared.pos, prepared.base), False, prepared)

    @contextmanager
    def _locked(
        self, known: tuple[Position | None, Ledger] | None, checkpoint: bool | str,
        prepared: Prepared | None,
    ) -> Iterator[Ledger | None]:
        base: Ledger | None = None
        unsynced: tuple[int, bool] | None = None
        if prepared is None and known is not None and known[0] is not None and not known[0].bad:
            base = journal.copy(known[1])  # before the lock: the copy is the costly part
        release = self._lock()
        try:
            self._sweep_temps()
            done: Any = _STALE if prepared is None else self._rebase(prepared)
            if done is not _STALE:
                unsynced = done
                yield None
            elif prepared is not None:
                _step("rebase.stale")
                # Worked out again on the ledger as it is now: the rare case (a conflict, or
                # a decision that changed), so the copy is made here.
                if prepared.base and not prepared.pos.bad:
                    base = journal.copy(prepared.base)
                else:
                    known = None  # its ledger was spent on the merge: read the whole one
            if done is _STALE:
                unsynced = yield from self._work_locked(known, base, checkpoint)
        finally:
            release()
        if unsynced is not None:
            self._sync_line(*unsynced)

    def _work_locked(
        self, known: tuple[Position | None, Ledger] | None, base: Ledger | None,
        checkpoint: bool | str,
    ) -> Generator[Ledger, None, tuple[int, bool] | None]:
        """The ledger brought up to date, yielded to be changed, then committed (call with
        the lock held); return the journal's descriptor to sync once the lock is released."""
        pos: Position | None = None
        if known is not None and known[0] is not None and base is not None:
            data = known[1]
            pos = self._read_since(known[0], data, base)
        if pos is None:
            data, pos = self._reload()
            if pos is not None and pos.bad:
                self._keep(self.journal, "corrupt")  # and read() told the user
                checkpoint = True
            base = journal.copy(data)
        assert base is not None
        self._held = data  # the decision state's operations read and change it meanwhile
        try:
            yield data
        finally:
            self._held = None
        try:
            if pos is not None and pos.migrated:
                # The first commit after an upgrade writes the ledger back in this schema
                # (even with nothing new), keeping the old files, once, for going back.
                self.move_aside(f"schema{pos.migrated}")
                checkpoint = True
            unsynced = self._commit(data, base, pos, checkpoint)
        except OSError as e:
            raise LedgerError(
                f"cannot write the ledger {self.file}: {e.strerror or e}"
            ) from None
        if os.environ.get(CHECK_ENV):
            self._check_replay(data)
        return unsynced

    def _rebase(self, prep: Prepared) -> Any:
        """Commit `prep` on the ledger as it is now (call with the lock held): the journal
        descriptor to sync (None: nothing to sync), or _STALE when the change no longer holds
        (nothing written; `prep.data` may be changed, and `prep.base` emptied when it was
        spent on the merge)."""
        pos = prep.pos
        if pos.bad or pos.migrated or pos.relayout or pos.snapshot is None:
            return _STALE  # the full read keeps the bad lines aside, or writes the schema back
        since = self._since(pos)
        if since is None:
            return _STALE  # a checkpoint came between: the whole ledger changed
        lines, where = since
        sets, dels = prep.sets, prep.dels
        data, base = prep.data, prep.base
        if lines.entries:
            if lines.bad or any(e[0] != pos.seq + 1 + n for n, e in enumerate(lines.entries)):
                return _STALE  # the full read reports and keeps them
            merged = _merge(prep, lines.entries)
            if merged is None:
                return _STALE
            sets = [[p, v] for p, v in sets if not _merged_table(p)] + merged
            # The ledger as committed now, then this change on it, in the order a replay
            # makes (the order of a table's entries is read: the newest warning is the last).
            # What the hot view needs of the ledger before this change: our records.
            base = {"files": {p[1]: prep.base["files"].get(p[1]) for p in
                              [*(x[0] for x in sets), *dels] if p[0] == "files" and len(p) > 1},
                    "sessions": {p[1]: journal.copy(prep.base["sessions"][p[1]]) for p in
                                 [*(x[0] for x in sets), *dels]
                                 if p[0] == "sessions" and len(p) > 1
                                 and p[1] in prep.base["sessions"]}}
            data = prep.base
            prep.base = {}  # spent: a commit worked out again reads the whole ledger
            _replay(data, lines)
            if lines.bad or not journal.applies(data, sets, dels):
                return _STALE
            journal.apply(data, sets, dels)
            if not prep.holds(data):
                return _STALE
        elif lines.bad:
            return _STALE
        now = Position(pos.snapshot, pos.head, where, pos.end + lines.end, lines.last, 0,
                       pos.size, pos.migrated)
        try:
            unsynced = self._commit(data, base, now, False, (sets, dels))
        except OSError as e:
            raise LedgerError(f"cannot write the ledger {self.file}: {e.strerror or e}") from None
        if os.environ.get(CHECK_ENV):
            self._check_replay(data)
        return unsynced

    def _reload(self) -> tuple[Ledger, Position | None]:
        """The whole ledger read again (call with the lock held); a corrupt one kept aside."""
        try:
            data, pos = self.read()
        except CorruptLedger as e:
            return self._recover(str(e)), None
        if pos is None:
            # No snapshot: a journal left is another ledger's (the snapshot was deleted),
            # which the first commit empties: keep it.
            self._keep(self.journal, "orphan")
        return data, pos

    def _lock(self) -> Callable[[], None]:
        try:
            self._ensure_dir()
            return lock.acquire(self.lock_path, self.lock_timeout)
        except TimeoutError:
            from tokenbudget.lockinfo import holder

            who = holder(self.lock_path)  # a stuck process the user can find and stop
            raise LockTimeout(
                f"the ledger lock {self.lock_path} was not obtained within {self.lock_timeout:g} s"
                + (f" (held by {who})" if who else "")
            ) from None
        except OSError as e:
            raise LedgerError(
                f"cannot lock the ledger {self.lock_path}: {e.strerror or e}"
            ) from None

    def _commit(
        self, data: Ledger, base: Ledger, pos: Position | None, full: bool | str,
        change: tuple[list[Any], list[Any]] | None = None,
    ) -> tuple[int, bool] | None:
        """Append what changed to the journal, or fold it all into the snapshot; return the
        journal's descriptor to fsync once the lock is released (and whether it is new).
        `full`: FOLD_DUE folds only a grown journal or a change of this commit's own.
        `change`: what changed, when the caller knows (a prepared commit)."""
        seq = pos.seq if pos is not None else 0
        when_changed = full == FOLD_DUE
        if pos is None or pos.snapshot is None or pos.relayout:
            full = True  # no snapshot yet (or a new ledger after a corrupt one)
        elif when_changed:
            full = self._grown(pos.end, pos.size)
        if not full:
            sets, dels = change if change is not None else journal.changes(base, data)
            sets = list(sets)
            if not sets and not dels:
                at = _stamps_at(pos) if pos is not None else None
                if pos is not None and at is not None:
                    self._cut_torn(pos)  # the view names these stamps: the files must too
                    self._keep_view(data, base, pos, ([], []), seq, at)
                    self._keep_warm(pos, data, b"")  # kept only at the journal's start
                return None  # nothing changed: nothing to write
            full = when_changed
        # This stamp tells one commit from another, so never a pinned clock.
        data["updated"] = time.time()  # the real clock
        if not full:
            sets.append([["updated"], data["updated"]])
            line = journal.encode(seq + 1, sets, dels)
            assert pos is not None
            if pos.end + len(line) <= max(self.journal_bound, pos.size // 4):
                fd = self._append(line, pos)
                jst = os.fstat(fd)
                at = [list(pos.snapshot or ()), pos.head, [jst.st_dev, jst.st_ino, jst.st_size]]
                self._keep_view(data, base, pos, (sets, dels), seq + 1, at)
                self._keep_warm(Position(pos.snapshot, pos.head, (jst.st_dev, jst.st_ino),
                                         jst.st_size, seq + 1, 0, pos.size), data, line)
                return fd, pos.journal is None
        self._checkpoint(data, seq)
        self._keep_view(data, base, pos, None if pos is None else (), seq, self._stamps_now(data))
        return None

    def _stamps_now(self, data: Ledger) -> list[Any]:
        """The stamps of the files a checkpoint just wrote, as the hot view records them."""
        st = os.stat(self.file)
        try:
            jst = os.stat(self.journal)
            jour: list[int] | None = [jst.st_dev, jst.st_ino, jst.st_size]
        except FileNotFoundError:
            jour = None
        return [list(_stamp(st)), data["updated"], jour]

    def _keep_view(self, data: Ledger, base: Ledger, pos: Position | None, change: Any,
                   seq: int, at: list[Any]) -> None:
        """Bring the hot view (tokenbudget/hot.py) to the commit just made: what changed, or
        all of it when the view was not at the commit before (its writer died, or there was
        none) or none can be told (`change` None; `()`: work it out).

        Never fails the commit, which is made: a view left behind names stamps the files no
        longer have, so readers take the ledger until a commit rewrites it.
        """
        try:
            writer = hot.Writer(self.file, self.journal, _step)
            before = _stamps_at(pos) if pos is not None else None
            if change is None or pos is None or not writer.in_step(pos.seq, before):
                writer.rebuild(data, seq, at)
                return
            if change == ():
                change = journal.changes(base, data)
            if not change[0] and not change[1] and before == at:
                return  # nothing changed, and the view holds it
            writer.update(data, base, change[0], change[1], seq, at)
        except Exception:
            if os.environ.get(CHECK_ENV):
                raise
            with contextlib.suppress(OSError):
                os.unlink(hot.paths(self.file)[0])  # and it goes now

    def _cut_torn(self, pos: Position) -> None:
        """Cut a torn last line off the journal, as an append does (call with the lock held):
        a writer killed inside a long write leaves part of its line, which readers skip; a
        commit that appends nothing would otherwise leave it, and the hot view it writes would
        name a journal size the file does not have (quick calls then read the whole ledger).
        A tidy-up: when it cannot be done, the commit stands and the next append cuts it."""
        if pos.journal is None:
            return
        try:
            fd = os.open(self.journal, os.O_WRONLY)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) == pos.journal:
                _cut_after(fd, pos.end)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _append(self, line: bytes, pos: Position) -> int:
        """Add one line to the journal (call with the lock held); return its descriptor.

        Its fsync waits until the lock is released: a disk busy elsewhere takes tens of
        milliseconds to sync, which every other session would otherwise wait too. Whatever
        is synced next syncs this line with it, and a line that a crash of the machine loses
        ends the replay there (see _replay): the commits after it are not applied without it.
        """
        fd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            _step("append.opened")
            if _cut_after(fd, pos.end):  # a torn last line, of a writer killed mid-append
                _step("append.cut")
            if os.environ.get(CRASH_ENV, "").startswith("append.half"):
                os.write(fd, line[: len(line) // 2])
                _step("append.half")
            else:
                _write_all(fd, line)
            _step("append.written")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _sync_line(self, fd: int, new: bool) -> None:
        """Make an appended line durable (after the lock is released) and close the journal."""
        try:
            os.fsync(fd)
            _step("append.synced")
        except OSError as e:
            raise LedgerError(f"cannot write the ledger {self.journal}: {e.strerror}") from None
        finally:
            os.close(fd)
        if new:
            fsync_folder(self.folder)  # a new journal: its name must survive a crash too

    def _checkpoint(self, data: Ledger, seq: int) -> None:
        """Write the whole ledger as the snapshot, recording the last sequence in it, then
        empty the journal (call with the lock held). A crash between the two leaves lines
        the snapshot already holds: their sequence says so, and they are skipped."""
        self._ensure_dir()
        data["journal"] = seq
        try:
            payload = lazy.encode(data)  # one record a line: read a record at a time
        finally:
            del data["journal"]
        replace_atomically(
            self.file, payload, prefix=self._temp_prefix, step=lambda s: _step(f"checkpoint.{s}")
        )
        try:
            fd = os.open(self.journal, os.O_WRONLY)
        except FileNotFoundError:
            pass
        else:
            try:
                os.ftruncate(fd, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        _step("checkpoint.emptied")
        self._index(data, payload)

    def _index(self, data: Ledger, payload: bytes) -> None:
        """Write the index of the snapshot just written (index.py), if it is large; else
        remove any. Never fails the checkpoint, which is made: an index that names another
        snapshot is not used."""
        path = index.file_of(self.file)
        try:
            if len(payload) < index.FROM_BYTES:
                index.remove(path)
                return
            text = index.encode(_stamp(os.stat(self.file)), data["updated"], data["sessions"],
                                data["files"], lazy.row_spans(payload))
            if text is None:
                index.remove(path)
                return
            replace_atomically(path, text, prefix=self._temp_prefix)
            _step("checkpoint.indexed")
        except OSError:
            with contextlib.suppress(OSError):
                index.remove(path)

    def checkpoint(self) -> None:
        """Fold the journal into the snapshot, if it has anything."""
        with self.transaction(checkpoint=True):
            pass

    def _check_replay(self, data: Ledger) -> None:
        """Test-only: the committed files must replay to exactly the ledger in memory."""
        stored = self._read_cold()[0]
        # A snapshot the view names is read without checking its records: what this code
        # wrote is checked here, as every read did before.
        _check_records(stored)
        mine = json.dumps(data, allow_nan=False)
        theirs = json.dumps(stored, allow_nan=False)
        if mine != theirs:
            sets, dels = journal.changes(stored, data)
            with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as f:
                at = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b)
                f.write(f"{self.file}: replay differs from the committed ledger: {sets[:3]}"
                        f" {dels[:3]} {mine[at - 80:at + 40]!r} {theirs[at - 80:at + 40]!r}\n")
            raise AssertionError(f"{self.file}: the journal lost a change")
        self._check_index()
        wrong = hot.differences(self.file, self.journal, stored)
        if wrong:
            with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as f:
                f.write(f"{self.file}: the hot view differs from the ledger: {wrong[:3]}\n")
            raise AssertionError(f"{self.file}: the hot view is not the ledger's")

    def _check_index(self) -> None:
        """Test-only: an index that names the snapshot must find every record by every term
        its record gives (built from a record's text, it may name one too many), and its rows
        must cut the snapshot into the records a search finds."""
        with open(self.file, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
        snap = json.loads(raw)
        path = index.file_of(self.file)
        ix = index.open_for(path, _stamp(st), snap["updated"])
        if ix is None:
            return
        exact = index.encode(_stamp(st), snap["updated"], snap["sessions"], snap["files"])
        with open(path, "rb") as f:
            lines, numbers = index.entries(f.read())
        want_lines, want_numbers = index.entries(exact or b"")
        if not (want_lines <= lines and want_numbers <= numbers):
            with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as out:
                out.write(f"{self.file}: the index misses terms of its snapshot's records\n")
            raise AssertionError(f"{self.file}: the index misses terms of its snapshot's records")
        # _check_replay reads whole: the rows a hook's read cuts the snapshot at are checked
        # here, against the records a search finds (keys, texts, order).
        rows = ix.rows()
        if rows is not None:
            cut, searched = lazy.decode(raw, rows), lazy.decode(raw)
            if lazy._placed(raw, rows) is None or cut is None or searched is None or any(
                    list(dict.items(cut[name])) != list(dict.items(searched[name]))
                    for name in lazy.TABLES):
                with open(os.environ[CHECK_ENV], "a", encoding="utf-8") as out:
                    out.write(f"{self.file}: the index's rows do not cut its snapshot into its"
                              " records\n")
                raise AssertionError(f"{self.file}: the index's rows are not its snapshot's")

    @property
    def _temp_prefix(self) -> str:
        return f".{self.name}."

    def _sweep_temps(self) -> None:
        """Remove temp files of writers killed mid-write (call with the lock held).

        Only the lock holder writes one, so any found now belongs to a dead process; a hook
        killed by Claude Code's timeout would otherwise leave a ledger-sized file each time.
        """
        try:
            with os.scandir(self.folder or ".") as entries:
                stale = [
                    e.path
                    for e in entries
                    if e.name.startswith(self._temp_prefix) and e.name.endswith(".tmp")
                ]
        except OSError:
            return
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _recover(self, reason: str) -> Ledger:
        """Keep the unusable file, start a new ledger owed a rebuild from the transcripts."""
        kept = self.move_aside()
        data = new_ledger()
        data["rebuild"] = True
        data["notices"].append(
            f"tokenbudget: {reason}; kept it as {kept.name} and rebuilt the totals from the"
            " transcripts"
        )
        return data

    def move_aside(self, label: str = "corrupt", ledger: Ledger | None = None) -> Path:
        """Keep the ledger as `ledger.json.<label>-<time>`; return where.

        Without `ledger`, a copy of the snapshot file (its journal is kept beside it under the
        same label, if it has anything), not a move: the ledger stays in place until the
        caller's commit replaces it, so a crash in between leaves the old file (found again
        next time), never no ledger at all, which would read as a fresh one with every total
        at zero and no rebuild owed. With `ledger`, that ledger, whole.
        """
        from pathlib import Path

        if ledger is not None:
            target = Path(self._free_name(self.file, label))
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as dst:
                dst.write(json.dumps(ledger, separators=(",", ":"), allow_nan=False).encode())
            return target
        kept = self._keep(self.file, label, always=True)
        assert kept is not None
        self._keep(self.journal, label)
        return Path(kept)

    def _keep(self, path: str, label: str, always: bool = False) -> str | None:
        """Keep a copy of `path` as `<path>.<label>-<time>` (if it has anything); return it."""
        try:
            if not always and os.path.getsize(path) == 0:
                return None
        except OSError:
            return None
        target = self._free_name(path, label)
        try:
            if path == self.journal:
                raise OSError  # emptied in place, not replaced: a link would be emptied too
            os.link(path, target)
        except OSError:
            # No hard links here (some network and FUSE filesystems): copy, privately.
            with open(path, "rb") as src:
                data = src.read()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
        return target

    @staticmethod
    def _free_name(path: str, label: str) -> str:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock.now()))
        target = f"{path}.{label}-{stamp}"
        n = 1
        while os.path.exists(target):
            n += 1
            target = f"{path}.{label}-{stamp}-{n}"
        return target


def _replay(data: Ledger, lines: journal.Lines) -> None:
    """Apply journal lines in order; count those that cannot be applied (not ours: skipped).

    Each commit follows the one before it (sequence + 1). A missing one (a line the machine
    lost in a crash, its bytes zeroed) ends the replay: the commits after it were computed
    from it, and applied alone they could count what it had counted twice. They are counted
    as unusable, so the next writer keeps the journal aside, reports it and folds the rest.
    """
    for n, (seq, sets, dels) in enumerate(lines.entries):
        if seq > lines.last + 1:
            lines.bad += len(lines.entries) - n
            return
        if seq == lines.last + 1 and journal.applies(data, sets, dels):
            journal.apply(data, sets, dels)
            lines.last = seq
        else:
            lines.bad += 1


def _merged_table(path: list[str]) -> bool:
    return bool(path) and path[0] in MERGED


def _forked(record: Any) -> bool:
    return type(record) is not dict or bool(record.get(S_FORK_KEYS)) or any(
        k in record for k in _FORKED)


def _merge(prep: Prepared, entries: list[tuple[int, list[Any], list[Any]]]) -> list[Any] | None:
    """`prep`'s changes to the usage sums (MERGED) on top of the commits `entries` made since
    it was read, as [path, value] pairs; None when those commits touched anything else it
    changed or read (see _FREE), or a fork's records."""
    mine: dict[tuple[str, ...], bool] = {}  # our paths outside the sums: True set, False deleted
    for path, _value in prep.sets:
        if not path:
            return None
        if not _merged_table(path):
            mine[tuple(path)] = True
    for path in prep.dels:
        if _merged_table(path):
            return None
        mine[tuple(path)] = False
    within = {t[:i] for t in mine for i in range(1, len(t))}  # what holds one of ours
    ours = prep.data["sessions"].get(prep.session) if prep.session is not None else None
    if ours is not None and _forked(ours):
        return None
    sums: set[str] = set()
    for _seq, sets, dels in entries:
        for path, deleted in [*((p, False) for p, _v in sets), *((p, True) for p in dels)]:
            if not path:
                return None
            if path[0] in MERGED:
                if len(path) < 2:
                    return None  # a whole table replaced (a session starting prunes hours)
                sums.add(path[0])
                continue
            if path[0] not in _FREE:
                return None
            if path[0] == "sessions" and (
                len(path) < 2 or path[1] == prep.session
                or _forked(prep.base["sessions"].get(path[1], {}))
                or (len(path) > 2 and path[2] in (*_FORKED, S_FORK_KEYS))
            ):
                return None  # its own record (read whole by ingest), or a fork's
            if path[0] == "files" and len(path) > 1 and prep.session is not None and any(
                type(rec) is list and len(rec) > FILE_SESSION and rec[FILE_SESSION] == prep.session
                for rec in (prep.base["files"].get(path[1]), _set_value(sets, path))
            ):
                return None  # where reading its own transcripts stopped
            t = tuple(path)
            if t in within:
                return None  # replaced what holds a change of ours
            for i in range(1, len(t) + 1):
                kind = mine.get(t[:i])
                if kind is not None and not (kind is False and deleted and i == len(t)):
                    return None  # the same entry (both deleting it is the same change)
        for path, value in sets:
            if path[0] == "sessions" and len(path) == 2 and _forked(value):
                return None
    both = sums & {p[0] for p, _v in prep.sets if _merged_table(p)}
    # Only the entries either side touched are copied: the usage buckets grow with the
    # projects active in the window, and this runs under the lock.
    touched: dict[str, set[str]] = {t: set() for t in both}
    for path in [*(p for _s, sets, dels in entries for p in [*(x[0] for x in sets), *dels]),
                 *(p for p, _v in prep.sets)]:
        if path[0] in both:
            if len(path) < 2:
                return None  # a whole table of ours: not a sum
            touched[path[0]].add(path[1])
    theirs = {t: {k: journal.copy(prep.base[t][k]) for k in keys if k in prep.base[t]}
              for t, keys in touched.items()}
    for _seq, sets, dels in entries:
        for path in dels:
            if path[0] in both:
                node = _node(theirs[path[0]], path[1:-1])
                if node is None:
                    return None
                node.pop(path[-1], None)
        for path, value in sets:
            if path[0] in both:
                node = _node(theirs[path[0]], path[1:-1])
                if node is None:
                    return None
                node[path[-1]] = value
    out = []
    for path, value in prep.sets:
        if not _merged_table(path):
            continue
        if path[0] in both:
            old = _node(prep.base[path[0]], path[1:-1])
            now = _node(theirs[path[0]], path[1:-1])
            value = _sum(path[0], len(path), None if old is None else old.get(path[-1]), value,
                         None if now is None else now.get(path[-1]))
            if value is _STALE:
                return None
        out.append([path, value])
    return out


def _set_value(sets: list[Any], path: list[str]) -> Any:
    """The value a line's `sets` give `path` (None: none)."""
    for p, value in sets:
        if p == path:
            return value
    return None


def _node(table: Any, keys: list[str]) -> Any:
    """The dict at `keys` under `table`; None if there is none."""
    for key in keys:
        table = table.get(key) if type(table) is dict else None
    return table if type(table) is dict else None


def _sum(table: str, depth: int, before: Any, mine: Any, theirs: Any) -> Any:
    """One usage sum: what others made of `before` (`theirs`) plus what this change added to
    it (`mine` - `before`); _STALE when the shapes are not a sum's."""
    if theirs is None:
        return mine if before is None else _STALE  # they removed it: not a sum
    if before is not None and theirs == before:
        return mine  # only ours changed it: exactly ours
    if table == "skipped" and depth == 2:
        if type(mine) is not int or type(theirs) is not int or type(before or 0) is not int:
            return _STALE
        return theirs + mine - (before or 0)
    if table == "hours" and depth == 2:
        if type(mine) is not dict or type(theirs) is not dict:
            return _STALE
        out = dict(theirs)
        for project, entry in mine.items():
            was = before.get(project) if type(before) is dict else None
            summed = _sum(table, 3, was, entry, theirs.get(project))
            if summed is _STALE:
                return _STALE
            out[project] = summed
        return out
    width = 4 if table == "hours" else 2
    if (table == "hours" and depth != 3) or (table != "hours" and depth != 2):
        return _STALE
    zero = [0, 0.0, 0, 0][:width]
    was = zero if before is None else before
    for v in (mine, theirs, was):
        if type(v) is not list or len(v) != width or not all(
                type(x) in (int, float) for x in v):
            return _STALE
    summed = [theirs[0] + (mine[0] - was[0]), theirs[1] + (mine[1] - was[1])]
    if table == "hours":
        summed += [min(theirs[2], mine[2]), max(theirs[3], mine[3])]  # first and last second
    return summed


def _touched(data: Ledger, entries: list[tuple[int, list[Any], list[Any]]]) -> Ledger:
    """The part of `data` that journal lines set: each table with only the entries they set
    (`folded` and what is not a table, whole), so that checking shapes costs what is new."""
    part = {k: {} if lazy.is_table(v) and k != "folded" else v for k, v in data.items()}
    for _seq, sets, _dels in entries:
        for path, _value in sets:
            if not path:
                return data  # the whole ledger was replaced
            table: Any = data.get(path[0])
            if len(path) == 1 or not lazy.is_table(table):
                part[path[0]] = table
            elif path[1] in table:
                part[path[0]][path[1]] = table[path[1]]
    return part


def _unlike_layout(data: dict[str, Any], raw: bytes) -> bool:
    """Whether `raw`, parsed as `data`, looks like the layout of one record a line but is not
    exactly what a checkpoint of this code writes (a file edited by hand)."""
    if b'"sessions":{\n' not in raw:
        return False  # not laid out so (an older writer's): never read a record at a time
    try:
        return lazy.encode(data) != raw
    except (TypeError, ValueError):
        return True


def _stamps_at(pos: Position) -> list[Any] | None:
    """The stamps the ledger's files had when `pos` was read, as the hot view records them."""
    if pos.snapshot is None:
        return None
    jour = None if pos.journal is None else [*pos.journal, pos.end]
    return [list(pos.snapshot), pos.head, jour]


def _cut_after(fd: int, end: int) -> bool:
    """Cut the journal open at `fd` to its first `end` bytes, its complete lines as read;
    whether there was more (part of a line of a writer killed while it wrote it)."""
    if os.fstat(fd).st_size <= end:
        return False
    os.ftruncate(fd, end)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _step(name: str) -> None:
    """Test-only: stop here when the crash tests ask (see CRASH_ENV)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted or wanted.split(":")[0] != name:
        return
    if wanted.endswith(":pause"):
        with open(f"{os.environ[CRASH_ENV + '_READY']}", "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(1)  # until the test kills us
    os._exit(70)
