"""Replaying recorded usage through a budget: what it would have refused and stopped.

Pure: the ledger and the folded history in, windows out, no clock and no I/O. Every decision
is `budgets.evaluate` and `budgets.decide`, as the hooks make them: a prompt is refused when
the budget is used up or its command's expected cost (the 90th percentile of its recent runs,
`budgets.expected_cost`) would take it past the limit; a turn is stopped at the request that
uses the budget up, and every later request of a running turn in that window is not spent.

What the records hold sets the granularity. A turn's prompt time is known to the second; usage
is known to its 15-minute bucket (request by request while the ledger still holds the request
records, within about an hour of a session's last activity; per session, command and bucket
once compacted or folded into history). Usage is replayed as if made at its bucket's start (or
its turn's start, if later), so a prompt sees all usage of its bucket so far, and a stop is
known to its bucket: usage after it in the same bucket of the same turn, unknown once folded,
is counted as spent, not saved. `tokenbudget allow` is not replayed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from tokenbudget import budgets as rules
from tokenbudget.engine import OWN_COMMANDS
from tokenbudget.ingest import NO_TURN
from tokenbudget.ledger import BUCKET, Ledger
from tokenbudget.store import held

PROMPT, USAGE = 0, 1  # a prompt sorts before usage placed at the same moment (its own)
SUGGEST_WINDOWS = 30  # suggestions are the 90th percentile of this many latest windows


class Turn:
    """One prompt and what it led to; a session's usage in no turn is a turn without prompt."""

    __slots__ = ("command", "made", "project", "prompted", "refused", "run", "sid", "start",
                 "stopped")

    def __init__(
        self, sid: str, project: str, start: float, command: str, prompted: bool,
        made: bool = True,
    ):
        self.sid = sid
        self.project = project
        self.start = start
        self.command = command
        self.prompted = prompted
        self.made = made  # False: a prompt refused when it was typed, which left no turn
        self.refused = False
        self.stopped = False
        self.run = [0.0, 0.0]  # tokens and dollars spent so far in the replay


class Step:
    """Usage of one turn placed at one moment: a request, or a bucket's worth of them."""

    __slots__ = ("cost", "seq", "time", "tokens", "turn")

    def __init__(self, time: float, seq: int, turn: Turn, tokens: int, cost: float):
        self.time = time
        self.seq = seq
        self.turn = turn
        self.tokens = tokens
        self.cost = cost


class History:
    """Every turn and every step of usage, in the order the replay takes them."""

    __slots__ = ("events", "turns")

    def __init__(self, turns: list[Turn], steps: list[Step]):
        self.turns = sorted(turns, key=lambda t: t.start)
        events: list[tuple[float, int, int, Turn | Step]] = [
            (t.start, PROMPT, i, t) for i, t in enumerate(self.turns) if t.prompted
        ]
        events.extend((s.time, USAGE, s.seq, s) for s in steps)
        events.sort(key=lambda e: (e[0], e[1], e[2]))
        self.events = events


class _Session:
    """Builds one session's turns and places its usage on them."""

    def __init__(self, sid: str, project: str, first: float, out: list[Turn]):
        self.sid, self.project, self.first, self.out = sid, project, first, out
        self.by_command: dict[str, list[Turn]] = {}
        self.starts: dict[str, list[float]] = {}
        self.loose: Turn | None = None
        # Folded turns: what of each one's recorded total is not placed yet, and per command the
        # first run that still has some (buckets come in time order, so it only moves on).
        self.left: dict[int, list[float]] = {}
        self.first_left: dict[str, int] = {}

    def turn(self, command: str, start: float, total: tuple[float, float] | None = None) -> Turn:
        t = Turn(self.sid, self.project, start or self.first, command, bool(start))
        self.out.append(t)
        self.by_command.setdefault(command, []).append(t)
        self.starts.pop(command, None)
        if total is not None:
            self.left[id(t)] = [float(total[0]), float(total[1])]
        return t

    def shares(
        self, bucket: int, command: str, tokens: float, cost: float
    ) -> list[tuple[Turn, float, float]]:
        """A folded bucket's usage of `command` over the runs begun by the bucket's end: the
        earliest first, each up to what its recorded total leaves; the rest to the latest.

        A turn stopped in this bucket and the next prompt in it then keep their own usage: the
        bucket's all going to the later prompt would move the stop after that prompt.
        """
        latest = self.owner(bucket, command)
        runs = self.by_command.get(command, [])
        out: list[tuple[Turn, float, float]] = []
        left_tokens = tokens
        i = self.first_left.get(command, 0)
        while i < len(runs) and runs[i].start < (bucket + 1) * BUCKET and left_tokens > 0:
            left = self.left.get(id(runs[i]))
            if not left or left[0] <= 0:
                i += 1
                self.first_left[command] = i
                continue
            take = min(left_tokens, left[0])
            share = cost * take / tokens if tokens else 0.0
            left[0] -= take
            left[1] -= share
            left_tokens -= take
            out.append((runs[i], take, share))
        if left_tokens > 0 or not out:
            out.append((latest, left_tokens, cost * left_tokens / tokens if tokens else cost))
        return out

    def owner(self, bucket: int, command: str) -> Turn:
        """The turn a bucket's usage of `command` belongs to: its latest run begun by then."""
        runs = self.by_command.get(command)
        if runs:
            starts = self.starts.get(command)
            if starts is None:
                runs.sort(key=lambda t: t.start)
                starts = self.starts[command] = [t.start for t in runs]
            i = bisect.bisect_left(starts, (bucket + 1) * BUCKET) - 1
            if i >= 0:
                return runs[i]
        if self.loose is None:
            self.loose = Turn(self.sid, self.project, self.first, "prompt", False)
            self.out.append(self.loose)
        return self.loose


