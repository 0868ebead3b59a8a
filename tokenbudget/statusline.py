"""Claude Code's status line: the budgets that matter now and this session's usage, in one line.

Claude Code runs the statusLine command after every turn, with JSON about the session on stdin,
and shows the first line it prints. So this is as hot as a hook, and it must never fail loudly:
on any error it prints a neutral line and exits 0.

The line can never hide the budget that stops you: a budget that blocks now comes first, then
the blocking budgets closest to their limits, then warn-only ones, then the session's usage and
the model. It stays within MAX_WIDTH visible columns by giving up, in this order: the model, the
session's usage, the first budget's burn rate, the last budgets (counted as `+N more`), the first
budget's reset time; a budget that blocks now is never given up. README.md documents the format.

It takes no lock and writes nothing. The ledger is replaced atomically, so a lock-free read sees
a whole committed ledger; what the hooks have not recorded yet of this session's transcript is
read on top of it, in memory only (the hooks record it for real). Reading those new lines costs
a few milliseconds over the snapshot alone and keeps the line from lagging a turn behind when it
runs before the Stop hook has recorded the turn (bench/statusline_vs_hook.py measures both).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenbudget.budgets import Check, Unit

NEUTRAL = "tokenbudget: –"
DISABLED = "tokenbudget: off"
SEP = " │ "
# Claude Code cuts a status line at the terminal's edge; 80 columns fit a default terminal
# beside nothing else, so what matters most must come first and the rest must fit in 80.
MAX_WIDTH = 80
MODEL_WIDTH = 20
# A status line must come back quickly: read at most this much new transcript per call; a
# session far behind (the first turn after installing) is caught up by the hooks instead.
MAX_READ = 4 * 1024 * 1024
_KIND_WORDS = {"total": "all-time", "project": "project"}
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def _field(data: object, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) and data and "\x00" not in data else None


def _number(data: object, *keys: str) -> float | None:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if isinstance(data, bool) or not isinstance(data, int | float):
        return None
    return float(data) if math.isfinite(data) and data >= 0 else None


def visible_width(text: str) -> int:
    """Columns `text` takes on a terminal: colour codes take none, wide characters two."""
    import unicodedata

    width = 0
    for ch in _SGR.sub("", text):
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in "WF" else 1
    return width


def _colored(text: str, fraction: float, color: bool) -> str:
    from tokenbudget.render import RESET, _bar_color

    return f"{_bar_color(fraction)}{text}{RESET}" if color else text


def rank(check: Check) -> tuple[int, float]:
    """Blocks now, then blocking budgets, then warn-only; closest to its limit first in each."""
    tier = 0 if check.blocks else 1 if check.budget.mode == "block" else 2
    return tier, -check.fraction


def ordered(checks: Sequence[Check]) -> list[Check]:
    """The budgets the line shows, in the order it shows them (a stable sort by `rank`)."""
    # Command budgets count one run each: between turns there is no run to show.
    return sorted((c for c in checks if c.budget.kind != "command"), key=rank)


def _state(checks: Sequence[Check], color: bool) -> str:
    if any(c.blocks for c in checks):
        return " " + _colored("BLOCKS", 1.0, color)
    if all(c.budget.mode == "warn" for c in checks):
        return " (warn)"
    return ""


def _per_hour(rate: float | None, unit: Unit) -> str:
    if rate is None or rate <= 0:
        return ""
    from tokenbudget.numfmt import format_amount

    return f" · {format_amount(rate, unit)}/h"


def session_part(
    tokens: float, cost: float, checks: Sequence[Check], *, color: bool, rate: float | None = None
) -> str:
    """`session 18.5k/400k · $0.12`: the session's usage, against its budget when it has one."""
    from tokenbudget.numfmt import format_amount, short_limit

    parts = []
    amounts: tuple[tuple[Unit, float], ...] = (("tokens", tokens), ("usd", cost))
    for unit, used in amounts:
        text = format_amount(used, unit)
        for c in checks:
            if c.budget.unit == unit:
                limit = short_limit(c.limit, c.budget.unit)
                text = _colored(f"{text}/{limit}", c.fraction, color)
                break
        parts.append(text)
    text = "session " + " · ".join(parts)
    if checks:
        text += _state(checks, color) + _per_hour(rate, checks[0].budget.unit)
    return text


