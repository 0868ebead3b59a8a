"""Measuring one budget against the ledger: what is used now, and what a command will need.

The engine (engine.py) measures every budget with it; nothing else should need to.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tokenbudget import budgets as rules
from tokenbudget.ledger import BUCKET
from tokenbudget.record import Record
from tokenbudget.schema import (
    HOUR_COST,
    HOUR_FIRST,
    HOUR_LAST,
    HOUR_TOKENS,
    M_COST,
    M_USAGE,
    PRE_COST,
    PRE_TOKENS,
    ROLLUP_COST,
    ROLLUP_TOKENS,
    RUN_COST,
    RUN_TOKENS,
    S_MODELS,
    S_PRE,
)
from tokenbudget.store import held

TYPE_CHECKING = False  # typing costs a hook call about 5 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import tzinfo

    from tokenbudget.budgets import Budget
    from tokenbudget.ledger import Ledger

HOUR = 3600
# A bucket's activity lies within this long of the bucket's own start: a 15-minute bucket, or
# the buckets of one local day merged into the bucket of its midnight (26 hours at most). Twice
# a day leaves room for a day merged again after the time zone changed.
BUCKET_SPAN = 2 * 86400


class Context(Record):
    """Where and when a budget is measured."""

    _fields = ("session_id", "project", "now", "tz", "week_start", "command", "prompt_id",
               "starting", "listing")
    __slots__ = _fields
    session_id: str | None
    project: str | None
    now: datetime
    tz: tzinfo
    week_start: int
    command: str | None  # the command about to run (a prompt) or running (a tool call)
    prompt_id: str | None  # the turn running, for a tool call
    starting: bool  # True for a prompt not yet sent: expected costs apply
    listing: bool  # True for `status`: every budget, command budgets by their last run

    def __init__(
        self,
        session_id: str | None,
        project: str | None,
        now: datetime,
        tz: tzinfo,
        week_start: int = 0,
        command: str | None = None,
        prompt_id: str | None = None,
        starting: bool = False,
        listing: bool = False,
    ) -> None:
        self.session_id = session_id
        self.project = project
        self.now = now
        self.tz = tz
        self.week_start = week_start
        self.command = command
        self.prompt_id = prompt_id
        self.starting = starting
        self.listing = listing



def _hours_between(
    ledger: Ledger, b: Budget, start: datetime | None, end: datetime | None
) -> float:
    lo = start.timestamp() if start else float("-inf")
    hi = end.timestamp() if end else float("inf")
    i = HOUR_COST if b.unit == "usd" else HOUR_TOKENS
    total = 0.0
    for h, per_project in ledger["hours"].items():
        t = int(h) * BUCKET
        if t + BUCKET <= lo or t >= hi:
            continue
        for project, cell in per_project.items():
            if rules.applies_to(b, project):
                total += cell[i]
    return total


def _block_activity(ledger: Ledger, b: Budget, now: datetime) -> list[datetime]:
    """The activity that decides the 5-hour block holding `now`, oldest first: all of it since
    the last moment that starts a new block whatever came before (budgets.starts_anew).

    The buckets are walked back from `now` only until such a moment, so this costs what the
    recent activity holds, not the 40 days of buckets kept.
    """
    hours = ledger["hours"]
    scoped: dict[str, bool] = {}
    # Activity from the next UTC hour on cannot open a block holding `now`.
    cutoff = (now.timestamp() // HOUR + 1) * HOUR
    end = datetime.fromtimestamp(cutoff, UTC)
    # Timestamps read, filed under the step of the walk after which no bucket left to walk can
    # hold a later one: from then on they are taken newest first.
    seen: dict[int, list[float]] = {}
    since: list[datetime] = []  # newest first
    oldest = cutoff  # the timestamp of since[-1]
    # The walk's own test, taken at every bucket: does the oldest activity taken (or `now`)
    # start anew whatever came before `bound`? `bound` is a whole second, so that is
    # rules.starts_anew in seconds (rules.anew_from), against the activity's `timestamp()`,
    # exact to the microsecond: no datetime built at each bucket.
    anchor = now.timestamp()
    k = int(cutoff // BUCKET)
    while True:
        k -= 1
        lo, hi = k * BUCKET, (k + 1) * BUCKET
        per_project = hours.get(str(k))
        for project, cell in per_project.items() if per_project else ():
            inside = scoped.get(project)
            if inside is None:
                inside = scoped[project] = rules.applies_to(b, project)
            if not (inside and cell[HOUR_TOKENS]):
                continue
            for ts in (cell[HOUR_FIRST], cell[HOUR_LAST]):
                if lo <= ts < hi:  # a 15-minute bucket
                    step = k - BUCKET_SPAN // BUCKET
                elif ts < cutoff:
                    step = min(k, int((ts - BUCKET_SPAN) // BUCKET))
                else:
                    continue
                seen.setdefault(step, []).append(ts)
        # The buckets below k hold activity before this bound only.
        bound = k * BUCKET + BUCKET_SPAN
        taken = seen.pop(k, None)
        for ts in sorted(taken, reverse=True) if taken else ():
            moment = datetime.fromtimestamp(ts, UTC)
            if moment >= end:
                continue  # rounded to the microsecond, it is the next hour's
            # Starting anew takes a pause of over 4 hours (the second allows for rounding).
            if oldest - ts > 4 * HOUR - 1 and since and rules.starts_anew(since[-1], moment):
                return since[::-1]
            since.append(moment)
            oldest = ts
            anchor = moment.timestamp()
        # Either the oldest activity seen starts anew whatever came before the bound, or none
        # was seen and every block of what came before it has ended by `now`.
        if anchor >= rules.anew_from(bound):
            return since[::-1]


def session_used(ledger: Ledger, session_id: str | None) -> tuple[float, float]:
    s = ledger["sessions"].get(session_id or "")
    if s is None:
        return 0.0, 0.0
    pre = s.get(S_PRE) or (0, 0.0)  # what a resumed session used before it was folded
    tokens = sum(sum(m[M_USAGE]) for m in s[S_MODELS].values()) + pre[PRE_TOKENS]
    cost = sum(m[M_COST] for m in s[S_MODELS].values()) + pre[PRE_COST]
    return float(tokens), cost


def expected(
    ledger: Ledger, command: str | None, exclude: str | None = None
) -> tuple[float, float]:
    """The 90th percentile of a slash command's recent runs (tokens, dollars); 0 if unknown."""
    if not command or not command.startswith("/"):
        return 0.0, 0.0
    runs = held(ledger).command_runs(command, exclude)
    return (
        rules.expected_cost([r[RUN_TOKENS] for r in runs]),
        rules.expected_cost([r[RUN_COST] for r in runs]),
    )