def history_of(
    ledger: Ledger, records: dict[str, dict[str, Any]], refusals: Iterable[dict[str, Any]] = ()
) -> History:
    """The recorded turns and usage: live sessions from the ledger, folded ones from history.

    `records` as `history.read_records(ledger)` gives them (a period still live is the
    ledger's); `refusals` as `stops.read()` does: a prompt refused at the time is in no
    transcript, only there.
    """
    turns: list[Turn] = []
    steps: list[Step] = []

    def place(turn: Turn, bucket: int, tokens: int, cost: float | None) -> None:
        steps.append(Step(max(bucket * BUCKET, turn.start), len(steps), turn, tokens, cost or 0.0))

    projects: dict[str, str] = {}
    for rs in held(ledger, records).recorded_sessions():
        projects.setdefault(rs.sid, rs.project)
        b = _Session(rs.sid, rs.project, rs.first, turns)
        if not rs.live:
            for _, command, start, tokens, cost in rs.turns:
                b.turn(command, start, (tokens, cost))
            for bucket, command, tokens, cost in rs.cells:
                for turn, share, share_cost in b.shares(bucket, command, tokens, cost):
                    place(turn, bucket, round(share), share_cost)
            continue
        by_id = {pid: b.turn(command, start) for pid, command, start, _, _ in rs.turns}

        def of(pid: str, bucket: int, b: _Session = b, by_id: dict[str | None, Turn] = by_id
               ) -> Turn:
            return by_id.get(pid) or b.owner(bucket, NO_TURN)

        for pid, bucket, tokens, cost in rs.requests:
            place(of(pid, bucket), bucket, tokens, cost)
        for bucket, command, tokens, cost in rs.cells:
            place(b.owner(bucket, command), bucket, tokens, cost)
    for block in refusals:
        sid, at = block.get("session"), block.get("at")
        if block.get("what") == "refused" and isinstance(sid, str) and isinstance(at, int | float):
            command = "prompt"
            if block.get("kind") == "command":
                command = str(block.get("budget", "")).partition(" ")[2] or command
            turns.append(Turn(sid, projects.get(sid, ""), float(at), command, True, made=False))
    return History(turns, steps)


# ---------------------------------------------------------------- windows


def _order(key: object) -> tuple[str, float, str]:
    """How windows that start together are ordered: by session, then by run (a command's
    windows are keyed by their turn, whose default text is its memory address)."""
    if isinstance(key, Turn):
        return (key.sid, key.start, key.command)
    return (str(key), 0.0, "")


class Window:
    """One window of a budget (a day, a block, a session, a run) and what the replay saw in it."""

    __slots__ = ("blocked_at", "end", "key", "over_at", "refused", "saved_cost", "saved_tokens",
                 "spent", "start", "used_cost", "used_tokens", "used_up", "warned_at")

    def __init__(self, key: object, start: float | None, end: float | None):
        self.key = key
        self.start = start
        self.end = end
        self.used_tokens = 0
        self.used_cost = 0.0
        self.spent = 0.0  # in the budget's unit: what the replay let through
        self.saved_tokens = 0
        self.saved_cost = 0.0
        self.refused = 0
        self.blocked_at: float | None = None  # the first refusal or stop
        self.warned_at: float | None = None  # the first warning (warn mode, or at warn_at)
        self.over_at: float | None = None  # when the spent usage reached the limit
        self.used_up = False  # a blocking budget used up: it stays so for the window

    def used(self, unit: str) -> float:
        """What was recorded in the window, in `unit`."""
        return self.used_cost if unit == "usd" else float(self.used_tokens)


