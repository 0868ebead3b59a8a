"""The team database: migrations, pushes and rollups, against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from tokenbudget.errors import TeamError
from tokenbudget.team import db, schema

NAMES = [name for name, _ in schema.MIGRATIONS]
AT = 1795887600.0  # 2026-11-28 17:40 UTC, a Saturday


def row(key: str, tokens: int = 100, cost: int = 5, member: str = "ann@a", at: float = AT,
        project: str = "app", **more: Any) -> dict[str, Any]:
    base = {"key": key, "member": member, "machine": "a", "session": "s1", "project": project,
            "model": "claude-opus", "command": "prompt", "at": at, "input": tokens, "output": 0,
            "cache_write": 0, "cache_read": 0, "cost_micros": cost}
    return base | more


@pytest.fixture
def conn(pg_dsn: str) -> Any:
    c = db.connect(pg_dsn)
    schema.migrate(c)
    db.create_team(c, "core", "Pacific/Kiritimati")  # UTC+14: its day is not UTC's
    yield c
    c.close()


def rollup(conn: Any, kind: str, member: str = "", project: str = "") -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT window_start::text, tokens, cost_micros FROM tokenbudget.rollups WHERE team ="
        " 'core' AND window_kind = %s AND member = %s AND project = %s ORDER BY 1",
        (kind, member, project)).fetchall()


def test_init_applies_every_migration_once_and_in_order(pg_dsn: str) -> None:
    c = db.connect(pg_dsn)
    assert schema.migrate(c) == NAMES
    assert schema.migrate(c) == []
    assert schema.applied(c) == NAMES
    c.close()


@pytest.mark.parametrize("step", range(1, len(NAMES)))
def test_each_migration_applies_on_the_version_before_it_keeping_the_data(
    pg_dsn: str, step: int
) -> None:
    c = db.connect(pg_dsn)
    assert schema.migrate(c, upto=NAMES[step - 1]) == NAMES[:step]
    c.execute("INSERT INTO tokenbudget.teams (name) VALUES ('old')")
    if step >= 3:  # push exists
        db.push(c, "old", [row("k1")])
    if step >= 4:  # budgets exist
        c.execute("INSERT INTO tokenbudget.budgets (team, kind, scope, limit_value, unit, mode)"
                  " VALUES ('old', 'daily', 'member', 5, 'tokens', 'block')")
    assert schema.migrate(c, upto=NAMES[step]) == [NAMES[step]]
    assert c.execute("SELECT name FROM tokenbudget.teams").fetchall() == [("old",)]
    if step >= 3:
        assert c.execute("SELECT request_key FROM tokenbudget.usage").fetchall() == [("k1",)]
    if step >= 4:
        assert c.execute("SELECT kind, scope, limit_value FROM tokenbudget.budgets"
                         ).fetchall() == [("daily", "member", 5.0)]
    assert schema.migrate(c) == NAMES[step + 1 :]
    db.push(c, "old", [row("k1", 150), row("k2", 30)])  # grown, and new: counted once
    assert c.execute("SELECT window_kind, tokens FROM tokenbudget.rollups WHERE member = ''"
                     " AND project = '' ORDER BY 1").fetchall() == [
        ("day", 180), ("month", 180), ("total", 180), ("week", 180)]
    c.close()


def test_a_database_from_a_newer_version_is_refused_unchanged(pg_dsn: str) -> None:
    c = db.connect(pg_dsn)
    schema.migrate(c, upto=NAMES[0])
    c.execute("INSERT INTO tokenbudget.migrations (name) VALUES ('m999_future')")
    with pytest.raises(TeamError, match="m999_future, newer than this tokenbudget"):
        schema.migrate(c)
    assert schema.applied(c) == [NAMES[0], "m999_future"]
    c.close()


def test_a_repeated_push_changes_nothing_and_a_larger_usage_replaces(conn: Any) -> None:
    assert db.push(conn, "core", [row("k1", 100, 7), row("k2", 50, 3)]) == 2
    assert db.push(conn, "core", [row("k1", 100, 7), row("k2", 50, 3)]) == 0
    assert db.push(conn, "core", [row("k1", 90, 6)]) == 0  # smaller: a stale copy
    assert rollup(conn, "total") == [("1970-01-01", 150, 10)]
    assert db.push(conn, "core", [row("k1", 160, 11)]) == 1
    assert rollup(conn, "total") == [("1970-01-01", 210, 14)]


def test_duplicate_keys_in_one_push_count_once_with_the_larger_usage(conn: Any) -> None:
    assert db.push(conn, "core", [row("k1", 100), row("k1", 300), row("k1", 200)]) == 1
    assert conn.execute("SELECT input FROM tokenbudget.usage").fetchall() == [(300,)]
    assert rollup(conn, "day") == [("2026-11-29", 300, 5)]


def test_rollups_count_per_window_member_and_project_in_the_teams_zone(conn: Any) -> None:
    db.push(conn, "core", [
        row("a", 10, 1),
        row("b", 20, 2, member="bob@b", project="web"),
        row("c", 40, 4, at=AT - 86400),  # the day before, the same week (Monday start)
        row("d", 80, 8, at=AT - 31 * 86400),  # a month before
    ])
    # 17:40 UTC on the 28th is 07:40 on the 29th at UTC+14, a Sunday.
    assert rollup(conn, "day") == [("2026-10-29", 80, 8), ("2026-11-28", 40, 4),
                                  ("2026-11-29", 30, 3)]
    assert rollup(conn, "week") == [("2026-10-26", 80, 8), ("2026-11-23", 70, 7)]
    assert rollup(conn, "month") == [("2026-10-01", 80, 8), ("2026-11-01", 70, 7)]
    assert rollup(conn, "total", member="bob@b") == [("1970-01-01", 20, 2)]
    assert rollup(conn, "total", project="app") == [("1970-01-01", 130, 13)]
    everything = conn.execute(
        "SELECT sum(input + output + cache_write + cache_read), sum(cost_micros)"
        " FROM tokenbudget.usage").fetchone()
    assert rollup(conn, "total") == [("1970-01-01", *everything)]


def test_a_push_to_an_unknown_team_is_refused(conn: Any) -> None:
    with pytest.raises(Exception, match="no team named nobody"):
        db.push(conn, "nobody", [row("k1")])
    assert conn.execute("SELECT count(*) FROM tokenbudget.usage").fetchone() == (0,)


def test_errors_never_show_the_password() -> None:
    assert db.mask("postgresql://ann:s3cret@db.example/team") == \
        "postgresql://ann:***@db.example/team"
    assert db.mask("host=db user=ann password=s3cret dbname=t") == \
        "host=db user=ann password=*** dbname=t"
    assert db.mask("host=db password='a b\\' c' dbname=t") == "host=db password=*** dbname=t"
    assert db.mask("postgresql://db/t?user=ann&password=s3cret") == \
        "postgresql://db/t?user=ann&password=***"
    with pytest.raises(TeamError) as caught:
        db.connect("host=/nonexistent-socket-dir user=ann password=s3cret dbname=t", timeout=1)
    assert "s3cret" not in str(caught.value)
    assert "password=***" in str(caught.value)


def test_usage_of_no_project_is_pushed_and_counted_once(conn: Any) -> None:
    assert db.push(conn, "core", [row("k1", 100, 5, project="")]) == 1
    assert rollup(conn, "total") == [("1970-01-01", 100, 5)]
    assert rollup(conn, "total", project="(no project)") == [("1970-01-01", 100, 5)]