def measure(b: Budget, ledger: Ledger, ctx: Context) -> tuple[float, datetime | None, str | None]:
    """(used, resets at, window id) of one budget."""
    usd = b.unit == "usd"
    if b.kind == "session":
        tokens, cost = session_used(ledger, ctx.session_id)
        return (cost if usd else tokens), None, ctx.session_id
    if b.kind == "command":
        if ctx.starting:
            return 0.0, None, ctx.prompt_id  # each run starts from zero
        if ctx.listing:
            runs = held(ledger).command_runs(b.name or "")
            last = float(runs[-1][RUN_COST if usd else RUN_TOKENS]) if runs else 0.0
            return last, None, None
        command, tokens, cost = (
            held(ledger).turn_usage(ctx.session_id, ctx.prompt_id) or (None, 0, 0)
        )
        if command != b.name:
            return 0.0, None, ctx.prompt_id
        return (cost if usd else tokens), None, ctx.prompt_id
    if b.kind in ("total", "project"):
        i = ROLLUP_COST if usd else ROLLUP_TOKENS
        used = sum(v[i] for p, v in ledger["projects"].items() if rules.applies_to(b, p))
        return float(used), None, None
    activity: Iterable[datetime] = _block_activity(ledger, b, ctx.now) if b.kind == "5h" else ()
    start, end = rules.window(b.kind, ctx.now, ctx.tz, ctx.week_start, activity=activity)
    return _hours_between(ledger, b, start, end), end, start.isoformat() if start else None


def applies(b: Budget, ctx: Context) -> bool:
    """Does this budget concern the prompt or tool call in `ctx`?"""
    if b.kind == "command" and b.name != ctx.command and not ctx.listing:
        return False
    if b.kind == "session" and not ctx.session_id:
        return False
    return rules.applies_to(b, ctx.project)
