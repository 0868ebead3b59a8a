"""The `tokenbudget` command: translates arguments and calls the package, nothing more.

Every failure reaches the user as one line on stderr and a non-zero exit (2 for a wrong
command line): OneLineGroup translates them all in one place.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from datetime import UTC, date
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tokenbudget import __version__, clock, console
from tokenbudget.errors import ConfigError, LockTimeout, SettingsError, TokenbudgetError

if TYPE_CHECKING:
    from tokenbudget.resident import Setup


def _fail(message: str, code: int) -> NoReturn:
    """Print `tokenbudget: <message>` as exactly one line on stderr and exit with `code`."""
    from tokenbudget.render import escape_controls

    # Messages quote paths and names from transcripts and settings: a newline or an escape in
    # one must neither break the single line nor reach the terminal.
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    click.echo(f"tokenbudget: {escape_controls(text)}", err=True)
    sys.exit(code)


def _usage_message(e: click.UsageError) -> str:
    """click's usage error as a clause of our one line, pointing at the command's --help."""
    # click lists choices one per line, indented with tabs: fold them into the one line.
    lines = (part.strip() for part in e.format_message().splitlines())
    text = " ".join(part for part in lines if part).removesuffix(".")
    if text[:1].isupper() and text[1:2].islower():  # "No such option" -> "no such option"
        text = text[0].lower() + text[1:]
    if e.ctx is None:
        return text
    see = f"`{e.ctx.command_path} --help`"
    # After "Did you mean '--mode'?" a new sentence starts.
    return f"{text} See {see}" if text.endswith("?") else f"{text}; see {see}"


def _os_message(e: OSError) -> str:
    if e.filename is not None and e.strerror:
        where = str(e.filename) + (f" -> {e.filename2}" if e.filename2 is not None else "")
        return f"{where}: {e.strerror}"
    return str(e) or type(e).__name__


class OneLineGroup(click.Group):
    """The top-level group: every failure leaves as one `tokenbudget: <message>` line.

    click's standalone mode prints a Usage/Try/Error block and lets anything else out as a
    traceback; run without it and translate here, once, for every command.
    """

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:  # a caller that wants click's exceptions gets them unchanged
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            if e.ctx is not None and type(e).__name__ == "NoArgsIsHelpError":
                e.show()  # a bare `tokenbudget` or `tokenbudget budget` asks for the help
                sys.exit(e.exit_code)
            _fail(_usage_message(e), e.exit_code)  # exit 2: the command line was wrong
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:  # Ctrl-C, or end of input at a prompt
            _fail("aborted", 1)
        except TokenbudgetError as e:
            _fail(str(e), 1)
        except OSError as e:  # e.g. a data folder that cannot be created or read
            _fail(_os_message(e), 1)
        except Exception as e:
            if os.environ.get("TOKENBUDGET_DEBUG"):
                raise
            _fail(
                f"unexpected error: {type(e).__name__}: {e} "
                "(TOKENBUDGET_DEBUG=1 shows the traceback; please report it)",
                1,
            )
        # --help and --version come back as their exit code; a command returns None.
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _config() -> Any:
    from tokenbudget import config

    return config.load_config()


def _existing_folder(path: str, option: str) -> str:
    """`path` resolved, or a usage error (exit 2) when no such folder exists."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        what = "is not a folder" if resolved.exists() else "does not exist"
        raise click.BadParameter(f"{resolved} {what}", param_hint=option)
    return str(resolved)


def _project_root() -> Path:
    """The project the current folder is in: where its budgets file is, as the hook finds it."""
    from tokenbudget import config

    return Path(config.find_project_root(os.getcwd()))


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tokenbudget")
def main() -> None:
    """Exact token and dollar budgets for Claude Code, enforced through its hooks."""


