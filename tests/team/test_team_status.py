"""`tokenbudget status` and the status line show the team's budgets and how old its totals are."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import install_fixture
from tests.team.test_team_fresh import age_cache
from tests.team.test_team_sync import joined
from tests.test_cli import run
from tokenbudget import statusline


def team_with_budgets(ann: Path, bob: Path, dsn: str) -> None:
    """Ann's usage pushed; three team budgets; bob's machine has fetched them."""
    joined(ann, dsn, "ann@a")
    joined(bob, dsn, "bob@b")
    install_fixture("plain", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0
    for args in (("daily", "4k"), ("monthly", "$5", "--per-member"),
                 ("weekly", "1M", "--project", "git@github.com:acme/app.git",
                  "--mode", "warn")):
        assert run("budget", "set", *args, "--team", home=ann).returncode == 0
    assert run("team", "sync", home=bob).returncode == 0


def payload(home: Path) -> bytes:
    return json.dumps({"session_id": "5e55a7e2-0000-4000-8000-000000000001",
                       "cwd": str(home), "model": {"display_name": "Opus 5.5"}}).encode()


def test_status_lists_the_team_budgets_and_how_old_their_totals_are(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    team_with_budgets(ann, bob, team_dsn)
    age_cache(bob, recorded_day - 150)
    proc = run("status", home=bob)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (  # the project budget is another project's: not listed here
        "team daily               [████████████░░░░] 76%  3.1k of 4k tokens; resets at 00:00"
        " (in 6h 20m)\n"
        "team monthly per member  [░░░░░░░░░░░░░░░░] 0%  $0.00 of $5.00; resets on Tue 1 Dec"
        " at 00:00 (in 2d 6h)\n"
        "Team core's totals: fetched 2 min ago\n"
    )
    shown = json.loads(run("status", "--json", home=bob).stdout)
    assert shown["team"] == {"name": "core", "totalsAgeSeconds": 150.0}
    assert [b["budget"] for b in shown["budgets"]] == ["team daily", "team monthly per member"]


def test_the_status_line_shows_team_budgets_and_old_totals_within_80_columns(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    team_with_budgets(ann, bob, team_dsn)
    line = statusline.status_line(payload(bob), recorded_day, color=False)
    assert line == "team daily 76% of 4k · resets 6h20m │ team monthly/me 0% of $5.00"
    age_cache(bob, recorded_day - 150)  # syncs failing: the line says how old its totals are
    line = statusline.status_line(payload(bob), recorded_day, color=False)
    assert line == "team daily 76% of 4k · resets 6h20m │ +1 more │ team totals 3m old"
    assert statusline.visible_width(line) <= statusline.MAX_WIDTH


def test_totals_never_fetched_are_said_so(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    joined(private_home, team_dsn, "bob@b")
    (private_home / "tb state" / "team-cache.json").unlink()  # as if the first sync failed
    assert run("status", home=private_home).stdout == "Team core's totals: never fetched\n"
    line = statusline.status_line(payload(private_home), recorded_day, color=False)
    assert line == "session 0 · $0.00 │ team totals never fetched │ Opus 5.5"


def test_a_long_line_gives_up_the_age_only_after_everything_else_but_the_first_budget() -> None:
    from datetime import UTC, datetime

    from tokenbudget.budgets import evaluate
    from tokenbudget.team.cache import TeamBudget

    now = datetime(2026, 11, 28, 17, 30, tzinfo=UTC)
    checks = [evaluate(TeamBudget({"kind": k, "scope": "project", "name": "host/org/app",
                                   "limit": 1000, "unit": "tokens", "mode": "block",
                                   "warn_at": 0.8}), 500, 0, now, None) for k in
              ("daily", "weekly", "monthly", "total")]
    line = statusline.compose((100.0, 0.5), checks, color=False, model="Opus 5.5",
                              team_age="team totals 3h2m old")
    assert line == "team daily/app 50% of 1k │ +3 more │ team totals 3h2m old"
    assert statusline.visible_width(line) <= statusline.MAX_WIDTH


def test_team_status_says_how_far_behind_the_totals_are() -> None:
    from tokenbudget.team.commands import render_status

    shown = {"team": "core", "member": "ann@a", "dsn": "host=db password=*** dbname=t",
             "reachable": False, "lastPush": 1000.0, "lastPull": 880.0, "unpushed": 3,
             "lagSeconds": 190.0, "budgets": 2, "error": "cannot reach the team database"}
    assert render_status(shown, now=1070.0) == (
        "Team core as ann@a\n"
        "Server: host=db password=*** dbname=t (NOT reachable)\n"
        "Last push: 70 s ago; last pull: 3 min ago\n"
        "Unpushed records: 3\n"
        "Team totals: fetched 3 min ago\n"
        "Team budgets: 2\n"
        "Last error: cannot reach the team database\n"
    )
    never = {**shown, "reachable": True, "lastPush": None, "lastPull": None,
             "lagSeconds": None, "error": None}
    assert render_status(never, now=1070.0) == (
        "Team core as ann@a\n"
        "Server: host=db password=*** dbname=t (reachable)\n"
        "Last push: never; last pull: never\n"
        "Unpushed records: 3\n"
        "Team totals: never fetched\n"
        "Team budgets: 2\n"
    )
