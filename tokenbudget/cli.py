"""The `tokenbudget` command: translates arguments and calls the package, nothing more.

Every expected failure reaches the user as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import date
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from tokenbudget import __version__
from tokenbudget.errors import TokenbudgetError

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Turn our expected failures into `tokenbudget: <message>` and exit status 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TokenbudgetError as e:
            click.echo(f"tokenbudget: {e}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _config() -> Any:
    from tokenbudget import config

    return config.load_config()


def _notices(notices: list[str]) -> None:
    for n in notices:
        click.echo(n, err=True)


def _sync(cfg: Any, quiet: bool = True) -> Any:
    from tokenbudget import sync

    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, 30.0))
    report = sync.sync_all(store, prices=cfg.prices, retention_days=cfg.retention_days)
    _notices(report.notices)
    if not quiet:
        for err in report.errors[:5]:
            click.echo(f"tokenbudget: skipped {err}", err=True)
    return store, report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenbudget")
def main() -> None:
    """Exact token and dollar budgets for Claude Code, enforced through its hooks."""


@main.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@one_line_errors
def sync_cmd(as_json: bool) -> None:
    """Record everything new in Claude Code's transcripts (backfills on first run)."""
    cfg = _config()
    _, report = _sync(cfg, quiet=as_json)
    data = {
        "filesRead": report.files_read,
        "newRequests": report.new_requests,
        "foldedSessions": report.folded,
        "skippedLines": report.skipped,
        "errors": report.errors,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        skipped = sum(report.skipped.values())
        line = f"Read {report.files_read} transcript(s): {report.new_requests} new request(s)"
        if skipped:
            line += f", {skipped} line(s) skipped"
        click.echo(line + ".")


@main.command()
@one_line_errors
def rebuild() -> None:
    """Set the ledger aside and count everything again from the transcripts."""
    from tokenbudget import sync

    cfg = _config()
    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, 30.0))
    kept, report = sync.rebuild(store, prices=cfg.prices, retention_days=cfg.retention_days)
    _notices(report.notices)
    where = f" (the old one is kept as {kept.name})" if kept else ""
    click.echo(f"Rebuilt the ledger from {report.files_read} transcript(s){where}.")


def _parse_date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            from datetime import datetime

            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise click.BadParameter(f"{value!r} is not a date like 2026-11-28", param_hint=name)


@main.command()
@click.option(
    "--by",
    type=click.Choice(["day", "week", "month", "session", "project", "command", "model", "block"]),
    default="day",
    show_default=True,
    help="How to group the usage.",
)
@click.option("--since", help="First day to include (YYYY-MM-DD, local time).")
@click.option("--until", help="Last day to include (YYYY-MM-DD, local time).")
@click.option("--project", help="Only this project folder.")
@click.option("--json", "as_json", is_flag=True, help="JSON with ccusage's field names.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with whole numbers.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one self-contained HTML page (charts, top sessions and commands) to FILE.",
)
@one_line_errors
def report(
    by: str,
    since: str | None,
    until: str | None,
    project: str | None,
    as_json: bool,
    as_csv: bool,
    html_file: Path | None,
) -> None:
    """Usage and cost, grouped by day, week, month, session, project, command, model or block."""
    from tokenbudget import charts, config, history, query, render
    from tokenbudget import report as rep

    if sum((as_json, as_csv, html_file is not None)) > 1:
        raise click.UsageError("choose one of --json, --csv and --html")
    cfg = _config()
    store, _ = _sync(cfg)
    filt = query.Filter(
        since=_parse_date(since, "--since"),
        until=_parse_date(until, "--until"),
        project=str(Path(project).expanduser().resolve()) if project else None,
    )
    ledger = store.snapshot()
    records = history.read_records()
    tz = cfg.tz()
    budgets_here = config.effective_budgets(cfg, Path.cwd())
    if html_file is not None:
        from tokenbudget import html_report, status_view

        here = str(Path.cwd())
        checks = html_report.budget_checks(
            ledger,
            budgets_here,
            tz,
            project=here,
            week_start=cfg.week_start,
            session_id=status_view.latest_session(ledger, here),
        )
        page = html_report.build_page(
            ledger,
            records,
            budgets_here,
            tz,
            checks=checks,
            week_start=cfg.week_start,
            filt=filt,
            scope=filt.project or "all projects",
        )
        html_report.write_page(html_file, page)
        click.echo(f"Wrote {html_file}.")
        return
    rows, totals = rep.build(by, ledger, records, tz, week_start=cfg.week_start, filt=filt)
    stats = charts.ledger_run_stats(ledger, records) if by == "command" else []
    if as_json:
        doc = rep.to_json(by, rows, totals)
        if by == "command":
            extra = charts.stats_json(stats)  # mean, p90 and largest run of each command
            for row in doc["commands"]:
                row.update(extra.get(row["command"], {}))
        click.echo(json.dumps(doc, indent=2))
    elif as_csv:
        click.echo(rep.to_csv(by, rows), nl=False)
    else:
        color = render.use_color(sys.stdout)
        click.echo(rep.to_table(by, rows, totals, color=color), nl=False)
        chart = charts.for_report(
            by, rows, budgets=budgets_here, stats=stats, project=filt.project, color=color
        )
        if chart:
            click.echo("\n" + chart, nl=False)


