"""Team budgets enforced by the hooks: from the cached totals plus what waits in the outbox,
never waiting on the server."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_fixture
from tests.pgcluster import Cluster
from tests.team.test_team_sync import joined, ledger_of, server_totals
from tests.test_cli import run
from tests.test_hook import run_hook


def prompt_of(home: Path, case: str) -> dict[str, Any]:
    projects = install_fixture(case, home / ".claude", unique_ids=True)
    transcript = next(projects.glob("*/*.jsonl"))
    return {"session_id": transcript.stem, "transcript_path": str(transcript),
            "cwd": "/home/dev/project", "prompt_id": "p-9", "prompt": "go on"}


def hook_env(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "TOKENBUDGET_HOME": str(home / "tb state")}


def test_a_team_budget_used_up_on_one_machine_refuses_the_next_prompt_on_another(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    joined(ann, team_dsn, "ann@a")
    joined(bob, team_dsn, "bob@b")
    proc = run("budget", "set", "daily", "2k", "--team", home=ann)
    assert proc.stdout == "Set team core's daily budget: 2k tokens (block).\n", proc.stderr
    event = prompt_of(bob, "slash")
    rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(bob))
    assert (rc, out.get("decision")) == (0, None)  # bob alone is under 2k
    install_fixture("plain", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0  # ann's 3k reach the server
    assert server_totals(team_dsn, "ann@a")[0] > 2000
    assert run("team", "sync", home=bob).returncode == 0  # bob's machine learns of them
    rc, out, _ = run_hook("UserPromptSubmit", {**event, "prompt_id": "p-10"}, env=hook_env(bob))
    assert rc == 0 and out["decision"] == "block"
    assert "the team's daily budget" in out["reason"]
    assert "tokenbudget budget set daily" in out["reason"] and "--team" in out["reason"]


def test_usage_not_pushed_counts_at_once_and_a_stopped_server_blocks_nothing_else(
    private_home: Path, team_dsn: str, pg_cluster: Cluster, recorded_day: float
) -> None:
    joined(private_home, team_dsn, "bob@b")
    assert run("budget", "set", "daily", "1k", "--team", "--per-member",
               home=private_home).returncode == 0
    assert run("budget", "set", "daily", "900M", "--team", home=private_home).returncode == 0
    pg_cluster.stop()
    event = prompt_of(private_home, "plain")
    rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
    assert rc == 0 and out["decision"] == "block"
    assert "your share of the team's daily budget" in out["reason"]
    assert len(ledger_of(private_home)["outbox"]) > 0  # waiting for the server
    pg_cluster.start()


def test_a_hook_with_usage_waiting_starts_a_sync_that_pushes_it(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    joined(private_home, team_dsn, "bob@b")
    event = prompt_of(private_home, "plain")
    rc, out, _ = run_hook("Stop", event, env=hook_env(private_home))
    assert (rc, out) == (0, {})
    state_path = private_home / "tb state" / "team-state.json"
    for _ in range(300):  # the detached sync: bounded wait, not a timing assertion
        if "last_push" in json.loads(state_path.read_text()):  # written as the sync ends
            break
        time.sleep(0.1)
    assert ledger_of(private_home)["outbox"] == {}
    state = json.loads(state_path.read_text())
    assert state["last_push"] > 0 and "error" not in state
    assert server_totals(team_dsn)[0] > 0


def test_old_team_totals_start_a_sync_that_fetches_them_even_with_nothing_to_push(
    private_home: Path, team_dsn: str, tmp_path: Path, recorded_day: float
) -> None:
    ann = tmp_path / "ann home"
    ann.mkdir()
    joined(ann, team_dsn, "ann@a")
    joined(private_home, team_dsn, "bob@b")
    assert run("budget", "set", "daily", "2k", "--team", home=ann).returncode == 0
    install_fixture("plain", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0
    cache_path = private_home / "tb state" / "team-cache.json"
    cached = json.loads(cache_path.read_text())
    cached["fetched"] = recorded_day - 60  # bob's copy is a minute old
    cache_path.write_text(json.dumps(cached))
    event = {"session_id": "5e55a7e2-0000-4000-8000-000000000001", "cwd": "/home/dev/project",
             "prompt": "go on", "prompt_id": "p-1"}
    rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
    assert (rc, out.get("decision")) == (0, None)  # decided on what it had: under 2k
    for _ in range(300):  # the detached sync: bounded wait, not a timing assertion
        if json.loads(cache_path.read_text())["fetched"] == recorded_day:
            break
        time.sleep(0.1)
    rc, out, _ = run_hook("UserPromptSubmit", {**event, "prompt_id": "p-2"},
                          env=hook_env(private_home))
    assert out["decision"] == "block" and "the team's daily budget" in out["reason"]


def test_a_password_in_the_dsn_reaches_no_file_but_the_config_and_no_output(
    private_home: Path, team_dsn: str, pg_cluster: Cluster, recorded_day: float
) -> None:
    # The test server trusts every local connection: the password is sent and ignored.
    dsn = team_dsn.replace("dbname=", "password=hunter2 dbname=")
    shown = []
    joined(private_home, dsn, "bob@b")
    shown.append(run("budget", "set", "daily", "1k", "--team", home=private_home))
    event = prompt_of(private_home, "plain")
    shown.append(run("team", "sync", home=private_home))
    pg_cluster.stop()
    try:
        with (private_home / "tb state" / "team-cache.json").open("r+") as f:
            data = json.load(f)
            data["fetched"] -= 600  # old totals near a limit: the hook tries the server
            f.seek(0)
            f.truncate()
            json.dump(data, f)
        rc, out, err = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
        assert rc == 0 and "the team database did not answer" in out["reason"]
        for args in (("team", "sync"), ("team", "status"), ("doctor",), ("status",),
                     ("report", "--team", "--by", "member"), ("budget", "list", "--team")):
            shown.append(run(*args, home=private_home))
        time.sleep(1)  # a background sync the hook may have started, failing too
    finally:
        pg_cluster.start()
    assert any("password=***" in p.stdout + p.stderr for p in shown)
    for p in shown:
        assert "hunter2" not in p.stdout + p.stderr
    assert "hunter2" not in json.dumps(out) + err
    files = [p for p in (private_home / "tb state").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"ledger.json", "team-state.json", "team-cache.json"}
    for path in files:
        if path.name != "config.json":
            assert b"hunter2" not in path.read_bytes(), path.name


@pytest.mark.parametrize("strict", ["local", "team"])
def test_local_budgets_apply_beside_the_teams_and_the_stricter_refuses(
    private_home: Path, team_dsn: str, recorded_day: float, strict: str
) -> None:
    joined(private_home, team_dsn, "bob@b")
    local, team = ("1k", "900M") if strict == "local" else ("900M", "1k")
    assert run("budget", "set", "daily", local, home=private_home).returncode == 0
    assert run("budget", "set", "daily", team, "--team", home=private_home).returncode == 0
    event = prompt_of(private_home, "plain")
    rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
    assert rc == 0 and out["decision"] == "block"
    named = "the team's daily budget" if strict == "team" else "the daily budget"
    assert out["reason"].startswith(f"tokenbudget: {named} is used up.\nUsed 3.1k of 1k")


@pytest.mark.parametrize("fail_closed", [False, True])
def test_team_totals_never_fetched_refuse_only_with_fail_closed(
    private_home: Path, team_dsn: str, pg_cluster: Cluster, recorded_day: float,
    fail_closed: bool,
) -> None:
    joined(private_home, team_dsn, "bob@b")
    state = private_home / "tb state"
    config = json.loads((state / "config.json").read_text())
    (state / "config.json").write_text(json.dumps({**config, "fail_closed": fail_closed}))
    (state / "team-cache.json").unlink()  # this machine never reached the server
    event = prompt_of(private_home, "plain")
    pg_cluster.stop()
    try:
        rc, out, _ = run_hook("UserPromptSubmit", event, env=hook_env(private_home))
    finally:
        pg_cluster.start()
    assert rc == 0
    if fail_closed:
        assert out["decision"] == "block"
        assert out["reason"] == (
            "tokenbudget: team core's budgets and totals were never fetched (a sync has been"
            " started) (fail_closed is on, so this prompt is refused)")
    else:
        assert "decision" not in out
