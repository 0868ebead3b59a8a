"""A prompt near a team limit is decided on fresh totals: fetched again when the cached ones are
older than a few seconds, waiting a bounded time, and on the cache (saying how old) when the
server does not answer. Two members racing at a limit overshoot it within the documented bound."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from tests.helpers import install_fixture
from tests.pgcluster import Cluster
from tests.team.test_team_hook import hook_env
from tests.team.test_team_sync import joined, ledger_of, local_totals, server_totals, usage_rows
from tests.test_cli import BIN, run
from tests.test_hook import run_hook
from tokenbudget.team import cache, db

EVENT = {"session_id": "5e55a7e2-0000-4000-8000-000000000001", "cwd": "/home/dev/project",
         "prompt": "go on", "prompt_id": "p-1"}


def cache_of(home: Path) -> dict[str, Any]:
    return json.loads((home / "tb state" / "team-cache.json").read_text())


def age_cache(home: Path, fetched: float) -> None:
    """Make the machine's copy of the team's totals look fetched at `fetched`."""
    path = home / "tb state" / "team-cache.json"
    data = json.loads(path.read_text())
    data["fetched"] = fetched
    path.write_text(json.dumps(data))


def near_limit(ann: Path, bob: Path, dsn: str) -> int:
    """Ann's usage pushed; a team daily budget 5% above it, that bob's machine knows; its limit."""
    joined(ann, dsn, "ann@a")
    joined(bob, dsn, "bob@b")
    install_fixture("plain", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0
    limit = server_totals(dsn)[0] * 105 // 100
    assert run("budget", "set", "daily", str(limit), "--team", home=ann).returncode == 0
    assert run("team", "sync", home=bob).returncode == 0
    return limit


def test_a_prompt_near_a_team_limit_on_old_totals_fetches_them_and_is_refused(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    limit = near_limit(ann, bob, team_dsn)
    install_fixture("agent", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0  # ann passes the limit
    assert server_totals(team_dsn)[0] > limit
    age_cache(bob, recorded_day - 60)  # bob's copy still has ann under it, at 95%
    rc, out, _ = run_hook("UserPromptSubmit", EVENT, env=hook_env(bob))
    assert rc == 0 and out.get("decision") == "block", out
    assert out["reason"].startswith("tokenbudget: the team's daily budget is used up.\n")
    assert cache_of(bob)["fetched"] == recorded_day


def test_fresh_enough_totals_are_not_fetched_again(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    near_limit(ann, bob, team_dsn)
    install_fixture("agent", ann / ".claude", unique_ids=True)
    assert run("team", "sync", home=ann).returncode == 0
    age_cache(bob, recorded_day - cache.FRESH_WITHIN)  # just fresh enough: decided on as is
    rc, out, _ = run_hook("UserPromptSubmit", EVENT, env=hook_env(bob))
    assert rc == 0 and out.get("decision") is None
    assert out["systemMessage"].startswith("tokenbudget: the team's daily budget is at 95% (")
    assert cache_of(bob)["fetched"] == recorded_day - cache.FRESH_WITHIN


def test_a_server_that_does_not_answer_leaves_the_cache_to_decide_and_says_how_old(
    private_home: Path, tmp_path: Path, team_dsn: str, pg_cluster: Cluster,
    recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    near_limit(ann, bob, team_dsn)
    age_cache(bob, recorded_day - 150)
    pg_cluster.stop()
    rc, out, _ = run_hook("UserPromptSubmit", EVENT, env=hook_env(bob))
    # Read before the server is back: the sync the hook started in the background may then
    # reach it and fetch fresh totals, which is its job.
    fetched = cache_of(bob)["fetched"]
    pg_cluster.start()
    assert rc == 0 and out.get("decision") is None
    first = out["systemMessage"].splitlines()[0]
    assert first.startswith(
        "tokenbudget: the team's daily budget (totals from 2 min ago: the team database did"
        " not answer) is at 95% ("), first
    assert fetched == recorded_day - 150


def test_a_refresh_waits_at_most_its_bound_for_a_server_that_hangs(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    import socket
    import time

    # A server that accepts the connection and never answers: libpq would wait its
    # connect_timeout (2 s at least); the refresh gives up after REFRESH_WAIT.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        team_cfg = {"dsn": f"host=127.0.0.1 port={port} dbname=x connect_timeout=10",
                    "team": "core", "member": "bob@b"}
        started = time.monotonic()
        got = cache.refresh(team_cfg, {"projects": {}}, wait=0.3)
        waited = time.monotonic() - started
    assert got is None
    assert waited < 2.0  # far below libpq's least connect_timeout: the bound held


def test_a_push_racing_another_members_at_a_team_limit_overshoots_within_the_bound(
    private_home: Path, tmp_path: Path, team_dsn: str, recorded_day: float
) -> None:
    ann, bob = tmp_path / "ann home", private_home
    ann.mkdir()
    joined(ann, team_dsn, "ann@a")
    joined(bob, team_dsn, "bob@b")
    for home in (ann, bob):  # the same turn on each machine (its own ids), not pushed yet
        projects = install_fixture("plain", home / ".claude", unique_ids=True)
        for path in projects.rglob("*.jsonl"):
            path.write_text(path.read_text().replace("_plain_", f"_{home.name[:3]}_"))
    for home in (ann, bob):
        assert run("sync", home=home).returncode == 0
    turn = {home: local_totals(home)[0] for home in (ann, bob)}
    waiting = sum(len(ledger_of(home)["outbox"]) for home in (ann, bob))
    limit = turn[ann] * 6 // 5  # each turn alone fits (past the warning); both do not
    assert turn[ann] == turn[bob]
    with db.session(team_dsn) as conn:
        db.set_budget(conn, "core", {"kind": "daily", "scope": "team", "name": "",
                                     "limit": limit, "unit": "tokens", "mode": "block",
                                     "warn_at": 0.8})
    # Both machines push at once, each allowed its turn on the totals it knew.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE")}
    procs = [subprocess.Popen([str(BIN), "team", "sync"],
                              env={**env, **hook_env(home)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for home in (ann, bob)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    total = server_totals(team_dsn)[0]
    assert total == turn[ann] + turn[bob]  # nothing lost, nothing doubled by the race
    assert usage_rows(team_dsn) == waiting
    # The documented bound: each member's turn in flight when the limit was crossed.
    assert 0 < total - limit <= turn[ann] + turn[bob]
    # Whichever pulled before the other's push landed knows only its own usage (near the
    # limit); its next prompt, a few seconds on, fetches again and is refused: no more.
    for home in (ann, bob):
        data = cache_of(home)
        own = turn[home]
        data["totals"] = [[*row[:4], own if row[2] == "" and row[3] == "" else row[4], row[5]]
                          for row in data["totals"]]
        data["fetched"] = recorded_day - 10
        (home / "tb state" / "team-cache.json").write_text(json.dumps(data))
        rc, out, _ = run_hook("UserPromptSubmit", EVENT, env=hook_env(home))
        assert rc == 0 and out.get("decision") == "block", out
        assert "the team's daily budget is used up" in out["reason"]
    assert server_totals(team_dsn)[0] == total
