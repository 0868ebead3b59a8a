"""`tokenbudget report`: report data shaped as JSON (ccusage's names), CSV or a table."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from tokenbudget import clock, query, render
from tokenbudget.ledger import BUCKET, Ledger
from tokenbudget.schema import RUN_TOKENS
from tokenbudget.store import held

# --by value -> (JSON list name, JSON key field, table header, title)
SHAPES: dict[str, tuple[str, str, str, str]] = {
    "day": ("daily", "date", "Date", "Usage by day"),
    "week": ("weekly", "week", "Week of", "Usage by week"),
    "month": ("monthly", "month", "Month", "Usage by month"),
    "session": ("sessions", "sessionId", "Session", "Usage by session"),
    "project": ("projects", "project", "Project", "Usage by project"),
    "command": ("commands", "command", "Command", "Usage by command"),
    "model": ("models", "model", "Model", "Usage by model"),
    "block": ("blocks", "id", "Block start", "Usage by 5-hour block"),
}


def _iso(ts: float | int | None, tz: tzinfo) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat()


def _block_pace(
    row: dict[str, Any], start: float, end: float, first: float, now: float
) -> dict[str, Any]:
    """ccusage's burn rate and projection for the active block (None for the others).

    The rate runs from the block's first activity (to the 15-minute bucket) until `now`, at
    least a minute; the projection adds that rate over what is left of the block.
    """
    if not start <= now < end:
        return {"elapsedMinutes": None, "burnRate": None, "projection": None}
    elapsed = max(now - first, 60.0)
    remaining = end - now
    per_second = row["totalTokens"] / elapsed
    cost = row["totalCost"]
    cost_per_second = None if cost is None else cost / elapsed
    return {
        "elapsedMinutes": int((now - start) // 60),
        "burnRate": {
            "tokensPerMinute": round(per_second * 60, 1),
            "costPerHour": None if cost_per_second is None else round(cost_per_second * 3600, 6),
        },
        "projection": {
            "totalTokens": round(row["totalTokens"] + per_second * remaining),
            "totalCost": (
                None if cost_per_second is None else round(cost + cost_per_second * remaining, 6)
            ),
            "remainingMinutes": int(-(-remaining // 60)),  # rounded up: never 0 too early
        },
    }


def command_runs(ledger: Ledger, records: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Tokens of every run (turn) of every command, oldest first."""
    runs = held(ledger, records).turn_runs()
    return {cmd: [int(r[RUN_TOKENS]) for r in v] for cmd, v in runs.items()}


def build(
    by: str,
    ledger: Ledger,
    records: dict[str, dict[str, Any]],
    tz: tzinfo,
    *,
    week_start: int = 0,
    filt: query.Filter | None = None,
    now: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and totals for `--by`, in ccusage's field names."""
    view = held(ledger, records)
    groups = query.group(by, view.cells(), tz, week_start=week_start, filt=filt)
    rows = [query.row(g) for g in groups]
    if by == "session":
        last: dict[str, float] = {}
        for g, r in zip(groups, rows, strict=True):
            project, last_seen = view.session_seen(g.key)
            r["projectPath"] = r.pop("project", project)
            # A folded record may lack the exact time: its last bucket is the next best.
            last[g.key] = last_seen or (g.last or 0) * BUCKET
            r["lastActivity"] = _iso(last[g.key], tz)
        # The latest comes last, nearest the prompt, as in the other reports.
        rows.sort(key=lambda r: (last[r["key"]], r["key"]))
    elif by == "block":
        t = now if now is not None else clock.now()
        for g, r in zip(groups, rows, strict=True):
            start, end = r.pop("startTime"), r.pop("endTime")
            r["startTime"] = _iso(start, tz)
            r["endTime"] = _iso(end, tz)
            r["isActive"] = start <= t < end
            r["key"] = datetime.fromtimestamp(start, tz).strftime("%Y-%m-%d %H:%M")
            r.update(_block_pace(r, start, end, (g.first or 0) * BUCKET, t))
    elif by == "command":
        runs = command_runs(ledger, records)
        for r in rows:
            r["runs"] = len(runs.get(r["key"], []))
    totals = query.row(query.totals(groups))
    for k in ("key", "modelsUsed", "modelBreakdowns", "cacheCreation5mTokens"):
        totals.pop(k, None)
    totals.pop("cacheCreation1hTokens", None)
    totals["key"] = "Total"
    return rows, totals


def to_json(by: str, rows: list[dict[str, Any]], totals: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: ccusage's top-level names where it has them."""
    list_name, key_field, _, _ = SHAPES[by]
    out_rows = []
    for r in rows:
        r = dict(r)
        r[key_field] = r.pop("key")
        out_rows.append(r)
    t = dict(totals)
    t.pop("key", None)
    return {list_name: out_rows, "totals": t}


def session_label(sid: str, others: set[str]) -> str:
    """The first 8 characters of a session id, as Claude Code's /resume shows it; the whole
    id when another session shown starts the same way (never cut anywhere else)."""
    short = sid[:8]
    if any(o != sid and o.startswith(short) for o in others):
        return sid
    return short


# The session table has no room for the cache columns at 80 columns; CSV and JSON have them.
_SESSION_TOKENS = (("inputTokens", "Input"), ("outputTokens", "Output"), ("totalTokens", "Total"))


def to_table(
    by: str,
    rows: list[dict[str, Any]],
    totals: dict[str, Any],
    *,
    color: bool,
    exact: bool = False,
    tz: tzinfo | None = None,
) -> str:
    """The report as a table at 80 columns; `exact` prints whole counts with separators."""
    _, _, header, title = SHAPES[by]
    extra: list[tuple[str, str]] = []
    tokens: tuple[tuple[str, str], ...] = render.TOKEN_COLUMNS
    note = ""
    if by == "command":
        extra = [("runs", "Runs")]
    elif by == "session":
        ids = {r["key"] for r in rows}
        rows = [
            {**r, "key": session_label(r["key"], ids), "_last": _minute(r["lastActivity"], tz)}
            for r in rows
        ]
        extra = [("projectPath", "Project"), ("_last", "Last activity")]
        tokens = _SESSION_TOKENS
        if rows:
            note = (
                "Total includes cache writes and reads; --csv and --json list them, and full ids.\n"
            )
    elif by == "block":
        rows = [{**r, "_status": "active" if r.get("isActive") else ""} for r in rows]
        extra = [("_status", "Status")]
        active = next((r for r in rows if r.get("isActive")), None)
        if active is not None:
            note = render.active_block(active, exact=exact)
    table = render.render_table(
        title, header, rows, totals, color=color, extra_columns=extra, token_columns=tokens,
        exact=exact,
    )
    return table + note


def _minute(iso: str | None, tz: tzinfo | None) -> str | None:
    """`2026-11-28 17:14` in the report's zone: what a person reads in a column."""
    if iso is None:
        return None
    when = datetime.fromisoformat(iso)
    return (when.astimezone(tz) if tz is not None else when).strftime("%Y-%m-%d %H:%M")


# Columns CSV adds after the key, per report: the table's own extra columns, in full.
_CSV_EXTRA: dict[str, tuple[str, ...]] = {
    "session": ("projectPath", "lastActivity"),
    "command": ("runs",),
    "block": ("isActive",),
}


def to_csv(by: str, rows: list[dict[str, Any]]) -> str:
    return render.render_csv(SHAPES[by][2], rows, extra_fields=_CSV_EXTRA.get(by, ()))
