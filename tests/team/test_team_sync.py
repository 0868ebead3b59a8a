"""Joining a team, pushing this machine's usage and pulling the totals, against a real server."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from tests.helpers import install_fixture, stored_ledger
from tests.pgcluster import Cluster
from tests.test_cli import run
from tokenbudget.store import open_store
from tokenbudget.team import db


def ledger_of(home: Path) -> dict[str, Any]:
    return stored_ledger(home / "tb state")


def local_totals(home: Path) -> tuple[int, int]:
    projects = ledger_of(home)["projects"].values()
    return sum(p[0] for p in projects), sum(round(p[1] * 1_000_000) for p in projects)


def server_totals(dsn: str, member: str = "") -> tuple[int, int]:
    with db.session(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_micros), 0)"
            " FROM tokenbudget.rollups WHERE window_kind = 'total' AND member = %s"
            " AND project = ''", (member,)).fetchone()
    return int(row[0]), int(row[1])


def usage_rows(dsn: str) -> int:
    with db.session(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM tokenbudget.usage").fetchone()[0])


def joined(home: Path, dsn: str, member: str = "ann@a") -> None:
    proc = run("team", "join", dsn, "--team", "core", "--member", member, home=home)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"Joined team core as {member}.\n"


def test_join_keeps_the_dsn_in_the_private_config(private_home: Path, team_dsn: str) -> None:
    joined(private_home, team_dsn)
    config = private_home / "tb state" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    team = json.loads(config.read_text())["team"]
    assert team == {"dsn": team_dsn, "team": "core", "member": "ann@a"}
    assert ledger_of(private_home)["team"] == "core"
    cache = private_home / "tb state" / "team-cache.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600


def test_a_sync_pushes_every_record_once_and_the_totals_match(
    private_home: Path, team_dsn: str
) -> None:
    joined(private_home, team_dsn)
    for case in ("plain", "agent", "compacted"):
        install_fixture(case, private_home / ".claude", unique_ids=True)
    first = run("team", "sync", home=private_home)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Pushed ")
    assert ledger_of(private_home)["outbox"] == {}
    tokens, cost = local_totals(private_home)
    assert tokens > 0
    assert server_totals(team_dsn) == (tokens, cost)
    assert server_totals(team_dsn, "ann@a") == (tokens, cost)
    rows = usage_rows(team_dsn)
    again = run("team", "sync", home=private_home)
    assert again.stdout == "Pushed 0 records (0 new or grown); totals fetched.\n"
    assert usage_rows(team_dsn) == rows
    cached = json.loads((private_home / "tb state" / "team-cache.json").read_text())
    assert cached["team"] == "core"
    assert ["total", "1970-01-01", "", "", tokens, cost] in cached["totals"]


def test_the_outbox_outlives_compaction_and_folding(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    from tokenbudget import history
    from tokenbudget.ingest import compact
    from tokenbudget.store import open_store

    joined(private_home, team_dsn)
    install_fixture("agent", private_home / ".claude", unique_ids=True)
    assert run("sync", home=private_home).returncode == 0
    with open_store().transaction() as ledger:
        waiting = dict(ledger["outbox"])
        assert ledger["keys"] != {}
        assert compact(ledger, now=4e9) > 0
        assert history.fold(ledger, cutoff=4e9) > 0
        assert ledger["keys"] == {} and ledger["sessions"] == {}
    assert ledger_of(private_home)["outbox"] == waiting
    assert run("team", "sync", home=private_home).returncode == 0
    assert server_totals(team_dsn) == local_totals(private_home)
    assert usage_rows(team_dsn) == len(waiting)


def test_a_stopped_server_keeps_the_outbox_and_a_restart_sends_it_once(
    private_home: Path, team_dsn: str, pg_cluster: Cluster
) -> None:
    joined(private_home, team_dsn)
    install_fixture("plain", private_home / ".claude", unique_ids=True)
    pg_cluster.stop()
    down = run("team", "sync", home=private_home)
    assert down.returncode == 1
    assert down.stderr.startswith("tokenbudget: cannot reach the team database host=")
    assert len(ledger_of(private_home)["outbox"]) > 0
    status = run("team", "status", "--json", home=private_home)
    shown = json.loads(status.stdout)
    assert shown["reachable"] is False and shown["unpushed"] > 0 and shown["lastPush"] is None
    pg_cluster.start()
    assert run("team", "sync", home=private_home).returncode == 0
    assert ledger_of(private_home)["outbox"] == {}
    assert server_totals(team_dsn) == local_totals(private_home)
    shown = json.loads(run("team", "status", "--json", home=private_home).stdout)
    assert shown["reachable"] is True and shown["unpushed"] == 0 and shown["error"] is None


def test_a_password_in_the_dsn_is_never_printed(private_home: Path, team_dsn: str) -> None:
    bad = team_dsn.replace("dbname=", "password=hunter2 port=1 dbname=")
    proc = run("team", "join", bad, "--team", "core", home=private_home)
    assert proc.returncode == 1
    assert "hunter2" not in proc.stderr + proc.stdout
    assert "password=***" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


def test_libpq_service_files_and_environment_work(private_home: Path, team_dsn: str) -> None:
    params = dict(part.split("=", 1) for part in team_dsn.split())
    services = private_home / "pg service.conf"
    services.write_text(f"[team]\nhost={params['host']}\nuser={params['user']}\n")
    env = {"PGSERVICEFILE": str(services), "PGDATABASE": params["dbname"]}
    proc = run("team", "join", "service=team", "--team", "core", "--member", "ann@a",
               home=private_home, env=env)
    assert proc.returncode == 0, proc.stderr
    status = run("team", "status", "--json", home=private_home, env=env)
    assert json.loads(status.stdout)["reachable"] is True
    assert run("team", "status", "--json", home=private_home).returncode == 0
    without = json.loads(run("team", "status", "--json", home=private_home).stdout)
    assert without["reachable"] is False  # no service file: libpq cannot find the server


def test_leave_refuses_while_usage_waits_then_forgets_the_team(
    private_home: Path, team_dsn: str, pg_cluster: Cluster
) -> None:
    joined(private_home, team_dsn)
    install_fixture("plain", private_home / ".claude", unique_ids=True)
    assert run("sync", home=private_home).returncode == 0
    proc = run("team", "leave", home=private_home)
    assert proc.returncode == 1 and "not pushed yet" in proc.stderr
    assert run("team", "sync", home=private_home).returncode == 0
    assert run("team", "leave", home=private_home).stdout == "Left team core.\n"
    assert "team" not in json.loads((private_home / "tb state" / "config.json").read_text())
    assert ledger_of(private_home)["team"] == ""
    assert not os.path.exists(private_home / "tb state" / "team-cache.json")


def test_a_response_rewritten_larger_is_pushed_again_and_replaces_the_smaller(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    joined(private_home, team_dsn)
    projects = install_fixture("plain", private_home / ".claude", unique_ids=True)
    assert run("team", "sync", home=private_home).returncode == 0
    before = server_totals(team_dsn)
    transcript = next(projects.glob("*/*.jsonl"))
    line = next(ln for ln in transcript.read_text().splitlines() if '"usage"' in ln)
    with transcript.open("a") as f:  # the same response again, with 1000 more output tokens
        f.write(line.replace('"output_tokens":41,', '"output_tokens":1041,') + "\n")
    assert run("team", "sync", home=private_home).returncode == 0
    assert server_totals(team_dsn)[0] == before[0] + 1000
    assert server_totals(team_dsn) == local_totals(private_home)


def test_doctor_checks_the_team_database(
    private_home: Path, team_dsn: str, pg_cluster: Cluster
) -> None:
    joined(private_home, team_dsn)
    found = json.loads(run("doctor", "--json", home=private_home).stdout)
    team = [f for f in found["findings"] if f["title"].startswith("team")]
    assert [(f["ok"], f["title"]) for f in team] == [(True, "team database"),
                                                    (True, "team totals")]
    assert team[1]["detail"].endswith("; 0 record(s) not pushed yet")
    pg_cluster.stop()
    proc = run("doctor", "--json", home=private_home)
    pg_cluster.start()
    assert proc.returncode == 1
    team = [f for f in json.loads(proc.stdout)["findings"] if f["title"].startswith("team")]
    assert team[0]["title"] == "team database not reachable"
    assert team[0]["detail"].startswith("cannot reach the team database host=")


def test_a_sync_killed_mid_push_neither_loses_nor_doubles(
    private_home: Path, team_dsn: str, recorded_day: float
) -> None:
    import signal
    import subprocess

    from tests.test_cli import BIN

    joined(private_home, team_dsn)
    bucket = int(recorded_day // 900)
    with open_store(path=private_home / "tb state" / "ledger.json").transaction() as ledger:
        ledger["outbox"] = {f"k{i:05}": ["s", "claude-opus", i % 97, 1, 0, 0, 2, bucket, 0.0001,
                                         "prompt", ""] for i in range(6000)}
    expected = sum(i % 97 + 3 for i in range(6000))
    env = dict(os.environ, HOME=str(private_home))
    for delay in (0.4, 0.8, 1.2):  # wherever the kill lands, in a batch or between two
        proc = subprocess.Popen([str(BIN), "team", "sync"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert server_totals(team_dsn)[0] <= expected
    assert run("team", "sync", home=private_home).returncode == 0
    assert ledger_of(private_home)["outbox"] == {}
    assert server_totals(team_dsn)[0] == expected
    assert usage_rows(team_dsn) == 6000


def test_join_names_the_member_user_at_host_by_default(
    private_home: Path, team_dsn: str
) -> None:
    import socket

    proc = run("team", "join", team_dsn, "--team", "core", home=private_home,
               env={"USER": "ann", "LOGNAME": "ann"})
    member = f"ann@{socket.gethostname()}"
    assert proc.stdout == f"Joined team core as {member}.\n"
    team = json.loads((private_home / "tb state" / "config.json").read_text())["team"]
    assert team["member"] == member
