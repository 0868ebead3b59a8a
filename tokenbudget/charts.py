"""Small terminal charts for `report`: usage by day against the daily budget, runs by command.

Pure: rows in, text out. Bars are Unicode blocks drawn to an eighth of a cell; "│" marks a
budget. Colors (only with `color`) follow the status bars: green below 70% of the budget,
yellow to 90%, red above.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokenbudget import render
from tokenbudget.budgets import Budget, expected_cost
from tokenbudget.ledger import Ledger
from tokenbudget.numfmt import UNPRICED, format_amount, format_limit, format_percent
from tokenbudget.schema import RUN_TOKENS

if TYPE_CHECKING:
    from tokenbudget.budgets import Unit

EIGHTHS = " ▏▎▍▌▋▊▉█"
FULL = "█"
TAIL = "░"
MARK = "│"
GAP = "  "
MIN_BAR = 10
RECENT_RUNS = 20  # what budgets.expected_cost looks at by default


def bar_cells(value: float, scale: float, cells: int) -> str:
    """`value` out of `scale` as `cells` characters, to an eighth of a cell; never empty if > 0."""
    if cells <= 0:
        return ""
    if scale <= 0 or value <= 0 or not math.isfinite(value):
        return " " * cells
    eighths = round(min(value / scale, 1.0) * cells * 8)
    full, part = divmod(max(eighths, 1), 8)  # a sliver of usage still shows as a sliver
    text = FULL * full + (EIGHTHS[part] if part else "")
    return text.ljust(cells)


def mark_column(limit: float, scale: float, cells: int) -> int | None:
    """The cell holding the budget line, or None when it cannot be drawn."""
    if scale <= 0 or limit <= 0 or cells <= 0:
        return None
    return min(cells - 1, math.floor(limit / scale * cells))


def _paint(bar: str, mark: int | None, level: str | None, color: bool) -> str:
    """Put the budget mark into `bar` and color the blocks (the mark keeps the plain color)."""
    chars = list(bar)
    if mark is not None:
        chars[mark] = MARK
    if not color or level is None:
        return "".join(chars)
    out, run = [], ""
    for ch in chars:
        if ch in (MARK, " "):
            if run:
                out.append(f"{level}{run}{render.RESET}")
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.append(f"{level}{run}{render.RESET}")
    return "".join(out)


def _level(value: float, limit: float | None) -> str | None:
    return render._bar_color(value / limit) if limit else None


def _title(text: str, color: bool) -> str:
    return f"{render.BOLD}{text}{render.RESET}" if color else text


def _amount(value: float | None, unit: Unit) -> str:
    if value is None:
        return UNPRICED
    return format_amount(value, unit)


# --- usage by day ------------------------------------------------------------------------------


def day_chart(
    days: Sequence[tuple[str, float | None]],
    *,
    limit: float | None,
    unit: Unit = "tokens",
    color: bool,
    width: int = 80,
) -> str:
    """One bar per day (value None: unpriced), the daily budget `limit` marked on each."""
    what = "Cost" if unit == "usd" else "Tokens"
    head = f"{what} by day"
    if limit is not None:
        head += f"  ({MARK} the daily budget, {format_limit(limit, unit)})"
    if not days:
        return _title(head, color) + "\nNo usage found.\n"
    labels = [d for d, _ in days]
    amounts = [_amount(v, unit) for _, v in days]
    percents = [format_percent(v / limit) if limit and v is not None else "" for _, v in days]
    label_w = max(map(len, labels))
    amount_w = max(map(len, amounts))
    pct_w = max(map(len, percents))
    fixed = label_w + len(GAP) + len(GAP) + amount_w + (len(GAP) + pct_w if pct_w else 0)
    cells = max(MIN_BAR, width - fixed)
    top = max([v for _, v in days if v is not None] + [limit or 0.0])
    mark = mark_column(limit, top, cells) if limit else None
    lines = [_title(head, color)]
    for label, (_, value), amount, pct in zip(labels, days, amounts, percents, strict=True):
        bar = bar_cells(value or 0.0, top, cells)
        painted = _paint(bar, mark, _level(value or 0.0, limit), color)
        line = f"{label:<{label_w}}{GAP}{painted}{GAP}{amount:>{amount_w}}"
        if pct_w:
            line += f"{GAP}{pct:>{pct_w}}"
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


def daily_budget(budgets: Iterable[Budget], project: str | None = None) -> Budget | None:
    """The daily budget a day chart marks: the one for `project` first, then in tokens."""
    found = [b for b in budgets if b.kind == "daily"]
    found.sort(key=lambda b: (b.project != project, b.unit != "tokens"))
    return found[0] if found else None


def day_chart_for_rows(
    rows: Sequence[Mapping[str, Any]], budget: Budget | None, *, color: bool, width: int = 80
) -> str:
    """The day chart of `report --by day` rows, in the daily budget's unit (tokens if none)."""
    unit: Unit = budget.unit if budget is not None else "tokens"
    field = "totalCost" if unit == "usd" else "totalTokens"
    days = []
    for r in rows:
        value = r.get(field)
        days.append((str(r["key"]), None if value is None else float(value)))
    limit = budget.limit if budget is not None else None
    return day_chart(days, limit=limit, unit=unit, color=color, width=width)


# --- runs by command ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStats:
    """The runs of one command, in tokens: how many, mean, 90th percentile and largest."""

    command: str
    runs: int
    mean: float
    p90: float
    largest: float


