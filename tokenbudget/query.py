"""Report data: usage cells grouped the way a report asks.

Everything is built from hour-by-model cells, which the store gives (`Store.cells`: live
sessions from the ledger's records, folded ones from history), so every grouping adds up to
the same totals. `cells(ledger, records)` is the same reader, for a caller that holds one
ledger read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from tokenbudget.budgets import project_matches
from tokenbudget.ledger import BUCKET
from tokenbudget.ledger_cells import Cell, cells
from tokenbudget.schema import SOURCE_CLAUDE, SOURCE_MIXED, SOURCE_TABLE, SOURCE_UNPRICED
from tokenbudget.usage import ZERO, Usage

__all__ = ["BY_CHOICES", "Cell", "Filter", "Group", "cells", "group", "row", "totals"]

BY_CHOICES = ("day", "week", "month", "session", "project", "command", "model", "block")
BLOCK_HOURS = 5


@dataclass
class Group:
    key: str
    usage: Usage = ZERO
    cost: float = 0.0
    models: dict[str, list[Any]] = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)
    first: int | None = None
    last: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, c: Cell, source: str) -> None:
        self.usage = self.usage + c.usage
        self.cost += c.cost
        m = self.models.setdefault(c.model, [ZERO, 0.0])
        m[0] = m[0] + c.usage
        m[1] += c.cost
        self.sources.add(source)
        self.first = c.hour if self.first is None else min(self.first, c.hour)
        self.last = c.hour if self.last is None else max(self.last, c.hour)


SOURCE_NAMES = {
    SOURCE_TABLE: "table",
    SOURCE_CLAUDE: "claude-code",
    SOURCE_UNPRICED: "unpriced",
    SOURCE_MIXED: "mixed",
}


def _source(sources: set[str]) -> str:
    names = {SOURCE_NAMES.get(s, "table") for s in sources}
    if len(names) == 1:
        return names.pop()
    return "mixed" if names else "table"


def _local_date(hour: int, tz: tzinfo) -> date:
    return datetime.fromtimestamp(hour * BUCKET, tz).date()


def group_key(by: str, c: Cell, tz: tzinfo, week_start: int) -> str:
    if by == "day":
        return _local_date(c.hour, tz).isoformat()
    if by == "week":
        d = _local_date(c.hour, tz)
        return (d - timedelta(days=(d.weekday() - week_start) % 7)).isoformat()
    if by == "month":
        return _local_date(c.hour, tz).strftime("%Y-%m")
    if by == "session":
        return c.sid
    if by == "project":
        return c.project
    if by == "command":
        return c.command
    if by == "model":
        return c.model
    raise ValueError(by)


@dataclass
class Filter:
    since: date | None = None
    until: date | None = None
    project: str | None = None

    def keep(self, c: Cell, tz: tzinfo) -> bool:
        # A folder's subfolders count as that project, as they do for a budget limited to it;
        # a session with no known folder belongs to no project.
        if self.project is not None and not (
            c.project and project_matches(self.project, c.project)
        ):
            return False
        if self.since is not None or self.until is not None:
            d = _local_date(c.hour, tz)
            if self.since is not None and d < self.since:
                return False
            if self.until is not None and d > self.until:
                return False
        return True


def group(
    by: str,
    all_cells: Iterable[tuple[Cell, str]],
    tz: tzinfo,
    *,
    week_start: int = 0,
    filt: Filter | None = None,
) -> list[Group]:
    """Cells grouped and sorted for a report (`block` groups into 5-hour blocks)."""
    kept = [(c, s) for c, s in all_cells if filt is None or filt.keep(c, tz)]
    if by == "block":
        return _blocks(kept, tz)
    groups: dict[str, Group] = {}
    for c, s in kept:
        k = group_key(by, c, tz, week_start)
        g = groups.get(k)
        if g is None:
            g = groups[k] = Group(k)
        g.add(c, s)
        if by == "session":
            g.extra["project"] = c.project
    out = list(groups.values())
    if by in ("day", "week", "month"):
        out.sort(key=lambda g: g.key)
    elif by == "session":
        out.sort(key=lambda g: (g.last or 0, g.key))
    else:
        out.sort(key=lambda g: (-g.usage.total, g.key))
    return out


def _blocks(kept: list[tuple[Cell, str]], tz: tzinfo) -> list[Group]:
    """ccusage's 5-hour blocks: a block starts at the UTC hour of the first activity after the
    last block ended. Buckets are exact here: they never straddle an hour, and a gap of more
    than 5 hours since the last activity always also lies past the block's end. Each block is
    named by its start in the report's zone `tz`."""
    by_bucket: dict[int, list[tuple[Cell, str]]] = {}
    for c, s in kept:
        by_bucket.setdefault(c.hour, []).append((c, s))
    out: list[Group] = []
    current: Group | None = None
    end = 0
    for bucket in sorted(by_bucket):
        t = bucket * BUCKET
        if current is None or t >= end:
            start = t - t % 3600
            end = start + BLOCK_HOURS * 3600
            current = Group(datetime.fromtimestamp(start, tz).isoformat())
            current.extra["startTime"] = start
            current.extra["endTime"] = end
            out.append(current)
        for c, s in by_bucket[bucket]:
            current.add(c, s)
    return out


def totals(groups: Iterable[Group]) -> Group:
    t = Group("Total")
    for g in groups:
        t.usage = t.usage + g.usage
        t.cost += g.cost
        t.sources |= g.sources
        for model, (u, cost) in g.models.items():
            m = t.models.setdefault(model, [ZERO, 0.0])
            m[0] = m[0] + u
            m[1] += cost
    return t


def unpriced(g: Group) -> bool:
    return SOURCE_UNPRICED in g.sources



def row(g: Group) -> dict[str, Any]:
    """A group in ccusage's JSON field names."""
    u = g.usage
    out: dict[str, Any] = {
        "key": g.key,
        "inputTokens": u.input,
        "outputTokens": u.output,
        "cacheCreationTokens": u.cache_write,
        "cacheCreation5mTokens": u.cache_write_5m,
        "cacheCreation1hTokens": u.cache_write_1h,
        "cacheReadTokens": u.cache_read,
        "totalTokens": u.total,
        "totalCost": None if unpriced(g) else round(g.cost, 6),
        "costSource": _source(g.sources),
        "modelsUsed": sorted(g.models),
        "modelBreakdowns": [
            {
                "modelName": model,
                "inputTokens": mu.input,
                "outputTokens": mu.output,
                "cacheCreationTokens": mu.cache_write,
                "cacheReadTokens": mu.cache_read,
                "totalTokens": mu.total,
                "cost": round(cost, 6),
            }
            for model, (mu, cost) in sorted(g.models.items())
        ],
    }
    out.update(g.extra)
    return out
