"""`tokenbudget report --team`: the team's usage from the server, in the local report's forms.

Grouped on the server (one GROUP BY over the usage rows, days in the team's zone); rendered by
the same table and CSV code as the local report, with ccusage's field names in JSON.
"""

from __future__ import annotations

from typing import Any

SHAPES: dict[str, tuple[str, str, str, str]] = {
    "member": ("members", "member", "Member", "Team usage by member"),
    "project": ("projects", "project", "Project", "Team usage by project"),
    "day": ("daily", "date", "Date", "Team usage by day"),
    "week": ("weekly", "week", "Week of", "Team usage by week"),
    "month": ("monthly", "month", "Month", "Team usage by month"),
    "model": ("models", "model", "Model", "Team usage by model"),
    "command": ("commands", "command", "Command", "Team usage by command"),
}
_KEYS = {
    "member": "u.member",
    "project": "u.project",
    "day": "u.day::text",
    "week": "(u.day - ((extract(isodow FROM u.day)::int - 1 - t.week_start + 7) %% 7))::text",
    "month": "to_char(u.day, 'YYYY-MM')",
    "model": "u.model",
    "command": "u.command",
}


def fetch(conn: Any, team: str, by: str, since: str | None = None,
          until: str | None = None) -> list[dict[str, Any]]:
    """One row per group, in the local report's field names, ordered by key."""
    key = _KEYS[by]
    rows = conn.execute(
        f"""
        SELECT {key} AS k, sum(u.input), sum(u.output), sum(u.cache_write), sum(u.cache_read),
               sum(u.cost_micros), array_agg(DISTINCT u.model ORDER BY u.model)
        FROM tokenbudget.usage AS u JOIN tokenbudget.teams AS t ON t.name = u.team
        WHERE u.team = %s AND (%s::date IS NULL OR u.day >= %s::date)
          AND (%s::date IS NULL OR u.day <= %s::date)
        GROUP BY 1 ORDER BY 1
        """,
        (team, since, since, until, until),
    ).fetchall()
    out = []
    for k, inp, outp, cw, cr, micros, models in rows:
        counts = (int(inp), int(outp), int(cw), int(cr))
        out.append({
            "key": k, "inputTokens": counts[0], "outputTokens": counts[1],
            "cacheCreationTokens": counts[2], "cacheReadTokens": counts[3],
            "totalTokens": sum(counts), "totalCost": int(micros) / 1_000_000,
            "costSource": "team", "modelsUsed": list(models),
        })
    return out


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    fields = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens",
              "totalTokens")
    t: dict[str, Any] = {f: sum(r[f] for r in rows) for f in fields}
    t["totalCost"] = round(sum(r["totalCost"] for r in rows), 6)
    t["key"] = "Total"
    return t


def to_json(by: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    list_name, key_field, _, _ = SHAPES[by]
    out = []
    for r in rows:
        r = dict(r)
        r[key_field] = r.pop("key")
        out.append(r)
    t = totals(rows)
    t.pop("key")
    return {list_name: out, "totals": t}


def to_table(by: str, rows: list[dict[str, Any]], *, color: bool, exact: bool = False) -> str:
    from tokenbudget import render

    _, _, header, title = SHAPES[by]
    return render.render_table(title, header, rows, totals(rows), color=color, exact=exact)


def to_csv(by: str, rows: list[dict[str, Any]]) -> str:
    from tokenbudget import render

    return render.render_csv(SHAPES[by][2], rows)