@main.command("sync")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def sync_cmd(as_json: bool) -> None:
    """Record everything new in Claude Code's transcripts (backfills on first run)."""
    cfg = console.config_for_reading()
    _, report = console.record_new(cfg, quiet=as_json)
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
def rebuild() -> None:
    """Set the ledger aside and count everything again from the transcripts."""
    from tokenbudget import sync

    cfg = _config()
    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, 30.0))
    kept, report = sync.rebuild(
        store, prices=cfg.prices, retention_days=cfg.retention_days, tz=cfg.tz()
    )
    console.notices(report.notices)
    # Whatever sync.rebuild named the file it set aside: a healthy ledger is not a corrupt one.
    where = f"; the previous ledger is kept as {kept.name}" if kept else ""
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
    type=click.Choice(
        ["day", "week", "month", "session", "project", "command", "model", "block", "member"]
    ),
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
    "--exact", is_flag=True, help="Whole numbers with separators (1,234,567), not 1.2M."
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one self-contained HTML page (charts, top sessions and commands) to FILE.",
)
@click.option("--team", "for_team", is_flag=True,
              help="The team's usage, from the team database (--by member too).")
def report(
    by: str,
    since: str | None,
    until: str | None,
    project: str | None,
    as_json: bool,
    as_csv: bool,
    exact: bool,
    html_file: Path | None,
    for_team: bool,
) -> None:
    """Usage and cost, grouped by day, week, month, session, project, command, model or block."""
    from dataclasses import replace

    from tokenbudget import charts, config, history, query, render
    from tokenbudget import report as rep
    from tokenbudget.store import held

    if sum((as_json, as_csv, html_file is not None)) > 1:
        raise click.UsageError("choose one of --json, --csv and --html")
    if exact and (as_json or as_csv or html_file is not None):
        raise click.UsageError("--exact is for the table: --json and --csv are exact already")
    if for_team or by == "member":
        from tokenbudget.team import commands as team_commands

        if not for_team:
            raise click.UsageError("--by member goes with --team")
        click.echo(team_commands.team_report(by, since, until, project, as_json, as_csv, exact,
                                             html_file), nl=False)
        return
    filt = query.Filter(
        since=_parse_date(since, "--since"),
        until=_parse_date(until, "--until"),
        project=str(Path(project).expanduser().resolve()) if project else None,
    )
    cfg = console.config_for_reading()
    store, _ = console.record_new(cfg, reading=True)
    ledger = store.snapshot()
    records = history.read_records(ledger)  # a period still live is the ledger's
    view = held(ledger, records)  # one read, for every part of the report
    if filt.project is not None and not os.path.isdir(filt.project):
        # A deleted project's usage is still worth a report; a typo's is not.
        only = query.Filter(project=filt.project)
        seen = any(only.keep(c, UTC) for c, _ in view.cells())
        if not seen:
            raise click.BadParameter(
                f"{filt.project} does not exist and no usage was recorded in it",
                param_hint="--project",
            )
    tz = cfg.tz()
    root = _project_root()
    try:
        budgets_here = config.effective_budgets(cfg, root)
    except ConfigError as e:  # the project's budget file: the report needs no budgets either
        click.echo(
            f"tokenbudget: warning: {console.shown(str(e))}; its budgets are not shown", err=True
        )
        budgets_here = list(cfg.budgets)
    if html_file is not None:
        from tokenbudget import html_report

        here = str(root)
        checks = html_report.budget_checks(
            ledger,
            budgets_here,
            tz,
            project=here,
            week_start=cfg.week_start,
            session_id=view.latest_session(here),
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
    rows, totals = rep.build(
        by, ledger, records, tz, week_start=cfg.week_start, filt=filt, now=clock.now()
    )
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
        click.echo(rep.to_table(by, rows, totals, color=color, exact=exact, tz=tz), nl=False)
        # The chart prints command names as they came from transcripts and budget files;
        # escaped on both sides, a command still finds its budget's limit.
        stats = [replace(s, command=render.escape_controls(s.command)) for s in stats]
        shown = [
            b.replace(name=render.escape_controls(b.name)) if b.kind == "command" and b.name else b
            for b in budgets_here
        ]
        chart = charts.for_report(
            by, rows, budgets=shown, stats=stats, project=filt.project, color=color
        )
        if chart:
            click.echo("\n" + chart, nl=False)


@main.command()
def statusline() -> None:
    """One line for Claude Code's statusLine: this session and the tightest budget."""
    from tokenbudget import statusline as line

    line.main()  # prints a quiet line on any failure and exits 0: never an error line


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
        name = _existing_folder(name, "NAME")
    return name, args[1]


class _LimitCommand(click.Command):
    """`budget set`: `-5` is a limit to refuse, where click would call it an unknown option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            if re.match(r"-[\d.$]", e.option_name):
                raise click.UsageError(
                    f"a limit must be more than 0, not {e.option_name}", ctx
                ) from None
            raise


def _budget_arguments(command: Any) -> Any:
    """KIND, its name and limit, --mode, --warn-at and --project: what `set` and `simulate`
    take alike."""
    for decorate in reversed((
        click.argument("kind", type=click.Choice(KIND_CHOICES)),
        click.argument("args", nargs=-1, required=True),
        click.option(
            "--mode",
            type=click.Choice(["block", "warn"]),
            default="block",
            show_default=True,
            help="block: refuse and stop; warn: only tell.",
        ),
        click.option("--warn-at", default="80%", show_default=True, help="When to warn, e.g. 80%."),
        click.option(
            "--project", "project", help="Limit a day/week/month/5h/total budget to a folder."
        ),
    )):
        command = decorate(command)
    return command


@budget.command("set", cls=_LimitCommand)
@_budget_arguments
@click.option(
    "--dry-run", is_flag=True, help="Do not set it: replay your history through it instead."
)
@click.option("--team", "for_team", is_flag=True,
              help="Set it in the team database, for every member (with --project: a git"
              " remote URL or repository name).")
@click.option("--per-member", is_flag=True, help="With --team: the limit of each member.")
def budget_set(
    kind: str, args: tuple[str, ...], mode: str, warn_at: str, project: str | None,
    dry_run: bool, for_team: bool, per_member: bool,
) -> None:
    """Set a budget: KIND [NAME] LIMIT, e.g. `daily 200k`, `command /test 50k`, `total $20`."""
    from tokenbudget import budgets, config

    if for_team or per_member:
        from tokenbudget.team import commands as team_commands

        if not for_team:
            raise click.UsageError("--per-member goes with --team")
        click.echo(team_commands.set_team_budget(kind, args, mode, warn_at, project, per_member))
        return
    b = _budget_from_args(kind, args, mode, warn_at, project)
    if dry_run:
        _replay(b, None, None, as_json=False)
        return
    cfg = config.load_config()
    config.save_config(config.set_budget(cfg, b))
    click.echo(f"Set {console.shown(b.id)}: {budgets.format_limit(b.limit, b.unit)} ({b.mode}).")


def _budget_from_args(
    kind: str, args: tuple[str, ...], mode: str, warn_at: str, project: str | None
) -> Any:
    from tokenbudget import budgets

    name, limit_text = _name_and_limit(kind, args)
    # A bad limit is a wrong command line, as `-5` is (exit 2), not a failure of the config.
    folder = _existing_folder(project, "--project") if project else None
    try:
        limit, unit = budgets.parse_limit(limit_text)
        return budgets.Budget(
            kind,  # type: ignore[arg-type]
            limit,
            unit,
            name=name,
            mode=mode,  # type: ignore[arg-type]
            warn_at=budgets.parse_warn_at(warn_at),
            project=folder,
        )
    except ConfigError as e:
        raise click.UsageError(str(e)) from None


def _recorded_history() -> tuple[Any, Any]:
    """The config and every recorded turn and request, brought up to date first."""
    from tokenbudget import history, simulate, stops

    cfg = console.config_for_reading()
    store, _ = console.record_new(cfg, reading=True)
    ledger = store.snapshot()
    return cfg, simulate.history_of(ledger, history.read_records(ledger), stops.read())


def _day_start(day: date | None, tz: Any, after: bool = False) -> float | None:
    """Where the local `day` begins (or ends, `after`), as a daily budget's window does."""
    if day is None:
        return None
    from datetime import datetime, time

    from tokenbudget import budgets

    noon = datetime.combine(day, time(12), tzinfo=tz)
    start, end = budgets.window("daily", noon, tz)
    edge = end if after else start
    return edge.timestamp() if edge is not None else None


def _replay(b: Any, since: date | None, until: date | None, *, as_json: bool) -> None:
    from tokenbudget import simulate, simulate_view

    cfg, recorded = _recorded_history()
    tz = cfg.tz()
    result = simulate.simulate(
        b,
        recorded,
        tz,
        cfg.week_start,
        since=_day_start(since, tz),
        until=_day_start(until, tz, after=True),
    )
    if as_json:
        click.echo(json.dumps(simulate.to_json(result, tz), indent=2))
    else:
        click.echo(simulate_view.render(result, tz), nl=False)


@budget.command("simulate", cls=_LimitCommand)
@_budget_arguments
@click.option("--since", help="First day to show (YYYY-MM-DD, local time).")
@click.option("--until", help="Last day to show (YYYY-MM-DD, local time).")
@click.option("--json", "as_json", is_flag=True, help="Every window and the summary as JSON.")
def budget_simulate(
    kind: str,
    args: tuple[str, ...],
    mode: str,
    warn_at: str,
    project: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """What a budget would have done over your recorded history, without setting it."""
    b = _budget_from_args(kind, args, mode, warn_at, project)
    first, last = _parse_date(since, "--since"), _parse_date(until, "--until")
    if first is not None and last is not None and first > last:
        raise click.BadParameter(f"{since} is after --until {until}", param_hint="--since")
    _replay(b, first, last, as_json=as_json)


SUGGEST_KINDS = ["daily", "weekly", "monthly", "5h", "session", "command"]


@budget.command("suggest")
@click.argument("kind", required=False, type=click.Choice(SUGGEST_KINDS))
@click.option("--json", "as_json", is_flag=True, help="The suggestions as JSON.")
def budget_suggest(kind: str | None, as_json: bool) -> None:
    """Limits from your own history (the p90 of your last 30 windows) and what each would do."""
    from tokenbudget import budgets, simulate, simulate_view

    cfg, recorded = _recorded_history()
    tz = cfg.tz()
    wanted: list[Any] = []
    for k in [kind] if kind else SUGGEST_KINDS[:-1]:
        if k == "command":
            for name in simulate.commands_of(recorded):
                wanted.append(budgets.Budget("command", 1, name=name))
        else:
            wanted.append(budgets.Budget(k, 1))  # type: ignore[arg-type]
    found = [simulate.suggest(b, recorded, tz, cfg.week_start) for b in wanted]
    if as_json:
        click.echo(json.dumps(simulate_view.suggestions_json(found, tz), indent=2))
    elif not found:
        click.echo("No slash commands recorded yet.")
    else:
        click.echo(simulate_view.render_suggestions(found, tz), nl=False)


@budget.command("rm")
@click.argument("kind", type=click.Choice(KIND_CHOICES))
@click.argument("name", required=False)
@click.option("--project", "project", help="The folder the budget is limited to.")
@click.option(
    "--unit",
    type=click.Choice(["tokens", "usd"]),
    help="Remove only the budget in tokens or only the one in dollars (default: both).",
)
@click.option("--team", "for_team", is_flag=True,
              help="Remove it from the team database (with --project: a git remote URL or"
              " repository name).")
@click.option("--per-member", is_flag=True, help="With --team: the per-member budget.")
def budget_rm(kind: str, name: str | None, project: str | None, unit: str | None,
              for_team: bool, per_member: bool) -> None:
    """Remove a budget: KIND [NAME]; says exactly which budgets it removed."""
    from tokenbudget import budgets, config

    if for_team or per_member:
        from tokenbudget.team import commands as team_commands

        if not for_team:
            raise click.UsageError("--per-member goes with --team")
        if unit is not None or (name is not None and kind != "command"):
            raise click.UsageError("team budgets are removed by KIND [NAME] and scope alone")
        click.echo(team_commands.remove_team_budget(kind, name, project, per_member))
        return
    if kind == "project" and name:
        name = str(Path(name).expanduser().resolve())
    proj = str(Path(project).expanduser().resolve()) if project else None
    cfg = config.load_config()
    try:
        new = config.remove_budget(cfg, kind, name, proj, unit)
    except ConfigError:
        raise ConfigError(_no_such_budget(cfg.budgets, kind, name, proj, unit)) from None
    config.save_config(new)
    left = {b.key for b in new.budgets}
    for b in cfg.budgets:
        if b.key not in left:
            click.echo(f"Removed {console.shown(b.id)}: {budgets.format_limit(b.limit, b.unit)}.")


def _no_such_budget(
    have: tuple[Any, ...], kind: str, name: str | None, project: str | None, unit: str | None
) -> str:
    """Why nothing matched, and the exact command for each budget of that kind there is."""
    from tokenbudget import budgets

    same_kind = [b for b in have if b.kind == kind]
    asked = kind if name is None else f"{kind} {name}"
    asked += " budget" + (f" in {unit}" if unit else "")
    if project:
        asked += f" for --project {project}"
    elif any(b.project is not None for b in same_kind):
        asked += " without --project"
    if not same_kind:
        return f"no {asked} to remove"
    found = ", ".join(f"{b.id} ({budgets.format_limit(b.limit, b.unit)})" for b in same_kind)
    commands: list[str] = []
    for b in same_kind:
        words = ["tokenbudget", "budget", "rm", kind]
        words += [b.name] if b.name is not None else []
        words += ["--project", b.project] if b.project is not None else []
        words += ["--unit", b.unit] if unit else []
        command = f"`{shlex.join(words)}`"
        if command not in commands:  # a tokens and a usd budget share one without --unit
            commands.append(command)
    there = "there is" if len(same_kind) == 1 else "there are"
    return f"no {asked}; {there} {found}: use {' or '.join(commands)}"


@budget.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the budgets as JSON.")
@click.option("--team", "for_team", is_flag=True, help="The team's budgets, from its database.")
def budget_list(as_json: bool, for_team: bool) -> None:
    """List the budgets that apply here (yours and this project's), or the team's."""
    from tokenbudget import budgets, config

    if for_team:
        from tokenbudget.team import commands as team_commands

        click.echo(team_commands.list_team_budgets(as_json), nl=False)
        return
    cfg = config.load_config()
    found = config.effective_budgets(cfg, _project_root())
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
        limit = budgets.format_limit(b.limit, b.unit)
        click.echo(f"{console.shown(b.id):<30} {limit:>14}  {b.mode}{extra}{src}")


@main.command()
def allow() -> None:
    """Let the next refused prompt through once (its turn may use one more budget's worth)."""

    from tokenbudget import sync

    cfg = _config()
    store = sync.open_store(lock_timeout=max(cfg.lock_timeout_seconds, 10.0))
    store.grant_allow(clock.now())
    click.echo(
        "The next prompt that a budget would refuse (within the hour) passes once; its turn may"
        " use one more budget's worth."
    )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the budgets' state as JSON.")
@click.option("--session", "session_id", help="Measure session budgets for this session.")
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1, saying why on stderr, if a blocking budget here is used up or (with "
    "--session) that session was refused or stopped by a budget; else exit 0.",
)
def status(as_json: bool, session_id: str | None, check: bool) -> None:
    """Every budget with used, remaining, when it resets and whether it blocks now."""
    from tokenbudget import config, engine, render, status_view
    from tokenbudget.store import held

    try:
        cfg = _config()
    except ConfigError as e:
        if check and as_json:  # a script reading the JSON gets JSON, and the exit code
            click.echo(json.dumps({"ok": False, "error": str(e)}, indent=2))
            sys.exit(1)
        raise
    try:
        # The hooks' own bound: what was last committed answers when the lock stays busy.
        store, _ = console.record_new(cfg, wait=cfg.lock_timeout_seconds, reading=True)
    except LockTimeout as e:
        # As the hooks do: what was last committed still answers; say what it may miss.
        from tokenbudget import sync

        click.echo(f"tokenbudget: {e}; showing the ledger as last committed", err=True)
        store = sync.open_store()
    ledger = store.snapshot()
    tz = cfg.tz()
    root = _project_root()
    found = config.effective_budgets(cfg, root)
    if check:
        if session_id == "":
            raise click.BadParameter("give a session id", param_hint="--session")
        _check(ledger, found, session_id, str(root), cfg, as_json=as_json)
        return
    if session_id is None:
        session_id = held(ledger).latest_session(str(root))
    # Command budgets are per run: they are shown against the last run of their command.
    ctx = engine.context(cfg, clock.now(), session_id=session_id, project=str(root), listing=True)
    checks = engine.measure(found, ledger, ctx)
    team_note = None
    out: dict[str, Any] = {}
    if cfg.team is not None:  # the team's budgets as the hooks see them (team/cache.py)
        from tokenbudget.team import cache

        team_checks, age = cache.listed(cfg, ledger, ctx, engine.measure)
        checks += team_checks
        team_note = status_view.team_line(cfg.team["team"], age)
        out["team"] = {"name": cfg.team["team"], "totalsAgeSeconds": age}
    if as_json:
        click.echo(json.dumps(
            {"budgets": engine.summary(checks), "session": session_id, **out}, indent=2))
        return
    click.echo(
        status_view.render_status(checks, color=render.use_color(sys.stdout), tz=tz,
                                  team=team_note), nl=False
    )


def _check(
    ledger: Any, found: Any, session_id: str | None, project: str, cfg: Any, *, as_json: bool
) -> None:
    """`status --check`: what a script runs after `claude -p`, which shows it no stop reason."""
    from tokenbudget import engine, messages
    from tokenbudget import stops as kept
    from tokenbudget.store import held

    tz = cfg.tz()
    # Without --session the next prompt starts a new session, and every command run starts
    # from zero: what is used up for it is a window, project or total budget.
    ctx = engine.context(cfg, clock.now(), session_id=session_id, project=project)
    over = engine.used_up(engine.measure(found, ledger, ctx))
    stops = kept.read(session_id) if session_id is not None else []
    reasons = [messages.stop_line(b, tz) for b in stops] + [
        messages.used_up_reason(c, tz) for c in over
    ]
    known = session_id is None or held(ledger).has_session(session_id) or bool(stops)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": not reasons,
                    "session": session_id,
                    "sessionKnown": known,
                    "usedUp": engine.summary(over),
                    "stops": stops,
                },
                indent=2,
            )
        )
    else:
        for reason in reasons:
            click.echo(reason, err=True)
        if not known:
            click.echo(
                f"tokenbudget: no session {console.shown(str(session_id))} in the ledger (a typo,"
                f" not started yet, or idle for over {cfg.retention_days:g} days); only the"
                " budgets were checked",
                err=True,
            )
    if reasons:
        sys.exit(1)


