"""`tokenbudget team ...`: thin commands over the team store (pgstore.py), sync.py and cache.py.

psycopg is imported only when a command talks to the server (db.py imports it lazily).
"""

from __future__ import annotations

import contextlib
import getpass
import json
from typing import Any

import click

from tokenbudget import clock
from tokenbudget.errors import TeamError


@click.group()
def team() -> None:
    """Share budgets with a team, on PostgreSQL (pip install 'tokenbudget[team]')."""


@team.command("init")
@click.argument("dsn")
@click.option("--team", "team_name", help="Also create this team.")
@click.option("--timezone", default="UTC", show_default=True,
              help="The team's calendar zone (with --team).")
@click.option("--week-start", type=click.IntRange(0, 6), default=0, show_default=True,
              help="0 = Monday ... 6 = Sunday (with --team).")
def init(dsn: str, team_name: str | None, timezone: str, week_start: int) -> None:
    """Create or migrate the team schema in the database DSN names."""
    from tokenbudget.team import db, schema

    with db.session(dsn) as conn:
        done = schema.migrate(conn)
        click.echo(f"Schema up to date ({schema.MIGRATIONS[-1][0]})"
                   + (f"; applied {', '.join(done)}." if done else "; nothing to apply."))
        if team_name:
            made = db.create_team(conn, team_name, timezone, week_start)
            click.echo(f"Team {team_name}: {'created' if made else 'exists already'}.")


def default_member() -> str:
    from tokenbudget.team.sync import machine_name

    return f"{getpass.getuser()}@{machine_name()}"


@team.command("join")
@click.argument("dsn")
@click.option("--team", "team_name", required=True, help="The team to join.")
@click.option("--member", help="Your name in the team (default: user@host).")
def join(dsn: str, team_name: str, member: str | None) -> None:
    """Join a team: its budgets apply here and this machine's usage counts for it from now."""
    from tokenbudget import config
    from tokenbudget.store import open_store
    from tokenbudget.team import db, schema, sync

    member = member or default_member()
    with db.session(dsn) as conn:
        if schema.applied(conn) != [name for name, _ in schema.MIGRATIONS]:
            raise TeamError(f"the team database {db.mask(dsn)} is not set up or not up to"
                            " date: run `tokenbudget team init DSN` first")
        db.team_info(conn, team_name)
    cfg = config.load_config()
    if cfg.team is not None and cfg.team["team"] != team_name:
        raise TeamError(f"already in team {cfg.team['team']}: `tokenbudget team leave` first")
    config.save_config(cfg.replace(team={"dsn": dsn, "team": team_name, "member": member}))
    with open_store(cfg.lock_timeout_seconds).transaction() as ledger:
        ledger["team"] = team_name
    click.echo(f"Joined team {team_name} as {member}.")
    try:
        sync.sync(dict(config.load_config().team or {}))
    except TeamError as e:
        click.echo(f"tokenbudget: warning: first sync failed: {e}", err=True)


