"""Claude Code's status line: this session's usage and the tightest budget, in one short line.

Claude Code runs the statusLine command after every turn, with JSON about the session on stdin,
and shows the first line it prints. So this is as hot as a hook, and it must never fail loudly:
on any error it prints a neutral line and exits 0.

It takes no lock and writes nothing. The ledger is replaced atomically, so a lock-free read sees
a whole committed ledger; what the hooks have not recorded yet of this session's transcript is
read on top of it, in memory only (the hooks record it for real). Reading those new lines costs
a few milliseconds over the snapshot alone and keeps the line from lagging a turn behind when it
runs before the Stop hook has recorded the turn (bench/statusline_vs_hook.py measures both).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenbudget.budgets import Check, Unit

NEUTRAL = "tokenbudget: –"
DISABLED = "tokenbudget: off"
SEP = " │ "
# A status line must come back quickly: read at most this much new transcript per call; a
# session far behind (the first turn after installing) is caught up by the hooks instead.
MAX_READ = 4 * 1024 * 1024
_KIND_WORDS = {"total": "all-time", "project": "project"}


def _field(data: object, *keys: str) -> str | None:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data if isinstance(data, str) and data and "\x00" not in data else None


def _colored(text: str, fraction: float, color: bool) -> str:
    from tokenbudget.render import RESET, _bar_color

    return f"{_bar_color(fraction)}{text}{RESET}" if color else text


def session_part(tokens: float, cost: float, checks: Sequence[Check], *, color: bool) -> str:
    """`session 18.5k/400k · $0.12`: the session's usage, against its budget when it has one."""
    from tokenbudget.budgets import format_amount

    parts = []
    amounts: tuple[tuple[Unit, float], ...] = (("tokens", tokens), ("usd", cost))
    for unit, used in amounts:
        text = format_amount(used, unit)
        for c in checks:
            if c.budget.unit == unit:
                limit = format_amount(c.limit, c.budget.unit)
                text = _colored(f"{text}/{limit}", c.fraction, color)
                break
        parts.append(text)
    return "session " + " · ".join(parts)


def budget_part(check: Check, *, color: bool) -> str:
    """`daily 62% of 500k · resets in 3h 12m`: one budget, colored by how full it is."""
    from tokenbudget.budgets import format_amount, format_duration
    from tokenbudget.render import _percent

    b = check.budget
    word = _KIND_WORDS.get(b.kind, b.kind)
    text = f"{word} {_colored(_percent(check.fraction), check.fraction, color)}"
    text += f" of {format_amount(check.limit, b.unit)}"
    if check.resets_at is not None:
        text += f" · resets in {format_duration(check.resets_at - check.now)}"
    return text


def compose(
    session: tuple[float, float] | None,
    checks: Sequence[Check],
    *,
    color: bool,
    problem: str | None = None,
) -> str:
    """The whole line from the session's (tokens, cost) and every budget that applies here."""
    parts = []
    if session is not None:
        own = [c for c in checks if c.budget.kind == "session"]
        parts.append(session_part(*session, own, color=color))
    # Command budgets count one run each: between turns there is no run to show.
    others = [c for c in checks if c.budget.kind not in ("session", "command")]
    if others:
        parts.append(budget_part(max(others, key=lambda c: c.fraction), color=color))
    if problem:
        parts.append(f"tokenbudget: {problem}")
    return SEP.join(parts) if parts else NEUTRAL


def status_line(raw: bytes, now: float, *, color: bool, ingest: bool = True) -> str:
    """Read the settings and the ledger for the statusLine JSON in `raw`; return the line."""
    from datetime import datetime

    from tokenbudget import config, enforce, sync
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
    tz = cfg.tz()
    ctx = enforce.Context(
        session_id=ev.session_id,
        project=cwd or (ledger["sessions"].get(ev.session_id or "", {}).get("p")),
        now=datetime.fromtimestamp(now, tz),
        tz=tz,
        week_start=cfg.week_start,
    )
    checks = [c for c, _ in enforce.check_all(budgets, ledger, ctx)]
    session = enforce.session_used(ledger, ev.session_id) if ev.session_id else None
    return compose(session, checks, color=color, problem=problem)


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
