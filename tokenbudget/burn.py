"""How fast a budget is being used: its rate over the last hour, and when that rate runs it out.

Pure: the ledger and `now` in, numbers out (`messages.burn_text` words them). The ledger keeps
recent usage in 15-minute buckets with the first and last activity of each, so "the last hour"
takes the buckets inside it and the part of an older one inside the hour, as if its usage were
spread evenly over its activity.
"""

from __future__ import annotations

from datetime import timedelta

from tokenbudget.budgets import applies_to
from tokenbudget.ledger import BUCKET
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_USAGE,
    CELL_COST,
    CELL_USAGE,
    HOUR_COST,
    HOUR_FIRST,
    HOUR_LAST,
    HOUR_TOKENS,
    REQ_BUCKET,
    REQ_COST,
    REQ_SESSION,
    REQ_USAGE,
    S_ADJUSTMENTS,
    S_PROJECT,
)

TYPE_CHECKING = False  # mypy reads it as true: these names are for the type checker only
if TYPE_CHECKING:
    from collections.abc import Iterable

    from tokenbudget.budgets import Budget, Check
    from tokenbudget.ledger import Ledger

HOUR = 3600


def spread(amount: float, first: float, last: float, lo: float, hi: float) -> float:
    """The part of `amount`, used evenly from `first` to `last`, that falls in [lo, hi]."""
    if last <= first:
        return amount if lo <= first <= hi else 0.0
    overlap = min(last, hi) - max(first, lo)
    return amount * max(0.0, overlap) / (last - first)


def _recent_hours(now: float) -> range:
    # The buckets that can overlap [now - 1h, now].
    return range(int((now - HOUR) // BUCKET), int(now // BUCKET) + 1)


def _project_cells(
    ledger: Ledger, budget: Budget, now: float
) -> Iterable[tuple[float, float, float, float]]:
    """(tokens, cost, first, last) of each recent hour bucket the budget counts."""
    for hour in _recent_hours(now):
        for project, cell in ledger["hours"].get(str(hour), {}).items():
            if applies_to(budget, project):
                yield (
                    float(cell[HOUR_TOKENS]),
                    float(cell[HOUR_COST]),
                    float(cell[HOUR_FIRST]),
                    float(cell[HOUR_LAST]),
                )


def _session_cells(
    ledger: Ledger, session_id: str | None, now: float
) -> Iterable[tuple[float, float, float, float]]:
    """(tokens, cost, first, last) of the session's usage in each recent bucket.

    Requests are kept per 15-minute bucket, not per second: the session's project bucket bounds
    when in that bucket they can have happened.
    """
    s = ledger["sessions"].get(session_id or "")
    if s is None:
        return
    hours = _recent_hours(now)
    sums: dict[int, list[float]] = {}
    for rec in ledger["keys"].values():
        if rec[REQ_SESSION] == session_id and rec[REQ_BUCKET] in hours:
            cell = sums.setdefault(rec[REQ_BUCKET], [0.0, 0.0])
            cell[0] += sum(rec[REQ_USAGE])
            cell[1] += rec[REQ_COST] or 0.0
    from tokenbudget.ingest import compacted_cells

    for bucket, _model, _turn, c in compacted_cells(s):  # requests settled long enough ago
        if bucket in hours:
            cell = sums.setdefault(bucket, [0.0, 0.0])
            cell[0] += sum(c[CELL_USAGE])
            cell[1] += c[CELL_COST]
    for adj in s[S_ADJUSTMENTS]:  # usage only Claude Code's own totals knew of (compaction)
        if adj[ADJ_BUCKET] in hours:
            cell = sums.setdefault(adj[ADJ_BUCKET], [0.0, 0.0])
            cell[0] += sum(adj[ADJ_USAGE])
            cell[1] += adj[ADJ_COST] or 0.0
    for hour, (tokens, cost) in sums.items():
        bucket = ledger["hours"].get(str(hour), {}).get(s[S_PROJECT])
        first, last = (
            (bucket[HOUR_FIRST], bucket[HOUR_LAST])
            if bucket
            else (hour * BUCKET, hour * BUCKET + BUCKET)
        )
        yield tokens, cost, float(first), float(last)


def last_hour(
    ledger: Ledger, budget: Budget, now: float, session_id: str | None = None
) -> float | None:
    """What the budget counted in the hour up to `now`, in its unit; None for command budgets."""
    if budget.kind == "command":
        return None  # a run's own pace says nothing about the next run
    if budget.kind == "session":
        cells = _session_cells(ledger, session_id, now)
    else:
        cells = _project_cells(ledger, budget, now)
    usd = budget.unit == "usd"
    return sum(
        spread(cost if usd else tokens, first, last, now - HOUR, now)
        for tokens, cost, first, last in cells
    )


def runs_out_in(check: Check, rate: float) -> timedelta | None:
    """How long, at `rate` an hour, until the budget's limit is reached; None if never."""
    left = check.limit - check.used
    if left <= 0 or rate <= 0:
        return None
    return timedelta(hours=left / rate)
