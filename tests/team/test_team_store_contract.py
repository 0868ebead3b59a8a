"""The Store contract's usage tests (tests/test_store_contract.py) run on the team's PostgreSQL
store, against a real server: the same sessions recorded on a machine that joined the team,
pushed by `team sync`, then the same questions with the same answers (the decision state's
and the ledger's questions raise: each machine keeps its own). Then what only the team store
does: record (a push) from many members at once, and no ledger.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.test_store_contract import (  # noqa: F401  (the same tests, on this backend)
    DAY,
    NOW,
    Recorded,
    record_locally,
    test_a_warning_is_remembered_as_given_and_the_oldest_go_first,
    test_an_allow_is_granted_then_spent_on_one_prompt,
    test_an_event_is_seen_once_within_the_event_memory,
    test_block_activity_lists_the_buckets_that_hold_usage,
    test_cells_are_every_session_bucket_and_command_of_usage,
    test_command_runs_are_every_turn_of_the_command_oldest_first,
    test_recorded_sessions_hold_each_turn_and_request,
    test_session_usage,
    test_sessions_are_known_by_folder_and_last_activity,
    test_turn_runs_are_every_turn_of_every_command_oldest_first,
    test_turn_usage_is_each_turns_command_and_usage,
    test_usage_between_counts_each_bucket_in_its_window,
    test_usage_between_one_project,
    test_usage_by_groups_as_the_report_does,
    test_usage_by_project_names_it_as_the_store_does,
    write_sessions,
)
from tokenbudget.errors import TeamError
from tokenbudget.team import db
from tokenbudget.team.pgstore import PostgresStore


@pytest.fixture(params=["postgres"])
def usage_store(
    request: pytest.FixtureRequest, private_home: Path, monkeypatch: pytest.MonkeyPatch,
    team_dsn: str,
) -> Recorded:
    from tokenbudget import config
    from tokenbudget.cli import main
    from tokenbudget.team import sync

    monkeypatch.setenv("TOKENBUDGET_NOW", repr(NOW))
    main(["team", "join", team_dsn, "--team", "core", "--member", "ann@a"],
         standalone_mode=False)
    write_sessions(private_home)
    assert record_locally().snapshot()["outbox"]  # counted for the team: not pushed yet
    team_cfg = dict(config.load_config().team or {})
    done = sync.sync(team_cfg)
    assert done["pushed"] == 5 and done["changed"] == 5
    # The team names a project by its git remote, else its folder's name.
    # It keeps no decision state and no ledger: those tests check that each operation
    # raises, saying so.
    return Recorded(PostgresStore(team_dsn, "core", "ann@a"), lambda f: f.rsplit("/", 1)[-1],
                    decides=False)


def _row(key: str, member: str, tokens: int, at: float = DAY + 600) -> dict[str, Any]:
    return {"key": key, "member": member, "machine": "m", "session": f"s-{member}",
            "project": f"p-{member}", "model": "claude-opus", "command": "prompt", "at": at,
            "input": tokens, "output": 0, "cache_write": 0, "cache_read": 0,
            "cost_micros": tokens}


def rollup(dsn: str, kind: str, member: str = "", project: str = "") -> tuple[int, int]:
    with db.session(dsn) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(tokens), 0), coalesce(sum(cost_micros), 0)"
            " FROM tokenbudget.rollups WHERE team = 'core' AND window_kind = %s"
            " AND member = %s AND project = %s", (kind, member, project)).fetchone()
    return int(row[0]), int(row[1])


def test_records_from_many_members_at_once_are_counted_once(team_dsn: str) -> None:
    # 8 members, each pushing its rows in 5 batches, then the same batches again with half
    # of the rows grown and duplicates inside one batch: every total is the sum of each
    # request's largest usage, in the rows and in every rollup.
    members = [f"m{n}" for n in range(8)]
    grown = {f"{m}-{k:03}" for m in members for k in range(0, 60, 2)}

    def work(member: str) -> None:
        store = PostgresStore(team_dsn, "core", member)
        with store.connected():
            for replay in (False, True):
                for part in range(5):
                    rows = [_row(f"{member}-{k:03}", member,
                                 100 + (50 if replay and f"{member}-{k:03}" in grown else 0),
                                 DAY + 600 + 86400 * (k % 3))
                            for k in range(part * 12, part * 12 + 12)]
                    store.record(rows + rows[:3])

    threads = [threading.Thread(target=work, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = 8 * 60 * 100 + len(grown) * 50
    store = PostgresStore(team_dsn, "core")
    assert store.usage_between(None, None) == (expected, expected / 1_000_000)
    assert rollup(team_dsn, "total") == (expected, expected)
    days = sum(rollup(team_dsn, "day", project=p)[0] for p in {f"p-{m}" for m in members})
    assert days == expected
    for m in members:
        mine = 60 * 100 + len([k for k in grown if k.startswith(f"{m}-")]) * 50
        assert store.usage_between(None, None, member=m)[0] == mine
        assert rollup(team_dsn, "total", member=m) == (mine, mine)
        assert rollup(team_dsn, "month", member=m) == (mine, mine)
    assert store.record([_row("m0-000", "m0", 150, DAY + 600)]) == 0  # a replay changes nothing


def test_a_grown_row_moves_only_its_delta_into_every_window(team_dsn: str) -> None:
    store = PostgresStore(team_dsn, "core", "ann")
    assert store.record([_row("k1", "ann", 100), _row("k2", "ann", 40, DAY + 8 * 86400)]) == 2
    assert store.record([_row("k1", "ann", 130), _row("k2", "ann", 10, DAY + 8 * 86400)]) == 1
    assert rollup(team_dsn, "day") == (170, 170)
    assert rollup(team_dsn, "week") == (170, 170)  # two weeks: 130 + 40
    assert rollup(team_dsn, "total", project="p-ann") == (170, 170)
    assert rollup(team_dsn, "total", member="ann") == (170, 170)


def test_the_team_store_keeps_no_ledger(team_dsn: str) -> None:
    store = PostgresStore(team_dsn, "core", "ann")
    assert store.exists()
    assert not PostgresStore(team_dsn, "nobody").exists()
    for call in (store.read, store.snapshot, store.load, store.move_aside):
        with pytest.raises(TeamError, match="keeps no ledger"):
            call()
    with pytest.raises(TeamError, match="keeps no ledger"):
        store.transaction()
    store.checkpoint()  # nothing kept beside the committed rows: nothing to fold
    assert store.usage_between(None, None) == (0, 0.0)


def test_a_database_without_the_schema_has_no_team(pg_dsn: str) -> None:
    assert not PostgresStore(pg_dsn, "core").exists()


def test_errors_name_the_dsn_masked(team_dsn: str) -> None:
    dsn = team_dsn.replace("dbname=", "password=s3cret dbname=") + "_missing"
    with pytest.raises(TeamError) as e:
        PostgresStore(dsn, "core").usage_between(None, None)
    assert "s3cret" not in str(e.value) and "password=***" in str(e.value)