def budget_part(
    check: Check, *, color: bool, resets: bool = True, rate: float | None = None
) -> str:
    """`daily 102% of 100k BLOCKS · resets 4h12m · 18k/h`: one budget, colored by how full."""
    from tokenbudget.numfmt import format_duration, format_percent, short_limit
    from tokenbudget.render import escape_controls

    b = check.budget
    short = getattr(b, "short", None)  # a team budget (team/cache.py)
    word = escape_controls(short) if short else _KIND_WORDS.get(b.kind, b.kind)
    text = f"{word} {_colored(format_percent(check.fraction), check.fraction, color)}"
    text += f" of {short_limit(check.limit, b.unit)}" + _state([check], color)
    if resets and check.resets_at is not None:
        text += f" · resets {format_duration(check.resets_at - check.now).replace(' ', '')}"
    return text + _per_hour(rate, b.unit)


def model_part(model: str | None, context: float | None, *, color: bool) -> str:
    """`Opus 5.5 · ctx 12%`: the model Claude Code names and how full its context window is."""
    from tokenbudget.numfmt import format_percent
    from tokenbudget.render import escape_controls, shorten_middle

    parts = []
    if model:
        parts.append(shorten_middle(escape_controls(model), MODEL_WIDTH))
    if context is not None:
        parts.append("ctx " + _colored(format_percent(context / 100), context / 100, color))
    return " · ".join(parts)


def _lines(
    session: tuple[float, float] | None,
    checks: Sequence[Check],
    *,
    color: bool,
    problem: str | None,
    rate: float | None,
    model: str,
    team_age: str = "",
) -> Iterator[str]:
    """Every candidate line, from the fullest to the barest, in the order parts are given up."""
    shown = ordered(checks)
    own = [c for c in shown if c.budget.kind == "session"]
    # One part per budget, the session's budgets sharing the session's part.
    units: list[list[Check]] = []
    for c in shown:
        if c.budget.kind != "session":
            units.append([c])
        elif c is own[0]:
            units.append(own)
    keep = sum(1 for i, u in enumerate(units) if i == 0 or any(c.blocks for c in u))
    tokens, cost = session or (0.0, 0.0)

    def line(n: int, *, usage: bool, burn: bool, resets: bool, with_model: bool,
             age: bool = True) -> str:
        parts = []
        for i, unit in enumerate(units[:n]):
            r = rate if i == 0 and burn else None
            if unit[0].budget.kind == "session":
                parts.append(session_part(tokens, cost, unit, color=color, rate=r))
            else:
                first = i == 0 and resets  # the first budget's reset is the one to wait for
                parts.append(budget_part(unit[0], color=color, resets=first, rate=r))
        if n < len(units):
            parts.append(f"+{len(units) - n} more")
        if usage and session is not None and not own:
            parts.append(session_part(tokens, cost, (), color=color))
        if problem:
            parts.append(f"tokenbudget: {problem}")
        if age and team_age:
            parts.append(team_age)
        if with_model and model:
            parts.append(model)
        return SEP.join(parts) if parts else NEUTRAL

    yield line(len(units), usage=True, burn=True, resets=True, with_model=True)
    yield line(len(units), usage=True, burn=True, resets=True, with_model=False)
    yield line(len(units), usage=False, burn=True, resets=True, with_model=False)
    # Blocking budgets after the first keep their place: only the ones behind them go.
    for n in range(len(units), keep - 1, -1):
        yield line(n, usage=False, burn=False, resets=True, with_model=False)
    yield line(keep, usage=False, burn=False, resets=False, with_model=False)
    yield line(keep, usage=False, burn=False, resets=False, with_model=False, age=False)