@main.command()
def statusline() -> None:
    """One line for Claude Code's statusLine: this session and the tightest budget."""
    from tokenbudget import statusline as line

    line.main()  # prints a quiet line on any failure and exits 0: never one_line_errors


# --- budgets ------------------------------------------------------------------------------------

KIND_CHOICES = ["total", "daily", "weekly", "monthly", "5h", "session", "command", "project"]


@main.group()
def budget() -> None:
    """Set, list and remove budgets."""


def _name_and_limit(kind: str, args: tuple[str, ...]) -> tuple[str | None, str]:
    needs_name = kind in ("command", "project")
    if len(args) != (2 if needs_name else 1):
        what = "NAME LIMIT" if needs_name else "LIMIT"
        example = {"command": "/test 50k", "project": ". 2M"}.get(kind, "200k")
        raise click.UsageError(f"{kind} budgets take {what}, e.g. `budget set {kind} {example}`")
    if not needs_name:
        return None, args[0]
    name = args[0]
    if kind == "project":
        name = str(Path(name).expanduser().resolve())
    return name, args[1]


@budget.command("set")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.argument("args", nargs=-1, required=True)
@click.option(
    "--mode",
    type=click.Choice(["block", "warn"]),
    default="block",
    show_default=True,
    help="block: refuse and stop; warn: only tell.",
)
@click.option("--warn-at", default="80%", show_default=True, help="When to warn, e.g. 80%.")
@click.option("--project", "project", help="Limit a day/week/month/5h/total budget to a folder.")
@one_line_errors
def budget_set(
    kind: str, args: tuple[str, ...], mode: str, warn_at: str, project: str | None
) -> None:
    """Set a budget: KIND [NAME] LIMIT, e.g. `daily 200k`, `command /test 50k`, `total $20`."""
    from tokenbudget import budgets, config

    name, limit_text = _name_and_limit(kind, args)
    limit, unit = budgets.parse_limit(limit_text)
    b = budgets.Budget(
        kind,  # type: ignore[arg-type]
        limit,
        unit,
        name=name,
        mode=mode,  # type: ignore[arg-type]
        warn_at=budgets.parse_warn_at(warn_at),
        project=str(Path(project).expanduser().resolve()) if project else None,
    )
    cfg = config.load_config()
    config.save_config(config.set_budget(cfg, b))
    click.echo(f"Set {b.id}: {budgets.format_limit(b.limit, b.unit)} ({b.mode}).")


@budget.command("rm")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.argument("name", required=False)
@click.option("--project", "project", help="The folder the budget is limited to.")
@one_line_errors
def budget_rm(kind: str, name: str | None, project: str | None) -> None:
    """Remove a budget: KIND [NAME]."""
    from tokenbudget import config

    if kind == "project" and name:
        name = str(Path(name).expanduser().resolve())
    proj = str(Path(project).expanduser().resolve()) if project else None
    cfg = config.load_config()
    config.save_config(config.remove_budget(cfg, kind, name, proj))
    click.echo(f"Removed the {kind}{' ' + name if name else ''} budget.")


@budget.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the budgets as JSON.")
@one_line_errors
def budget_list(as_json: bool) -> None:
    """List the budgets that apply here (yours and this project's)."""
    from tokenbudget import budgets, config

    cfg = config.load_config()
    found = config.effective_budgets(cfg, Path.cwd())
    if as_json:
        click.echo(
            json.dumps([{**b.to_json(), "id": b.id, "source": b.source} for b in found], indent=2)
        )
        return
    if not found:
        click.echo("No budgets. Set one with e.g. `tokenbudget budget set daily 500k`.")
        return
    for b in found:
        extra = f", warn at {b.warn_at:.0%}" if b.mode == "block" else ""
        src = " (project file)" if b.source == "project" else ""
        click.echo(f"{b.id:<30} {budgets.format_limit(b.limit, b.unit):>14}  {b.mode}{extra}{src}")