def _calendar(kind: str, tz: tzinfo, week_start: int) -> Callable[[float, Turn], Window]:
    current: list[Window] = []
    seen: dict[float, Window] = {}

    def of(t: float, _turn: Turn) -> Window:
        if current and (current[0].start or 0.0) <= t < (current[0].end or 0.0):
            return current[0]
        start, end = rules.window(kind, datetime.fromtimestamp(t, UTC), tz, week_start)
        assert start is not None and end is not None  # a calendar window has both ends
        w = seen.get(start.timestamp())
        if w is None:
            w = seen[start.timestamp()] = Window(start, start.timestamp(), end.timestamp())
        current[:] = [w]
        return w

    return of


def _blocks(times: Iterable[float]) -> Callable[[float, Turn], Window]:
    found = rules.blocks(datetime.fromtimestamp(t, UTC) for t in sorted(set(times)))
    windows = [Window(b.start, b.start.timestamp(), b.end.timestamp()) for b in found]
    starts = [w.start or 0.0 for w in windows]
    idle: dict[float, Window] = {}

    def of(t: float, _turn: Turn) -> Window:
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and t < (windows[i].end or 0.0):
            return windows[i]
        if i + 1 < len(windows) and starts[i + 1] - t < BUCKET:
            return windows[i + 1]  # a prompt just before the request that opens a block
        # A prompt in no block that made no usage (it was refused): the block it would open.
        hour = t - t % 3600
        if hour not in idle:
            start = datetime.fromtimestamp(hour, UTC)
            idle[hour] = Window(start, hour, hour + rules.BLOCK_LENGTH.total_seconds())
        return idle[hour]

    return of


def _keyed(key: Callable[[Turn], object]) -> Callable[[float, Turn], Window]:
    seen: dict[object, Window] = {}

    def of(t: float, turn: Turn) -> Window:
        k = key(turn)
        w = seen.get(k)
        if w is None:
            w = seen[k] = Window(k, t, t)
        w.end = max(w.end or t, t)
        return w

    return of


def _in_scope(budget: rules.Budget) -> Callable[[Turn], bool]:
    if budget.kind == "command":
        return lambda turn: turn.command == budget.name
    if budget.kind == "session":
        return lambda turn: True
    return lambda turn: rules.applies_to(budget, turn.project or None)


# ---------------------------------------------------------------- the replay


def _quiet_up_to(budget: rules.Budget) -> float:
    """The most a window may use and the rules still have nothing to say (no warning, no
    block), found by asking `budgets.evaluate` itself: its answer only grows with use."""
    epoch = datetime.fromtimestamp(0, UTC)
    lo, hi = 0.0, budget.limit
    for _ in range(200):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if rules.evaluate(budget, mid, 0.0, epoch, None).state == "ok":
            lo = mid
        else:
            hi = mid
    return lo


class Result:
    """The replay of one budget: its windows, oldest first."""

    __slots__ = ("budget", "windows")

    def __init__(self, budget: rules.Budget, windows: list[Window]):
        self.budget = budget
        self.windows = windows


