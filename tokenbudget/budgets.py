"""Budget rules: numbers in, decision out. No I/O and no clock: the caller passes `now`.

What a decision says is `messages`' concern.
"""

from __future__ import annotations

import json
import math
import os.path
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .errors import ConfigError
from .numfmt import exact_tokens
from .numfmt import format_amount as format_amount  # callers still import it here
from .numfmt import format_limit as format_limit
from .record import Frozen

# Importing typing costs a hook call about 5 ms: these names exist for the type checker only
# (mypy reads any name TYPE_CHECKING as true), so other modules import them the same way.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Literal, TypeAlias

    Kind: TypeAlias = Literal[
        "total", "daily", "weekly", "monthly", "5h", "session", "command", "project"
    ]
    Unit: TypeAlias = Literal["tokens", "usd"]
    Mode: TypeAlias = Literal["block", "warn"]
    Source: TypeAlias = Literal["user", "project"]
    State: TypeAlias = Literal["ok", "warn", "over"]
    Action: TypeAlias = Literal["allow", "warn", "block"]

KINDS: tuple[Kind, ...] = (
    "total", "daily", "weekly", "monthly", "5h", "session", "command", "project"
)
# The kinds that measure time windows; only these may be limited to one project.
WINDOW_KINDS: frozenset[str] = frozenset({"total", "daily", "weekly", "monthly", "5h"})
UNITS: tuple[Unit, ...] = ("tokens", "usd")
MODES: tuple[Mode, ...] = ("block", "warn")
DEFAULT_WARN_AT = 0.8
BLOCK_LENGTH = timedelta(hours=5)

_JSON_KEYS = frozenset({"kind", "name", "project", "limit", "unit", "mode", "warn_at"})


def _q(value: object) -> str:
    """Quote a user's value for a one-line message (JSON escaping keeps newlines out)."""
    return json.dumps(value, ensure_ascii=False, default=str)


class _FieldError(ConfigError):
    """A problem with one field of a budget, so callers can say where it is."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# ---------------------------------------------------------------- limits and thresholds

_NUMBER = re.compile(
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+(?:_\d+)*)?(?:\.(?P<frac>\d+))?\s*(?P<suffix>[kmbt])?"
)
_SCALE = {"": 0, "k": 3, "m": 6, "b": 9, "t": 12}
_MARKERS: tuple[tuple[str, Unit], ...] = (
    ("usd", "usd"), ("dollars", "usd"), ("dollar", "usd"), ("$", "usd"),
    ("tokens", "tokens"), ("token", "tokens"),
)


def parse_limit(text: str | int | float, default_unit: Unit = "tokens") -> tuple[float, Unit]:
    """Read `200k`, `1.5M`, `2_000`, `$5`, `5 usd` as (amount, 'tokens' | 'usd')."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(f"cannot read {_q(text)} as tokens or dollars")
    if not isinstance(text, str):
        return _checked_limit(float(text), default_unit, text)
    raw = text
    s = text.strip().lower()
    unit = default_unit  # for a bare number; a marker below overrides it
    if s.startswith("$"):
        unit, s = "usd", s[1:].strip()
        s = s.removesuffix("usd").strip()
    else:
        for marker, marked in _MARKERS:
            if s.endswith(marker):
                unit, s = marked, s.removesuffix(marker).strip()
                break
    match = _NUMBER.fullmatch(s)
    if not s or match is None or not (match["int"] or match["frac"]):
        raise ConfigError(
            f"cannot read {_q(raw)} as tokens or dollars (write it like 200k, 1.5M, $5 or 5usd)"
        )
    digits = (match["int"] or "0").replace(",", "").replace("_", "")
    frac = match["frac"] or ""
    # Shift the decimal point in the string, not in floats: 1.1k must be exactly 1100 tokens.
    exponent = _SCALE[match["suffix"] or ""] - len(frac)
    mantissa = int(digits + frac)
    if unit == "tokens":
        if exponent < 0 and mantissa % 10**-exponent:
            raise ConfigError(f"{_q(raw)} is not a whole number of tokens")
        count = mantissa * 10**exponent if exponent >= 0 else mantissa // 10**-exponent
        return _checked_limit(float(count), unit, raw)
    return _checked_limit(float(f"{mantissa}e{exponent}"), unit, raw)


def _checked_limit(value: float, unit: Unit, raw: object) -> tuple[float, Unit]:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"a limit must be more than 0, not {_q(raw)}")
    if unit == "tokens" and value != int(value):
        raise ConfigError(f"{_q(raw)} is not a whole number of tokens")
    return value, unit