# --- installing into Claude Code -----------------------------------------------------------------


def _settings_file(scope: str, settings: str | None) -> Path:
    from tokenbudget import claude_settings

    if settings:
        return Path(settings).expanduser()
    return claude_settings.settings_path(scope, _project_root())


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
@click.option(
    "--resident",
    is_flag=True,
    help="Answer PostToolBatch and Stop from one warm local process (http hooks on 127.0.0.1); "
    "installing without it goes back to command hooks.",
)
@click.option(
    "--python",
    metavar="PATH",
    help="Run the hooks with this Python (it must have tokenbudget). Default: this "
    "tokenbudget's own; with --scope project, `tokenbudget-hook` found on each user's PATH.",
)
def install(
    scope: str,
    settings: str | None,
    statusline: bool,
    force: bool,
    no_sync: bool,
    python: str | None,
    resident: bool,
) -> None:
    """Register tokenbudget's hooks in Claude Code's settings (run again to upgrade)."""
    import shutil

    from tokenbudget import claude_settings
    from tokenbudget import resident as resident_mod

    path = _settings_file(scope, settings)
    # A --scope file lives where Claude Code looks, so its folders may be made; an explicit
    # path in a folder that does not exist is far more likely a typo than a wish.
    if settings and not os.path.isdir(path.parent):
        raise SettingsError(
            f"cannot use --settings {path}: the folder {path.parent} does not exist "
            "(create it first, or use --scope)"
        )
    # A project's settings.json is checked in and runs on teammates' machines, where this
    # interpreter's path does not exist (the hook would exit 127 and enforce nothing): there
    # the hooks find `tokenbudget-hook` on PATH, and say so when it is missing.
    portable = python is None and scope == "project" and not settings
    if resident:
        _check_resident_target(path, scope == "project" and not settings)
    hook_python = None if portable else (python or sys.executable)
    if hook_python is not None:
        from tokenbudget.doctor import interpreter_runs

        # Hooks that cannot start would exit 2 ("Unknown option: -P" before Python 3.11),
        # which Claude Code reads as "block": refuse, change nothing.
        runs, detail = interpreter_runs(hook_python)
        if not runs:
            raise SettingsError(
                f"cannot run the hooks with {hook_python}: {detail} (it needs Python 3.11+ "
                "with tokenbudget installed)"
            )
    # The quick start where the interpreter allows it: hooks skip `site` (see site_paths).
    paths = claude_settings.site_paths(hook_python) if hook_python is not None else None
    answerer = old = None
    exposed = False
    if resident:
        # The same port and key as the other settings files that send to the answerer, unless
        # another process holds or has held the port (it has had the key): then new ones.
        old = resident_mod.load()
        exposed = old is not None and (resident_mod.probe(old)[0] == "stranger"
                                       or resident_mod.exposed(old))
        answerer = old if old is not None and not exposed else resident_mod.create()
    others = _others_to_retarget(path, answerer) if answerer is not None else []
    result = claude_settings.install(path, hook_python, paths, answerer)
    if answerer is not None:
        if answerer is not old:
            resident_mod.save(answerer)  # a running answerer sees its key change and exits
            resident_mod.forget_exposed()
        elif result.changed:
            # The same key written again: a running answerer sees its file change and exits,
            # and the next hook starts one that runs the code which wrote these hooks (an older
            # one would take an async SessionStart for a waited one and say its notes there).
            resident_mod.save(answerer)
        if old is not None and exposed:
            click.echo(f"Another process held 127.0.0.1:{old.port} and may have the answerer's"
                       f" key: a new port (127.0.0.1:{answerer.port}) and key.")
        _retarget_others(others, answerer)
        resident_mod.set_senders([*resident_mod.senders(), str(path)])
    else:
        _resident_off_if_unused(path, "The resident answerer is off: every event is a command"
                                      " hook again.")
    click.echo(
        f"{'Registered' if result.changed else 'Already registered:'} hooks in {path}"
        + (f" (backup: {result.backup.name})" if result.backup else "")
        + "."
    )
    if portable:
        click.echo(
            "They run `tokenbudget-hook` from PATH: whoever uses this project needs tokenbudget "
            "installed; without it, Claude Code tells them budgets are not enforced."
        )
        if shutil.which(claude_settings.PORTABLE_HOOK) is None:
            click.echo(
                "warning: `tokenbudget-hook` is not on your PATH, so the hooks will not run "
                "for you either (see `tokenbudget doctor`).",
                err=True,
            )
    if answerer is not None:
        click.echo(
            f"PostToolBatch and Stop are answered by the resident answerer on "
            f"127.0.0.1:{answerer.port} (started by the next session; `tokenbudget doctor` "
            "shows it)."
        )
    if statusline:
        command = claude_settings.statusline_command(hook_python)
        sl = claude_settings.set_statusline(path, command, force=force)
        click.echo("Status line set." if sl.changed else "Status line already set.")
    if not no_sync:
        cfg = _config()
        _, report = console.record_new(cfg)
        click.echo(
            f"Recorded {report.new_requests} past request(s) from "
            f"{report.files_read} transcript(s)."
        )


