"""`report --html FILE`: one self-contained page of usage against budgets.

No network, no scripts, no external fonts: styles are inline, charts are inline SVG, and a
Content-Security-Policy forbids loading anything. Every piece of text is escaped: project paths,
session ids and command names are whatever the user's disk and prompts hold.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenbudget import charts, clock
from tokenbudget.budgets import Budget, Check
from tokenbudget.errors import TokenbudgetError
from tokenbudget.ledger import Ledger
from tokenbudget.messages import resets_text
from tokenbudget.numfmt import format_amount, format_cost, format_limit, format_percent

if TYPE_CHECKING:
    from tokenbudget.budgets import Unit

TOP_SESSIONS = 10
TOP_COMMANDS = 15
CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@dataclass
class Day:
    """One day's usage."""

    date: str
    tokens: float
    cost: float | None  # None: some usage had no price


@dataclass
class Session:
    """One session's usage, for the top sessions."""

    sid: str
    project: str
    last: str  # when it was last active, as text
    models: list[str]
    tokens: float
    cost: float | None


@dataclass
class Command:
    """One command's runs and total usage."""

    stats: charts.RunStats
    tokens: float
    cost: float | None
    limit: float | None  # its token budget, if any


@dataclass
class PageData:
    """Everything the page shows, already measured."""

    generated: str
    days: list[Day]
    daily_budgets: list[Budget]
    sessions: list[Session]
    commands: list[Command]
    checks: list[Check] = field(default_factory=list)
    total_tokens: float = 0.0
    total_cost: float | None = 0.0
    session_count: int = 0  # all sessions in the report, not only the top ones shown
    scope: str = ""  # what the report covers, e.g. "2026-11-01 to 2026-11-28, /code/x"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _cost(value: float | None) -> str:
    return format_cost(value)


def _tokens(value: float) -> str:
    return format_amount(value, "tokens")


def _amount(value: float | None, unit: Unit) -> str:
    return _cost(value) if unit == "usd" else _tokens(value or 0.0)


def _level(fraction: float) -> str:
    # The same thresholds as the terminal bars: below 70% fine, to 90% close, above that over.
    if fraction > 0.90:
        return "over"
    if fraction >= 0.70:
        return "warn"
    return "ok"


# --- charts -----------------------------------------------------------------------------------


def nice_top(value: float, ticks: int = 4) -> tuple[float, float]:
    """(top, step): a round axis maximum at or above `value`, in `ticks` round steps."""
    if value <= 0 or not math.isfinite(value):
        return 1.0, 0.25
    raw = value / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * magnitude
        if step >= raw:
            break
    return step * math.ceil(value / step - 1e-9), step


