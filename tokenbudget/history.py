"""Folded sessions: the cold part of the ledger, kept out of the hook's way.

A session idle past the retention period leaves the ledger: its totals stay in the ledger's
rollups (per project, per command, per bucket), and its full record is appended to
`history.jsonl`, which only `report` and a rebuild read. The ledger thus stays small however
long the history grows.

The history line is written and fsynced before the session leaves the ledger; a crash in
between leaves the session in both, and readers let the ledger win.
"""

from __future__ import annotations

import json
import os

from tokenbudget import paths
from tokenbudget.ledger import Ledger, file_identity
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_MODEL,
    ADJ_TURN,
    ADJ_USAGE,
    CELL_COST,
    CELL_LEN,
    CELL_USAGE,
    FILE_IDENT,
    FILE_OFFSET,
    FILE_POS,
    FILE_SESSION,
    FILE_TURN,
    H_FILES,
    H_HOURS,
    H_KEYS,
    H_PERIODS,
    H_SESSION,
    H_TURNS,
    HOUR_COST,
    HOUR_FIRST,
    HOUR_LAST,
    HOUR_TOKENS,
    M_COST,
    M_SOURCE,
    M_USAGE,
    PRE_COST,
    PRE_TOKENS,
    REQ_BUCKET,
    REQ_COST,
    REQ_MODEL,
    REQ_SESSION,
    REQ_TURN,
    REQ_USAGE,
    ROLLUP_COST,
    ROLLUP_TOKENS,
    S_ADJUSTMENTS,
    S_COMPACTED_KEYS,
    S_FIRST,
    S_FOLDED_KEYS,
    S_LAST,
    S_MODELS,
    S_PERIOD,
    S_PRE,
    S_PROJECT,
    S_SEEN,
    S_TURNS,
    SOURCE_MIXED,
    TURN_COMMAND,
    TURN_COST,
    TURN_LEN,
    TURN_START,
    TURN_TOKENS,
    USAGE_LEN,
    history_key,
)

# typing costs a hook call with news about 2.5 ms to import, pathlib about 3.5 ms
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

RUNS_KEPT = 50
# A transcript's last line cut short and left so long is abandoned (fold, _read_to_end); one
# longer than ABANDONED_TAIL bytes is left for a read to find its end (a sync reads it whole).
ABANDONED = 3600.0
ABANDONED_TAIL = 1024 * 1024


def history_file() -> str:
    """Where folded sessions are kept (`history_path` as a string, for the hook)."""
    return os.path.join(paths.data_folder(), "history.jsonl")


def history_path() -> Path:
    return paths.data_dir() / "history.jsonl"


