"""`budget simulate` and `budget suggest` as text: a replay's windows in, a string out."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any

from tokenbudget import budgets as rules
from tokenbudget import messages
from tokenbudget.numfmt import format_amount, format_cost, format_duration, format_tokens
from tokenbudget.render import escape_controls
from tokenbudget.simulate import SUGGEST_WINDOWS, Result, Turn, Window, summary

# kind -> (one window, several), as sentences name them
NOUNS = {
    "daily": ("day", "days"),
    "weekly": ("week", "weeks"),
    "monthly": ("month", "months"),
    "5h": ("5-hour block", "5-hour blocks"),
    "session": ("session", "sessions"),
    "command": ("run", "runs"),
    "total": ("all-time total", "all-time totals"),
    "project": ("all-time total", "all-time totals"),
}
GRANULARITY = "Usage times are known to the 15-minute bucket, prompt times to the second."
NONE = "–"


def _noun(kind: str, n: int) -> str:
    one, many = NOUNS[kind]
    return one if n == 1 else many


def _label(result: Result, w: Window, tz: tzinfo) -> str:
    kind = result.budget.kind
    start = datetime.fromtimestamp(w.start or 0.0, tz)
    if kind in ("daily", "weekly"):
        return f"{start:%Y-%m-%d}"
    if kind == "monthly":
        return f"{start:%Y-%m}"
    if kind in ("total", "project"):
        return f"since {start:%Y-%m-%d}"
    text = f"{start:%Y-%m-%d %H:%M}"
    if kind == "session":
        return f"{text} {str(w.key)[:8]}"
    if kind == "command" and isinstance(w.key, Turn):
        return f"{text} {w.key.sid[:8]}"
    return text


def _when(w: Window, t: float | None, tz: tzinfo) -> str:
    if t is None:
        return NONE
    local = datetime.fromtimestamp(t, tz)
    start = datetime.fromtimestamp(w.start or 0.0, tz)
    return f"{local:%H:%M}" if local.date() == start.date() else f"{local:%m-%d %H:%M}"


def _saved(w: Window) -> str:
    if not w.saved_tokens and not w.saved_cost:
        return NONE
    return f"{format_tokens(w.saved_tokens)} ({format_cost(w.saved_cost)})"


def _title(result: Result) -> str:
    b = result.budget
    scope = f" for {b.project}" if b.project else ""
    return (
        f"If {escape_controls(messages.label(b))}{scope} had been "
        f"{rules.format_limit(b.limit, b.unit)} ({b.mode}):"
    )


def _rows(result: Result, tz: tzinfo) -> list[list[str]]:
    b = result.budget
    block = b.mode == "block"
    header = ["Window", "Used", "Blocked at", "Refused", "Saved"] if block else [
        "Window", "Used", "Warned at", "Over at"
    ]
    rows = [header]
    for w in result.windows:
        row = [_label(result, w, tz), format_amount(w.used(b.unit), b.unit)]
        if block:
            row += [_when(w, w.blocked_at, tz), str(w.refused), _saved(w)]
        else:
            row += [_when(w, w.warned_at, tz), _when(w, w.over_at, tz)]
        rows.append(row)
    return rows


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(widths[i + 1]) for i, c in enumerate(r[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def summary_line(result: Result, tz: tzinfo) -> str:
    """`would have blocked on 4 of 30 days, first at 15:20 on average; your median day ...`"""
    b = result.budget
    s = summary(result, tz)
    n = s["windows"]
    if b.mode == "block":
        hits, verb, clock, after = s["blocked"], "blocked", "firstBlockedClock", "firstBlockedAfter"
    else:
        hits, verb, clock, after = s["warned"], "warned", "firstWarnedClock", "firstWarnedAfter"
    text = f"would have {verb} on {hits} of {n} {_noun(b.kind, n)}"
    if hits and b.kind == "daily":
        text += f", first at {s[clock]} on average"
    elif hits and b.kind not in ("total", "project"):
        text += f", first after {format_duration(timedelta(seconds=s[after]))} on average"
    if b.mode == "warn" and s["over"]:
        text += f" (over the limit on {s['over']})"
    one = NOUNS[b.kind][0]
    median, p90 = format_amount(s["median"], b.unit), format_amount(s["p90"], b.unit)
    return f"{text}; your median {one} is {median}, p90 {p90}"


def render(result: Result, tz: tzinfo) -> str:
    """The replay as a table of windows, a summary line and what the times are known to."""
    b = result.budget
    if not result.windows:
        return f"{_title(result)}\nNo recorded usage to replay.\n"
    lines = [_title(result), *_table(_rows(result, tz)), ""]
    said = summary_line(result, tz)
    lines.append(said[:1].upper() + said[1:] + ".")
    if b.mode == "block":
        s = summary(result, tz)
        refused = s["refused"]
        prompts = "prompt" if refused == 1 else "prompts"
        lines.append(
            f"It would have refused {refused} {prompts} and saved "
            f"{format_tokens(s['savedTokens'])} tokens ({format_cost(s['savedCost'])})."
        )
    lines.append(GRANULARITY)
    return "\n".join(lines) + "\n"


def render_suggestions(found: list[tuple[Result, Result | None]], tz: tzinfo) -> str:
    """Each kind's suggested limit and what it would have done; `found` pairs each kind's
    usage (replayed with no limit to speak of) with the replay at the suggested limit."""
    lines = []
    for usage, replay in found:
        b = usage.budget
        what = escape_controls(b.name) if b.kind == "command" and b.name else b.kind
        if replay is None:
            lines.append(f"{what}: no recorded usage")
            continue
        limit = rules.limit_arg(replay.budget.limit, b.unit)
        windows = len(usage.windows[-SUGGEST_WINDOWS:])
        lines.append(
            f"{what} {rules.format_amount(replay.budget.limit, b.unit)}: the p90 of your last "
            f"{windows} {_noun(b.kind, windows)}; {summary_line(replay, tz)}"
        )
        command = f"tokenbudget budget set {b.kind}"
        if b.kind == "command" and b.name:
            command += f" {b.name}"
        lines.append(f"  {escape_controls(command)} {limit}")
    return "\n".join(lines) + "\n"


def suggestions_json(found: list[tuple[Result, Result | None]], tz: tzinfo) -> list[Any]:
    """Suggestions as data: each budget, its windows' summary at that limit."""
    out: list[Any] = []
    for usage, replay in found:
        if replay is None:
            out.append({"budget": usage.budget.to_json() | {"limit": None}, "summary": None})
        else:
            out.append({"budget": replay.budget.to_json(), "summary": summary(replay, tz)})
    return out