def day_svg(days: Sequence[Day], unit: Unit, limit: float | None) -> str:
    """Bars of daily usage in `unit`, with the daily budget as a dashed line."""
    width, height = 1000, 260
    left, right, top_m, bottom = 64, 16, 24, 40
    plot_w, plot_h = width - left - right, height - top_m - bottom
    values = [(d.cost or 0.0) if unit == "usd" else d.tokens for d in days]
    top, step = nice_top(max([*values, limit or 0.0, 0.0]) * 1.05)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(("Cost" if unit == "usd" else "Tokens") + " by day")}">'
    ]
    ticks = round(top / step)
    for i in range(ticks + 1):
        y = top_m + plot_h - plot_h * i / ticks
        out.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="axis" x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(_amount(step * i, unit))}</text>"
        )
    n = max(len(days), 1)
    slot = plot_w / n
    bar_w = max(1.0, min(slot * 0.72, 48.0))
    every = max(1, math.ceil(n / 14))
    for i, (day, value) in enumerate(zip(days, values, strict=True)):
        h = plot_h * value / top if top else 0.0
        x = left + slot * i + (slot - bar_w) / 2
        level = _level(value / limit) if limit else "plain"
        tip = f"{day.date}: {_tokens(day.tokens)} tokens, {_cost(day.cost)}"
        if limit:
            tip += f" ({format_percent(value / limit)} of the daily budget)"
        out.append(
            f'<rect class="bar {level}" x="{x:.1f}" y="{top_m + plot_h - h:.1f}" '
            f'width="{bar_w:.1f}" height="{max(h, 0.0):.1f}">'
            f"<title>{_e(tip)}</title></rect>"
        )
        if i % every == 0:
            label = day.date[5:] if len(day.date) == 10 else day.date
            out.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 18}" '
                f'text-anchor="middle">{_e(label)}</text>'
            )
    if limit:
        y = top_m + plot_h - plot_h * limit / top
        out.append(
            f'<line class="budget" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="budget-label" x="{width - right}" y="{y - 6:.1f}" '
            f'text-anchor="end">daily budget {_e(format_limit(limit, unit))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def run_svg(stats: charts.RunStats, scale: float, limit: float | None) -> str:
    """A small bar: solid to p90, light to the largest run, a tick at the budget."""
    width, height = 220, 14
    if scale <= 0:
        return ""

    def x(value: float) -> float:
        return width * min(value / scale, 1.0)

    level = _level(stats.p90 / limit) if limit else "plain"
    parts = [
        f'<svg class="runs" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="runs of {_e(stats.command)}">',
        f'<rect class="tail" x="0" y="3" width="{x(stats.largest):.1f}" height="8"/>',
        f'<rect class="bar {level}" x="0" y="1" width="{max(x(stats.p90), 1.0):.1f}" height="12"/>',
    ]
    if limit:
        lx = min(x(limit), width - 1.0)
        parts.append(f'<rect class="budget-tick" x="{lx:.1f}" y="0" width="2" height="{height}"/>')
    parts.append("</svg>")
    return "".join(parts)


# --- the page ---------------------------------------------------------------------------------

STYLE = """
:root { color-scheme: light dark; --fg: #1d2330; --muted: #667085; --bg: #f6f7f9;
  --card: #ffffff; --line: #e4e7ec; --ok: #2e9d5b; --warn: #d79b00; --over: #d64545;
  --plain: #4a72d9; --tail: #c9d4f2; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6e8ee; --muted: #98a2b3; --bg: #14171d;
  --card: #1d2129; --line: #2e3440; --tail: #39456a; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 24px 48px; }
header h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 12px;
  margin: 20px 0 8px; }
.card, section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
.card { padding: 12px 16px; }
.card .k { color: var(--muted); font-size: 13px; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
section { margin-top: 18px; padding: 16px 20px 18px; }
section h2 { font-size: 17px; margin: 0 0 10px; }
section h3 { font-size: 13px; font-weight: 600; color: var(--muted); margin: 14px 0 2px;
  text-transform: uppercase; letter-spacing: 0.04em; }
section p.note { color: var(--muted); margin: 8px 0 0; font-size: 13px; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: middle; }
th { color: var(--muted); font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; white-space: nowrap; }
td.path { max-width: 360px; overflow-wrap: anywhere; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.chart { width: 100%; height: auto; display: block; }
.chart .grid { stroke: var(--line); stroke-width: 1; }
.chart .axis { fill: var(--muted); font-size: 12px; }
.chart .budget { stroke: var(--over); stroke-width: 2; stroke-dasharray: 7 5; }
.chart .budget-label { fill: var(--over); font-size: 13px; font-weight: 600; }
.bar.ok { fill: var(--ok); } .bar.warn { fill: var(--warn); } .bar.over { fill: var(--over); }
.bar.plain { fill: var(--plain); }
.runs .tail { fill: var(--tail); } .runs .budget-tick { fill: var(--fg); }
.meter { display: inline-block; width: 140px; height: 10px; border-radius: 5px;
  background: var(--line); overflow: hidden; vertical-align: middle; margin-right: 8px; }
.meter span { display: block; height: 100%; }
.meter .ok { background: var(--ok); } .meter .warn { background: var(--warn); }
.meter .over { background: var(--over); }
details summary { cursor: pointer; color: var(--muted); margin-top: 10px; }
.empty { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; margin-top: 24px; }
"""


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]]) -> str:
    """A table; headers are (text, numeric); cells are already-escaped HTML."""
    head = "".join(f"<th{' class=n' if num else ''}>{_e(h)}</th>" for h, num in headers)
    body = []
    for row in rows:
        cells = "".join(
            f"<td{' class=n' if num else ''}>{cell}</td>"
            for cell, (_, num) in zip(row, headers, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _budgets_section(checks: Sequence[Check]) -> str:
    if not checks:
        return (
            '<section id="budgets"><h2>Budgets</h2><p class="empty">No budgets. Set one '
            "with <code>tokenbudget budget set daily 500k</code>.</p></section>"
        )
    rows = []
    for c in checks:
        b = c.budget
        level = _level(c.fraction)
        meter = (
            f'<span class="meter"><span class="{level}" '
            f'style="width:{min(c.fraction, 1.0) * 100:.1f}%"></span></span>'
        )
        rows.append(
            [
                f"<code>{_e(b.id)}</code>",
                _e(format_amount(c.used, b.unit)),
                _e(format_limit(c.limit, b.unit)),
                meter + _e(format_percent(c.fraction)),
                _e(_resets(c)),
                _e(b.mode + (" (project file)" if b.source == "project" else "")),
            ]
        )
    table = _table(
        [
            ("Budget", False),
            ("Used", True),
            ("Limit", True),
            ("", False),
            ("Resets", False),
            ("Mode", False),
        ],
        rows,
    )
    return f'<section id="budgets"><h2>Budgets</h2>{table}</section>'


def _resets(check: Check) -> str:
    if check.budget.kind == "command":
        return "its last run; each run counts on its own"
    return resets_text(check).removeprefix("resets ")


def _days_section(days: Sequence[Day], daily: Sequence[Budget]) -> str:
    if not days:
        return (
            '<section id="days"><h2>Usage by day</h2><p class="empty">No usage found.</p></section>'
        )
    units: list[Unit] = sorted({b.unit for b in daily}, key=lambda u: u != "tokens") or ["tokens"]
    charts_html = []
    for unit in units:
        limit = next((b.limit for b in daily if b.unit == unit), None)
        title = "Cost" if unit == "usd" else "Tokens"
        charts_html.append(f"<h3>{title} per day</h3>{day_svg(days, unit, limit)}")
    token_limit = next((b.limit for b in daily if b.unit == "tokens"), None)
    rows = []
    used = [d for d in days if d.tokens or d.cost]  # not the zero days that fill the axis
    for d in reversed(used):
        share = format_percent(d.tokens / token_limit) if token_limit else ""
        rows.append([_e(d.date), _e(_tokens(d.tokens)), _e(_cost(d.cost)), _e(share)])
    table = _table(
        [("Date", False), ("Tokens", True), ("Cost", True), ("Of daily budget", True)], rows
    )
    return (
        f'<section id="days"><h2>Usage by day</h2>{"".join(charts_html)}'
        f"<details><summary>Every day with usage ({len(used)})</summary>{table}</details>"
        "</section>"
    )


def _sessions_section(sessions: Sequence[Session]) -> str:
    if not sessions:
        return (
            '<section id="sessions"><h2>Top sessions</h2><p class="empty">No sessions.</p>'
            "</section>"
        )
    rows = [
        [
            f'<code title="{_e(s.sid)}">{_e(s.sid[:8])}</code>',
            f'<span class="path">{_e(s.project)}</span>',
            _e(s.last),
            _e(", ".join(m.removeprefix("claude-") for m in s.models)),
            _e(_tokens(s.tokens)),
            _e(_cost(s.cost)),
        ]
        for s in sessions
    ]
    table = _table(
        [
            ("Session", False),
            ("Project", False),
            ("Last active", False),
            ("Models", False),
            ("Tokens", True),
            ("Cost", True),
        ],
        rows,
    )
    return (
        f'<section id="sessions"><h2>Top sessions</h2>{table}'
        f'<p class="note">The {len(sessions)} largest by tokens.</p></section>'
    )


def _commands_section(commands: Sequence[Command]) -> str:
    if not commands:
        return (
            '<section id="commands"><h2>Top commands</h2><p class="empty">No command runs.'
            "</p></section>"
        )
    scale = max([c.stats.largest for c in commands] + [c.limit or 0.0 for c in commands])
    rows = [
        [
            f"<code>{_e(c.stats.command)}</code>",
            _e(c.stats.runs),
            _e(_tokens(c.stats.mean)),
            _e(_tokens(c.stats.p90)),
            _e(_tokens(c.stats.largest)),
            run_svg(c.stats, scale, c.limit),
            _e(_tokens(c.tokens)),
            _e(_cost(c.cost)),
        ]
        for c in commands
    ]
    table = _table(
        [
            ("Command", False),
            ("Runs", True),
            ("Mean", True),
            ("p90", True),
            ("Largest", True),
            ("Per run", False),
            ("Total", True),
            ("Cost", True),
        ],
        rows,
    )
    note = (
        "Tokens per run. p90 is the 90th percentile of the last 20 runs: what a refusal "
        "expects the next run to take. Bars: solid to p90, light to the largest run, "
        "a tick at the command's budget."
    )
    return (
        f'<section id="commands"><h2>Top commands</h2>{table}<p class="note">{_e(note)}'
        "</p></section>"
    )


def render_page(data: PageData) -> str:
    """The whole page as one string."""
    cards = [
        ("Tokens", _tokens(data.total_tokens)),
        ("Cost", _cost(data.total_cost)),
        ("Days with usage", str(sum(1 for d in data.days if d.tokens))),
        ("Sessions", str(max(data.session_count, len(data.sessions)))),
    ]
    cards_html = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
        for k, v in cards
    )
    scope = f" · {_e(data.scope)}" if data.scope else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>tokenbudget report</title>"
        f"<style>{STYLE}</style></head><body><main>"
        f"<header><h1>tokenbudget report</h1><p>Generated {_e(data.generated)}{scope}</p>"
        f"</header>"
        f'<div class="cards">{cards_html}</div>'
        f"{_budgets_section(data.checks)}"
        f"{_days_section(data.days, data.daily_budgets)}"
        f"{_sessions_section(data.sessions)}"
        f"{_commands_section(data.commands)}"
        "<footer>Written by tokenbudget from its ledger of Claude Code's transcripts. "
        "This page loads nothing from the network.</footer>"
        "</main></body></html>\n"
    )


