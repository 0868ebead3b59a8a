"""`report --team --html FILE`: the team's page, built like the local one (html_report.py).

The same page rules: no network, no scripts, inline styles and SVG, a Content-Security-Policy
that forbids loading anything, and every piece of text escaped (member names, project remotes
and commands come from every member's machine). Data in, one string out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenbudget import html_report as page
from tokenbudget.budgets import Budget, Check

TEAM_GROUPS = (
    ("members", "By member", "Member"),
    ("projects", "By project", "Project"),
    ("models", "By model", "Model"),
    ("commands", "By command", "Command"),
)


def _group_section(section: str, title: str, header: str, rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return (f'<section id="{section}"><h2>{page._e(title)}</h2>'
                '<p class="empty">No usage.</p></section>')
    ordered = sorted(rows, key=lambda r: (-r["totalTokens"], str(r["key"])))
    table = page._table(
        [(header, False), ("Tokens", True), ("Cost", True)],
        [[page._e(r["key"]), page._e(page._tokens(r["totalTokens"])),
          page._e(page._cost(r["totalCost"]))] for r in ordered],
    )
    return f'<section id="{section}"><h2>{page._e(title)}</h2>{table}</section>'


def render_team_page(
    team: str,
    generated: str,
    groups: dict[str, list[dict[str, Any]]],
    checks: Sequence[Check],
    daily: Sequence[Budget],
    *,
    scope: str = "",
) -> str:
    """The whole page: cards, the team's budgets, usage by day, then member, project, model
    and command tables. `groups` holds team/report.py rows for "days" and each TEAM_GROUPS."""
    days = page.fill_gaps([page.Day(str(r["key"]), float(r["totalTokens"]),
                                    float(r["totalCost"])) for r in groups["days"]])
    tokens = sum(r["totalTokens"] for r in groups["days"])
    cost = sum(r["totalCost"] for r in groups["days"])
    cards = [("Tokens", page._tokens(tokens)), ("Cost", page._cost(cost)),
             ("Days with usage", str(sum(1 for d in days if d.tokens))),
             ("Members", str(len(groups["members"])))]
    cards_html = "".join(
        f'<div class="card"><div class="k">{page._e(k)}</div><div class="v">{page._e(v)}</div>'
        "</div>" for k, v in cards
    )
    where = f" · team {page._e(team)}" + (f", {page._e(scope)}" if scope else "")
    sections = "".join(_group_section(key, title, header, groups[key])
                       for key, title, header in TEAM_GROUPS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{page._e(page.CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>tokenbudget team report</title>"
        f"<style>{page.STYLE}</style></head><body><main>"
        f"<header><h1>tokenbudget team report</h1><p>Generated {page._e(generated)}{where}</p>"
        "</header>"
        f'<div class="cards">{cards_html}</div>'
        f"{page._budgets_section(checks)}"
        f"{page._days_section(days, daily)}"
        f"{sections}"
        "<footer>Written by tokenbudget from the team database: every member's pushed usage. "
        "This page loads nothing from the network.</footer>"
        "</main></body></html>\n"
    )
