"""`tokenbudget report`: report data shaped as JSON (ccusage's names), CSV or a table."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from tokenbudget import clock, query, render
from tokenbudget.ledger import Ledger

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


def command_runs(ledger: Ledger, records: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Tokens of every run (turn) of every command, oldest first."""
    runs: dict[str, list[tuple[float, int]]] = {}
    for rec in records.values():
        for t in rec["turns"]:
            runs.setdefault(t[0], []).append((t[1], t[2]))
    for s in ledger["sessions"].values():
        for t in s["t"].values():
            runs.setdefault(t[0], []).append((t[1], t[2]))
    return {cmd: [tokens for _, tokens in sorted(v)] for cmd, v in runs.items()}


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
    groups = query.group(by, query.cells(ledger, records), tz, week_start=week_start, filt=filt)
    rows = [query.row(g) for g in groups]
    if by == "session":
        for g, r in zip(groups, rows, strict=True):
            s = ledger["sessions"].get(g.key) or records.get(g.key) or {}
            r["projectPath"] = r.pop("project", s.get("p"))
            r["lastActivity"] = _iso(s.get("l"), tz)
    elif by == "block":
        t = now if now is not None else clock.now()
        for r in rows:
            start, end = r.pop("startTime"), r.pop("endTime")
            r["startTime"] = _iso(start, tz)
            r["endTime"] = _iso(end, tz)
            r["isActive"] = start <= t < end
            r["key"] = datetime.fromtimestamp(start, tz).strftime("%Y-%m-%d %H:%M")
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


def to_table(by: str, rows: list[dict[str, Any]], totals: dict[str, Any], *, color: bool) -> str:
    _, _, header, title = SHAPES[by]
    extra: list[tuple[str, str]] = []
    if by == "command":
        extra = [("runs", "Runs")]
    return render.render_table(title, header, rows, totals, color=color, extra_columns=extra)


def to_csv(by: str, rows: list[dict[str, Any]]) -> str:
    return render.render_csv(SHAPES[by][2], rows)
