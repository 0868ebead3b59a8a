"""Every sentence a budget decision says: refusals, stops, warnings, hints and reasons.

Pure: checks and numbers in, text out; every figure goes through `numfmt`. The hook, `status`,
`status --check` and the simulator word a budget the same way because they all ask here, and
tests compare this text exactly. Imports nothing the hook's decision path has not already loaded.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from tokenbudget.budgets import limit_arg, round_limit, suggest_limit
from tokenbudget.burn import runs_out_in
from tokenbudget.numfmt import format_amount, format_duration, format_limit, format_percent

TYPE_CHECKING = False  # mypy reads it as true: these names are for the type checker only
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import tzinfo
    from typing import Any

    from tokenbudget.budgets import Budget, Check

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
ALLOW_COMMAND = "tokenbudget allow"
_KIND_WORDS = {"total": "all-time", "5h": "5-hour"}
RAISE_HINTS = {
    "session": "tokenbudget budget set session {limit}",
    "command": "tokenbudget budget set command {name} {limit}",
    "project": "tokenbudget budget set project {name} {limit}",
}
ALLOW_NOTE = "tokenbudget: letting this prompt through once (tokenbudget allow)."


# ---------------------------------------------------------------- parts


def label(budget: Budget) -> str:
    """How messages name a budget: `the daily budget`, `this project's /test budget`."""
    described = getattr(budget, "described", None)  # a team budget (team/cache.py)
    if described is not None:
        return str(described)
    if budget.kind == "command":
        what = f"{budget.name} budget"
    elif budget.kind == "project":
        what = "all-time budget" if budget.source == "project" else f"budget for {budget.name}"
    else:
        what = f"{_KIND_WORDS.get(budget.kind, budget.kind)} budget"
        if budget.project is not None and budget.source == "user":
            what += f" for {budget.project}"
    return f"this project's {what}" if budget.source == "project" else f"the {what}"


def resets_text(check: Check, tz: tzinfo | None = None) -> str:
    """When the budget frees up: `resets at 00:00 (in 3h 12m)`, `never resets`, ..."""
    if check.resets_at is None:
        if check.budget.kind == "session":
            return "resets when a new session starts"
        if check.budget.kind == "command":
            return f"counts each run of {check.budget.name} on its own"
        return "never resets"
    zone = tz or check.now.tzinfo or UTC
    left = check.resets_at - check.now
    if left <= timedelta(0):
        return "resets now"
    local = check.resets_at.astimezone(zone)
    clock = f"{local:%H:%M}"
    if left > timedelta(hours=24):
        clock = f"on {_DAYS[local.weekday()]} {local.day} {_MONTHS[local.month - 1]} at {clock}"
    else:
        clock = f"at {clock}"
    return f"resets {clock} (in {format_duration(left)})"


def _used_line(check: Check) -> str:
    unit = check.budget.unit
    used, limit = format_amount(check.used, unit), format_limit(check.limit, unit)
    line = f"Used {used} of {limit}"
    if check.expected > 0:
        expected = format_amount(check.expected, unit)
        line += f"; this command is expected to take about {expected} more"
    return line + "."


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def per_hour(amount: float, budget: Budget) -> str:
    """`120k tokens/h` or `$1.20/h` (sub-cent rates keep their digits)."""
    text = format_amount(amount, budget.unit)
    return f"{text}/h" if budget.unit == "usd" else f"{text} tokens/h"


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


def raise_hint(check: Check) -> str:
    """The exact command that raises this budget, keeping how it behaves."""
    b = check.budget
    limit = limit_arg(suggest_limit(check), b.unit)
    if hasattr(b, "raise_command"):  # a team budget (team/cache.py)
        return str(b.raise_command(limit))
    if b.source == "project":
        return f"edit .claude/tokenbudget.json in the project (limit {limit})"
    template = RAISE_HINTS.get(b.kind, "tokenbudget budget set {kind} {limit}")
    hint = template.format(kind=b.kind, name=b.name, limit=limit)
    if b.project and b.kind != "project":
        import shlex

        hint += f" --project {shlex.quote(b.project)}"
    # Raising a limit must not quietly change how the budget behaves.
    if b.mode != "block":
        hint += f" --mode {b.mode}"
    if abs(b.warn_at - 0.8) > 1e-9:
        hint += f" --warn-at {round(b.warn_at * 100, 2):g}%"
    return hint


# ---------------------------------------------------------------- whole messages


def reason_text(
    check: Check, *, raise_hint: str, allow_hint: str, tz: tzinfo | None = None
) -> str:
    """The message for a refusal: which budget, how far, when it resets, how to go on."""
    name = label(check.budget)
    b = check.budget
    if b.kind == "command" and check.used < check.limit < check.expected:
        # No run of it fits: waiting for a reset would not help, only a higher limit.
        usual = format_amount(check.expected, b.unit)
        least = format_amount(round_limit(check.expected, b.unit), b.unit)
        lines = [
            f"tokenbudget: {b.name} usually takes {usual}, more than its "
            f"{format_amount(check.limit, b.unit)} budget: raise it to at least {least}, or "
            f"`{ALLOW_COMMAND}`."
        ]
    else:
        head = f"{name} is used up" if check.used >= check.limit else f"{name} would be exceeded"
        lines = [f"tokenbudget: {head}.", _used_line(check), _capital(resets_text(check, tz)) + "."]
    if raise_hint:
        lines.append(f"To raise it: {raise_hint}")
    if allow_hint:
        lines.append(f"To let one prompt through: {allow_hint}")
    return "\n".join(lines)


def warning_text(check: Check, *, tz: tzinfo | None = None) -> str:
    """A one-line heads-up for a budget past its warning threshold (or over, in warn mode)."""
    unit = check.budget.unit
    amount = f"{format_amount(check.used, unit)} of {format_limit(check.limit, unit)}"
    if check.state == "over":
        state = "is used up"
    elif check.would_exceed and check.fraction < check.budget.warn_at:
        state = "may be exceeded by this command"
    else:
        state = f"is at {format_percent(check.fraction)}"
    return f"tokenbudget: {label(check.budget)} {state} ({amount}); {resets_text(check, tz)}."


def block_message(
    check: Check,
    *,
    rate: float | None,
    raise_hint: str,
    allow_hint: str = ALLOW_COMMAND,
    tz: tzinfo | None = None,
) -> str:
    """A refusal or stop: which budget, used of limit, when it resets, the burn rate, how to
    go on."""
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


def refusal(check: Check, rate: float | None, tz: tzinfo | None = None) -> str:
    """What a refused prompt or a stopped turn is told."""
    return block_message(check, rate=rate, raise_hint=raise_hint(check), tz=tz)


def warning(check: Check, rate: float | None, tz: tzinfo | None = None) -> str:
    """What a hook says once when a budget crosses its threshold or its limit."""
    return warning_message(check, rate=rate, raise_hint=raise_hint(check), tz=tz)


def used_up_reason(check: Check, tz: tzinfo | None = None) -> str:
    """`status --check`: why the next prompt here would be refused (no burn rate: a script
    reads it after the fact)."""
    return block_message(check, rate=None, raise_hint=raise_hint(check), tz=tz)


def context_hint(checks: Iterable[Check]) -> str:
    """What the model is told about what each budget has left (at a session's start, or with
    each prompt when SessionStart is async): '' without budgets."""
    parts = []
    for c in checks:
        left = max(0.0, c.limit - c.used)
        parts.append(f"{label(c.budget)}: {format_amount(left, c.budget.unit)} left")
    return ("Token budget (tokenbudget): " + "; ".join(parts) + ".") if parts else ""


def stop_line(stop: Mapping[str, Any], tz: tzinfo) -> str:
    """`status --check`: one refusal or stop kept for a session, on one line."""
    from datetime import datetime

    from tokenbudget.render import escape_controls

    when = datetime.fromtimestamp(float(stop.get("at") or 0), tz).strftime("%Y-%m-%d %H:%M")
    what = "refused a prompt of" if stop.get("what") == "refused" else "stopped a turn of"
    first = str(stop.get("reason", "")).split("\n", 1)[0].removeprefix("tokenbudget: ")
    who = f"the {stop['budget']} budget" if stop.get("budget") else "tokenbudget"
    return escape_controls(
        f"tokenbudget: at {when} {who} {what} session {stop.get('session')}: {first}"
    )
