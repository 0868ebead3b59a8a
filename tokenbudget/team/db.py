"""Talking to the team database: connect, create a team, push usage, read totals and budgets.

A DSN's password never reaches a message: errors name the DSN masked (`mask`) and have any
password taken out of the server's own text. libpq's own ways to give a password (PGPASSWORD,
PGPASSFILE and ~/.pgpass, service files) work as with psql: the DSN is handed to libpq as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from tokenbudget.errors import TeamError

CONNECT_TIMEOUT = 5  # seconds; libpq's own default waits for ever
_URL_PASSWORD = re.compile(r"^([a-z]+://[^:/@]*):[^@]*@", re.IGNORECASE)
_KW_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask(dsn: str) -> str:
    """The DSN with its password, if any, shown as ***."""
    masked = _URL_PASSWORD.sub(r"\1:***@", dsn)
    masked = re.sub(r"([?&]password=)[^&]*", r"\1***", masked, flags=re.IGNORECASE)
    return _KW_PASSWORD.sub(r"\1***", masked)


def _password(dsn: str) -> str | None:
    try:
        from psycopg.conninfo import conninfo_to_dict

        value = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return str(value) if value else None


def _clean(text: str, dsn: str) -> str:
    """A server or libpq message in one line, without the DSN's password."""
    line = " ".join(text.split())
    secret = _password(dsn)
    if secret:
        line = line.replace(secret, "***")
    return line


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise TeamError(
            "team mode needs psycopg: pip install 'tokenbudget[team]'"
        ) from None
    return psycopg


def connect(dsn: str, timeout: float = CONNECT_TIMEOUT) -> Any:
    """An open connection (autocommit: callers open their transactions); TeamError if not."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=max(1, round(timeout)),
            application_name="tokenbudget",
        )
    except psycopg.Error as e:
        raise TeamError(f"cannot reach the team database {mask(dsn)}: {_clean(str(e), dsn)}") \
            from None
    except Exception as e:  # a DSN libpq cannot parse
        raise TeamError(f"bad team database DSN {mask(dsn)}: {_clean(str(e), dsn)}") from None


@contextmanager
def session(dsn: str, timeout: float = CONNECT_TIMEOUT) -> Iterator[Any]:
    """A connection, closed at the end; a database error becomes one clean TeamError line."""
    psycopg = _psycopg()
    conn = connect(dsn, timeout)
    try:
        yield conn
    except psycopg.Error as e:
        # The server's own sentence; its CONTEXT (the whole statement) is no help here.
        text = getattr(getattr(e, "diag", None), "message_primary", None) or str(e)
        raise TeamError(f"team database {mask(dsn)}: {_clean(text, dsn)}") from None
    finally:
        conn.close()


def schema_missing(conn: Any) -> bool:
    """Whether the database has no team schema yet (`team init` not run)."""
    return conn.execute("SELECT to_regclass('tokenbudget.teams')").fetchone()[0] is None


def create_team(conn: Any, team: str, timezone: str = "UTC", week_start: int = 0) -> bool:
    """Create the team if it does not exist; True if it was created."""
    zone_ok = conn.execute(
        "SELECT count(*) FROM pg_timezone_names WHERE name = %s", (timezone,)
    ).fetchone()[0]
    if not zone_ok:
        raise TeamError(f"unknown time zone {timezone!r} (an IANA name, like Europe/Berlin)")
    row = conn.execute(
        "INSERT INTO tokenbudget.teams (name, timezone, week_start) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING RETURNING name",
        (team, timezone, week_start),
    ).fetchone()
    return row is not None


def team_info(conn: Any, team: str) -> tuple[str, int]:
    """The team's time zone and week start; TeamError if there is no such team."""
    row = conn.execute(
        "SELECT timezone, week_start FROM tokenbudget.teams WHERE name = %s", (team,)
    ).fetchone()
    if row is None:
        raise TeamError(
            f"no team named {team!r} in the team database:"
            f" create it with `tokenbudget team init DSN --team {team}`"
        )
    return str(row[0]), int(row[1])


PUSH_BATCH = 1000


def push(conn: Any, team: str, rows: Sequence[dict[str, Any]]) -> int:
    """Upsert usage rows, in batches sorted by key, each its own transaction; rows changed."""
    from psycopg.types.json import Jsonb

    ordered = sorted(rows, key=lambda r: str(r["key"]))
    changed = 0
    for i in range(0, len(ordered), PUSH_BATCH):
        batch = ordered[i : i + PUSH_BATCH]
        with conn.transaction():
            row = conn.execute(
                "SELECT tokenbudget.push(%s, %s)", (team, Jsonb(batch))
            ).fetchone()
        changed += int(row[0])
    return changed


def totals(conn: Any, team: str, member: str, now: float) -> list[list[Any]]:
    """The rollups a member's budgets read: the team's, the member's and every project's rows
    of the day, week, month (in the team's zone) holding `now`, and of all time, as
    [window kind, window start, member, project, tokens, cost micros]."""
    rows = conn.execute(
        """
        SELECT r.window_kind, r.window_start::text, r.member, r.project, r.tokens,
               r.cost_micros
        FROM tokenbudget.teams AS t,
             tokenbudget.window_starts((to_timestamp(%s) AT TIME ZONE t.timezone)::date,
                                       t.week_start) AS w
             JOIN tokenbudget.rollups AS r
               ON r.window_kind = w.window_kind AND r.window_start = w.window_start
        WHERE t.name = %s AND r.team = t.name
          AND (r.member = '' OR (r.member = %s AND r.project = ''))
        ORDER BY 1, 2, 3, 4
        """,
        (now, team, member),
    ).fetchall()
    return [list(r) for r in rows]


def budgets(conn: Any, team: str) -> list[dict[str, Any]]:
    """The team's budgets, in a stable order."""
    rows = conn.execute(
        "SELECT kind, scope, name, limit_value, unit, mode, warn_at, command"
        " FROM tokenbudget.budgets WHERE team = %s ORDER BY kind, scope, name, command",
        (team,),
    ).fetchall()
    fields = ("kind", "scope", "name", "limit", "unit", "mode", "warn_at", "command")
    return [dict(zip(fields, r, strict=True)) for r in rows]


def set_budget(conn: Any, team: str, b: dict[str, Any]) -> None:
    """Create or replace one team budget."""
    conn.execute(
        "INSERT INTO tokenbudget.budgets (team, kind, scope, name, command, limit_value, unit,"
        " mode, warn_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (team, kind, scope, name, command) DO UPDATE"
        " SET limit_value = excluded.limit_value, unit = excluded.unit, mode = excluded.mode,"
        " warn_at = excluded.warn_at, changed = now()",
        (team, b["kind"], b["scope"], b["name"], b.get("command", ""), b["limit"], b["unit"],
         b["mode"], b["warn_at"]),
    )


def remove_budget(conn: Any, team: str, kind: str, scope: str, name: str,
                  command: str = "") -> bool:
    """Remove one team budget; False if there was none."""
    cur = conn.execute(
        "DELETE FROM tokenbudget.budgets WHERE team = %s AND kind = %s AND scope = %s"
        " AND name = %s AND command = %s",
        (team, kind, scope, name, command),
    )
    return bool(cur.rowcount)