def _http_hook_files(also: Path) -> list[tuple[Path, set[tuple[int, str]]]]:
    """The settings files of the user's (user settings, this folder's project and local
    files, `also`, and every file `install --resident` recorded, wherever it is) that hold our
    http hooks, with where those send (port, key). Recorded files that are gone or hold no
    http hooks of ours any more are dropped from the record."""
    from tokenbudget import claude_settings, resident

    recorded = resident.senders()
    found: list[tuple[Path, set[tuple[int, str]]]] = []
    keep: set[str] = set()
    seen: set[str] = set()
    candidates = [also, *(p for _, p in claude_settings.settings_files(_project_root())),
                  *(Path(p) for p in recorded)]
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            targets = claude_settings.http_targets(path)
        except SettingsError:
            keep.add(real)  # Claude Code cannot read it either; doctor names it
            continue
        if targets:
            keep.add(real)
            found.append((path, targets))
    resident.set_senders([p for p in recorded if os.path.realpath(p) in keep])
    return found


def _resident_off_if_unused(path: Path, said: str) -> None:
    """Turn the answerer off once no settings file of the user's sends it events."""
    from tokenbudget import resident

    users = [str(p) for p, _ in _http_hook_files(path)]
    if users:
        if resident.load() is not None:
            click.echo(f"The resident answerer stays on: {', '.join(users)} still send(s) it"
                       " PostToolBatch and Stop.")
        return
    resident.forget_exposed()  # of a key that goes now: nothing would ever replace it
    if resident.remove():
        click.echo(said)


