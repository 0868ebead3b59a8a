"""Report text: tables, CSV and progress bars (numbers read as numfmt writes them). Data in,
string out."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from tokenbudget.numfmt import (
    UNPRICED,
    format_cost,
    format_exact,
    format_percent,
    format_tokens,
    round_half_up,
)

BOLD = "\x1b[1m"
RESET = "\x1b[0m"
GREEN = "\x1b[32m"
YELLOW = "\x1b[33m"
RED = "\x1b[31m"

ELLIPSIS = "…"

# (row field, header) of the number columns, in ccusage's JSON field names.
TOKEN_COLUMNS = (
    ("inputTokens", "Input"),
    ("outputTokens", "Output"),
    ("cacheCreationTokens", "Cache write"),
    ("cacheReadTokens", "Cache read"),
    ("totalTokens", "Total"),
)
_COST_HEADER = "Cost"
_GAP = "  "
_MIN_KEY_WIDTH = 10
_MAX_EXTRA_WIDTH = 24

# A cost we worked out from our price table is marked; Claude Code's own figure is not.
_MARKERS = {"table": "*", "mixed": "+"}
_LEGEND = {
    "*": "* estimated from tokenbudget's price table",
    "+": "+ partly estimated from the price table",
}
_CLAUDE_CODE_LEGEND = "unmarked: Claude Code's own figure"

# C0, DEL and C1 controls, each shown as visible text such as `\x1b`: a transcript's cwd or a
# command name is data from whatever ran in the session, and an ESC or CSI in it would drive the
# terminal (move the cursor, retitle the window, hide lines) when a report prints it.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def escape_controls(text: str) -> str:
    """`text` with every control character (C0, DEL, C1) written as a visible `\\xNN`."""
    return text.translate(_CONTROLS)


def shorten_middle(text: str, width: int) -> str:
    """`text` cut in the middle with "…" so it fits `width` characters."""
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    keep = width - 1
    head = (keep + 1) // 2
    tail = keep - head
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")


class _Names(str):
    """A cell listing names: cut between names with "+N", never in the middle of one."""

    names: tuple[str, ...]

    def __new__(cls, names: Sequence[str]) -> _Names:
        cell = super().__new__(cls, ", ".join(names))
        cell.names = tuple(names)
        return cell


def _fit(text: str, width: int) -> str:
    if len(text) > width and isinstance(text, _Names):
        names = text.names
        for shown in range(len(names) - 1, 0, -1):
            candidate = f"{', '.join(names[:shown])} +{len(names) - shown}"
            if len(candidate) <= width:
                return candidate
    return shorten_middle(text, width)


def _cell(value: Any, exact: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return format_exact(value) if exact else format_tokens(value)
    if isinstance(value, list | tuple):
        return _Names([escape_controls(_short_model(str(v))) for v in value])
    return escape_controls(str(value))


def _short_model(name: str) -> str:
    # "claude-opus-5-5" says nothing more than "opus-5-5" in a column that is all Claude.
    return name.removeprefix("claude-")


def _cost_cell(row: Mapping[str, Any]) -> tuple[str, str]:
    """The cost text and its footnote marker ("" when none)."""
    cost = row.get("totalCost")
    if cost is None:
        return UNPRICED, ""
    return format_cost(float(cost)), _MARKERS.get(str(row.get("costSource", "")), "")


def render_table(
    title: str,
    key_header: str,
    rows: list[dict[str, Any]],
    totals: dict[str, Any],
    *,
    color: bool,
    width: int = 80,
    extra_columns: Sequence[tuple[str, str]] = (),
    token_columns: Sequence[tuple[str, str]] = TOKEN_COLUMNS,
    exact: bool = False,
) -> str:
    """A usage report table fitting `width` columns; extra_columns are (row field, header).

    Counts read as `numfmt.format_tokens` rounds them, or in full (`1,234,567`) when `exact`.
    """
    title_line = _bold(title, color)
    if not rows:
        return f"{title_line}\nNo usage found.\n"

    lines_cells: list[list[str]] = []
    markers: list[str] = []
    for row in [*rows, totals]:
        cost, marker = _cost_cell(row)
        markers.append(marker)
        lines_cells.append(
            [escape_controls(str(row.get("key", "")))]
            + [_cell(row.get(field)) for field, _ in extra_columns]
            + [_cell(row.get(field), exact) for field, _ in token_columns]
            + [cost]
        )
    lines_cells[-1][0] = escape_controls(str(totals.get("key") or "Total"))

    headers = [key_header, *(h for _, h in extra_columns), *(h for _, h in token_columns)]
    headers.append(_COST_HEADER)
    has_marker = any(markers)
    n_extra = len(extra_columns)

    widths = [max(len(h), *(len(c[i]) for c in lines_cells)) for i, h in enumerate(headers)]
    if has_marker:  # a slot after every cost keeps the digits lined up
        widths[-1] = max(len(_COST_HEADER), *(len(c[-1]) + 1 for c in lines_cells))
    for i in range(1, 1 + n_extra):
        widths[i] = min(widths[i], max(len(headers[i]), _MAX_EXTRA_WIDTH))
    fixed = sum(widths[1:]) + len(_GAP) * (len(widths) - 1)
    widths[0] = min(widths[0], max(width - fixed, _MIN_KEY_WIDTH, len(key_header)))
    # If even the shortest key leaves the line too long, take it from the extra columns.
    overflow = sum(widths) + len(_GAP) * (len(widths) - 1) - width
    for i in range(1, 1 + n_extra):
        if overflow <= 0:
            break
        cut = min(overflow, widths[i] - len(headers[i]))
        widths[i] -= cut
        overflow -= cut

    def line(cells: list[str], marker: str | None) -> str:
        parts = []
        for i, (text, w) in enumerate(zip(cells, widths, strict=True)):
            if i == len(cells) - 1 and marker is not None:
                parts.append((text + (marker or " ")).rjust(w))
            elif i <= n_extra:
                parts.append(_fit(text, w).ljust(w))
            else:
                parts.append(text.rjust(w))
        return _GAP.join(parts).rstrip()

    table_width = sum(widths) + len(_GAP) * (len(widths) - 1)
    rule = "─" * table_width
    header_cells = [*headers[:-1], _COST_HEADER + (" " if has_marker else "")]
    out = [title_line, _bold(line(header_cells, None), color), rule]
    for cells, marker in zip(lines_cells[:-1], markers[:-1], strict=True):
        out.append(line(cells, marker if has_marker else None))
    out.append(rule)
    out.append(_bold(line(lines_cells[-1], markers[-1] if has_marker else None), color))
    out.extend(_legend([*rows, totals], markers, width))
    return "\n".join(out) + "\n"


def _legend(rows: list[dict[str, Any]], markers: list[str], width: int) -> list[str]:
    """What the cost markers mean: one line if it fits, else one line per note."""
    parts = [_LEGEND[m] for m in _LEGEND if m in markers]
    if not parts:
        return []
    if any(r.get("costSource") == "claude-code" and r.get("totalCost") is not None for r in rows):
        parts.append(_CLAUDE_CODE_LEGEND)
    joined = "; ".join(parts)
    return [joined] if len(joined) <= width else parts


def _bold(text: str, color: bool) -> str:
    return f"{BOLD}{text}{RESET}" if color and text else text


_CSV_FIELDS = (
    "inputTokens",
    "outputTokens",
    "cacheCreationTokens",
    "cacheReadTokens",
    "totalTokens",
    "totalCost",
    "costSource",
    "modelsUsed",
)


def render_csv(
    key_header: str, rows: list[dict[str, Any]], *, extra_fields: Sequence[str] = ()
) -> str:
    """CSV with a header row, whole token counts and costs to 6 decimals (empty if unpriced).

    `extra_fields` come after the key, as the table shows them after it. Control characters
    are escaped here too: a CSV file is often printed with `cat`.
    """
    import csv  # only reports pay for it, never a hook
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([key_header, *extra_fields, *_CSV_FIELDS])
    for row in rows:
        cost = row.get("totalCost")
        models = row.get("modelsUsed") or []
        writer.writerow(
            [
                escape_controls(str(row.get("key", ""))),
                *(_csv_value(row.get(field)) for field in extra_fields),
                *(int(row.get(field) or 0) for field in _CSV_FIELDS[:5]),
                "" if cost is None else f"{float(cost):.6f}",
                escape_controls(str(row.get("costSource") or "")),
                " ".join(escape_controls(str(m)) for m in models),
            ]
        )
    return buffer.getvalue()


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return escape_controls(str(value))


def active_block(row: Mapping[str, Any], *, exact: bool = False) -> str:
    """The active 5-hour block's pace, as a line under the blocks table."""
    from datetime import datetime, timedelta

    from tokenbudget.numfmt import format_duration

    count = format_exact if exact else format_tokens
    projection, rate = row["projection"], row["burnRate"]
    ends = datetime.fromisoformat(row["endTime"]).strftime("%H:%M")
    elapsed = format_duration(timedelta(minutes=row["elapsedMinutes"]))
    left = format_duration(timedelta(minutes=projection["remainingMinutes"]))
    per_hour = f"{count(rate['tokensPerMinute'] * 60)} tokens/h"
    total = f"{count(projection['totalTokens'])} tokens"
    if rate["costPerHour"] is not None:
        per_hour += f" ({format_cost(rate['costPerHour'])}/h)"
        total += f" ({format_cost(projection['totalCost'])})"
    return (
        f"Active block: {elapsed} elapsed, {left} left (ends {ends}); "
        f"at {per_hour} it ends near {total}.\n"
    )


def bar(fraction: float, width: int, *, color: bool) -> str:
    """`[█████░░░] 62%`: `width` cells, clamped to full; the percent is the real one."""
    if math.isnan(fraction):
        fraction = 0.0
    clamped = min(max(fraction, 0.0), 1.0)
    filled = round_half_up(clamped * width)
    if clamped < 1.0:
        filled = min(filled, width - 1)  # a full bar must mean the budget is spent
    filled = max(filled, 0)
    full, empty = "█" * filled, "░" * (max(width, 0) - filled)
    if color and full:
        full = f"{_bar_color(fraction)}{full}{RESET}"
    return f"[{full}{empty}] {format_percent(fraction)}"



def _bar_color(fraction: float) -> str:
    if fraction > 0.90:
        return RED
    if fraction >= 0.70:
        return YELLOW
    return GREEN


def use_color(stream: TextIO) -> bool:
    """True only for a terminal, with NO_COLOR unset and TERM not "dumb"."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        return False
    try:
        return bool(isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False