# --- from the ledger --------------------------------------------------------------------------


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def build_page(
    ledger: Ledger,
    records: dict[str, dict[str, Any]],
    budgets: Sequence[Budget],
    tz: tzinfo,
    *,
    checks: Sequence[Check] = (),
    week_start: int = 0,
    filt: Any = None,
    now: float | None = None,
    scope: str = "",
) -> str:
    """The page for the ledger and folded history, as `report --html` writes it."""
    from tokenbudget import report

    t = now if now is not None else clock.now()
    day_rows, totals = report.build(
        "day", ledger, records, tz, week_start=week_start, filt=filt, now=t
    )
    session_rows, _ = report.build("session", ledger, records, tz, filt=filt, now=t)
    command_rows, _ = report.build("command", ledger, records, tz, filt=filt, now=t)
    days = fill_gaps(
        [Day(str(r["key"]), float(r["totalTokens"]), _float(r.get("totalCost"))) for r in day_rows]
    )
    top = sorted(session_rows, key=lambda r: (-r["totalTokens"], str(r["key"])))[:TOP_SESSIONS]
    sessions = [
        Session(
            str(r["key"]),
            str(r.get("projectPath") or ""),
            _when(r.get("lastActivity")),
            list(r.get("modelsUsed") or []),
            float(r["totalTokens"]),
            _float(r.get("totalCost")),
        )
        for r in top
    ]
    limits = charts.command_limits(budgets)
    by_command = {str(r["key"]): r for r in command_rows}
    commands = []
    for s in charts.ledger_run_stats(ledger, records)[:TOP_COMMANDS]:
        row = by_command.get(s.command, {})
        commands.append(
            Command(
                s,
                float(row.get("totalTokens") or 0),
                _float(row.get("totalCost")),
                limits.get(s.command),
            )
        )
    data = PageData(
        generated=datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M %Z").strip(),
        days=days,
        daily_budgets=[b for b in budgets if b.kind == "daily"],
        sessions=sessions,
        commands=commands,
        checks=list(checks),
        total_tokens=float(totals.get("totalTokens") or 0),
        total_cost=_float(totals.get("totalCost")),
        session_count=len(session_rows),
        scope=scope,
    )
    return render_page(data)