def _others_to_retarget(path: Path, answerer: Setup) -> list[Path]:
    """Every other settings file whose http hooks send elsewhere than `answerer` (a new port
    and key): events sent elsewhere would go unchecked. Checked before anything is written:
    the key goes into none that others can read."""
    others = []
    for other, targets in _http_hook_files(path):
        if os.path.realpath(other) == os.path.realpath(path):
            continue
        if targets != {(answerer.port, answerer.key)}:
            _check_private(other, f" or `tokenbudget install --settings {shlex.quote(str(other))}`"
                                  " there for command hooks")
            others.append(other)
    return others


def _retarget_others(others: list[Path], answerer: Setup) -> None:
    from tokenbudget import claude_settings

    for other in others:
        claude_settings.retarget(other, answerer)
        click.echo(f"Pointed the http hooks in {other} at the answerer's new port and key.")


def _check_resident_target(path: Path, shared: bool) -> None:
    """The answerer's key goes into the settings file: never one that others read or share."""
    if shared:
        raise SettingsError(
            "--resident is for your own settings (--scope user or local): a project's "
            "settings are shared, and the answerer's key would be too"
        )
    _check_private(path, "")


def _check_private(path: Path, instead: str) -> None:
    import stat

    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return  # created private (0600)
    except OSError as e:
        raise SettingsError(f"cannot read {path}: {e.strerror}") from None
    if mode & 0o077:
        raise SettingsError(
            f"cannot put the resident answerer's key in {path}: other users may read it "
            f"(mode {mode:04o}); run `chmod 600 {shlex.quote(str(path))}` first{instead}"
        )


