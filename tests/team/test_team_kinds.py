"""Team budgets of the kinds that happen on one machine (a session, a 5-hour block, a run of a
slash command): set in the team database, each member's own, measured from its own ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.team.test_team_hook import hook_env, prompt_of
from tests.team.test_team_sync import joined
from tests.test_cli import run
from tests.test_hook import run_hook


def test_member_local_kinds_are_set_listed_and_removed(
    private_home: Path, team_dsn: str
) -> None:
    joined(private_home, team_dsn, "ann@a")
    for args, said in (
        (("session", "200k"), "Set team core's session budget (each member's own): 200k"
                              " tokens (block)."),
        (("5h", "$4", "--per-member"), "Set team core's 5h budget (each member's own): $4.00"
                                       " (block)."),
        (("command", "deploy", "50k", "--mode", "warn"),
         "Set team core's command budget /deploy (each member's own): 50k tokens (warn)."),
    ):
        proc = run("budget", "set", *args, "--team", home=private_home)
        assert proc.stdout == said + "\n", proc.stderr
    assert run("budget", "list", "--team", home=private_home).stdout == (
        "team 5h                                 $4.00  block, warn at 80%\n"
        "team /deploy                       50k tokens  warn\n"
        "team session                      200k tokens  block, warn at 80%\n"
    )
    proc = run("budget", "rm", "command", "/deploy", "--team", home=private_home)
    assert proc.stdout == "Removed team /deploy: 50k tokens.\n", proc.stderr
    assert run("budget", "rm", "session", "--team", home=private_home).returncode == 0
    assert run("budget", "list", "--team", home=private_home).stdout.startswith("team 5h ")


@pytest.mark.parametrize(("args", "why"), [
    (("project", "2M"), "a team's all-time budget for a project is `budget set total LIMIT"
                        " --team --project NAME`"),
    (("session", "2M", "--project", "app"), "a team session budget is each member's own:"
                                            " no --project"),
    (("command", "2M"), "team command budgets take NAME LIMIT, e.g. `budget set command"
                        " /deploy 50k --team`"),
])
def test_kinds_that_do_not_apply_to_a_team_say_why(
    private_home: Path, team_dsn: str, args: tuple[str, ...], why: str
) -> None:
    joined(private_home, team_dsn, "ann@a")
    proc = run("budget", "set", *args, "--team", home=private_home)
    assert proc.returncode == 2
    assert f"tokenbudget: {why}" in proc.stderr


@pytest.mark.parametrize(("kind", "described"), [
    ("session", "the team's session budget"), ("5h", "the team's 5-hour budget")])
def test_a_team_session_or_block_budget_refuses_from_the_members_own_ledger(
    private_home: Path, team_dsn: str, recorded_day: float, kind: str, described: str
) -> None:
    joined(private_home, team_dsn, "bob@b")
    assert run("budget", "set", kind, "1k", "--team", home=private_home).returncode == 0
    event = prompt_of(private_home, "plain")  # a session of about 3k tokens, not pushed
    rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
    assert rc == 0 and out.get("decision") == "block", out
    assert out["reason"].startswith(f"tokenbudget: {described} is used up.\n")
    assert f"tokenbudget budget set {kind} " in out["reason"]
    assert "--team" in out["reason"] and "--per-member" not in out["reason"]