@main.command()
@one_line_errors
def allow() -> None:
    """Let the next prompt through once, whatever the budgets."""
    import time

    from tokenbudget import sync

    cfg = _config()
    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, 10.0))
    with store.transaction() as ledger:
        ledger["allow"] = {"pending": True, "at": time.time()}
    click.echo("The next prompt will pass once, whatever the budgets.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the budgets' state as JSON.")
@click.option("--session", "session_id", help="Measure session budgets for this session.")
@one_line_errors
def status(as_json: bool, session_id: str | None) -> None:
    """Every budget with used, remaining, when it resets and whether it blocks now."""
    from datetime import datetime

    from tokenbudget import config, enforce, render, status_view

    cfg = _config()
    store, _ = _sync(cfg)
    ledger = store.snapshot()
    tz = cfg.tz()
    found = config.effective_budgets(cfg, Path.cwd())
    if session_id is None:
        session_id = status_view.latest_session(ledger, str(Path.cwd()))
    ctx = enforce.Context(
        session_id=session_id,
        project=str(Path.cwd()),
        now=datetime.now(tz),
        tz=tz,
        week_start=cfg.week_start,
        listing=True,
    )
    # Command budgets are per run: they are shown against the last run of their command.
    checks = enforce.check_all(found, ledger, ctx)
    if as_json:
        click.echo(
            json.dumps(
                {"budgets": enforce.summary(ledger, checks), "session": session_id}, indent=2
            )
        )
        return
    click.echo(
        status_view.render_status(checks, color=render.use_color(sys.stdout), tz=tz), nl=False
    )


# --- installing into Claude Code -----------------------------------------------------------------


def _settings_file(scope: str, settings: str | None) -> Path:
    from tokenbudget import claude_settings

    if settings:
        return Path(settings).expanduser()
    return claude_settings.settings_path(scope, Path.cwd())


SCOPE_OPTION = click.option(
    "--scope",
    type=click.Choice(["user", "project", "local"]),
    default="user",
    show_default=True,
    help="user: ~/.claude/settings.json; project: .claude/settings.json; "
    "local: .claude/settings.local.json.",
)
SETTINGS_OPTION = click.option("--settings", help="Use this settings file instead of --scope.")


@main.command()
@SCOPE_OPTION
@SETTINGS_OPTION
@click.option("--statusline", is_flag=True, help="Also show tokenbudget in the status line.")
@click.option("--force", is_flag=True, help="With --statusline: replace another status line.")
@click.option("--no-sync", is_flag=True, help="Do not backfill the ledger from past sessions.")
@one_line_errors
def install(scope: str, settings: str | None, statusline: bool, force: bool, no_sync: bool) -> None:
    """Register tokenbudget's hooks in Claude Code's settings (run again to upgrade)."""
    import shlex

    from tokenbudget import claude_settings

    path = _settings_file(scope, settings)
    python = sys.executable
    result = claude_settings.install(path, python)
    click.echo(
        f"{'Registered' if result.changed else 'Already registered:'} hooks in {path}"
        + (f" (backup: {result.backup.name})" if result.backup else "")
        + "."
    )
    if statusline:
        command = f"{shlex.quote(python)} -m tokenbudget.statusline"
        sl = claude_settings.set_statusline(path, command, force=force)
        click.echo("Status line set." if sl.changed else "Status line already set.")
    if not no_sync:
        cfg = _config()
        _, report = _sync(cfg)
        click.echo(
            f"Recorded {report.new_requests} past request(s) from "
            f"{report.files_read} transcript(s)."
        )


@main.command()
@SCOPE_OPTION
@SETTINGS_OPTION
@one_line_errors
def uninstall(scope: str, settings: str | None) -> None:
    """Remove tokenbudget's hooks (and status line) from Claude Code's settings; keep the ledger."""
    from tokenbudget import claude_settings

    path = _settings_file(scope, settings)
    result = claude_settings.uninstall(path)
    sl = claude_settings.remove_statusline(path)
    changed = result.changed or sl.changed
    click.echo(
        f"Removed tokenbudget from {path}." if changed else f"Nothing of tokenbudget in {path}."
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@one_line_errors
def doctor(as_json: bool) -> None:
    """Check where the hooks are registered and that everything works; exits 1 if not."""
    from tokenbudget import doctor as doc

    report = doc.run(Path.cwd())
    click.echo(doc.to_json(report) if as_json else doc.render(report), nl=as_json)
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
