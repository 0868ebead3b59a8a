"""`report --team`: the team's usage from the server, as table, JSON and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.team.test_team_schema import AT, row
from tests.team.test_team_sync import joined
from tests.test_cli import run
from tokenbudget.team import db, schema


@pytest.fixture
def reported(private_home: Path, pg_dsn: str) -> Path:
    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core", "Europe/Berlin")
        db.push(conn, "core", [
            row("a", 1200, 1_500_000, member="ann@a", output=300),
            row("b", 40000, 250_000, member="bob@b", project="web", cache_read=2_000_000),
            row("c", 10, 10, member="ann@a", at=AT - 86400 * 7),
        ])
    joined(private_home, pg_dsn)
    return private_home


def test_by_member_as_a_table(reported: Path) -> None:
    proc = run("report", "--team", "--by", "member", home=reported)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "Team usage by member\n"
        "Member  Input  Output  Cache write  Cache read  Total   Cost\n"
        "────────────────────────────────────────────────────────────\n"
        "ann@a    1.2k     300            0           0   1.5k  $1.50\n"
        "bob@b     40k       0            0          2M     2M  $0.25\n"
        "────────────────────────────────────────────────────────────\n"
        "Total   41.2k     300            0          2M     2M  $1.75\n"
    )


def test_by_day_week_and_json_csv(reported: Path) -> None:
    days = json.loads(run("report", "--team", "--by", "day", "--json", home=reported).stdout)
    assert [d["date"] for d in days["daily"]] == ["2026-11-21", "2026-11-28"]
    assert days["totals"]["totalTokens"] == 10 + 1500 + 2_040_000
    weeks = json.loads(run("report", "--team", "--by", "week", "--json", home=reported).stdout)
    assert [w["week"] for w in weeks["weekly"]] == ["2026-11-16", "2026-11-23"]
    since = run("report", "--team", "--by", "project", "--csv", "--since", "2026-11-28",
                home=reported)
    assert since.stdout.splitlines()[0].startswith("Project,")
    assert [line.split(",")[0] for line in since.stdout.splitlines()[1:]] == ["app", "web"]


def test_member_reports_need_the_team(reported: Path) -> None:
    proc = run("report", "--by", "member", home=reported)
    assert proc.returncode == 2
    assert proc.stderr == (
        "tokenbudget: --by member goes with --team; see `tokenbudget report --help`\n")
