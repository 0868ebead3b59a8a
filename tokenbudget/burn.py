"""How fast a budget is being used: its rate over the last hour, and when that rate runs it out.

Pure: the ledger and `now` in, numbers and text out. The ledger keeps recent usage in 15-minute
buckets with the first and last activity of each, so "the last hour" takes the buckets inside
it and the part of an older one inside the hour, as if its usage were spread evenly over its
activity.
"""

from __future__ import annotations

from datetime import timedelta

from tokenbudget.budgets import (
    ALLOW_COMMAND,
    applies_to,
    format_duration,
    reason_text,
    warning_text,
)
from tokenbudget.ledger import BUCKET
from tokenbudget.numfmt import format_amount

TYPE_CHECKING = False  # mypy reads it as true: these names are for the type checker only
if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import tzinfo

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
                yield float(cell[0]), float(cell[1]), float(cell[2]), float(cell[3])


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
        if rec[0] == session_id and rec[7] in hours:
            cell = sums.setdefault(rec[7], [0.0, 0.0])
            cell[0] += sum(rec[2:7])
            cell[1] += rec[8] or 0.0
    from tokenbudget.ingest import compacted_cells

    for bucket, _model, _turn, c in compacted_cells(s):  # requests settled long enough ago
        if bucket in hours:
            cell = sums.setdefault(bucket, [0.0, 0.0])
            cell[0] += sum(c[:5])
            cell[1] += c[5]
    for adj in s["adj"]:  # usage only Claude Code's own totals knew of (compaction)
        if adj[0] in hours:
            cell = sums.setdefault(adj[0], [0.0, 0.0])
            cell[0] += sum(adj[2:7])
            cell[1] += adj[7] or 0.0
    for hour, (tokens, cost) in sums.items():
        bucket = ledger["hours"].get(str(hour), {}).get(s["p"])
        first, last = (bucket[2], bucket[3]) if bucket else (hour * BUCKET, hour * BUCKET + BUCKET)
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
    i = 1 if budget.unit == "usd" else 0
    return sum(spread(c[i], c[2], c[3], now - HOUR, now) for c in cells)


def per_hour(amount: float, budget: Budget) -> str:
    """`120k tokens/h` or `$1.20/h` (sub-cent rates keep their digits)."""
    text = format_amount(amount, budget.unit)
    return f"{text}/h" if budget.unit == "usd" else f"{text} tokens/h"


def runs_out_in(check: Check, rate: float) -> timedelta | None:
    """How long, at `rate` an hour, until the budget's limit is reached; None if never."""
    left = check.limit - check.used
    if left <= 0 or rate <= 0:
        return None
    return timedelta(hours=left / rate)


def burn_text(check: Check, rate: float | None) -> str:
    """`Burn rate: 120k tokens/h over the last hour; at that rate it runs out in about 38m.`"""
    if rate is None:
        return ""
    if rate <= 0:
        return "Burn rate: nothing used in the last hour."
    head = f"Burn rate: {per_hour(rate, check.budget)} over the last hour"
    eta = runs_out_in(check, rate)
    if eta is None:
        return head + "."
    if check.resets_at is not None and check.now + eta >= check.resets_at:
        return head + "; at that rate it lasts until it resets."
    return head + f"; at that rate it runs out in about {format_duration(eta)}."


def block_message(
    check: Check,
    *,
    rate: float | None,
    raise_hint: str,
    allow_hint: str = ALLOW_COMMAND,
    tz: tzinfo | None = None,
) -> str:
    """A refusal: which budget, used of limit, when it resets, the burn rate, how to go on."""
    lines = [reason_text(check, raise_hint="", allow_hint="", tz=tz)]
    burn = burn_text(check, rate)
    if burn:
        lines.append(burn)
    if raise_hint:
        lines.append(f"To raise it: {raise_hint}")
    if allow_hint:
        lines.append(f"To let one prompt through: {allow_hint}")
    return "\n".join(lines)


def warning_message(
    check: Check, *, rate: float | None, raise_hint: str, tz: tzinfo | None = None
) -> str:
    """A heads-up at the threshold: the warning line, the burn rate and how to go on."""
    lines = [warning_text(check, tz=tz)]
    burn = burn_text(check, rate)
    if burn:
        lines.append(burn)
    if raise_hint:
        lines.append(f"To raise it: {raise_hint}")
    if check.budget.mode == "block":  # a warn-only budget never refuses: nothing to let through
        lines.append(f"To let one prompt through once it blocks: {ALLOW_COMMAND}")
    return "\n".join(lines)
