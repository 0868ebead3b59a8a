"""Measuring one budget against the ledger: what is used now, and what a command will need.

The engine (engine.py) measures every budget with it; nothing else should need to.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tokenbudget import budgets as rules
from tokenbudget.ledger import BUCKET
from tokenbudget.record import Record

TYPE_CHECKING = False  # typing costs a hook call about 5 ms to import
if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import tzinfo
    from typing import Any

    from tokenbudget.budgets import Budget
    from tokenbudget.ledger import Ledger

TOKENS, COST = 0, 1
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


def _idx(b: Budget) -> int:
    return COST if b.unit == "usd" else TOKENS


def _hours_between(
    ledger: Ledger, b: Budget, start: datetime | None, end: datetime | None
) -> float:
    lo = start.timestamp() if start else float("-inf")
    hi = end.timestamp() if end else float("inf")
    total = 0.0
    for h, per_project in ledger["hours"].items():
        t = int(h) * BUCKET
        if t + BUCKET <= lo or t >= hi:
            continue
        for project, cell in per_project.items():
            if rules.applies_to(b, project):
                total += cell[_idx(b)]
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
    k = int(cutoff // BUCKET)
    while True:
        k -= 1
        lo, hi = k * BUCKET, (k + 1) * BUCKET
        for project, cell in hours.get(str(k), {}).items():
            inside = scoped.get(project)
            if inside is None:
                inside = scoped[project] = rules.applies_to(b, project)
            if not (inside and cell[0]):
                continue
            for ts in (cell[2], cell[3]):
                if lo <= ts < hi:  # a 15-minute bucket
                    step = k - BUCKET_SPAN // BUCKET
                elif ts < cutoff:
                    step = min(k, int((ts - BUCKET_SPAN) // BUCKET))
                else:
                    continue
                seen.setdefault(step, []).append(ts)
        # The buckets below k hold activity before this bound only.
        bound = k * BUCKET + BUCKET_SPAN
        for ts in sorted(seen.pop(k, ()), reverse=True):
            moment = datetime.fromtimestamp(ts, UTC)
            if moment >= end:
                continue  # rounded to the microsecond, it is the next hour's
            # Starting anew takes a pause of over 4 hours (the second allows for rounding).
            if oldest - ts > 4 * HOUR - 1 and since and rules.starts_anew(since[-1], moment):
                return since[::-1]
            since.append(moment)
            oldest = ts
        # Either the oldest activity seen starts anew whatever came before the bound, or none
        # was seen and every block of what came before it has ended by `now`.
        if rules.starts_anew(since[-1] if since else now, datetime.fromtimestamp(bound, UTC)):
            return since[::-1]


def session_used(ledger: Ledger, session_id: str | None) -> tuple[float, float]:
    s = ledger["sessions"].get(session_id or "")
    if s is None:
        return 0.0, 0.0
    pre = s.get("pre") or (0, 0.0)  # what a resumed session used before it was folded
    tokens = sum(sum(m[:5]) for m in s["m"].values()) + pre[0]
    cost = sum(m[5] for m in s["m"].values()) + pre[1]
    return float(tokens), cost


def resolve_turn(session: dict[str, Any], prompt_id: str | None) -> str | None:
    """The turn `prompt_id` counts toward: a note's prompt id is an alias of the turn it came
    in. At most 8 steps, so that a cycle in a damaged ledger cannot hang a hook."""
    for _ in range(8):
        if prompt_id is None or prompt_id not in session["a"]:
            break
        prompt_id = session["a"][prompt_id]
    return prompt_id


def turn_used(
    ledger: Ledger, session_id: str | None, prompt_id: str | None
) -> tuple[str, float, float] | None:
    """The command and usage of the turn `prompt_id` (aliases followed), if recorded."""
    s = ledger["sessions"].get(session_id or "")
    if s is None or prompt_id is None:
        return None
    t = s["t"].get(resolve_turn(s, prompt_id))
    return None if t is None else (t[0], float(t[2]), float(t[3]))


def command_runs(ledger: Ledger, command: str, exclude: str | None = None) -> list[list[float]]:
    """[start, tokens, cost] of the command's past runs, oldest first."""
    runs = [list(r) for r in ledger["commands"].get(command, [])]
    for s in ledger["sessions"].values():
        for pid, t in s["t"].items():
            if t[0] == command and pid != exclude:
                runs.append([t[1], t[2], t[3]])
    runs.sort(key=lambda r: r[0])
    return runs


def expected(
    ledger: Ledger, command: str | None, exclude: str | None = None
) -> tuple[float, float]:
    """The 90th percentile of a slash command's recent runs (tokens, dollars); 0 if unknown."""
    if not command or not command.startswith("/"):
        return 0.0, 0.0
    runs = command_runs(ledger, command, exclude)
    return (
        rules.expected_cost([r[1] for r in runs]),
        rules.expected_cost([r[2] for r in runs]),
    )


def measure(b: Budget, ledger: Ledger, ctx: Context) -> tuple[float, datetime | None, str | None]:
    """(used, resets at, window id) of one budget."""
    i = _idx(b)
    if b.kind == "session":
        return session_used(ledger, ctx.session_id)[i], None, ctx.session_id
    if b.kind == "command":
        if ctx.starting:
            return 0.0, None, ctx.prompt_id  # each run starts from zero
        if ctx.listing:
            runs = command_runs(ledger, b.name or "")
            return (float(runs[-1][1 + i]) if runs else 0.0), None, None
        t = turn_used(ledger, ctx.session_id, ctx.prompt_id)
        if t is None or t[0] != b.name:
            return 0.0, None, ctx.prompt_id
        return (t[1] if i == TOKENS else t[2]), None, ctx.prompt_id
    if b.kind in ("total", "project"):
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