def simulate(
    budget: rules.Budget,
    history: History,
    tz: tzinfo,
    week_start: int = 0,
    *,
    since: float | None = None,
    until: float | None = None,
    measure_only: bool = False,
) -> Result:
    """Replay every prompt and every step of usage through `budget`, oldest first.

    Windows starting before `since` or at or after `until` (timestamps) are replayed, so that
    expectations and blocks come out as they would have, but not returned (an all-time
    budget's one window always is). `measure_only`
    only sums each window's usage: nothing is decided.
    """
    kind, unit = budget.kind, budget.unit
    scope = _in_scope(budget)
    window_of: Callable[[float, Turn], Window]
    if kind in ("daily", "weekly", "monthly"):
        window_of = _calendar(kind, tz, week_start)
    elif kind == "5h":
        window_of = _blocks(
            e[0] for e in history.events if e[1] == USAGE and scope(e[3].turn)  # type: ignore[union-attr]
        )
    elif kind == "session":
        window_of = _keyed(lambda turn: turn.sid)
    elif kind == "command":
        window_of = _keyed(lambda turn: turn)
    else:
        window_of = _keyed(lambda turn: "all")
    usd = unit == "usd"
    runs: dict[str, list[list[float]]] = {}  # each command's runs let through, oldest first
    windows: dict[int, Window] = {}
    quiet = _quiet_up_to(budget)  # below this, a request changes nothing: not asked each time

    def check(w: Window, t: float, expected: float) -> tuple[rules.Decision, rules.Check]:
        now = datetime.fromtimestamp(t, tz)
        resets = (
            datetime.fromtimestamp(w.end, UTC)
            if kind in ("daily", "weekly", "monthly", "5h") and w.end is not None
            else None
        )
        measured = rules.evaluate(budget, w.spent, expected, now, resets)
        return rules.decide([measured]), measured

    for t, what, _, item in history.events:
        if what == PROMPT:
            turn = item
            assert isinstance(turn, Turn)
            if scope(turn) and turn.command not in OWN_COMMANDS:
                # Measuring opens the same windows as replaying (a prompt that used nothing has
                # one too): a suggestion's "last N windows" are the windows it then replays.
                w = window_of(t, turn)
                windows.setdefault(id(w), w)
                if measure_only:
                    continue
                expected = 0.0
                if turn.command.startswith("/"):
                    past = runs.get(turn.command, [])
                    expected = rules.expected_cost([r[1 if usd else 0] for r in past])
                # With nothing expected and little used, the rules have nothing to say.
                decision = check(w, t, expected)[0] if expected or w.spent > quiet else None
                if decision is not None and decision.action == "block":
                    turn.refused = True
                    w.refused += 1
                    if w.blocked_at is None:
                        w.blocked_at = t
                    continue
                if decision is not None and decision.action == "warn" and w.warned_at is None:
                    w.warned_at = t
            if turn.made:
                runs.setdefault(turn.command, []).append(turn.run)
            continue
        step = item
        assert isinstance(step, Step)
        turn = step.turn
        if scope(turn):
            w = window_of(t, turn)
            windows.setdefault(id(w), w)
            w.used_tokens += step.tokens
            w.used_cost += step.cost
            if w.used_up and not turn.refused:
                turn.stopped = True  # used up before this request: the hooks stopped it
            if turn.refused or turn.stopped:
                w.saved_tokens += step.tokens
                w.saved_cost += step.cost
                continue
            w.spent += step.cost if usd else step.tokens
            # Spending only grows within a window: once used up, or warned and over, the
            # answer cannot change.
            settled = w.warned_at is not None and w.over_at is not None
            if not (measure_only or settled) and w.spent > quiet:
                decision, measured = check(w, t, 0.0)
                if measured.state == "over" and w.over_at is None:
                    w.over_at = t
                if decision.action == "block":
                    w.used_up = True
                    turn.stopped = True  # this request used it up: the next hook stops the turn
                    if w.blocked_at is None:
                        w.blocked_at = t
                elif decision.action == "warn" and w.warned_at is None:
                    w.warned_at = t
        elif turn.refused or turn.stopped:
            continue
        turn.run[0] += step.tokens
        turn.run[1] += step.cost
    everything = kind in ("total", "project")  # one window: the dates do not cut it
    kept = [
        w for w in windows.values()
        if w.start is not None
        and (everything or since is None or w.start >= since)
        and (everything or until is None or w.start < until)
    ]
    kept.sort(key=lambda w: (w.start or 0.0, _order(w.key)))
    return Result(budget, kept)


def fresh(history: History) -> History:
    """The same history with no replay's marks on it, for the next budget."""
    for turn in history.turns:
        turn.refused = turn.stopped = False
        turn.run = [0.0, 0.0]
    return history


