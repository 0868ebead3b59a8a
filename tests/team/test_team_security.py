"""The README's admin setup: a member writes only its own usage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.team.test_team_schema import row
from tokenbudget.errors import TeamError
from tokenbudget.team import db, schema

README = Path(__file__).resolve().parents[2] / "README.md"


def admin_sql() -> str:
    text = README.read_text()
    after = text[text.index("<!-- team-admin-sql"):]
    found = re.search(r"```sql\n(.*?)```", after, re.S)
    assert found is not None
    return found.group(1)


def test_a_member_role_adds_and_grows_its_own_usage_only(pg_dsn: str) -> None:
    import psycopg

    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
        conn.execute("DROP ROLE IF EXISTS \"ann@laptop\"")
        conn.execute("DROP ROLE IF EXISTS tokenbudget_member")
        conn.execute(admin_sql())
    ann = pg_dsn.replace("user=postgres", "user=ann@laptop")
    try:
        with db.session(ann) as conn:
            assert db.push(conn, "core", [row("k1", 100, member="ann@laptop")]) == 1
            assert db.push(conn, "core", [row("k1", 150, member="ann@laptop")]) == 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level"):
                db.push(conn, "core", [row("k2", 100, member="bob@desk")])
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM tokenbudget.usage")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.set_budget(conn, "core", {"kind": "daily", "scope": "team", "name": "",
                                             "limit": 1e9, "unit": "tokens", "mode": "block",
                                             "warn_at": 0.8})
            totals = conn.execute(
                "SELECT tokens FROM tokenbudget.rollups WHERE window_kind = 'total'"
                " AND member = '' AND project = ''").fetchall()
        assert totals == [(150,)]
        with pytest.raises(TeamError) as caught, db.session(ann) as conn:
            db.push(conn, "core", [row("k2", 100, member="bob@desk")])
        # One line, the server's sentence without the statement it came from.
        assert str(caught.value) == (f"team database {ann}: new row violates row-level"
                                     ' security policy for table "usage"')
    finally:
        with db.session(pg_dsn) as conn:
            conn.execute("DROP OWNED BY \"ann@laptop\", tokenbudget_member")
            conn.execute("DROP ROLE \"ann@laptop\"")
            conn.execute("DROP ROLE tokenbudget_member")

