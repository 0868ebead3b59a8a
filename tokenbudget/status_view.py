"""`tokenbudget status`: each budget as a bar with used, limit and reset (pure rendering)."""

from __future__ import annotations

from datetime import tzinfo

from tokenbudget import render
from tokenbudget.budgets import Check
from tokenbudget.messages import resets_text
from tokenbudget.numfmt import format_amount, format_limit

BAR_WIDTH = 16


def line(check: Check, *, color: bool, tz: tzinfo | None = None) -> str:
    b = check.budget
    # A budget's id holds a command name or folder, possibly from a cloned project's file.
    name = render.escape_controls(b.id)
    label = name if len(name) <= 24 else "…" + name[-23:]
    used = f"{format_amount(check.used, b.unit)} of {format_limit(check.limit, b.unit)}"
    state = ""
    if check.blocks:
        state = "  BLOCKS NOW"
    elif b.mode == "warn":
        state = "  (warn only)"
    return (
        f"{label:<24} {render.bar(check.fraction, BAR_WIDTH, color=color)}  {used}; "
        f"{render.escape_controls(resets_text(check, tz))}{state}"
    )


def team_line(team: str, age: float | None) -> str:
    """`Team core's totals: fetched 12 s ago`: how old the team totals the budgets use are."""
    from tokenbudget.team.cache import age as age_text

    when = "never fetched" if age is None else f"fetched {age_text(age)} ago"
    return f"Team {render.escape_controls(team)}'s totals: {when}"


def render_status(checks: list[Check], *, color: bool, tz: tzinfo | None = None,
                  team: str | None = None) -> str:
    """Each budget on its line; `team` (from `team_line`) after them in team mode."""
    if not checks and team is None:
        return "No budgets. Set one with e.g. `tokenbudget budget set daily 500k`.\n"
    lines = [line(c, color=color, tz=tz) for c in checks]
    if team is not None:
        lines.append(team)
    return "".join(ln + "\n" for ln in lines)
