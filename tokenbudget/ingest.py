"""Recording transcript events in the ledger: the counting rule lives here.

- One API response is counted once per (message.id, requestId), in every file it appears in
  (a forked session's copies belong to the session that made the request, which counts them
  from its own transcript wherever that is).
- Where several lines share a key, the line with the largest total wins; the difference is
  applied, so re-reading never counts twice.
- Subagent usage belongs to the parent session and to the turn that launched the subagent.
- Requests that appear in no assistant line (compaction, an interactive session's side
  requests) are recovered from Claude Code's `cost-state` totals: what they hold beyond what
  the session's own lines and subagents hold.
- A fork's `cost-state` starts from its parent's running total, which holds what the parent
  made that the fork never copies (its subagents, its compactions, the history before a
  `compact_boundary`; copies after one have their usage zeroed). So a fork's hidden usage is
  its `cost-state` minus the parent's total at the fork point minus its own lines, and never
  its copies' usage. The fork point is the parent's last line the fork copied (same uuid),
  whose total is the parent's next `cost-state` (its process ended there) unless the parent
  sent a request first (it was still running: then the one before). The one before, or
  none, is also what a fork inherited while no total follows the point (the parent still
  running, or killed): it holds none of the copies the parent's process made since, so the
  copies are no floor for what was inherited there.
- The parent is the session the copies name (`requestSessionId`), or a fork of that session
  whose own work left no response to copy (a `/compact`): of those holding the fork's copied
  lines, the one whose total at the fork point is the largest that the fork's first total
  holds (a fork's total holds its parent's; a fork of the fork's is larger). Transcripts are
  found in any project folder, and a fork's inheritance is worked out again whenever a
  possible parent's transcript is read on: the split is the same whichever file is read first.
- A fork is never charged more than its own requests and its own hidden usage: where its
  parent's total at the fork point cannot be read (the line torn or rejected, the transcript
  gone or in a config dir not read), its `cost-state` counts for nothing. One exception keeps
  the total whole: a copy whose requester's transcript is nowhere is counted by the fork, held
  for the requester, whose own line takes it back if it turns up.
- Where Claude Code's own cost for a session is known and its tokens match ours, it is used.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Mapping

from tokenbudget import clock, index, lazy, transcripts
from tokenbudget.ledger import BUCKET, Ledger, file_identity, resolve_turn
from tokenbudget.record import Record
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_MODEL,
    ADJ_TURN,
    ADJ_USAGE,
    CELL_COST,
    CELL_USAGE,
    EVAL_FINAL,
    EVAL_KIND,
    EVAL_KNOWN,
    EVAL_NOT_PARENT,
    EVAL_SIZES,
    EVAL_TOTALS,
    EVAL_UNKNOWN,
    FILE_HEAD,
    FILE_IDENT,
    FILE_OFFSET,
    FILE_SESSION,
    FILE_TURN,
    HOUR_COST,
    HOUR_FIRST,
    HOUR_LAST,
    HOUR_TOKENS,
    KEY_LEN,
    M_COST,
    M_REQUESTS,
    M_SOURCE,
    M_USAGE,
    REQ_BUCKET,
    REQ_COST,
    REQ_MODEL,
    REQ_SESSION,
    REQ_TURN,
    REQ_USAGE,
    ROLLUP_COST,
    ROLLUP_TOKENS,
    S_ADJUSTMENTS,
    S_ALIASES,
    S_CANDIDATES,
    S_CC_COSTS,
    S_CELLS,
    S_COMPACTED_KEYS,
    S_COPIES,
    S_EXTRA,
    S_FIRST,
    S_FIRST_TOTALS,
    S_FOLDED_KEYS,
    S_FORK_KEYS,
    S_HELD,
    S_INHERIT_AT,
    S_INHERITED,
    S_INHERITED_UNKNOWN,
    S_LAST,
    S_LATEST_TOTALS,
    S_MODELS,
    S_ORIGIN,
    S_PARENT,
    S_PERIOD,
    S_PROJECT,
    S_REQUESTS,
    S_SEEN,
    S_TOTALS_AT,
    S_TURNS,
    SOURCE_CLAUDE,
    SOURCE_TABLE,
    SOURCE_UNPRICED,
    TURN_COMMAND,
    TURN_COST,
    TURN_START,
    TURN_TOKENS,
    cell_key,
    counted_keys,
    split_cell_key,
)
from tokenbudget.transcripts import (
    CostStateEvent,
    FilePos,
    PromptEvent,
    RequestEvent,
    UsageEvent,
)
from tokenbudget.usage import ZERO, Usage

# typing costs a hook call with news about 2.5 ms to import, datetime about 1.5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import tzinfo
    from typing import Any

# Usage is kept in 15-minute buckets: every time zone's offset from UTC is a multiple of 15
# minutes, so a local day, week or month is always a whole number of buckets.
BUCKETS_KEPT = 40 * 96  # the buckets feed the day/week/month/5h windows: 40 days is enough
RECENT = 2 * 86400  # 15-minute buckets kept this long; older ones are merged per local day
NO_TURN = "-"
# How far past the last line before it a session total's own `written` time is believed (a
# response interrupted after streaming this long is still found in the total it wrote).
TOTAL_WRITTEN_SLACK = 3600.0
# Requests sent with no response line yet kept per session (schema.S_REQUESTS), the oldest
# dropped first: a request never answered (an error, a process killed) must not pile up. One
# is streaming when a process is interrupted; the others' lines, if any come, fall back to
# the time rule.
OPEN_REQUESTS = 32

# Relative weights of the token kinds in every Claude price list (output 5x input, cache
# writes 1.25x and 2x, cache reads 0.1x): used to spread Claude Code's own cost for a model
# we have no price for over its requests.
WEIGHTS = (1.0, 5.0, 1.25, 2.0, 0.1)


def weight(u: Usage) -> float:
    return sum(w * v for w, v in zip(WEIGHTS, u, strict=True))


class Result(Record):
    """What one ingest pass did."""

    _fields = ("files", "new_requests", "restarted", "skipped", "errors")
    __slots__ = _fields

    def __init__(self) -> None:
        self.files = 0
        self.new_requests = 0
        self.restarted: list[str] = []
        self.skipped: dict[str, int] = {}
        self.errors: list[str] = []


class Ingestor:
    """Applies transcript events to a ledger held under the lock."""

    def __init__(self, ledger: Ledger, prices: Mapping[str, Mapping[str, float]] | None = None):
        self.L = ledger
        self.prices = prices
        self.result = Result()
        self._price_cache: dict[str, Any] = {}
        self._compacted: dict[str, str] | None = None
        self._compacted_asked = 0
        self._compacted_looked = 0  # records the last search by the index looked at
        self._joined: tuple[str, list[int], list[str]] | None = None
        self._straddled: set[str] | None = None  # _compacted_in's
        self._transcripts: dict[tuple[str, str], str | None] = {}
        self._forks: dict[str, list[str]] | None = None  # forks settled, by requester

    # --- files ---------------------------------------------------------------------------------

    def ingest_file(
        self, path: str | os.PathLike[str], session_id: str, is_subagent: bool,
        max_bytes: int | None = None,
    ) -> None:
        """Read what is new in one transcript and record it."""
        files = self.L["files"]
        key = path = os.fspath(path)
        rec = files.get(key)
        prev = FilePos(rec[FILE_IDENT], rec[FILE_HEAD], rec[FILE_OFFSET]) if rec else None
        try:
            st = os.stat(path)
        except OSError as e:
            self.result.errors.append(f"{path}: {e.strerror}")
            return
        if prev is not None and prev.pos == st.st_size and prev.ident == file_identity(st):
            return  # nothing new: the common case, answered by one stat
        try:
            res = transcripts.read_new(path, prev, max_bytes)
        except OSError as e:
            self.result.errors.append(f"{path}: {e.strerror or e}")
            return
        self.result.files += 1
        for reason, n in res.skipped.counts.items():
            self.result.skipped[reason] = self.result.skipped.get(reason, 0) + n
            self.L["skipped"][reason] = self.L["skipped"].get(reason, 0) + n
        if res.restarted:
            self.result.restarted.append(key)
        turn = rec[FILE_TURN] if rec and not res.restarted else None
        if res.restarted and rec:
            turn = rec[FILE_TURN] if is_subagent else None
        state: dict[str, Any] = {
            "turn": turn,
            "sub": is_subagent,
            "last_ts": None,
            "dir": None if is_subagent else os.path.dirname(path),
        }
        for ev in res.events:
            if isinstance(ev, UsageEvent):
                self._usage(session_id, ev, state)
            elif isinstance(ev, PromptEvent):
                self._prompt(session_id, ev, state)
            elif isinstance(ev, CostStateEvent) and not is_subagent:
                self._cost_state(session_id, ev, state)
            elif isinstance(ev, RequestEvent) and not is_subagent:
                self._request(session_id, ev)
        s = self.L["sessions"].get(session_id)
        if not is_subagent and s is not None:
            if s.get(S_LATEST_TOTALS) and (S_ORIGIN in s or s[S_FORK_KEYS]):
                # Known as a fork only after its total was read (written before its copies).
                self._settle_fork(session_id, s, state["dir"])
            if res.events:
                # A parent (or a fork of the same parent) read after its forks: what they
                # inherited may be known only now.
                self._resettle_forks_of(session_id, state["dir"])
        files[key] = [*res.pos.to_json(), session_id, state["turn"]]

    # --- sessions ------------------------------------------------------------------------------

    def session(self, sid: str, cwd: str | None = None, ts: float | None = None) -> dict[str, Any]:
        sessions = self.L["sessions"]
        s: dict[str, Any] | None = sessions.get(sid)
        if s is None:
            new_session: dict[str, Any] = {
                S_PROJECT: cwd or "",
                S_FIRST: ts or 0.0,
                S_LAST: ts or 0.0,
                S_MODELS: {},
                S_EXTRA: {},
                S_SEEN: {},
                S_TURNS: {},
                S_ALIASES: {},
                S_ADJUSTMENTS: [],
                S_FORK_KEYS: [],
                S_CC_COSTS: {},
                # Usage per model in the copies of other sessions' requests (a fork's); its
                # presence marks a session counted by the fork rule below (older ones: in
                # S_SEEN).
                S_COPIES: {},
                # This record's identity in history: folding it twice (a crash between history
                # and ledger) replaces its history record; a resumed session gets a new one.
                S_PERIOD: os.urandom(4).hex(),
            }
            s = sessions[sid] = new_session
        if cwd and not s[S_PROJECT]:
            s[S_PROJECT] = cwd
        if ts:
            if not s[S_FIRST] or ts < s[S_FIRST]:
                s[S_FIRST] = ts
            if ts > s[S_LAST]:
                s[S_LAST] = ts
        return s

    def _resolve_turn(self, s: dict[str, Any], pid: str | None) -> str:
        pid = resolve_turn(s, pid)
        return pid if pid is not None and pid in s[S_TURNS] else NO_TURN

    def _prompt(self, sid: str, ev: PromptEvent, state: dict[str, Any]) -> None:
        s = self.session(sid, ev.cwd, ev.ts)
        if state["sub"]:
            if state["turn"] is None:
                state["turn"] = ev.prompt_id  # the turn that launched this subagent
            return
        if ev.command is None:
            # A note from Claude Code (a background task finished): same command goes on.
            held = s[S_TURNS].get(ev.prompt_id)
            into = self._resolve_turn(s, state["turn"])
            if held is not None and not held[TURN_START] and into not in (NO_TURN, ev.prompt_id):
                self._join_turn(sid, s, ev.prompt_id, into)
            elif ev.prompt_id not in s[S_TURNS] and state["turn"] is not None:
                s[S_ALIASES][ev.prompt_id] = state["turn"]
            return
        t = s[S_TURNS].get(ev.prompt_id)
        if t is None:
            s[S_TURNS][ev.prompt_id] = [ev.command, ev.ts, 0, 0.0]
        elif not t[TURN_START]:
            # Kept for a subagent read first: now it is known.
            t[TURN_COMMAND], t[TURN_START] = ev.command, ev.ts
            self._requeue_turn(sid, s, ev.prompt_id)
        state["turn"] = ev.prompt_id

    def _join_turn(self, sid: str, s: dict[str, Any], held: str, into: str) -> None:
        """A turn held for subagents read first turned out to be a note in turn `into`: its
        usage and requests go there, and the note becomes an alias of it."""
        target = s[S_TURNS][into]
        t = s[S_TURNS].pop(held)
        target[TURN_TOKENS] += t[TURN_TOKENS]
        target[TURN_COST] += t[TURN_COST]
        s[S_ALIASES][held] = into
        for rec in self.L["keys"].values():
            if rec[REQ_SESSION] == sid and rec[REQ_TURN] == held:
                rec[REQ_TURN] = into
        for adj in s[S_ADJUSTMENTS]:
            if adj[ADJ_TURN] == held:
                adj[ADJ_TURN] = into
        self._requeue_turn(sid, s, into)

    # --- usage ---------------------------------------------------------------------------------

    def cost_of(self, model: str, u: Usage) -> float | None:
        """Table price of one request, or Claude Code's implied rate; None when unknown."""
        from tokenbudget import pricing

        c = pricing.request_cost(model, u, self.prices)
        if c is not None:
            return c
        rate = self.L["rates"].get(model)
        return rate * weight(u) if isinstance(rate, int | float) else None

    def _request(self, sid: str, ev: RequestEvent) -> None:
        """A request of the session's own process is about to be sent: open until its
        response's first line is read (a session not known yet has no total to compare)."""
        s = self.L["sessions"].get(sid)
        if s is None:
            return
        pending = s.setdefault(S_REQUESTS, {})
        pending.setdefault(ev.request_id, 0)  # a line read again keeps what a total said of it
        while len(pending) > OPEN_REQUESTS:
            del pending[next(iter(pending))]

    @staticmethod
    def _answered(s: dict[str, Any], ev: UsageEvent, state: dict[str, Any]) -> bool:
        """Whether the response that `ev` is a line of began before the session's latest total
        was written: its request was sent (its `api-request` line read) before that total's
        line. The request is open no longer. Only the session's own lines in its main
        transcript: a subagent's file and a fork's copies keep their order to themselves."""
        pending = s.get(S_REQUESTS)
        if not pending or ev.ref is None or state["sub"] or ev.origin is not None:
            return False
        in_total: int = pending.pop(ev.ref, 0)
        if not pending:
            del s[S_REQUESTS]
        return in_total == 1

    def _usage(self, sid: str, ev: UsageEvent, state: dict[str, Any]) -> None:
        keys = self.L["keys"]
        state["last_ts"] = ev.ts
        s = self.session(sid, ev.cwd, ev.ts)
        in_total = self._answered(s, ev, state)
        rec = keys.get(ev.key)
        if ev.origin is not None and not state["sub"]:
            s[S_ORIGIN] = ev.origin  # the last copy names the session this one was forked from
        if rec is None:
            owner = self._compacted_owner(ev.key)
            if owner is not None:
                # Counted long ago (the record was compacted): a re-read or a fork's copy.
                if owner != sid and ev.key not in s[S_FORK_KEYS]:
                    s[S_FORK_KEYS].append(ev.key)
                    self._add_copy(s, ev.model, ev.usage)  # a copy carries the same usage
                return
            if self._counted_elsewhere(ev, sid, state):
                if ev.key not in s[S_FORK_KEYS]:
                    s[S_FORK_KEYS].append(ev.key)
                    self._add_copy(s, ev.model, ev.usage)
                return
            if ev.origin is not None and not state["sub"]:
                # A copy whose requester's transcript is nowhere (yet): counted here, held for
                # the requester, whose own line takes it over if it turns up.
                s.setdefault(S_HELD, {})[ev.key] = ev.origin
            turn = self._resolve_turn(s, state["turn"])
            if turn == NO_TURN and state["sub"] and state["turn"] is not None:
                # The launching prompt is in the main transcript, not read yet (a first sync
                # reads subagents first): hold its turn, filled in when the prompt is read.
                s[S_TURNS][state["turn"]] = ["prompt", 0.0, 0, 0.0]
                turn = state["turn"]
            cost = self.cost_of(ev.model, ev.usage)
            keys[ev.key] = [sid, ev.model, *ev.usage, int(ev.ts // BUCKET), cost, turn]
            self._to_outbox(ev.key, keys[ev.key])
            self._add_seen(s, ev.model, ev.usage)
            self._apply(sid, ev.model, ev.usage, cost, int(ev.ts // BUCKET), ev.ts, turn, 1)
            self.result.new_requests += 1
            self._settle_extra(sid, s, ev, turn, in_total)
            return
        owner, model = rec[REQ_SESSION], rec[REQ_MODEL]
        old = Usage(*rec[REQ_USAGE])
        if owner != sid and ev.origin is None and not state["sub"]:
            held = self.L["sessions"].get(owner, {}).get(S_HELD, {})
            if held.get(ev.key) == sid:
                self._take_back(sid, ev, rec, s, state)
                owner = sid
        if owner != sid and ev.key not in s[S_FORK_KEYS]:
            # A copy of another session's request (a fork): seen here, owned there.
            s[S_FORK_KEYS].append(ev.key)
            self._add_copy(s, model, old)
        if ev.usage.total > old.total:
            delta = ev.usage - old
            new_cost = self.cost_of(model, ev.usage)
            old_cost = rec[REQ_COST]
            dcost = None if new_cost is None else new_cost - (old_cost or 0.0)
            rec[REQ_USAGE] = list(ev.usage)
            rec[REQ_COST] = new_cost
            self._to_outbox(ev.key, rec)
            owner_s = self.L["sessions"].get(owner)
            if owner_s is not None:
                self._add_seen(owner_s, model, delta)
                if owner != sid:
                    self._add_copy(s, model, delta)
                self._apply(owner, model, delta, dcost, rec[REQ_BUCKET], ev.ts, rec[REQ_TURN], 0)

    def _take_back(
        self, sid: str, ev: UsageEvent, rec: list[Any], s: dict[str, Any], state: dict[str, Any]
    ) -> None:
        """The requester's own line of a request a fork counted while the requester's
        transcript was nowhere: the request moves to the requester, the fork keeps a copy."""
        holder, model = rec[REQ_SESSION], rec[REQ_MODEL]
        hs = self.L["sessions"][holder]
        del hs[S_HELD][ev.key]
        u, cost, bucket = Usage(*rec[REQ_USAGE]), rec[REQ_COST], rec[REQ_BUCKET]
        self._apply(holder, model, ZERO - u, None if cost is None else -cost, bucket, ev.ts,
                    rec[REQ_TURN], -1)
        self._add_seen(hs, model, ZERO - u)
        if ev.key not in hs[S_FORK_KEYS]:
            hs[S_FORK_KEYS].append(ev.key)
        self._add_copy(hs, model, u)
        turn = self._resolve_turn(s, state["turn"])
        rec[REQ_SESSION], rec[REQ_TURN] = sid, turn
        self._add_seen(s, model, u)
        self._apply(sid, model, u, cost, bucket, ev.ts, turn, 1)

    def _counted_elsewhere(self, ev: UsageEvent, sid: str, state: dict[str, Any]) -> bool:
        """A fork's copy of a request made by a session whose transcript is still there (in this
        project folder or another): that transcript counts it, whether it was read before, is
        read later, or was folded into history already. Counting it here would depend on which
        file is read first."""
        if ev.origin is None or ev.origin == sid or state["dir"] is None:
            return False
        return self._transcript_of(ev.origin, state["dir"]) is not None

    def _transcript_of(self, sid: str, folder: str) -> str | None:
        """The main transcript of session `sid`: beside `folder`'s, else in any project folder
        next to it (a fork made from another directory). Looked up once per pass."""
        projects = os.path.dirname(folder)
        if (projects, sid) in self._transcripts:
            return self._transcripts[projects, sid]
        name = sid + ".jsonl"
        found: str | None = None
        if os.path.isfile(os.path.join(folder, name)):
            found = os.path.join(folder, name)
        else:
            try:
                folders = sorted(os.listdir(projects))
            except OSError:
                folders = []
            for other in folders:
                candidate = os.path.join(projects, other, name)
                if os.path.isfile(candidate):
                    found = candidate
                    break
        self._transcripts[projects, sid] = found
        return found

    def keys_restored(self) -> None:
        """A resumed session's keys counted before its fold are back (history.resume_position):
        what was looked up before does not know them."""
        self._compacted = None
        self._joined = None
        self._straddled = None

    def _compacted_owner(self, key: str) -> str | None:
        """The session whose compacted requests include `key`, if any (the last in the
        ledger's order that does).

        A hook call asks for the few keys of its news: each is searched in all sessions'
        compacted keys joined (one string, a C-speed search), since building the index of
        every key costs more than all its questions (14 ms at 2,000 live sessions, every call
        with a new request). A pass that asks more (a sync) builds the index after a few. With
        the index of a large snapshot's records (index.py) a search looks only at the records
        it names and at those decoded, so it takes more (up to 8x), but only while the last
        looked at no more than 1/INDEXED_WIDE of the table: with most records decoded, each
        search looks at every one (in Python), and 256 such searches cost several times the
        index built after 32 (bench/RESULTS.md section 47).
        """
        if self._compacted is None:
            sessions = self.L["sessions"]
            searching = self._compacted_asked < COMPACTED_SEARCHES
            if not searching and type(sessions) is lazy.Table and sessions.index is not None:
                searching = (self._compacted_asked < COMPACTED_SEARCHES * 8
                             and self._compacted_looked * INDEXED_WIDE <= len(sessions))
            if searching:
                self._compacted_asked += 1
                return self._compacted_search(key)
            owners: dict[str, str] = {}
            for sid, s in self.L["sessions"].items():
                k = counted_keys(s)
                for i in range(0, len(k), KEY_LEN):
                    owners[k[i : i + KEY_LEN]] = sid
            self._compacted = owners
        return self._compacted.get(key)

    def _compacted_search(self, key: str) -> str | None:
        """`_compacted_owner` without the index: the last whole compacted key equal to `key`."""
        if not 0 < len(key) <= KEY_LEN:
            return None  # no slot holds it
        sessions = self.L["sessions"]
        if type(sessions) is lazy.Table and self._joined is None and lazy.written_as_is(key):
            return self._compacted_in(sessions, key)
        if self._joined is None:
            owners: list[str] = []
            starts: list[int] = []
            parts: list[str] = []
            at = 0
            for sid, s in self.L["sessions"].items():
                k = counted_keys(s)
                if k:
                    owners.append(sid)
                    starts.append(at)
                    parts.append(k)
                    at += len(k)
            self._joined = ("".join(parts), starts, owners)
        joined, starts, owners = self._joined
        end = len(joined)
        while True:
            i = joined.rfind(key, 0, end)
            if i < 0:
                return None
            n = bisect.bisect_right(starts, i) - 1
            stop = starts[n + 1] if n + 1 < len(starts) else len(joined)
            # Equal to one of a session's slots (KEY_LEN characters from its start on, the
            # last one maybe shorter), never to text across two slots or two sessions.
            if (i - starts[n]) % KEY_LEN == 0 and min(stop, i + KEY_LEN) == i + len(key):
                return owners[n]
            end = i + len(key) - 1  # on to an earlier start

    def _compacted_in(self, sessions: lazy.Table, key: str) -> str | None:
        """`_compacted_search` on sessions decoded a record at a time (lazy.Table): the texts
        not decoded are searched for `key` joined (one C-speed search), and only a session
        whose text holds it is decoded; those decoded, and those whose text joins two strings
        of keys (in which a slot may straddle them), are searched as records. The owner is the
        last, in the ledger's order, holding `key` as one of its slots. With an index beside
        the snapshot (index.py), the texts are not searched: the sessions it names and those
        decoded are."""
        named = sessions.indexed(index.KEY, key)
        if named is not None:
            best: str | None = None
            looked = list(lazy.candidates(sessions, named))
            for sid, s in looked:
                if _holds_slot(s, key):
                    best = sid
            self._compacted_looked = len(looked)
            return best
        joined, starts, owners = sessions.texts()
        if self._straddled is None:
            self._straddled = {sid for sid, _ in lazy.entries_with(
                sessions, f'"{S_FOLDED_KEYS}":'.encode())}
        straddled = self._straddled
        best = None  # the last of those searched as records that holds it
        for sid, s in zip(dict.keys(sessions), dict.values(sessions), strict=True):
            if (type(s) is not lazy.Raw or sid in straddled) and _holds_slot(sessions[sid], key):
                best = sid
        order: dict[str, int] = {}
        needle, end = key.encode(), len(joined)
        while True:
            i = joined.rfind(needle, 0, end)
            if i < 0:
                return best
            n = bisect.bisect_right(starts, i) - 1
            owner: str = owners[n]
            end = starts[n]  # then on to an earlier session
            if owner in straddled or type(sessions.raw(owner)) is not lazy.Raw:
                continue  # searched as a record above
            if _holds_slot(sessions[owner], key):
                if best is None:
                    return owner
                order = order or {k: at for at, k in enumerate(sessions)}
                return owner if order[owner] > order[best] else best

    def _settle_extra(
        self, sid: str, s: dict[str, Any], ev: UsageEvent, turn: str, in_total: bool = False
    ) -> None:
        """A request that reached its file only after Claude Code's session total was read (a
        subagent's; an interactive fork may write its total before the lines it covers; a
        response streaming when the process was interrupted): that total already counted it,
        as usage in no line. Count it once, here.

        Part of the total: a line dated no later than the total was written (S_TOTALS_AT), or
        a response whose request was sent before the total's line (`in_total`, _answered)
        whatever its date. In a resumed process the total's own time falls short of when it
        was written by the pauses between processes, so only the order tells there."""
        cst = s.get(S_TOTALS_AT)
        extra = s[S_EXTRA].get(ev.model)
        if cst is None or not extra or (ev.ts > cst and not in_total):
            return  # after the total was written: a new request, not part of it
        overlap = Usage(*(min(a, b) for a, b in zip(extra, ev.usage, strict=True)))
        if not overlap.total:
            return
        s[S_EXTRA][ev.model] = list(Usage(*extra) - overlap)
        self._add_seen(s, ev.model, ZERO - overlap)
        # It comes off where the total counted it (the turn and bucket of that cost-state),
        # so that the turn that made it has it whether its line was read before or after.
        net: dict[tuple[int, str], Usage] = {}
        for row in s[S_ADJUSTMENTS]:
            if row[ADJ_MODEL] == ev.model:
                where = row[ADJ_BUCKET], row[ADJ_TURN]
                net[where] = net.get(where, ZERO) + Usage(*row[ADJ_USAGE])

        # The line's own turn first (several turns' corrections can share a bucket), then the
        # buckets from the line's own on, then the earlier ones.
        left, line_hour = overlap, int(ev.ts // BUCKET)
        for hour, at in sorted(net, key=lambda k: (k[1] != turn, k[0] < line_hour, k[0])):
            take = Usage(*(min(a, b) for a, b in zip(left, net[hour, at].clamp(), strict=True)))
            if take.total:
                left = left - take
                self._take_extra(sid, s, ev.model, take, hour, at, ev.ts)
        if left.total:
            self._take_extra(sid, s, ev.model, left, line_hour, turn, ev.ts)

    def _take_extra(
        self, sid: str, s: dict[str, Any], model: str, u: Usage, hour: int, turn: str, ts: float
    ) -> None:
        cost = self.cost_of(model, u)
        neg_cost = None if cost is None else -cost
        self._adjust(sid, s, [hour, model, *(ZERO - u), neg_cost, turn])
        cell = self.L["hours"].get(str(hour), {}).get(s[S_PROJECT])
        if cell is not None:
            ts = cell[HOUR_LAST]  # a moment already in that bucket: its span stays as it was
        self._apply(sid, model, ZERO - u, neg_cost, hour, ts, turn, 0)

    def _adjust(self, sid: str, s: dict[str, Any], entry: list[Any]) -> None:
        """Keep a correction of the session's usage beyond its requests (`_apply` adds it)."""
        s[S_ADJUSTMENTS].append(entry)
        self._adj_to_outbox(sid, s, entry[ADJ_MODEL], entry[ADJ_BUCKET])

    def _adj_to_outbox(self, sid: str, s: dict[str, Any], model: str, hour: int) -> None:
        """The session's corrections of one model in one bucket, summed, wait in the outbox.

        One row in the team database per (session, model, bucket), holding their sum, which
        the server replaces rather than keeps the larger: a rebuilt ledger, whose corrections
        come in other steps, sends the same sums under the same keys, so nothing counts twice.
        """
        if not self.L["team"]:
            return
        import hashlib

        rows = [a for a in s[S_ADJUSTMENTS] if a[ADJ_BUCKET] == hour and a[ADJ_MODEL] == model]
        net = [sum(a[ADJ_USAGE][i] for a in rows) for i in range(5)]
        costs = [a[ADJ_COST] for a in rows if a[ADJ_COST] is not None]
        cost = sum(costs) if costs else None
        key = "adj-" + hashlib.blake2b(f"{sid}\0{model}\0{hour}".encode(),
                                       digest_size=8).hexdigest()
        self.L["outbox"][key] = [sid, model, *net, hour, cost,
                                 self._command(s, rows[-1][ADJ_TURN]), s[S_PROJECT]]

    def _requeue_turn(self, sid: str, s: dict[str, Any], turn: str) -> None:
        """A held turn's command is known now: its usage goes to the team again, with it."""
        if not self.L["team"]:
            return
        for key, rec in self.L["keys"].items():
            if rec[REQ_SESSION] == sid and rec[REQ_TURN] == turn:
                self._to_outbox(key, rec)
        for hour, model in {
            (a[ADJ_BUCKET], a[ADJ_MODEL]) for a in s[S_ADJUSTMENTS] if a[ADJ_TURN] == turn
        }:
            self._adj_to_outbox(sid, s, model, hour)

    def _to_outbox(self, key: str, rec: list[Any]) -> None:
        """A request's usage, new or grown, waits in the outbox for `tokenbudget team sync`.

        In the ledger, so it is committed with the usage itself: whatever compacts or folds
        the request later, the outbox keeps it until a push has landed (team/sync.py)."""
        if not self.L["team"]:
            return
        sid = rec[REQ_SESSION]
        s = self.L["sessions"].get(sid)
        project = s[S_PROJECT] if s is not None else ""
        command = self._command(s, rec[REQ_TURN]) if s is not None else "prompt"
        self.L["outbox"][key] = [
            sid, rec[REQ_MODEL], *rec[REQ_USAGE], rec[REQ_BUCKET], rec[REQ_COST], command, project
        ]

    @staticmethod
    def _command(s: dict[str, Any], turn: str) -> str:
        t = s[S_TURNS].get(turn)
        return str(t[TURN_COMMAND]) if t is not None else "prompt"

    def _add_copy(self, s: dict[str, Any], model: str, u: Usage) -> None:
        """Usage in a copy of another session's request, seen in this session's transcript."""
        if S_COPIES not in s:
            self._add_seen(s, model, u)  # a session counted before the fork rule: as it was
            return
        cur = s[S_COPIES].get(model)
        s[S_COPIES][model] = list((Usage(*cur) if cur else ZERO) + u)

    def _add_seen(self, s: dict[str, Any], model: str, u: Usage) -> None:
        cur = s[S_SEEN].get(model)
        s[S_SEEN][model] = list((Usage(*cur) if cur else ZERO) + u)

    def _apply(
        self,
        sid: str,
        model: str,
        u: Usage,
        cost: float | None,
        hour: int,
        ts: float,
        turn: str,
        n: int,
    ) -> None:
        """Add usage (or a correction of it) to the session, its turn, its hour and project."""
        s = self.L["sessions"][sid]
        m = s[S_MODELS].get(model)
        if m is None:
            m = s[S_MODELS][model] = [0, 0, 0, 0, 0, 0.0, 0, SOURCE_TABLE]
        m[M_USAGE] = [a + b for a, b in zip(m[M_USAGE], u, strict=True)]
        m[M_REQUESTS] += n
        if cost is None:
            if u.total > 0:
                m[M_SOURCE] = SOURCE_UNPRICED
            cost = 0.0
        m[M_COST] += cost
        tokens = u.total
        t = s[S_TURNS].get(turn)
        if t is not None:
            t[TURN_TOKENS] += tokens
            t[TURN_COST] += cost
        project = s[S_PROJECT]
        bucket = self.L["hours"].setdefault(str(hour), {})
        b = bucket.get(project)
        # Whole seconds: blocks and windows begin on whole seconds, and flooring keeps every
        # moment on the same side of them.
        second = int(ts)
        if b is None:
            bucket[project] = [tokens, cost, second, second]
        else:
            b[HOUR_TOKENS] += tokens
            b[HOUR_COST] += cost
            b[HOUR_FIRST] = min(b[HOUR_FIRST], second)
            b[HOUR_LAST] = max(b[HOUR_LAST], second)
        p = self.L["projects"].setdefault(project, [0, 0.0])
        p[ROLLUP_TOKENS] += tokens
        p[ROLLUP_COST] += cost
        mr = self.L["models"].setdefault(model, [0, 0.0])
        mr[ROLLUP_TOKENS] += tokens
        mr[ROLLUP_COST] += cost

    # --- Claude Code's own totals -----------------------------------------------------------------

    def _settle_fork(self, sid: str, s: dict[str, Any], folder: str | None) -> None:
        """Work out what a fork's cost-state inherited, and count only what is left: its own.

        Done again whenever a transcript that may be its parent's was read on, and applied as
        the difference from what was counted before, so that the order of reads does not
        matter. Where the inherited part cannot be known, the fork's cost-state adds nothing.
        """
        if (
            S_COPIES not in s
            or not s.get(S_LATEST_TOTALS)
            or (S_PARENT in s and S_INHERITED not in s)
            or folder is None
        ):
            return  # counted by an older rule, no total yet, or nowhere to look
        fork_path = self._transcript_of(sid, folder)
        if fork_path is None:
            return  # in another config dir than the transcript read: its own read settles it
        parent, base, running = self._inherited(sid, s, fork_path)
        if self._forks is not None and sid not in self._forks.get(s.get(S_ORIGIN, ""), ()):
            self._forks.setdefault(s.get(S_ORIGIN, ""), []).append(sid)
        old_base = {m: Usage(*u) for m, u in s.get(S_INHERITED, {}).items()}
        was_unknown = S_INHERITED_UNKNOWN in s
        turn, ts = s.get(S_INHERIT_AT) or [NO_TURN, s[S_LAST] or clock.now()]
        hour = int(ts // BUCKET)
        new_base: dict[str, list[int]] = {}
        models = set(old_base) | set(s[S_COPIES]) | set(base or {}) | set(s[S_EXTRA])
        for model in sorted(models):
            b_old = old_base.get(model, ZERO)
            b = Usage(*s[S_COPIES].get(model, ZERO))
            if running and base is not None:
                # The parent's copies made since its last total are not in the fork's: the
                # copies are no floor (they would take the fork's own hidden usage, such as a
                # compaction of the copied context, for inherited).
                b = base.get(model, ZERO)
            elif base is not None:
                b = b.fieldwise_max(base.get(model, ZERO))
            x = Usage(*s[S_EXTRA].get(model, ZERO))
            if base is None:
                x_new = ZERO  # not known to be its own: never charged
            elif was_unknown:
                lines = Usage(*s[S_SEEN].get(model, ZERO)) - x - b_old
                x_new = (Usage(*s[S_LATEST_TOTALS].get(model, ZERO)) - lines - b).clamp()
            else:
                x_new = (x + b_old - b).clamp()
            self._add_seen(s, model, b - b_old + x_new - x)
            if b.total:
                new_base[model] = list(b)
            if x_new != x:
                dx = x_new - x
                s[S_EXTRA][model] = list(x_new)
                cost = self.cost_of(model, dx)
                self._adjust(sid, s, [hour, model, *dx, cost, turn])
                self._apply(sid, model, dx, cost, hour, ts, turn, 0)
        s[S_INHERITED], s[S_PARENT] = new_base, parent
        if base is None:
            s[S_INHERITED_UNKNOWN] = 1
        else:
            s.pop(S_INHERITED_UNKNOWN, None)

    def _inherited(
        self, sid: str, s: dict[str, Any], fork_path: str
    ) -> tuple[str, dict[str, Usage] | None, bool]:
        """(parent, its totals at the fork point, whether it was still running then: see
        transcripts.ForkPoint), totals None when they cannot be known.

        The candidates are the session the copies name and every session whose copies name
        it too (a fork of it whose own work left no response to copy: a /compact, a title).
        Each one's totals where the fork copied it up to are read from its transcript. The
        fork's own first total holds the one it started from: where it does not hold the
        parent's next total after the fork point, the fork was made before that was written
        (the parent still in its last response, or idle, its process not yet ended) and
        started from the parent's total before the point. A session whose totals the fork's
        first does not hold is not its parent (a fork of the fork). The parent is the one with
        the largest: each fork's total holds its parent's.
        """
        requester = s.get(S_ORIGIN)
        if requester is None:
            return "", None, False
        folder = os.path.dirname(fork_path)  # candidates are looked for beside the fork
        same = [o for o, os_ in self.L["sessions"].items() if os_.get(S_ORIGIN) == requester]
        candidates = [requester, *sorted(c for c in same if c != sid)]
        evals: dict[str, list[Any]] = s.setdefault(S_CANDIDATES, {})
        copied: tuple[set[bytes], bool] | None = None
        best: tuple[int, str, dict[str, Usage]] | None = None
        first = {m: Usage(*u) for m, u in s.get(S_FIRST_TOTALS, {}).items()}
        earlier: set[str] = set()  # candidates taken at their totals before the fork point
        for c in candidates:
            e = evals.get(c)
            if e is None or not e[EVAL_FINAL]:  # a final answer needs no file, not even its name
                path = self._transcript_of(c, folder)
                if path is None:
                    if c == requester:
                        return requester, None, False  # gone, or in a folder we do not read
                    continue
                try:
                    sizes = [os.stat(path).st_size, os.stat(fork_path).st_size]
                    if e is None or e[EVAL_SIZES] != sizes:
                        if copied is None:
                            copied = transcripts.copied_uuids(fork_path)
                        e = evals[c] = self._evaluation(copied, path, sizes)
                except OSError:
                    return requester, None, False
            if e[EVAL_KIND] == EVAL_UNKNOWN:
                return c, None, False  # its total at the fork point is torn or rejected
            if e[EVAL_KIND] == EVAL_NOT_PARENT:
                continue
            totals = {m: Usage(*u) for m, u in e[EVAL_TOTALS].items()}
            if not _within(totals, first):
                if c != requester:
                    continue  # a fork of the fork: its total holds this fork's
                # Looked up only then (rare, and not kept).
                path = self._transcript_of(c, folder)
                try:
                    if copied is None:
                        copied = transcripts.copied_uuids(fork_path)
                    fp = None if path is None else transcripts.fork_point(copied[0], path, True)
                except OSError:
                    fp = None
                if fp is None or fp.totals is None or not _within(fp.totals, first):
                    continue
                totals = fp.totals
                earlier.add(c)
            rank = sum(u.total for u in totals.values())
            if best is None or rank > best[0]:
                best = (rank, c, totals)
        for c in [c for c in evals if c not in candidates]:
            del evals[c]
        if best is None:
            return requester, None, False
        _, parent, totals = best
        # Copies beyond the parent's total at the fork point: made after it, if the parent was
        # still running when the fork was made (looked up only then: rare, and not kept).
        copies = {m: Usage(*u) for m, u in s[S_COPIES].items()}
        running = parent in earlier
        if not running and not _within(copies, totals):
            path = self._transcript_of(parent, folder)
            if path is not None:
                try:
                    if copied is None:
                        copied = transcripts.copied_uuids(fork_path)
                    fp = transcripts.fork_point(copied[0], path)
                except OSError:
                    fp = None
                running = fp is not None and fp.running and fp.totals is not None
        return parent, totals, running

    @staticmethod
    def _evaluation(copied: tuple[set[bytes], bool], parent: str, sizes: list[int]) -> list[Any]:
        """One candidate parent's evaluation (schema.EVAL_*): its totals at the fork point
        known, unknown (its line torn or rejected), or not a parent (it holds no copy)."""
        fp = transcripts.fork_point(copied[0], parent)
        if fp is None:
            return [EVAL_NOT_PARENT, int(copied[1]), {}, *sizes]
        totals = fp.totals or {}
        return [EVAL_KNOWN if fp.totals is not None else EVAL_UNKNOWN, int(fp.final and copied[1]),
                {m: list(u) for m, u in totals.items()}, *sizes]

    def _resettle_forks_of(self, sid: str, folder: str | None) -> None:
        """Forks that may have `sid` for parent: those whose copies name it or its requester."""
        if self._forks is None:
            self._forks = {}
            # Only a record whose text names the key is decoded (lazy.Table).
            for fid, fs in lazy.entries_with(self.L["sessions"], f'"{S_INHERITED}":'.encode(),
                                             (index.HAS, S_INHERITED)):
                if S_INHERITED in fs:
                    self._forks.setdefault(fs.get(S_ORIGIN, ""), []).append(fid)
        s = self.L["sessions"].get(sid) or {}
        requester = s.get(S_ORIGIN)
        for key in (sid, requester) if requester not in (None, sid) else (sid,):
            for fid in list(self._forks.get(key, ())):
                fs = self.L["sessions"].get(fid)
                if fid != sid and fs is not None and fs.get(S_ORIGIN) == key:
                    self._settle_fork(fid, fs, folder)

    def _note_totals(self, s: dict[str, Any], ev: CostStateEvent, turn: str, ts: float) -> None:
        """Keep a session's first and latest cost-state totals (a fork's are compared with
        its parent's), and the turn and time its inheritance is counted at."""
        if S_FIRST_TOTALS not in s:
            s[S_FIRST_TOTALS] = {m: list(u) for m, (u, _) in ev.models.items()}
            s[S_INHERIT_AT] = [turn, ts]
        latest = s.setdefault(S_LATEST_TOTALS, {})
        for model, (total, _) in ev.models.items():
            cur = latest.get(model)
            latest[model] = list(total if cur is None else total.fieldwise_max(Usage(*cur)))

    def _cost_state(self, sid: str, ev: CostStateEvent, state: dict[str, Any]) -> None:
        s = self.session(sid)
        # The requests still open were sent before this total was written: it holds what their
        # responses had streamed (from the first event on), whenever their lines come.
        for rid in s.get(S_REQUESTS, ()):
            s[S_REQUESTS][rid] = 1
        ts = state["last_ts"] or s[S_LAST] or clock.now()
        hour = int(ts // BUCKET)
        turn = self._resolve_turn(s, state["turn"])
        inherited = bool(s[S_FORK_KEYS]) or S_ORIGIN in s
        self._note_totals(s, ev, turn, ts)
        # When the total was written, for _settle_extra: at least the time of the last line
        # read before it, and at least its own `written`. On Ctrl-C in `claude -p`, Claude Code
        # writes the total, which counts the response streaming then from its first event on,
        # before that response's line, dated when it began: later than every line before the
        # total, earlier than `written`. (A `written` further than TOTAL_WRITTEN_SLACK past
        # the last line is not believed.)
        at = ev.written if ev.written is not None and ev.written - ts <= TOTAL_WRITTEN_SLACK else ts
        # A total before the file's first prompt was written ahead of the lines after it: an
        # interactive fork's transcript is written at its exit, total first, then the lines
        # it copies and its own, all of which the total holds (its `written` falls before its
        # own last request). It was written no later than it is read.
        ahead = clock.now() if state["last_ts"] is None and state["turn"] is None else 0.0
        s[S_TOTALS_AT] = max(s.get(S_TOTALS_AT) or 0.0, ts, at, ahead)
        if not s[S_LAST]:
            # Known by its total alone (an interactive fork writes it before the lines it
            # copies): active when the total was written, not idle since 1970, or the next fold
            # would keep it in history, its parent's total counted as its own.
            self.session(sid, ts=at)
        if inherited:
            self._settle_fork(sid, s, state["dir"])
            if S_INHERITED_UNKNOWN in s:
                return  # what it inherited is not known: nothing in its total is its own
        for model, (total, cc_cost) in ev.models.items():
            # `seen` holds every line seen and every earlier extra: what is left is new.
            seen = Usage(*s[S_SEEN].get(model, ZERO))
            old_extra = Usage(*s[S_EXTRA].get(model, ZERO))
            dx = (total - seen).clamp()
            extra = old_extra + dx
            if dx.total > 0:
                # Requests in no assistant line (compaction): only Claude Code's total knows them.
                s[S_EXTRA][model] = list(extra)
                self._add_seen(s, model, dx)
                cost = self.cost_of(model, dx)
                self._adjust(sid, s, [hour, model, *dx, cost, turn])
                self._apply(sid, model, dx, cost, hour, ts, turn, 0)
            if cc_cost is None or inherited:
                continue  # a fork's total includes its parent's: our own prices apply
            m = s[S_MODELS].get(model)
            if m is None or Usage(*m[M_USAGE]) != total:
                continue  # Claude Code's figure does not cover exactly what we counted
            w = weight(total)
            from tokenbudget import pricing

            if w > 0 and pricing.price_for(model, self.prices) is None:
                self.L["rates"][model] = cc_cost / w
            diff = cc_cost - m[M_COST]
            if abs(diff) > 1e-12:
                self._adjust(sid, s, [hour, model, 0, 0, 0, 0, 0, diff, turn])
                self._apply(sid, model, ZERO, diff, hour, ts, turn, 0)
            m[M_SOURCE] = SOURCE_CLAUDE
            s[S_CC_COSTS][model] = [*total, cc_cost]


def _within(totals: Mapping[str, Usage], limit: Mapping[str, Usage]) -> bool:
    """Whether every count of every model in `totals` is at most `limit`'s."""
    return all(all(a <= b for a, b in zip(u, limit.get(m, ZERO), strict=True))
               for m, u in totals.items())


def requeue_all(ledger: Ledger) -> None:
    """Every request record and correction the ledger holds, into the team outbox again: for
    a ledger rebuilt without its team. What the server has already changes nothing there (the
    larger usage, the same sums of corrections under the same keys); what it lacks arrives."""
    ing = Ingestor(ledger)
    for key, rec in ledger["keys"].items():
        ing._to_outbox(key, rec)
    for sid, s in ledger["sessions"].items():
        for hour, model in sorted({(a[ADJ_BUCKET], a[ADJ_MODEL]) for a in s[S_ADJUSTMENTS]}):
            ing._adj_to_outbox(sid, s, model, hour)


# Keys a pass looks up in the compacted keys by search before it builds their index: a hook
# call's news asks a few; a sync asks thousands (Ingestor._compacted_owner).
COMPACTED_SEARCHES = 32
# With the index of a large snapshot's records, a pass searches on after COMPACTED_SEARCHES
# while each search looks at no more than this fraction of the sessions (most still texts), as
# Ingestor._compacted_owner says.
INDEXED_WIDE = 4
COMPACT_AFTER = 3600.0
COMPACT_WHEN = 5000  # hooks compact once the ledger holds this many request records


def compact(ledger: Ledger, now: float, idle: float = COMPACT_AFTER) -> int:
    """Turn the request records of sessions idle for `idle` seconds into per-session cells.

    A request record (about 110 bytes) is only needed while its response may still be
    rewritten with a larger usage; after that the session keeps, per bucket, model and
    command, the sums (`c`), and the request's key alone (`k`, 16 characters) so that a
    re-read or a fork's copy is still recognised. This keeps the ledger, which every hook
    reads and writes, small for a busy user. (The turn's own totals are in `t` already; what
    reads compacted usage wants only its command.)
    """
    sessions = ledger["sessions"]
    keys = ledger["keys"]
    # Sessions compacted already have nothing to move.
    owners = {rec[REQ_SESSION] for rec in keys.values()}
    idle_ids = {sid for sid in owners if sid in sessions and sessions[sid][S_LAST] < now - idle}
    if not idle_ids:
        return 0
    # Only sessions whose transcripts are read to their end: a line still to come may be a
    # later, larger copy of a response already counted, and must find its record.
    for path, frec in ledger["files"].items():
        if frec[FILE_SESSION] in idle_ids:
            try:
                size = os.stat(path).st_size
            except OSError:
                continue  # gone: it will not grow
            if size != frec[FILE_OFFSET]:
                idle_ids.discard(frec[FILE_SESSION])
    if not idle_ids:
        return 0
    moved = 0
    new_keys: dict[str, list[str]] = {}
    # A request a fork holds for a requester not read yet stays a record: the requester's
    # line takes it over when it turns up.
    held = {k for sid in idle_ids for k in sessions[sid].get(S_HELD, ())}
    for key in [
        k
        for k, rec in keys.items()
        if rec[REQ_SESSION] in idle_ids and len(k) == KEY_LEN and k not in held
    ]:
        rec = keys.pop(key)
        sid = rec[REQ_SESSION]
        s = sessions[sid]
        turn = s[S_TURNS].get(rec[REQ_TURN])
        command = turn[TURN_COMMAND] if turn is not None else "prompt"
        cells = s.setdefault(S_CELLS, {})
        cell = cells.setdefault(
            cell_key(rec[REQ_BUCKET], rec[REQ_MODEL], command), [0, 0, 0, 0, 0, 0.0]
        )
        cell[CELL_USAGE] = [a + b for a, b in zip(cell[CELL_USAGE], rec[REQ_USAGE], strict=True)]
        cell[CELL_COST] += rec[REQ_COST] or 0.0
        new_keys.setdefault(sid, []).append(key)  # joined once: += per key is quadratic
        moved += 1
    for sid, added in new_keys.items():
        sessions[sid][S_COMPACTED_KEYS] = sessions[sid].get(S_COMPACTED_KEYS, "") + "".join(added)
    return moved


def _holds_slot(s: Any, key: str) -> bool:
    """Whether `key` is one of a session's compacted keys, as a whole slot (KEY_LEN characters
    from its start on, the last one maybe shorter)."""
    if type(s) is not dict:
        return False
    k = counted_keys(s)
    at = k.find(key)
    while at >= 0:
        if at % KEY_LEN == 0 and min(len(k), at + KEY_LEN) == at + len(key):
            return True
        at = k.find(key, at + 1)
    return False


def compacted_cells(s: dict[str, Any]) -> Iterable[tuple[int, str, str, list[Any]]]:
    """A session's compacted usage: (bucket, model, command, [5 counts, cost])."""
    turns = s.get(S_TURNS, {})
    for key, cell in s.get(S_CELLS, {}).items():
        bucket, model, command = split_cell_key(key)
        # Cells compacted by earlier versions name the turn (a prompt id, or "-" for none):
        # never "prompt" or a "/command".
        if command in turns:
            command = turns[command][TURN_COMMAND]
        elif not command.startswith("/"):
            command = "prompt"
        yield bucket, model, command, cell


def prune_hours(ledger: Ledger, now: float, tz: tzinfo | None = None) -> None:
    """Drop buckets older than any window needs; before the last 2 days, keep one per day.

    Day, week and month windows begin at a local midnight of `tz` (None: UTC), so the
    buckets of one local day summed into one, keyed by the bucket of that day's midnight,
    count in a window exactly when the day does; its first and last span the day's activity.
    The last 2 days keep 15-minute buckets for the last hour's burn rate and the 5-hour
    blocks. A block chains from the one before while activity goes on, so blocks are exact
    when activity paused for 5 hours within those 2 days; without a pause they depend on how
    far back the buckets reach, as they did when that was only the 40-day cut.

    The one inexactness: a merged day keeps the midnights of the zone it was merged in. If
    the user's zone changes, it counts wholly in the window holding its old midnight. (A
    zone known only as a fixed offset is not merged: its midnights move with DST.)
    """
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from tokenbudget.budgets import window

    zone = tz or UTC
    # A fixed offset standing in for a zone whose rules we could not read (a POSIX TZ rule,
    # no tzdata) moves at the next DST change: days merged at its midnights would then fall
    # in the wrong window. Those buckets stay 15 minutes wide.
    mergeable = zone is UTC or isinstance(zone, ZoneInfo)

    def day_of(t: float) -> tuple[float, float]:
        start, end = window("daily", datetime.fromtimestamp(t, UTC), zone)
        assert start is not None and end is not None  # a day always has both ends
        return start.timestamp(), end.timestamp()

    hours = ledger["hours"]
    # Whole days go: a merged day keyed before the cut must not go while part of it is kept.
    cut = day_of((now // BUCKET - BUCKETS_KEPT) * BUCKET)[0]
    for h in [h for h in hours if int(h) * BUCKET < cut]:
        del hours[h]
    recent = day_of(now - RECENT)[0] if mergeable else float("-inf")
    old = sorted((int(h), h) for h in hours if int(h) * BUCKET < recent)
    i = 0
    while i < len(old):
        lo, hi = day_of(old[i][0] * BUCKET)
        j = i
        while j < len(old) and old[j][0] * BUCKET < hi:
            j += 1
        day, i = old[i:j], j
        # A midnight off the 15-minute grid (no zone has one today) would not be counted right.
        if lo % BUCKET or hi % BUCKET or [b for b, _ in day] == [int(lo // BUCKET)]:
            continue
        merged: dict[str, list[Any]] = {}
        for _, h in day:
            for project, c in hours.pop(h).items():
                m = merged.setdefault(project, [0, 0.0, c[HOUR_FIRST], c[HOUR_LAST]])
                m[HOUR_TOKENS] += c[HOUR_TOKENS]
                m[HOUR_COST] += c[HOUR_COST]
                m[HOUR_FIRST] = min(m[HOUR_FIRST], c[HOUR_FIRST])
                m[HOUR_LAST] = max(m[HOUR_LAST], c[HOUR_LAST])
        for m in merged.values():
            # Whole seconds keep each moment on the same side of every window's and block's
            # edge; a nanodollar is less than any one token costs.
            m[HOUR_COST] = round(m[HOUR_COST], 9)
            m[HOUR_FIRST], m[HOUR_LAST] = int(m[HOUR_FIRST]), int(m[HOUR_LAST])
        hours[str(int(lo // BUCKET))] = merged
