"""The Store's usage questions answered from a local ledger and its folded history.

These are the domain operations that the team's PostgreSQL store (team/pgstore.py) answers
from its usage rows: what was used between two times, by one session, in which 15-minute
buckets, and grouped for a report. Here they read the report's cells (ledger_cells.py: live
requests, corrections and compacted cells, then history), so they agree with `report`. They
are cold paths (status, reports, the team's commands); a hook measures budgets through
enforce.py, which reads the ledger's own rollups. Below them, the questions only a local
ledger answers (its sessions and turns), for the store's read view (`Store.view`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, tzinfo
from typing import Any

from tokenbudget import query
from tokenbudget.budgets import project_matches
from tokenbudget.ingest import compacted_cells
from tokenbudget.ledger import BUCKET, Ledger
from tokenbudget.ledger_cells import Cell, cells
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_TURN,
    ADJ_USAGE,
    CELL_COST,
    CELL_USAGE,
    H_HOURS,
    H_TURNS,
    REQ_BUCKET,
    REQ_COST,
    REQ_SESSION,
    REQ_TURN,
    REQ_USAGE,
    S_ADJUSTMENTS,
    S_FIRST,
    S_LAST,
    S_PROJECT,
    S_TURNS,
    TURN_COMMAND,
    TURN_COST,
    TURN_START,
    TURN_TOKENS,
    split_history_key,
)

# What usage_by groups by on both backends; `member` is the team store's alone (one ledger is
# one member's), `session` and `block` the local report's.
SHARED_BY = ("day", "week", "month", "model", "command", "project")


def _cells(ledger: Ledger) -> list[Cell]:
    from tokenbudget import history

    return [c for c, _source in cells(ledger, history.read_records(ledger))]


def _inside(c: Cell, start: float | None, end: float | None) -> bool:
    t = c.hour * BUCKET
    return (start is None or t >= start) and (end is None or t < end)


def usage_between(
    ledger: Ledger, start: float | None, end: float | None, project: str | None = None
) -> tuple[int, float]:
    """(tokens, dollars) counted in buckets starting in [start, end), of one project folder
    (its subfolders included) if given."""
    tokens, cost = 0, 0.0
    for c in _cells(ledger):
        if not _inside(c, start, end):
            continue
        if project is not None and not (c.project and project_matches(project, c.project)):
            continue
        tokens += c.usage.total
        cost += c.cost
    return tokens, cost


def session_usage(ledger: Ledger, session: str) -> tuple[int, float]:
    """(tokens, dollars) of one session, folded periods included."""
    tokens, cost = 0, 0.0
    for c in _cells(ledger):
        if c.sid == session:
            tokens += c.usage.total
            cost += c.cost
    return tokens, cost


def block_activity(ledger: Ledger, start: float | None, end: float | None) -> list[float]:
    """The start of every 15-minute bucket in [start, end) holding usage, oldest first: what
    ccusage's 5-hour blocks are cut from."""
    found = {c.hour * BUCKET for c in _cells(ledger) if c.usage.total and _inside(c, start, end)}
    return sorted(float(t) for t in found)


def usage_by(
    ledger: Ledger, by: str, since: date | None, until: date | None, tz: tzinfo,
    week_start: int = 0,
) -> list[dict[str, Any]]:
    """One row per group (key, the four token counts, totalTokens, totalCost, modelsUsed),
    ordered by key; days in `tz`, from `since` to `until` included."""
    if by not in SHARED_BY and by != "session":
        raise ValueError(f"the local store groups by {', '.join(SHARED_BY)} or session, not {by}")
    from tokenbudget import history

    found = cells(ledger, history.read_records(ledger))
    groups = query.group(by, found, tz, week_start=week_start,
                         filt=query.Filter(since=since, until=until))
    fields = ("key", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens",
              "totalTokens", "totalCost", "modelsUsed")
    rows = [{f: r[f] for f in fields} for r in map(query.row, groups)]
    return sorted(rows, key=lambda r: str(r["key"]))


# --- the local ledger's own questions (Store.turn_runs, session_seen, latest_session...) ----