def parse_warn_at(text: str | int | float) -> float:
    """Read a warning threshold: `80`, `80%` and `0.8` all mean 80% of the limit."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ConfigError(f"cannot read {_q(text)} as a percentage")
    s = str(text).strip()
    percent = s.endswith("%")
    try:
        value = float(s.removesuffix("%").strip())
    except ValueError:
        raise ConfigError(f"cannot read {_q(text)} as a percentage (write it like 80%)") from None
    # Numbers above 1 can only be percentages; 1 and below are fractions (so "1" means 100%).
    if percent or value > 1:
        value /= 100
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"warn_at must be above 0% and at most 100%, not {_q(text)}")
    return value


def limit_arg(value: float, unit: Unit) -> str:
    """A limit as a shell-safe argument `parse_limit` reads back: `400k`, `10usd`."""
    if unit == "usd":
        return f"{value:.6f}".rstrip("0").rstrip(".") + "usd"  # not "$10": a shell would expand $1
    return exact_tokens(int(value)).replace(",", "_")


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


# ---------------------------------------------------------------- budgets


# A slash command's name: letters, digits, `_`, `-`, `.`, and `:` for a plugin's namespace.
# `/etc/passwd what is this` is a prompt that starts with a path, not a command.
_SLASH = re.compile(r"/[A-Za-z0-9_][A-Za-z0-9_.:-]*")


def slash_command(text: str) -> str | None:
    """`/test` for a prompt typed as `/test --fast`; None if it is not a slash command."""
    words = text.split(maxsplit=1)
    return words[0] if words and _SLASH.fullmatch(words[0]) else None


def normalize_command(name: str) -> str:
    """`test` and `/test` both name the slash command `/test`."""
    name = name.strip()
    return name if name.startswith("/") else f"/{name}"


def normalize_project(path: str) -> str:
    """One spelling per folder (no trailing slash, no `..`), so paths compare as strings."""
    return os.path.normpath(path.strip())


def project_matches(project: str, path: str) -> bool:
    """True if `path` is the folder `project` or inside it."""
    project, path = normalize_project(project), normalize_project(path)
    if path == project:
        return True
    return path.startswith(project if project.endswith(os.sep) else project + os.sep)


class Budget(Frozen):
    """One limit: what it counts (kind, name, project), how much, and what happens at it."""

    _fields = ("kind", "limit", "unit", "name", "mode", "warn_at", "project", "source")
    __slots__ = _fields
    kind: Kind
    limit: float
    unit: Unit
    name: str | None  # the slash command for `command`, the folder for `project`
    mode: Mode
    warn_at: float
    project: str | None  # limits a window kind to one folder
    source: Source

    def __init__(
        self,
        kind: Kind,
        limit: float,
        unit: Unit = "tokens",
        *,
        name: str | None = None,
        mode: Mode = "block",
        warn_at: float = DEFAULT_WARN_AT,
        project: str | None = None,
        source: Source = "user",
    ) -> None:
        kind = _checked_kind(kind)
        if unit not in UNITS:
            raise _FieldError("unit", f"unknown unit {_q(unit)}; use tokens or usd")
        if isinstance(limit, bool) or not isinstance(limit, int | float):
            raise _FieldError("limit", f"must be a number, not {_q(limit)}")
        try:
            _checked_limit(float(limit), unit, limit)
        except ConfigError as e:
            raise _FieldError("limit", str(e)) from None
        if mode not in MODES:
            raise _FieldError("mode", f"unknown mode {_q(mode)}; use block or warn")
        if isinstance(warn_at, bool) or not isinstance(warn_at, int | float):
            raise _FieldError("warn_at", f"must be a number, not {_q(warn_at)}")
        if not 0 < warn_at <= 1:
            raise _FieldError("warn_at", f"must be above 0 and at most 1, not {warn_at}")
        name = _checked_name(kind, name)
        if project is not None:
            if kind not in WINDOW_KINDS:
                raise _FieldError("project", f"only {', '.join(sorted(WINDOW_KINDS))} budgets "
                                  "can be limited to a project")
            project = _checked_path("project", project)
        if source not in ("user", "project"):
            raise _FieldError("source", f"unknown source {_q(source)}")
        self._set(kind=kind, limit=float(limit), unit=unit, name=name, mode=mode,
                  warn_at=float(warn_at), project=project, source=source)

    @property
    def id(self) -> str:
        """A stable label: `daily`, `command /test`, `project /p`, `daily@/p`."""
        text = self.kind if self.name is None else f"{self.kind} {self.name}"
        return text if self.project is None else f"{text}@{self.project}"

    @property
    def scope(self) -> str | None:
        """The folder the budget is limited to: a project budget's own, a window's `project`."""
        return self.name if self.kind == "project" else self.project

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        """What makes two budgets the same one: kind, name, project scope and unit."""
        return (self.kind, self.name, self.project, self.unit)

    def to_json(self) -> dict[str, object]:
        """The budget as stored in a config file (its source is the file it is in)."""
        data: dict[str, object] = {"kind": self.kind}
        if self.name is not None:
            data["name"] = self.name
        if self.project is not None:
            data["project"] = self.project
        data["limit"] = int(self.limit) if self.unit == "tokens" else self.limit
        data.update(unit=self.unit, mode=self.mode, warn_at=self.warn_at)
        return data

    @classmethod
    def from_json(
        cls, data: object, *, where: str = "budget", source: Source = "user"
    ) -> Budget:
        """Read one budget object; a ConfigError names `where` and the field at fault."""
        if not isinstance(data, Mapping):
            example = '{"kind": "daily", "limit": "200k"}'
            raise ConfigError(f"{where}: must be an object like {example}")
        for key in data:
            if key not in _JSON_KEYS:
                raise ConfigError(f"{where}: unknown key {_q(key)}")
        try:
            if "kind" not in data or "limit" not in data:
                missing = "kind" if "kind" not in data else "limit"
                raise _FieldError(missing, "missing")
            kind = data["kind"]
            if not isinstance(kind, str):
                raise _FieldError("kind", f"must be a string, not {_q(kind)}")
            limit, unit = _limit_from_json(data["limit"], data.get("unit"))
            warn_at = data.get("warn_at", DEFAULT_WARN_AT)
            try:
                warn_at = parse_warn_at(warn_at)
            except ConfigError as e:
                raise _FieldError("warn_at", str(e)) from None
            for key in ("name", "project", "mode"):
                if data.get(key) is not None and not isinstance(data[key], str):
                    raise _FieldError(key, f"must be a string, not {_q(data[key])}")
            # Only known to be strings (or absent) here: the constructor checks them.
            return cls(
                _checked_kind(kind.strip().lower()),
                limit,
                unit,
                name=data.get("name"),
                mode=data.get("mode", "block"),
                warn_at=warn_at,
                project=data.get("project"),
                source=source,
            )
        except _FieldError as e:
            raise ConfigError(f"{where}.{e.field}: {e.problem}") from None


def _checked_kind(value: object) -> Kind:
    for kind in KINDS:
        if value == kind:
            return kind
    raise _FieldError("kind", f"unknown kind {_q(value)}; use one of {', '.join(KINDS)}")


def _checked_name(kind: str, name: str | None) -> str | None:
    if kind == "command":
        if not isinstance(name, str) or not name.strip("/ "):
            raise _FieldError("name", "a command budget needs a slash command, like /test")
        command = normalize_command(name)
        if any(c.isspace() for c in command):
            raise _FieldError("name", f"{_q(name)} is not one slash command, like /test")
        return command
    if kind == "project":
        if not isinstance(name, str) or not name.strip():
            raise _FieldError("name", "a project budget needs the project's folder")
        return _checked_path("name", name)
    if name is not None:
        raise _FieldError("name", f"a {kind} budget takes no name")
    return None


def _limit_from_json(limit: object, unit: object) -> tuple[float, Unit]:
    if unit is not None and unit not in UNITS:
        raise _FieldError("unit", f"unknown unit {_q(unit)}; use tokens or usd")
    if isinstance(limit, bool) or not isinstance(limit, str | int | float):
        raise _FieldError("limit", f"cannot read {_q(limit)} as tokens or dollars")
    final: Unit = unit if unit is not None else "tokens"
    try:
        # A bare number takes the unit field's unit: "5" with unit usd is $5.
        value, read_unit = parse_limit(limit, final)
    except ConfigError as e:
        raise _FieldError("limit", str(e)) from None
    if unit is not None and read_unit != unit:
        raise _FieldError("unit", f"{_q(unit)} disagrees with limit {_q(limit)}")
    return value, read_unit


def _checked_path(field: str, path: str) -> str:
    if not os.path.isabs(path.strip()):
        raise _FieldError(field, f"must be an absolute folder path, not {_q(path)}")
    return normalize_project(path)


def applies_to(budget: Budget, project_dir: str | None) -> bool:
    """Can work in `project_dir` (None: outside any project) count toward this budget?

    The one project-scope rule: measuring, deciding, the burn rate and the config all ask it.
    """
    scope = budget.scope
    if scope is None:
        return True
    return project_dir is not None and project_matches(scope, project_dir)


def merge(user: Iterable[Budget], project: Iterable[Budget]) -> list[Budget]:
    """Both lists apply; where both set the same budget, the stricter setting of each wins."""
    merged: dict[tuple[str, str | None, str | None, str], Budget] = {}
    for budget in [*user, *project]:
        old = merged.get(budget.key)
        merged[budget.key] = budget if old is None else _stricter(old, budget)
    return list(merged.values())


def _stricter(a: Budget, b: Budget) -> Budget:
    # The lower limit's source is named in messages; on a tie the project's, since the team
    # file binds either way and is the one a user cannot simply raise.
    if a.limit != b.limit:
        source = a.source if a.limit < b.limit else b.source
    else:
        source = "project" if "project" in (a.source, b.source) else a.source
    return a.replace(
        limit=min(a.limit, b.limit),
        mode="block" if "block" in (a.mode, b.mode) else "warn",
        warn_at=min(a.warn_at, b.warn_at),
        source=source,
    )


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
