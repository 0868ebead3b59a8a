"""`budget list --team`, `budget rm --team` and `report --team --html`, against a real server."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from tests.pgcluster import Cluster
from tests.team.test_team_schema import AT, row
from tests.team.test_team_sync import joined
from tests.test_cli import one_line, run
from tokenbudget.team import db, schema


@pytest.fixture
def team_home(private_home: Path, pg_dsn: str, recorded_day: float) -> Path:
    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
        db.push(conn, "core", [
            row("a", 1200, 1_500_000, member="ann@a", output=300),
            row("b", 40000, 250_000, member="<b>bob</b>@b", project="web",
                command="/deploy"),
            row("c", 10, 10, member="ann@a", at=AT - 86400 * 3),
        ])
    joined(private_home, pg_dsn, "ann@a")
    for args in (("daily", "2M"), ("monthly", "$300", "--per-member"),
                 ("weekly", "5M", "--project", "https://git.example/acme/app.git",
                  "--mode", "warn")):
        assert run("budget", "set", *args, "--team", home=private_home).returncode == 0
    return private_home


def test_budget_list_team_shows_the_teams_budgets(team_home: Path) -> None:
    proc = run("budget", "list", "--team", home=team_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "team daily                          2M tokens  block, warn at 80%\n"
        "team monthly per member               $300.00  block, warn at 80%\n"
        "team weekly git.example/acme/app      5M tokens  warn\n"
    )
    listed = json.loads(run("budget", "list", "--team", "--json", home=team_home).stdout)
    assert listed[2] == {"id": "team weekly git.example/acme/app", "kind": "weekly",
                         "scope": "project", "project": "git.example/acme/app", "command": None,
                         "limit": 5_000_000.0, "unit": "tokens", "mode": "warn",
                         "warn_at": 0.8}


def test_budget_list_team_with_the_server_down_shows_the_fetched_ones(
    team_home: Path, pg_cluster: Cluster
) -> None:
    pg_cluster.stop()
    proc = run("budget", "list", "--team", home=team_home)
    pg_cluster.start()
    assert proc.returncode == 0
    assert proc.stdout.splitlines()[0].startswith("team daily ")
    warning = proc.stderr.strip()
    assert warning.startswith("tokenbudget: warning: cannot reach the team database host=")
    assert warning.endswith("; these are the team's budgets as fetched 0 s ago")


def test_budget_rm_team_removes_one_scope_and_this_machine_stops_enforcing_it(
    team_home: Path
) -> None:
    proc = run("budget", "rm", "monthly", "--team", "--per-member", home=team_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Removed team monthly per member: $300.00.\n"
    cached = json.loads((team_home / "tb state" / "team-cache.json").read_text())
    assert [b["kind"] for b in cached["budgets"]] == ["daily", "weekly"]
    proc = run("budget", "rm", "weekly", "--team", "--project", "acme/app", home=team_home)
    assert one_line(proc) == (
        "tokenbudget: team core has no team weekly acme/app budget to remove"
        " (it has: team weekly git.example/acme/app)")
    proc = run("budget", "rm", "weekly", "--team", "--project", "git@git.example:acme/app",
               home=team_home)
    assert proc.stdout == "Removed team weekly git.example/acme/app: 5M tokens.\n"
    assert run("budget", "rm", "daily", "--per-member", home=team_home).returncode == 2
    assert run("budget", "rm", "project", "--team", home=team_home).returncode == 2


def test_report_team_html_writes_the_teams_page(team_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "team report.html"
    proc = run("report", "--team", "--html", str(out), home=team_home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Wrote {out}.\n"
    page = out.read_text()
    assert "<b>bob</b>" not in page and "&lt;b&gt;bob&lt;/b&gt;@b" in page
    for needle in ("http://", "https://", "<link", "@import", "url(", 'src="', "<script"):
        assert needle not in page, needle
    assert html.unescape(page).count("default-src 'none'") == 1
    assert ('<div class="card"><div class="k">Tokens</div><div class="v">41.5k</div></div>'
            in page)
    assert '<div class="k">Members</div><div class="v">2</div>' in page
    assert "<code>team daily</code>" in page and "<code>team monthly per member</code>" in page
    for section in ("budgets", "days", "members", "projects", "models", "commands"):
        assert f'<section id="{section}">' in page
    assert "<td>/deploy</td><td class=n>40k</td><td class=n>$0.25</td>" in page