@team.command("leave")
@click.option("--force", is_flag=True, help="Leave even with usage not pushed yet.")
def leave(force: bool) -> None:
    """Leave the team: its budgets no longer apply here."""
    import os

    from tokenbudget import config
    from tokenbudget.store import open_store
    from tokenbudget.team import cache

    cfg = config.load_config()
    if cfg.team is None:
        raise TeamError("not in a team")
    with open_store(cfg.lock_timeout_seconds).transaction() as ledger:
        waiting = len(ledger["outbox"])
        if waiting and not force:
            raise TeamError(f"{waiting} records are not pushed yet: `tokenbudget team sync`"
                            " first, or `team leave --force` to drop them")
        ledger["team"] = ""
        ledger["outbox"] = {}
    config.save_config(cfg.replace(team=None))
    for path in (cache.cache_file(), cache.state_file()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    click.echo(f"Left team {cfg.team['team']}.")


def _team_cfg() -> dict[str, str]:
    from tokenbudget import config

    cfg = config.load_config()
    if cfg.team is None:
        raise TeamError("not in a team: `tokenbudget team join DSN --team NAME`")
    return dict(cfg.team)


@team.command("sync")
@click.option("--background", is_flag=True, hidden=True)
def sync_cmd(background: bool) -> None:
    """Push this machine's usage and fetch the team's totals and budgets."""
    from tokenbudget import cli
    from tokenbudget.team import sync

    team_cfg = _team_cfg()
    cli._sync(cli._config_for_reading())  # record what is new in the transcripts first
    try:
        done = sync.sync(team_cfg)
    except TeamError:
        if background:
            return  # kept in the state file for `team status`; the outbox waits
        raise
    if background:
        return
    if done.get("busy"):
        click.echo("Another sync is running.")
    else:
        click.echo(f"Pushed {done['pushed']} records ({done['changed']} new or grown);"
                   f" totals {'fetched' if done['pulled'] else 'not fetched'}.")


def status_data(team_cfg: dict[str, str], now: float, *, reach: bool = True) -> dict[str, Any]:
    """What `team status` shows, as data."""
    from tokenbudget.store import open_store
    from tokenbudget.team import cache, db, sync
    from tokenbudget.team.pgstore import open_team_store

    state = sync.read_state()
    data = cache.read_json(cache.cache_file()) or {}
    ledger = open_store().load()
    reachable = None
    error = state.get("error")
    if reach:
        try:
            open_team_store(team_cfg, timeout=3).calendar()
            reachable = True
        except TeamError as e:
            reachable, error = False, str(e)
    fetched = data.get("fetched")
    return {
        "team": team_cfg["team"], "member": team_cfg["member"],
        "dsn": db.mask(team_cfg["dsn"]), "reachable": reachable,
        "lastPush": state.get("last_push"), "lastPull": state.get("last_pull"),
        "unpushed": len(ledger["outbox"]),
        "lagSeconds": None if fetched is None else max(0.0, now - float(fetched)),
        "budgets": len(data.get("budgets") or []), "error": error,
    }


def _ago(now: float, at: Any) -> str:
    if at is None:
        return "never"
    seconds = max(0, round(now - float(at)))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def render_status(d: dict[str, Any], now: float) -> str:
    """`team status` as text."""
    reach = {True: "reachable", False: "NOT reachable", None: "not checked"}[d["reachable"]]
    # The lag: what the hooks here decide on is this old (plus the outbox, counted at once).
    lag = "never fetched"
    if d["lagSeconds"] is not None:
        lag = f"fetched {_ago(now, now - d['lagSeconds'])}"
    lines = [
        f"Team {d['team']} as {d['member']}",
        f"Server: {d['dsn']} ({reach})",
        f"Last push: {_ago(now, d['lastPush'])}; last pull: {_ago(now, d['lastPull'])}",
        f"Unpushed records: {d['unpushed']}",
        f"Team totals: {lag}",
        f"Team budgets: {d['budgets']}",
    ]
    if d["error"]:
        lines.append(f"Last error: {d['error']}")
    return "\n".join(lines) + "\n"


@team.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def status(as_json: bool) -> None:
    """Server reachable, last push and pull, unpushed records, how old the totals are."""
    now = clock.now()
    d = status_data(_team_cfg(), now)
    if as_json:
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(render_status(d, now), nl=False)


TEAM_KINDS = ("total", "daily", "weekly", "monthly", "5h", "session", "command")


def _check_kind(kind: str, project: str | None) -> None:
    from tokenbudget.team.cache import MEMBER_LOCAL

    if kind == "project":
        raise click.UsageError("a team's all-time budget for a project is"
                               " `budget set total LIMIT --team --project NAME`")
    if kind not in TEAM_KINDS:
        raise click.UsageError(f"team budgets are {', '.join(TEAM_KINDS)}, not {kind}")
    if kind in MEMBER_LOCAL and project:
        raise click.UsageError(f"a team {kind} budget is each member's own: no --project")


def _split_args(kind: str, args: tuple[str, ...]) -> tuple[str, str]:
    """(command, limit) from `[NAME] LIMIT`: a NAME for command budgets alone."""
    from tokenbudget import budgets

    if kind == "command":
        if len(args) != 2:
            raise click.UsageError("team command budgets take NAME LIMIT, e.g."
                                   " `budget set command /deploy 50k --team`")
        return budgets.normalize_command(args[0]), args[1]
    if len(args) != 1:
        raise click.UsageError(f"team budgets take LIMIT, e.g. `budget set {kind} 2M --team`")
    return "", args[0]


def set_team_budget(kind: str, args: tuple[str, ...], mode: str, warn_at: str,
                    project: str | None, per_member: bool) -> str:
    """`budget set KIND LIMIT --team [--per-member | --project NAME]`; what to print."""
    from tokenbudget import budgets
    from tokenbudget.errors import ConfigError
    from tokenbudget.team.cache import MEMBER_LOCAL
    from tokenbudget.team.pgstore import open_team_store

    _check_kind(kind, project)
    command, limit_text = _split_args(kind, args)
    scope, name = _scope_of(project, per_member or kind in MEMBER_LOCAL)
    try:
        limit, unit = budgets.parse_limit(limit_text)
        warn = budgets.parse_warn_at(warn_at)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    team_cfg = _team_cfg()
    row = {"kind": kind, "scope": scope, "name": name, "limit": limit, "unit": unit,
           "mode": mode, "warn_at": warn, "command": command}
    open_team_store(team_cfg).set_budget(row)
    import contextlib

    from tokenbudget.team import sync

    with contextlib.suppress(TeamError):
        sync.sync(team_cfg)  # this machine enforces it at once
    where = {"team": "", "member": " per member", "project": f" for {name}"}[scope]
    if kind in MEMBER_LOCAL:
        where = f" {command}" if command else ""
        where += " (each member's own)"
    return (f"Set team {team_cfg['team']}'s {kind} budget{where}:"
            f" {budgets.format_limit(limit, unit)} ({mode}).")


def _scope_of(project: str | None, per_member: bool) -> tuple[str, str]:
    from tokenbudget.team.sync import normalize_remote

    if per_member and project:
        raise click.UsageError("--per-member and --project: choose one")
    name = ""
    if project:
        name = normalize_remote(project) if ("/" in project or ":" in project) else project
    return ("member" if per_member else "project" if project else "team"), name


def _team_budget_id(row: dict[str, Any]) -> str:
    from tokenbudget.team.cache import TeamBudget

    return TeamBudget(row).id


def list_team_budgets(as_json: bool) -> str:
    """`budget list --team`: the team's budgets, from the server (else as last fetched)."""
    from tokenbudget import budgets
    from tokenbudget.team import cache
    from tokenbudget.team.pgstore import open_team_store

    team_cfg = _team_cfg()
    note = ""
    try:
        rows = open_team_store(team_cfg, timeout=3).budgets()
    except TeamError as e:
        data = cache.read_json(cache.cache_file()) or {}
        if data.get("team") != team_cfg["team"] or "budgets" not in data:
            raise
        rows = list(data["budgets"])
        age = cache.team_age(data, clock.now())
        note = (f"tokenbudget: warning: {e}; these are the team's budgets as fetched"
                f" {cache.age(age or 0.0)} ago")
    if note:
        click.echo(note, err=True)
    if as_json:
        out = [{"id": _team_budget_id(r), "kind": r["kind"], "scope": r["scope"],
                "project": r["name"] or None, "command": r.get("command") or None,
                "limit": r["limit"], "unit": r["unit"],
                "mode": r["mode"], "warn_at": r["warn_at"]} for r in rows]
        return json.dumps(out, indent=2) + "\n"
    if not rows:
        return (f"Team {team_cfg['team']} has no budgets. Set one with e.g."
                " `tokenbudget budget set monthly '$5000' --team`.\n")
    lines = []
    for r in rows:
        extra = f", warn at {r['warn_at']:.0%}" if r["mode"] == "block" else ""
        limit = budgets.format_limit(float(r["limit"]), r["unit"])
        lines.append(f"{_team_budget_id(r):<30} {limit:>14}  {r['mode']}{extra}")
    return "\n".join(lines) + "\n"


def remove_team_budget(kind: str, command: str | None, project: str | None,
                       per_member: bool) -> str:
    """`budget rm KIND [NAME] --team [--per-member | --project NAME]`; what to print."""
    from tokenbudget import budgets
    from tokenbudget.team import sync
    from tokenbudget.team.cache import MEMBER_LOCAL
    from tokenbudget.team.pgstore import open_team_store

    _check_kind(kind, project)
    if kind == "command" and command is None:
        raise click.UsageError("name the command: `budget rm command /deploy --team`")
    command = budgets.normalize_command(command) if kind == "command" and command else ""
    scope, name = _scope_of(project, per_member or kind in MEMBER_LOCAL)
    key = (scope, name, command)
    team_cfg = _team_cfg()
    team_store = open_team_store(team_cfg)
    with team_store.connected():
        have = [r for r in team_store.budgets() if r["kind"] == kind]
        gone = next((r for r in have if (r["scope"], r["name"], r["command"]) == key), None)
        if gone is None or not team_store.remove_budget(kind, *key):
            asked = _team_budget_id({"kind": kind, "scope": scope, "name": name, "limit": 1,
                                     "unit": "tokens", "mode": "block", "warn_at": 0.8,
                                     "command": command})
            there = ", ".join(_team_budget_id(r) for r in have)
            raise TeamError(f"team {team_cfg['team']} has no {asked} budget to remove"
                            + (f" (it has: {there})" if there else ""))
    with contextlib.suppress(TeamError):
        sync.sync(team_cfg)  # this machine stops enforcing it at once
    return (f"Removed {_team_budget_id(gone)}:"
            f" {budgets.format_limit(float(gone['limit']), gone['unit'])}.")


def doctor_findings(team_cfg: dict[str, str], now: float) -> list[tuple[bool, str, str, str]]:
    """`doctor`'s team checks: (ok, title, detail, fix)."""
    import importlib.util

    from tokenbudget.store import open_store

    if importlib.util.find_spec("psycopg") is None:
        return [(False, "team mode needs psycopg", f"team {team_cfg['team']}",
                 "pip install 'tokenbudget[team]' (in tokenbudget's environment)")]
    d = status_data(team_cfg, now)
    out = []
    if d["reachable"]:
        out.append((True, "team database", f"{d['dsn']}: team {d['team']} as {d['member']}", ""))
    else:
        out.append((False, "team database not reachable", d["error"] or "",
                    "check the DSN and the server; budgets use the last fetched totals"))
    if open_store().load()["team"] != team_cfg["team"]:
        out.append((False, "this machine's usage is not collected for the team", "",
                    f"tokenbudget team join DSN --team {team_cfg['team']}"))
    lag = "never fetched"
    if d["lagSeconds"] is not None:
        lag = f"fetched {_ago(now, now - d['lagSeconds'])}"
    out.append((True, "team totals", f"{lag}; {d['unpushed']} record(s) not pushed yet", ""))
    return out


def team_report(by: str, since: str | None, until: str | None, project: str | None,
                as_json: bool, as_csv: bool, exact: bool, html_file: Any) -> str:
    """`report --team`: the text to print."""
    import sys

    from tokenbudget import render
    from tokenbudget.team import report as team_rep
    from tokenbudget.team.pgstore import open_team_store

    if by not in team_rep.SHAPES:
        raise click.UsageError(f"--team reports go --by {'|'.join(team_rep.SHAPES)}")
    if project is not None:
        raise click.UsageError("--team reports take no --project: --by project shows each")
    for value, name in ((since, "--since"), (until, "--until")):
        if value is not None:
            from datetime import date

            try:
                date.fromisoformat(value)
            except ValueError:
                raise click.BadParameter(f"{value!r} is not a date like 2026-11-28",
                                         param_hint=name) from None
    team_cfg = _team_cfg()
    if html_file is not None:
        return _team_html(team_cfg, since, until, html_file)
    rows = open_team_store(team_cfg).usage_by(by, since, until)
    if as_json:
        return json.dumps(team_rep.to_json(by, rows), indent=2) + "\n"
    if as_csv:
        return team_rep.to_csv(by, rows)
    return team_rep.to_table(by, rows, color=render.use_color(sys.stdout), exact=exact)


def _team_html(team_cfg: dict[str, str], since: str | None, until: str | None,
               html_file: Any) -> str:
    """`report --team --html FILE`: fetch, measure the team's budgets now, write the page."""
    import os
    from datetime import datetime

    from tokenbudget import config, engine, html_report
    from tokenbudget.store import open_store
    from tokenbudget.team import cache, sync
    from tokenbudget.team import html as team_html
    from tokenbudget.team import report as team_rep
    from tokenbudget.team.pgstore import open_team_store

    now = clock.now()
    team_store = open_team_store(team_cfg)
    with team_store.connected():
        groups = {"days": team_store.usage_by("day", since, until)}
        for by in ("member", "project", "model", "command"):
            groups[team_rep.SHAPES[by][0]] = team_store.usage_by(by, since, until)
        data = sync.snapshot(team_store, team_cfg,
                             dict(sync.read_state().get("projects") or {}))
    cfg = config.load_config()
    ctx = engine.context(cfg, now, project=os.getcwd(), listing=True)
    checks = cache.measure(data, team_cfg["member"], open_store().load(),
                           ctx)
    daily = [c.budget for c in checks
             if c.budget.kind == "daily" and getattr(c.budget, "reach", "") == "team"]
    scope = f"{since or 'the first day'} to {until or 'today'}" if since or until else ""
    generated = datetime.fromtimestamp(now, cfg.tz()).strftime("%Y-%m-%d %H:%M %Z").strip()
    html_report.write_page(html_file, team_html.render_team_page(
        team_cfg["team"], generated, groups, checks, daily, scope=scope))
    return f"Wrote {html_file}.\n"