def fill_gaps(days: Sequence[Day]) -> list[Day]:
    """The days with a zero day for each date missing in between, so the chart's axis is time."""
    from datetime import date, timedelta

    try:
        dates = [date.fromisoformat(d.date) for d in days]
    except ValueError:
        return list(days)
    if not dates:
        return []
    by_date = dict(zip(dates, days, strict=True))
    out, day = [], dates[0]
    while day <= dates[-1]:
        out.append(by_date.get(day) or Day(day.isoformat(), 0.0, 0.0))
        day += timedelta(days=1)
    return out


def _when(iso: object) -> str:
    if not isinstance(iso, str):
        return ""
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def write_page(path: Path, text: str) -> None:
    """Write the page; a failure is one line (TokenbudgetError), not a traceback."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise TokenbudgetError(f"cannot write {path}: {e.strerror or e}") from None


def budget_checks(
    ledger: Ledger,
    budgets: Sequence[Budget],
    tz: tzinfo,
    *,
    project: str | None,
    session_id: str | None,
    week_start: int = 0,
    now: float | None = None,
) -> list[Check]:
    """Each budget measured now, as `status` measures it (command budgets by their last run)."""
    from tokenbudget import engine

    t = now if now is not None else clock.now()
    ctx = engine.Context(
        session_id=session_id,
        project=project,
        now=datetime.fromtimestamp(t, tz),
        tz=tz,
        week_start=week_start,
        listing=True,
    )
    return engine.measure(budgets, ledger, ctx)