def run_stats(
    all_runs: Mapping[str, Sequence[float]], recent_runs: Mapping[str, Sequence[float]]
) -> list[RunStats]:
    """Stats per command, slash commands by p90 (largest first), plain prompts last.

    `all_runs` is every run on record; `recent_runs` is what a refusal's expectation is taken
    from (the ledger's own list), so p90 here is the very number a refusal names.
    """
    out = []
    for command, runs in all_runs.items():
        if not runs:
            continue
        recent = recent_runs.get(command) or runs
        out.append(
            RunStats(
                command, len(runs), sum(runs) / len(runs), expected_cost(recent), float(max(runs))
            )
        )
    out.sort(key=lambda s: (not s.command.startswith("/"), -s.p90, s.command))
    return out


def ledger_run_stats(ledger: Ledger, records: dict[str, dict[str, Any]]) -> list[RunStats]:
    """run_stats from the ledger and the folded history, as `report` reads them."""
    from tokenbudget import report
    from tokenbudget.store import held

    all_runs = report.command_runs(ledger, records)
    recent = {c: [r[RUN_TOKENS] for r in held(ledger).command_runs(c)] for c in all_runs}
    return run_stats({c: [float(t) for t in v] for c, v in all_runs.items()}, recent)


def stats_json(stats: Iterable[RunStats]) -> dict[str, dict[str, float]]:
    """Per command, the fields `report --by command --json` adds: meanTokens, p90Tokens, ..."""
    return {
        s.command: {
            "meanTokens": round(s.mean, 1),
            "p90Tokens": s.p90,
            "largestRunTokens": s.largest,
        }
        for s in stats
    }


_COMMAND_HEADERS = ("Command", "Runs", "Mean", "p90", "Largest")
_COMMAND_LEGEND = (
    f"{FULL} p90 of the last {RECENT_RUNS} runs (what a refusal expects)",
    f"{TAIL} largest run",
    f"{MARK} budget",
)


def command_chart(
    stats: Sequence[RunStats],
    limits: Mapping[str, float],
    *,
    color: bool,
    width: int = 80,
) -> str:
    """Each command's runs, mean, p90 and largest run, with a bar to scale and its budget."""
    title = _title("Tokens per run, by command", color)
    if not stats:
        return title + "\nNo command runs found.\n"
    cells_text = [
        [
            s.command,
            str(s.runs),
            format_amount(s.mean, "tokens"),
            format_amount(s.p90, "tokens"),
            format_amount(s.largest, "tokens"),
        ]
        for s in stats
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells_text)) for i, h in enumerate(_COMMAND_HEADERS)]
    widths[0] = min(widths[0], 24)
    fixed = sum(widths) + len(GAP) * len(widths)
    cells = max(MIN_BAR, width - fixed)
    top = max([s.largest for s in stats] + [limits.get(s.command, 0.0) for s in stats])

    def columns(values: Sequence[str]) -> str:
        first = render.shorten_middle(values[0], widths[0]).ljust(widths[0])
        rest = [v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True)]
        return GAP.join([first, *rest])

    header = columns(_COMMAND_HEADERS)
    lines = [title, _title(header, color), "─" * (len(header) + len(GAP) + cells)]
    for s, texts in zip(stats, cells_text, strict=True):
        limit = limits.get(s.command)
        solid = bar_cells(s.p90, top, cells).rstrip()
        tail_end = max(len(solid), round(min(s.largest / top, 1.0) * cells)) if top else 0
        bar = (solid + TAIL * (tail_end - len(solid))).ljust(cells)
        mark = mark_column(limit, top, cells) if limit else None
        painted = _paint_command(bar, len(solid), mark, _level(s.p90, limit), color)
        lines.append(f"{columns(texts)}{GAP}{painted}".rstrip())
    lines.extend(_legend(width))
    return "\n".join(lines) + "\n"


def _paint_command(bar: str, solid: int, mark: int | None, level: str | None, color: bool) -> str:
    # The solid part takes the budget color; the light tail stays plain, like the mark.
    chars = list(bar)
    if mark is not None:
        chars[mark] = MARK
    if not color or level is None:
        return "".join(chars)
    head = "".join(chars[:solid])
    if mark is not None and mark < solid:
        before, after = head[:mark], head[mark + 1 :]
        colored = _wrap(before, level) + MARK + _wrap(after, level)
    else:
        colored = _wrap(head, level)
    return colored + "".join(chars[solid:])


def _wrap(text: str, level: str) -> str:
    return f"{level}{text}{render.RESET}" if text else ""


def _legend(width: int) -> list[str]:
    joined = " · ".join(_COMMAND_LEGEND)
    return [joined] if len(joined) <= width else list(_COMMAND_LEGEND)


def command_limits(budgets: Iterable[Budget]) -> dict[str, float]:
    """Token limits of the command budgets (a dollar limit has no place on a token scale)."""
    return {
        b.name: b.limit
        for b in budgets
        if b.kind == "command" and b.unit == "tokens" and b.name is not None
    }


# --- what `report` prints under its table -----------------------------------------------------


def for_report(
    by: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    budgets: Sequence[Budget],
    stats: Sequence[RunStats] = (),
    project: str | None = None,
    color: bool,
    width: int = 80,
) -> str:
    """The chart `report --by day` and `--by command` print under the table; "" for others."""
    if by == "day":
        return day_chart_for_rows(rows, daily_budget(budgets, project), color=color, width=width)
    if by == "command":
        return command_chart(stats, command_limits(budgets), color=color, width=width)
    return ""
