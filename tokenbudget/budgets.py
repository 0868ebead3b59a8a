"""Budget rules: numbers in, decision out. No I/O and no clock: the caller passes `now`.

What a decision says is `messages`' concern; what a budget is (its kind, limit, unit and
scope, as the config holds it), `limits`': every name of it is re-exported here.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .limits import DEFAULT_WARN_AT as DEFAULT_WARN_AT
from .limits import KINDS as KINDS
from .limits import MODES as MODES
from .limits import UNITS as UNITS
from .limits import WINDOW_KINDS as WINDOW_KINDS
from .limits import Budget as Budget
from .limits import applies_to as applies_to
from .limits import limit_arg as limit_arg
from .limits import merge as merge
from .limits import normalize_command as normalize_command
from .limits import normalize_project as normalize_project
from .limits import parse_limit as parse_limit
from .limits import parse_warn_at as parse_warn_at
from .limits import project_matches as project_matches
from .limits import slash_command as slash_command
from .numfmt import format_amount as format_amount  # callers still import it here
from .numfmt import format_limit as format_limit
from .record import Frozen

# Importing typing costs a hook call about 5 ms: these names exist for the type checker only
# (mypy reads any name TYPE_CHECKING as true), so other modules import them the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Literal, TypeAlias

    from .limits import Kind as Kind
    from .limits import Mode as Mode
    from .limits import Source as Source
    from .limits import Unit as Unit

    State: TypeAlias = Literal["ok", "warn", "over"]
    Action: TypeAlias = Literal["allow", "warn", "block"]

BLOCK_LENGTH = timedelta(hours=5)


# ---------------------------------------------------------------- limits to offer


def suggest_limit(check: Check) -> float:
    """A round limit to offer when a budget is hit: double it, or enough for this command."""
    return round_limit(max(check.limit * 2, check.used + check.expected), check.budget.unit)


def round_limit(target: float, unit: Unit) -> float:
    """A readable limit at least `target`: two significant figures, rounded up (whole cents)."""
    digits = math.floor(math.log10(target)) - 1  # round up to two significant figures
    step = 10.0**digits
    value = math.ceil(target / step - 1e-9) * step
    if unit == "tokens":
        return float(round(value))
    # Below a dollar two figures may be less than a cent: never round under the target.
    return max(round(value, 2), math.ceil(target * 100 - 1e-9) / 100)


# ---------------------------------------------------------------- time windows


def _aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a time-zone-aware datetime, not {moment!r}")
    return moment


def _local_midnight(day: date, tz: tzinfo) -> datetime:
    # fold=0 is right at both kinds of transition: a midnight skipped by a spring-forward
    # takes the old offset (so it lands on the first real instant of the day), and a
    # midnight repeated by a fall-back is its first occurrence.
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def window(
    kind: str,
    now: datetime,
    tz: tzinfo,
    week_start: int = 0,
    *,
    activity: Iterable[datetime] = (),
) -> tuple[datetime | None, datetime | None]:
    """The [start, end) window of `kind` holding `now`, in UTC; (None, None) when unbounded.

    A 5h window needs the `activity`: all of it, or all since a moment that `starts_anew`.
    """
    # Results are in UTC on purpose: datetimes sharing one ZoneInfo subtract and compare
    # by wall clock, which would make a 23-hour DST day look like 24 hours.
    _aware(now, "now")
    if kind not in KINDS:
        raise ValueError(f"unknown budget kind {kind!r}")
    if not 0 <= week_start <= 6:
        raise ValueError(f"week_start must be 0 (Monday) to 6 (Sunday), not {week_start}")
    today = now.astimezone(tz).date()
    if kind == "daily":
        first, after = today, today + timedelta(days=1)
    elif kind == "weekly":
        first = today - timedelta(days=(today.weekday() - week_start) % 7)
        after = first + timedelta(days=7)
    elif kind == "monthly":
        first = today.replace(day=1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    elif kind == "5h":
        block = current_block(activity, now)
        if block is not None:
            return block.start, block.end
        # No block is running, so activity now would open one at this UTC hour.
        start = _hour_floor(now)
        return start, start + BLOCK_LENGTH
    else:
        return None, None
    return _local_midnight(first, tz), _local_midnight(after, tz)


class Block(Frozen):
    """One 5-hour block: [start, end), with its first and last activity."""

    _fields = ("start", "end", "first", "last")
    __slots__ = _fields
    start: datetime
    end: datetime
    first: datetime
    last: datetime

    def __init__(self, start: datetime, end: datetime, first: datetime, last: datetime) -> None:
        self._set(start=start, end=end, first=first, last=last)


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def blocks(timestamps: Iterable[datetime]) -> list[Block]:
    """Group activity into 5-hour blocks the way ccusage does (blocks start on a UTC hour)."""
    found: list[list[datetime]] = []  # start, end, first, last
    for moment in sorted(_aware(t, "timestamp").astimezone(UTC) for t in timestamps):
        # A gap of more than 5h since the last activity always lands past the block's end,
        # so the end is the only test needed. The end itself is already outside (half-open).
        if found and moment < found[-1][1]:
            found[-1][3] = moment
        else:
            start = _hour_floor(moment)
            found.append([start, start + BLOCK_LENGTH, moment, moment])
    return [Block(*block) for block in found]


def starts_anew(moment: datetime, previous: datetime) -> bool:
    """Does activity at `moment` open a new block whatever came before, if the activity just
    before it was at `previous` (or at any time up to `previous`)?

    Then the blocks from `moment` on depend on nothing earlier: `blocks` and `current_block`
    give the same blocks from there given only the activity since `moment`.
    """
    # The block holding `previous` began on its UTC hour or earlier: it ends 5 hours after
    # that hour at the latest.
    return moment >= _hour_floor(previous) + BLOCK_LENGTH


def anew_from(previous: int) -> int:
    """`starts_anew` in whole seconds: the first moment (epoch seconds) that starts a new block
    whatever came before, if the activity just before it was at the whole second `previous`."""
    return previous - previous % 3600 + int(BLOCK_LENGTH.total_seconds())


def current_block(timestamps: Iterable[datetime], now: datetime) -> Block | None:
    """The block holding `now`, or None when idle (past the last block's end)."""
    now = _aware(now, "now").astimezone(UTC)
    for block in reversed(blocks(timestamps)):
        if block.start <= now < block.end:
            return block
        if block.end <= now:
            return None
    return None


# ---------------------------------------------------------------- checks and decisions


def expected_cost(runs: Sequence[float], *, recent: int = 20, percentile: float = 0.9) -> float:
    """The nearest-rank percentile of the `recent` latest runs (oldest first); 0 with none."""
    if recent < 1 or not 0 < percentile <= 1:
        raise ValueError("recent must be at least 1 and percentile in (0, 1]")
    latest = sorted(runs[-recent:])
    if not latest:
        return 0.0
    # Rounding first keeps float noise (0.7 * 10 = 7.000000000000001) from skipping a rank.
    rank = max(1, math.ceil(round(percentile * len(latest), 9)))
    return float(latest[rank - 1])


class Check(Frozen):
    """One budget measured at one moment."""

    _fields = ("budget", "used", "expected", "limit", "fraction", "resets_at", "state",
               "would_exceed", "blocks", "now", "window")
    __slots__ = _fields
    budget: Budget
    used: float
    expected: float
    limit: float
    fraction: float  # used / limit
    resets_at: datetime | None
    state: State  # over: used reached the limit; warn: past warn_at or would exceed
    would_exceed: bool  # used + expected > limit
    blocks: bool  # block mode, and over or would exceed
    now: datetime  # messages show clock times in this datetime's zone unless given another
    window: str | None  # which window was measured (its start, a session or run id): warn once

    def __init__(
        self,
        budget: Budget,
        used: float,
        expected: float,
        limit: float,
        fraction: float,
        resets_at: datetime | None,
        state: State,
        would_exceed: bool,
        blocks: bool,
        now: datetime,
        window: str | None = None,
    ) -> None:
        self._set(budget=budget, used=used, expected=expected, limit=limit, fraction=fraction,
                  resets_at=resets_at, state=state, would_exceed=would_exceed, blocks=blocks,
                  now=now, window=window)


def evaluate(
    budget: Budget,
    used: float,
    expected: float,
    now: datetime,
    resets_at: datetime | None,
    window: str | None = None,
) -> Check:
    """Measure `used` (plus the `expected` cost of what comes next) against a budget."""
    if used < 0 or expected < 0:
        raise ValueError(f"used and expected must not be negative ({used}, {expected})")
    fraction = used / budget.limit
    would_exceed = used + expected > budget.limit
    state: State
    if used >= budget.limit:
        state = "over"
    elif would_exceed or fraction >= budget.warn_at:
        state = "warn"
    else:
        state = "ok"
    blocks = budget.mode == "block" and (state == "over" or would_exceed)
    return Check(budget, used, expected, budget.limit, fraction, resets_at, state,
                 would_exceed, blocks, now, window)


class Decision(Frozen):
    """What to do with the next prompt or tool call, and the checks that made it so."""

    _fields = ("action", "checks")
    __slots__ = _fields
    action: Action
    checks: tuple[Check, ...]  # the budgets responsible, the most over first

    def __init__(self, action: Action, checks: tuple[Check, ...] = ()) -> None:
        self._set(action=action, checks=checks)

    @property
    def primary(self) -> Check | None:
        """The budget to name when only one fits in the message."""
        return self.checks[0] if self.checks else None


def _severity(check: Check) -> tuple[bool, float, float]:
    return (check.used >= check.limit, (check.used + check.expected) / check.limit, check.fraction)


def decide(checks: Iterable[Check]) -> Decision:
    """Block if any blocking budget says so, else warn if any is near or over, else allow."""
    checks = list(checks)
    blocking = [c for c in checks if c.blocks]
    if blocking:
        return Decision("block", tuple(sorted(blocking, key=_severity, reverse=True)))
    warning = [c for c in checks if c.state != "ok"]
    if warning:
        return Decision("warn", tuple(sorted(warning, key=_severity, reverse=True)))
    return Decision("allow")


def warn_key(
    budget: Budget, window_start: datetime | str | None, level: State = "warn"
) -> str:
    """The key a caller stores so one warning is shown once per budget, window and level."""
    if isinstance(window_start, datetime):
        where = _aware(window_start, "window_start").astimezone(UTC).isoformat()
    else:
        where = window_start or "all"  # a session or run id, or all time
    # The limit too: after it changes, crossing the threshold again is news again.
    return f"{budget.id}|{budget.unit}|{where}|{level}|{budget.limit:g}"