def _hourly(s: dict[str, Any], key_records: list[list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """The session's usage per 15-minute bucket, model and command: [5 counts, cost]."""
    out: dict[str, dict[str, list[Any]]] = {}
    turns = s[S_TURNS]

    def add(hour: int, model: str, counts: list[int], cost: float | None, cmd: str) -> None:
        row = out.setdefault(str(hour), {}).setdefault(
            history_key(model, cmd), [0, 0, 0, 0, 0, 0.0]
        )
        row[CELL_USAGE] = [a + b for a, b in zip(row[CELL_USAGE], counts, strict=True)]
        row[CELL_COST] += cost or 0.0

    def command(turn: str) -> str:
        return str(turns[turn][TURN_COMMAND]) if turn in turns else "prompt"

    for rec in key_records:
        add(rec[REQ_BUCKET], rec[REQ_MODEL], rec[REQ_USAGE], rec[REQ_COST],
            command(rec[REQ_TURN]))
    for a in s[S_ADJUSTMENTS]:
        add(a[ADJ_BUCKET], a[ADJ_MODEL], a[ADJ_USAGE], a[ADJ_COST], command(a[ADJ_TURN]))
    from tokenbudget.ingest import compacted_cells

    for bucket, model, cmd, c in compacted_cells(s):
        add(bucket, model, c[CELL_USAGE], c[CELL_COST], cmd)
    return out


def fold(ledger: Ledger, cutoff: float) -> int:
    """Move sessions whose last activity is before `cutoff` out of the ledger; return how many.

    Only sessions whose transcripts are read to their end (sync.fold_idle reads them first):
    a line not read yet may be a later, larger copy of a response already counted, which
    must find its request record. What a folded session counted stays known by its request
    keys (H_KEYS), so that a copy written after the fold (Claude Code writes a line per
    content block of a response) is not counted again when the session resumes.
    """
    idle = [sid for sid, s in ledger["sessions"].items() if s[S_LAST] < cutoff]
    if not idle:
        return 0
    idle_set = set(idle)
    files_of: dict[str, dict[str, Any]] = {}
    for path, rec in ledger["files"].items():
        if rec[FILE_SESSION] in idle_set:
            files_of.setdefault(rec[FILE_SESSION], {})[path] = rec
    for sid in [sid for sid in idle if not all(_read_to_end(p, r)
                                               for p, r in files_of.get(sid, {}).items())]:
        idle.remove(sid)
        idle_set.discard(sid)
    if not idle:
        return 0
    from tokenbudget.schema import KEY_LEN

    # One pass over the request records, not one per session (that was quadratic).
    keys_of: dict[str, list[list[Any]]] = {}
    own_keys: dict[str, list[str]] = {}
    for key, rec in ledger["keys"].items():
        if rec[REQ_SESSION] in idle_set:
            keys_of.setdefault(rec[REQ_SESSION], []).append(rec)
            if len(key) == KEY_LEN:  # as compaction keeps them: one slot each
                own_keys.setdefault(rec[REQ_SESSION], []).append(key)
    lines = []
    for sid in idle:
        s = ledger["sessions"][sid]
        record = {
            H_SESSION: sid,
            S_PERIOD: s.get(S_PERIOD, ""),
            S_PROJECT: s[S_PROJECT],
            S_FIRST: s[S_FIRST],
            S_LAST: s[S_LAST],
            S_MODELS: s[S_MODELS],
            # Usage seen per model: a resumed session's cost-state counts on it.
            S_SEEN: s[S_SEEN],
            H_HOURS: _hourly(s, keys_of.get(sid, [])),
            H_TURNS: list(s[S_TURNS].values()),
            H_FILES: files_of.get(sid, {}),
            # Its own: those of earlier periods are in their records already.
            H_KEYS: s.get(S_COMPACTED_KEYS, "") + "".join(own_keys.get(sid, ())),
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    _append(lines)
    for sid in idle:
        s = ledger["sessions"].pop(sid)
        for t in s[S_TURNS].values():
            runs = ledger["commands"].setdefault(t[TURN_COMMAND], [])
            runs.append(_run(t))
            if len(runs) > RUNS_KEPT:
                del runs[: len(runs) - RUNS_KEPT]
        folded = ledger["folded"]
        folded["sessions"] += 1
        for m in s[S_MODELS].values():
            folded["tokens"] += sum(m[M_USAGE])
            folded["cost"] += m[M_COST]
        folded["until"] = max(folded["until"], s[S_LAST])
        for path in files_of.get(sid, {}):
            del ledger["files"][path]
    for key in [k for k, rec in ledger["keys"].items() if rec[REQ_SESSION] in idle_set]:
        del ledger["keys"][key]
    return len(idle)


def _read_to_end(path: str, rec: list[Any]) -> bool:
    """Whether a transcript has nothing beyond where `rec` says it was read, or nothing but a
    last line cut short by a writer that is gone (Claude Code killed while writing it)."""
    try:
        st = os.stat(path)
    except OSError:
        return True  # gone: it will not grow
    if file_identity(st) != rec[FILE_IDENT]:
        return False
    offset: int = rec[FILE_OFFSET]
    left = st.st_size - offset
    if left <= 0:
        return left == 0
    # Untouched for ABANDONED seconds with no line end in what is left: that line will never
    # end, and the session must still fold (its records would stay live for good). The file's
    # time is the real clock's, so it is compared with the real clock, not tokenbudget's (a
    # clock pinned ahead would take a line being written for one left long ago).
    import time

    idle = time.time() - st.st_mtime  # the real clock
    if left > ABANDONED_TAIL or idle < ABANDONED:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            tail = f.read(left)
    except OSError:
        return False
    return b"\n" not in tail


def _run(turn: list[Any]) -> list[Any]:
    """A finished turn as a command run (schema.RUN_*)."""
    return [turn[TURN_START], turn[TURN_TOKENS], turn[TURN_COST]]


def _append(lines: list[str]) -> None:
    path = history_file()
    paths.ensure_private_dir(os.path.dirname(path))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def read_records(ledger: Ledger | None = None) -> dict[str, dict[str, Any]]:
    """Every folded session's record by session id; bad lines skipped.

    A session folded several times (resumed after folding) has one record per live period,
    added up here. The same period written twice (a crash between history and ledger) counts
    once: its later line wins. With `ledger`, a period still live there is left out: the
    ledger holds it.
    """
    periods: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        with open(history_file(), "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if _well_formed(rec):
            period = rec.get(S_PERIOD) or f"line {n}"
            periods.setdefault(rec[H_SESSION], {})[str(period)] = rec
    live = {sid: s.get(S_PERIOD) for sid, s in ledger["sessions"].items()} if ledger else {}
    out: dict[str, dict[str, Any]] = {}
    for sid, by_period in periods.items():
        merged: dict[str, Any] | None = None
        for period, rec in by_period.items():
            if live.get(sid) == period:
                continue
            merged = rec if merged is None else _merge(merged, rec)
        if merged is not None:
            merged = dict(merged)
            merged[H_PERIODS] = [p for p in by_period if live.get(sid) != p]
            out[sid] = merged
    return out


def _well_formed(rec: object) -> bool:
    """A record with the fields readers use, of their types: a hand edit or another writer's
    line is skipped like a line cut short, never a KeyError in every report."""
    if not isinstance(rec, dict) or not isinstance(rec.get(H_SESSION), str):
        return False
    num = (int, float)
    try:
        return (
            isinstance(rec[S_PROJECT], str)
            and all(
                isinstance(rec[k], num) and not isinstance(rec[k], bool) for k in (S_FIRST, S_LAST)
            )
            and all(isinstance(rec[k], dict) for k in (S_MODELS, H_HOURS))
            and all(isinstance(rec.get(k, {}), dict) for k in (S_SEEN, H_FILES))
            and isinstance(rec.get(H_KEYS, ""), str)
            and all(int(h) >= 0 and isinstance(v, dict) for h, v in rec[H_HOURS].items())
            and isinstance(rec[H_TURNS], list)
            and all(
                isinstance(t, list) and len(t) == TURN_LEN and isinstance(t[TURN_COMMAND], str)
                and all(isinstance(x, num) for x in t[TURN_START:])
                for t in rec[H_TURNS]
            )
        )
    except (KeyError, ValueError, TypeError):
        return False


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A session folded twice (resumed after folding): its two records add up."""
    merged = dict(new)
    merged[S_FIRST] = min(old[S_FIRST], new[S_FIRST])
    merged[S_LAST] = max(old[S_LAST], new[S_LAST])
    models = {k: list(v) for k, v in old[S_MODELS].items()}
    for model, m in new[S_MODELS].items():
        cur = models.setdefault(model, [0, 0, 0, 0, 0, 0.0, 0, m[M_SOURCE]])
        for i in range(M_SOURCE):  # counts, cost and requests add up
            cur[i] += m[i]
        if m[M_SOURCE] != cur[M_SOURCE]:
            cur[M_SOURCE] = SOURCE_MIXED
    merged[S_MODELS] = models
    hours = {h: {mo: list(v) for mo, v in hv.items()} for h, hv in old[H_HOURS].items()}
    for h, hv in new[H_HOURS].items():
        for mo, v in hv.items():
            cur = hours.setdefault(h, {}).setdefault(mo, [0, 0, 0, 0, 0, 0.0])
            for i in range(CELL_LEN):
                cur[i] += v[i]
    merged[H_HOURS] = hours
    merged[H_TURNS] = old[H_TURNS] + new[H_TURNS]
    merged[H_FILES] = {**old[H_FILES], **new[H_FILES]}
    merged[H_KEYS] = old.get(H_KEYS, "") + new.get(H_KEYS, "")
    return merged


def folded_files() -> dict[str, list[Any]]:
    """Read positions of every folded transcript."""
    out: dict[str, list[Any]] = {}
    for rec in read_records().values():
        out.update(rec.get(H_FILES, {}))
    return out


def folded_position(path: str) -> list[Any] | None:
    return folded_files().get(path)


def resume_position(ledger: Ledger, path: str, rec: list[Any], sid: str) -> None:
    """A folded session's transcript grew: go on from where folding left it.

    The live record carries what the session used before it was folded, so that its session
    budget goes on from there rather than from zero.
    """
    turn = rec[FILE_TURN] if len(rec) > FILE_TURN else None
    ledger["files"][path] = [*rec[FILE_POS], sid, turn]
    from tokenbudget.ingest import Ingestor

    s = Ingestor(ledger).session(sid)
    if S_PRE not in s:
        folded = read_records(ledger).get(sid)
        models = folded[S_MODELS].values() if folded else ()
        pre = [0, 0.0]
        pre[PRE_TOKENS] = sum(sum(m[M_USAGE]) for m in models)
        pre[PRE_COST] = sum(m[M_COST] for m in models) if folded else 0.0
        s[S_PRE] = pre
        # The resumed process's cost-state covers the session's whole life: what was seen
        # before the fold is not new (records folded before S_SEEN was kept: their usage).
        if folded:
            from tokenbudget.schema import KEY_LEN

            keys = folded.get(H_KEYS, "")
            if keys and len(keys) % KEY_LEN == 0:
                s[S_FOLDED_KEYS] = keys  # counted: a later line of one of them is not new
            before = folded.get(S_SEEN) or {m: v[M_USAGE] for m, v in folded[S_MODELS].items()}
            for model, seen in before.items():
                cur = s[S_SEEN].get(model, [0] * USAGE_LEN)
                s[S_SEEN][model] = [a + b for a, b in zip(cur, seen[:USAGE_LEN], strict=True)]


def restore_into(ledger: Ledger, now: float) -> None:
    """Refill a rebuilt ledger's rollups from the folded sessions."""
    from tokenbudget.ingest import BUCKETS_KEPT
    from tokenbudget.ledger import BUCKET

    oldest = int(now // BUCKET) - BUCKETS_KEPT
    for rec in read_records().values():
        folded = ledger["folded"]
        tokens = sum(sum(m[M_USAGE]) for m in rec[S_MODELS].values())
        cost = sum(m[M_COST] for m in rec[S_MODELS].values())
        folded["sessions"] += 1
        folded["tokens"] += tokens
        folded["cost"] += cost
        folded["until"] = max(folded["until"], rec[S_LAST])
        p = ledger["projects"].setdefault(rec[S_PROJECT], [0, 0.0])
        p[ROLLUP_TOKENS] += tokens
        p[ROLLUP_COST] += cost
        for model, m in rec[S_MODELS].items():
            mr = ledger["models"].setdefault(model, [0, 0.0])
            mr[ROLLUP_TOKENS] += sum(m[M_USAGE])
            mr[ROLLUP_COST] += m[M_COST]
        for t in rec[H_TURNS]:
            runs = ledger["commands"].setdefault(t[TURN_COMMAND], [])
            runs.append(_run(t))
            del runs[: max(0, len(runs) - RUNS_KEPT)]
        for h, per_model in rec[H_HOURS].items():
            if int(h) < oldest:
                continue
            start = int(h) * BUCKET
            # Only the session's own first and last moments are known: the bucket's edges
            # stand in for the rest.
            first = int(max(rec[S_FIRST], start))
            last = int(min(rec[S_LAST], start + BUCKET - 1))
            for v in per_model.values():
                bucket = ledger["hours"].setdefault(h, {})
                b = bucket.setdefault(rec[S_PROJECT], [0, 0.0, first, last])
                b[HOUR_TOKENS] += sum(v[CELL_USAGE])
                b[HOUR_COST] += v[CELL_COST]
                b[HOUR_FIRST] = min(b[HOUR_FIRST], first)
                b[HOUR_LAST] = max(b[HOUR_LAST], last)