@main.command()
@SCOPE_OPTION
@SETTINGS_OPTION
def uninstall(scope: str, settings: str | None) -> None:
    """Remove tokenbudget's hooks (and status line) from Claude Code's settings; keep the ledger."""
    from tokenbudget import claude_settings

    path = _settings_file(scope, settings)
    # The status line first: its record of what it replaced may be unreadable, and failing
    # then must leave everything as it was, not the hooks gone and the status line there.
    sl = claude_settings.remove_statusline(path)
    result = claude_settings.uninstall(path)
    _resident_off_if_unused(path, "The resident answerer is off (it exits within a second).")
    changed = result.changed or sl.changed
    click.echo(
        f"Removed tokenbudget from {path}." if changed else f"Nothing of tokenbudget in {path}."
    )
    if sl.restored is not None:
        shown = sl.restored.get("command") if isinstance(sl.restored, dict) else sl.restored
        click.echo(f"Restored the status line it had replaced: {console.shown(str(shown))}")
    if result.deleted or sl.deleted:
        click.echo(f"Deleted {path.name}: there was none before tokenbudget was installed.")
    removed = sl.backup_removed or result.backup_removed
    if removed is not None:
        click.echo(f"Deleted {removed.name}: nothing of tokenbudget is left to undo.")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """Check where the hooks are registered and that everything works; exits 1 if not."""
    from tokenbudget import doctor as doc

    report = doc.run(_project_root())
    click.echo(doc.to_json(report) if as_json else doc.render(report), nl=as_json)
    if not report.ok:
        sys.exit(1)


def _add_team_commands() -> None:
    from tokenbudget.team.commands import team

    main.add_command(team)


_add_team_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
