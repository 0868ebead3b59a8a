"""The Store's usage questions answered from a local ledger and its folded history.

These are the domain operations that the team's PostgreSQL store (team/pgstore.py) answers
from its usage rows: what was used between two times, by one session, in which 15-minute
buckets, and grouped for a report. Here they read the report's cells (query.cells: live
requests, corrections and compacted cells, then history), so they agree with `report`. They
are cold paths (status, reports, the team's commands); a hook measures budgets through
enforce.py, which reads the ledger's own rollups.
"""

from __future__ import annotations

from datetime import date, tzinfo
from typing import Any

from tokenbudget import query
from tokenbudget.budgets import project_matches
from tokenbudget.ledger import BUCKET, Ledger

# What usage_by groups by on both backends; `member` is the team store's alone (one ledger is
# one member's), `session` and `block` the local report's.
SHARED_BY = ("day", "week", "month", "model", "command", "project")


def _cells(ledger: Ledger) -> list[query.Cell]:
    from tokenbudget import history

    return [c for c, _source in query.cells(ledger, history.read_records(ledger))]


def _inside(c: query.Cell, start: float | None, end: float | None) -> bool:
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

    cells = query.cells(ledger, history.read_records(ledger))
    groups = query.group(by, cells, tz, week_start=week_start,
                         filt=query.Filter(since=since, until=until))
    fields = ("key", "inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens",
              "totalTokens", "totalCost", "modelsUsed")
    rows = [{f: r[f] for f in fields} for r in map(query.row, groups)]
    return sorted(rows, key=lambda r: str(r["key"]))