def turn_runs(ledger: Ledger, records: dict[str, dict[str, Any]]) -> dict[str, list[list[float]]]:
    """Every turn of every command, folded (`records`) and live, each [start, tokens,
    dollars], oldest first."""
    runs: dict[str, list[list[float]]] = {}
    turns = [t for rec in records.values() for t in rec[H_TURNS]]
    turns += [t for s in ledger["sessions"].values() for t in s[S_TURNS].values()]
    for t in turns:
        runs.setdefault(t[TURN_COMMAND], []).append([t[TURN_START], t[TURN_TOKENS], t[TURN_COST]])
    for v in runs.values():
        v.sort(key=lambda r: (r[0], r[1]))  # by start, then tokens
    return runs


def session_seen(
    ledger: Ledger, records: dict[str, dict[str, Any]], session: str
) -> tuple[str | None, float | None]:
    """(project, last activity) of a live session, else a folded one; None where unknown."""
    s = ledger["sessions"].get(session) or records.get(session) or {}
    return s.get(S_PROJECT), s.get(S_LAST)


def latest_session(ledger: Ledger, project: str) -> str | None:
    """The most recently active live session in `project` or a subfolder (else anywhere)."""
    sessions = ledger["sessions"]
    # Claude Code may have been started in a subfolder of the project the CLI found.
    here = [
        (s[S_LAST], sid)
        for sid, s in sessions.items()
        if s[S_PROJECT] and project_matches(project, s[S_PROJECT])
    ]
    pool = here or [(s[S_LAST], sid) for sid, s in sessions.items()]
    return max(pool)[1] if pool else None


@dataclass(frozen=True)
class RecordedSession:
    """One session's turns and usage as recorded (Store.recorded_sessions).

    `live`: still in the ledger, its usage known request by request where the request records
    are kept (`requests`: [turn's prompt id, bucket, tokens, dollars], in the order read, then
    its adjustments) and by bucket and command once compacted (`cells`); its `turns` are
    [prompt id, command, start, tokens, dollars]. Folded into history: its turns' prompt ids
    are None, it has no `requests`, and `cells` are its usage by bucket and command, oldest
    first. Dollars are 0.0 where no price was known.
    """

    sid: str
    project: str
    first: float
    live: bool
    turns: list[tuple[str | None, str, float, int, float]]
    requests: list[tuple[str, int, int, float]]
    cells: list[tuple[int, str, int, float]]


def recorded_sessions(
    ledger: Ledger, records: dict[str, dict[str, Any]]
) -> list[RecordedSession]:
    """Every session: the live ones in the ledger's order, then the folded ones (`records`,
    as `history.read_records(ledger)` gives them)."""
    requests: dict[str, list[tuple[str, int, int, float]]] = {}
    for rec in ledger["keys"].values():  # in the order they were read from the transcripts
        requests.setdefault(rec[REQ_SESSION], []).append(
            (rec[REQ_TURN], rec[REQ_BUCKET], sum(rec[REQ_USAGE]), rec[REQ_COST] or 0.0))
    out = []
    for sid, s in ledger["sessions"].items():
        turns = [(pid, t[TURN_COMMAND], t[TURN_START], t[TURN_TOKENS], t[TURN_COST])
                 for pid, t in s[S_TURNS].items()]
        mine = requests.get(sid, [])
        mine += [(a[ADJ_TURN], a[ADJ_BUCKET], sum(a[ADJ_USAGE]), a[ADJ_COST] or 0.0)
                 for a in s[S_ADJUSTMENTS]]
        compacted = [(bucket, command, sum(c[CELL_USAGE]), c[CELL_COST] or 0.0)
                     for bucket, _model, command, c in compacted_cells(s)]
        out.append(RecordedSession(sid, s[S_PROJECT], s[S_FIRST], True, turns, mine, compacted))
    for sid, rec in records.items():
        folded: list[tuple[str | None, str, float, int, float]] = [
            (None, t[TURN_COMMAND], t[TURN_START], t[TURN_TOKENS], t[TURN_COST])
            for t in rec[H_TURNS]]
        hours = [
            (bucket, split_history_key(model_cmd)[1] or "prompt", sum(v[CELL_USAGE]),
             v[CELL_COST] or 0.0)
            for bucket, h in sorted((int(h), h) for h in rec[H_HOURS])
            for model_cmd, v in rec[H_HOURS][h].items()
        ]
        out.append(RecordedSession(sid, rec[S_PROJECT], rec[S_FIRST], False, folded, [], hours))
    return out