# ---------------------------------------------------------------- summaries and suggestions


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the rule command expectations use); 0 with none."""
    return rules.expected_cost(values, recent=max(1, len(values)), percentile=fraction)


def summary(result: Result, tz: tzinfo) -> dict[str, Any]:
    """How often and when the budget bit, and the usual window's size."""
    b = result.budget
    ws = result.windows
    used = [w.used(b.unit) for w in ws]
    blocked = [w for w in ws if w.blocked_at is not None]
    warned = [w for w in ws if w.warned_at is not None]
    over = [w for w in ws if w.over_at is not None]
    return {
        "windows": len(ws),
        "blocked": len(blocked),
        "warned": len(warned),
        "over": len(over),
        "refused": sum(w.refused for w in ws),
        "savedTokens": sum(w.saved_tokens for w in ws),
        "savedCost": round(sum(w.saved_cost for w in ws), 6),
        "median": _number(percentile(used, 0.5), b.unit),
        "p90": _number(percentile(used, 0.9), b.unit),
        "firstBlockedAfter": _mean_offset(blocked, "blocked_at"),
        "firstWarnedAfter": _mean_offset(warned, "warned_at"),
        "firstBlockedClock": _mean_clock(blocked, "blocked_at", tz),
        "firstWarnedClock": _mean_clock(warned, "warned_at", tz),
    }


def _mean_offset(ws: list[Window], field: str) -> float | None:
    """Mean seconds from a window's start to its first block (or warning)."""
    gaps = [getattr(w, field) - (w.start or 0.0) for w in ws]
    return sum(gaps) / len(gaps) if gaps else None


def _mean_clock(ws: list[Window], field: str, tz: tzinfo) -> str | None:
    """Mean local clock time (HH:MM) of the first block (or warning), for day windows."""
    if not ws:
        return None
    minutes = []
    for w in ws:
        local = datetime.fromtimestamp(getattr(w, field), tz)
        minutes.append(local.hour * 60 + local.minute + local.second / 60)
    mean = int(sum(minutes) / len(minutes))
    return f"{mean // 60:02d}:{mean % 60:02d}"


def suggested_limit(result: Result, windows: int = SUGGEST_WINDOWS) -> float | None:
    """The 90th percentile of the latest `windows` windows' usage, rounded up to be readable."""
    unit = result.budget.unit
    value = percentile([w.used(unit) for w in result.windows[-windows:]], 0.9)
    if value <= 0:
        return None
    # Reaching a limit is using it up: the p90 window itself must stay under it.
    return rules.round_limit(value + (0.01 if unit == "usd" else 1), unit)


def _number(value: float, unit: str) -> float | int:
    return int(value) if unit == "tokens" else round(value, 6)


def to_json(result: Result, tz: tzinfo) -> dict[str, Any]:
    """The replay as data: the budget, every window and the summary."""
    b = result.budget

    def iso(t: float | None) -> str | None:
        return None if t is None else datetime.fromtimestamp(t, tz).isoformat()

    windows = []
    for w in result.windows:
        row: dict[str, Any] = {
            "start": iso(w.start),
            "end": iso(w.end),
            "used": _number(w.used(b.unit), b.unit),
            "limit": _number(b.limit, b.unit),
            "blockedAt": iso(w.blocked_at),
            "refused": w.refused,
            "savedTokens": w.saved_tokens,
            "savedCost": round(w.saved_cost, 6),
            "warnedAt": iso(w.warned_at),
            "overAt": iso(w.over_at),
        }
        if b.kind == "session":
            row["sessionId"] = w.key
        elif b.kind == "command" and isinstance(w.key, Turn):
            row["sessionId"] = w.key.sid
        windows.append(row)
    return {"budget": b.to_json(), "windows": windows, "summary": summary(result, tz)}


NO_LIMIT = 1e18  # a limit no window reaches: the replay then only measures


def suggest(
    budget: rules.Budget, history: History, tz: tzinfo, week_start: int = 0
) -> tuple[Result, Result | None]:
    """The budget's windows as recorded, and the replay at its suggested limit (None when no
    usage was recorded): the p90 of the last `SUGGEST_WINDOWS` windows, and what it would have
    done in those windows (the whole history is replayed, for the commands' expectations)."""
    measured = simulate(budget.replace(limit=NO_LIMIT), fresh(history), tz, week_start,
                        measure_only=True)
    limit = suggested_limit(measured)
    if limit is None:
        return measured, None
    replayed = simulate(budget.replace(limit=limit), fresh(history), tz, week_start)
    return measured, Result(replayed.budget, replayed.windows[-SUGGEST_WINDOWS:])


def commands_of(history: History) -> list[str]:
    """The slash commands run in the history, most runs first."""
    counts: dict[str, int] = {}
    for turn in history.turns:
        if turn.prompted and turn.command.startswith("/") and turn.command not in OWN_COMMANDS:
            counts[turn.command] = counts.get(turn.command, 0) + 1
    return sorted(counts, key=lambda c: (-counts[c], c))