def compose(
    session: tuple[float, float] | None,
    checks: Sequence[Check],
    *,
    color: bool,
    problem: str | None = None,
    rate: float | None = None,
    model: str = "",
    width: int = MAX_WIDTH,
    team_age: str = "",
) -> str:
    """The line within `width` columns: budgets by `rank`, the session's usage, the model, and
    `team_age` (from `team_age_part`), given up just before the first budget's reset time."""
    last = NEUTRAL
    for last in _lines(session, checks, color=color, problem=problem, rate=rate, model=model,
                       team_age=team_age):
        if visible_width(last) <= width:
            return last
    return last  # only budgets that block now (and a broken config) are left: they all stay


def team_age_part(age: float | None, stale_after: float) -> str:
    """`team totals 3m old` when the team's cached totals are older than `stale_after` seconds
    (its syncs fail) or were never fetched; '' otherwise."""
    from datetime import timedelta

    from tokenbudget.numfmt import format_duration

    if age is None:
        return "team totals never fetched"
    if age <= stale_after:
        return ""
    return f"team totals {format_duration(timedelta(seconds=age)).replace(' ', '')} old"


def status_line(raw: bytes, now: float, *, color: bool, ingest: bool = True) -> str:
    """Read the settings and the ledger for the statusLine JSON in `raw`; return the line."""
    from tokenbudget import burn, config, enforce, engine, sync
    from tokenbudget.errors import ConfigError
    from tokenbudget.hook import parse_event

    ev = parse_event("StatusLine", raw)  # checks session id and transcript path like a hook
    data = _json_object(raw)
    cwd = ev.cwd or _field(data, "workspace", "current_dir")
    root = _field(data, "workspace", "project_dir") or os.environ.get("CLAUDE_PROJECT_DIR") or cwd
    problem = None
    cfg = config.Config()
    budgets: list[Any] = []
    try:
        cfg = config.load_config()
        budgets = config.effective_budgets(cfg, Path(root) if root else None)
    except ConfigError:
        problem = "config broken, budgets not enforced"  # the hooks say what is wrong
    ledger = sync.open_store().snapshot()
    if ingest and ev.transcript is not None and ev.session_id is not None:
        # A transcript gone missing leaves the committed ledger, which is still right.
        with contextlib.suppress(OSError):
            sync.sync_session(
                sync.open_store(),
                ev.transcript,
                ev.session_id,
                prices=cfg.prices,
                ledger=ledger,
                max_bytes=MAX_READ,
            )
    # Between turns: measured like a hook event outside any turn.
    ctx = engine.event_context("StatusLine", ledger, cfg, now, session_id=ev.session_id, cwd=cwd)
    checks = engine.measure(budgets, ledger, ctx)
    team_age = ""
    if cfg.team is not None:  # the team's budgets as the hooks see them (team/cache.py)
        from tokenbudget.team import cache

        team_checks, age = cache.listed(cfg, ledger, ctx, engine.measure)
        checks += team_checks
        team_age = team_age_part(age, cache.STALE_AFTER)
    session = enforce.session_used(ledger, ev.session_id) if ev.session_id else None
    shown = ordered(checks)
    rate = burn.last_hour(ledger, shown[0].budget, now, ev.session_id) if shown else None
    model = model_part(
        _field(data, "model", "display_name"),
        _number(data, "context_window", "used_percentage"),
        color=color,
    )
    return compose(session, checks, color=color, problem=problem, rate=rate, model=model,
                   team_age=team_age)


def _json_object(raw: bytes) -> dict[str, Any]:
    import json

    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def main() -> None:
    """Entry point: print one line and exit 0, whatever happens."""
    try:
        from tokenbudget import clock
        from tokenbudget.hook import read_stdin

        if os.environ.get("TOKENBUDGET_DISABLE") == "1":  # the hooks enforce nothing either
            read_stdin()
            sys.stdout.write(DISABLED + "\n")
            return
        color = "NO_COLOR" not in os.environ  # Claude Code renders ANSI: on unless refused
        line = status_line(read_stdin(), clock.now(), color=color)
    except Exception as e:  # a status line must never break Claude Code's screen
        try:
            from tokenbudget.hook import log

            log(f"statusline: {type(e).__name__}: {e}")
        except Exception:
            pass
        line = NEUTRAL
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
