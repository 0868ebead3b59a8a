"""The team's usage as a Store: every member's pushed requests in the team's PostgreSQL database.

It answers the Store's usage operations (tokenbudget.store.Store) from the usage rows, the
way the local store answers them from its ledger, and records usage by a push (db.push). It
keeps no ledger: a hook decides from its own machine's ledger and never waits on the network,
so the ledger operations and the decision state's (warnings given, `tokenbudget allow`, hook
events; turns and a command's runs, which its rows do not group) raise TeamError
(`checkpoint` has nothing to fold and does nothing).
Beside them, what only a team has: its rollups of the current windows, its budgets, its
calendar. psycopg is imported when a method first talks to the server, never on a hook's path.

Each method opens its own connection, unless called inside `connected()`, which holds one for
all of them (a sync pushes and pulls on one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from tokenbudget.errors import TeamError
from tokenbudget.store import Store
from tokenbudget.team import db

_TOKENS = "u.input + u.output + u.cache_write + u.cache_read"


class PostgresStore(Store):
    """One team's usage in the database `dsn` names (`member`: who pushes through it)."""

    def __init__(self, dsn: str, team: str, member: str = "",
                 timeout: float = db.CONNECT_TIMEOUT) -> None:
        self.dsn, self.team, self.member, self.timeout = dsn, team, member, timeout
        self.location = f"{db.mask(dsn)} (team {team})"
        self._conn: Any = None

    @contextmanager
    def connected(self, statement_timeout: float | None = None) -> Iterator[PostgresStore]:
        """Hold one connection for every call inside; a database error becomes a TeamError."""
        if self._conn is not None:
            yield self
            return
        with db.session(self.dsn, self.timeout) as conn:
            if statement_timeout is not None:
                conn.execute(f"SET statement_timeout = {max(1, round(statement_timeout * 1000))}")
            self._conn = conn
            try:
                yield self
            finally:
                self._conn = None

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self.connected():
            return [tuple(r) for r in self._conn.execute(sql, args).fetchall()]

    # --- the ledger: not kept here -------------------------------------------------------

    def _no_ledger(self, what: str) -> NoReturn:
        raise TeamError(f"the team database keeps no ledger to {what}: each machine's ledger"
                        " is its own")

    def read(self, lazy: bool = False) -> tuple[Any, Any]:
        self._no_ledger("read")

    def transaction(self, known: Any = None, checkpoint: bool | str = False) -> Any:
        self._no_ledger("change")

    def move_aside(self, label: str = "corrupt", ledger: Any = None) -> Any:
        self._no_ledger("move aside")

    def checkpoint(self) -> None:
        """Nothing to fold: every push is committed whole, rollups with it."""

    def exists(self) -> bool:
        """Whether the team exists in the database (its schema up to date or not)."""
        with self.connected():
            if db.schema_missing(self._conn):
                return False
            row = self._conn.execute(
                "SELECT 1 FROM tokenbudget.teams WHERE name = %s", (self.team,)
            ).fetchone()
        return row is not None

    # --- decision state: each machine's own ------------------------------------------------

    def _no_turns(self) -> NoReturn:
        raise TeamError("the team database keeps no turns: its usage rows name a session and"
                        " a command, not the prompt they ran for")

    def _each_machine(self, what: str) -> NoReturn:
        raise TeamError(f"the team database keeps no {what}: each machine decides on its own"
                        " ledger")

    def turn_usage(self, session: str | None, prompt_id: str | None
                   ) -> tuple[str, float, float] | None:
        self._no_turns()

    def command_runs(self, command: str, exclude: str | None = None) -> list[list[float]]:
        self._no_turns()

    def first_warning(self, key: str) -> float | None:
        self._each_machine("warnings given")

    def record_warnings(self, keys: Any, now: float) -> None:
        self._each_machine("warnings given")

    def allow_state(self) -> dict[str, Any]:
        self._each_machine("`tokenbudget allow`")

    def grant_allow(self, now: float) -> None:
        self._each_machine("`tokenbudget allow`")

    def take_allow(self, session: str | None, prompt_id: str | None, base: dict[str, float],
                   now: float) -> None:
        self._each_machine("`tokenbudget allow`")

    def seen_event(self, fingerprint: str, now: float) -> bool:
        self._each_machine("hook events")

    # --- usage ---------------------------------------------------------------------------

    def record(self, rows: list[dict[str, Any]]) -> int:
        """Push usage rows (db.push): each request's larger usage is kept, so a repeated push
        changes nothing; how many rows were new or grew."""
        with self.connected():
            return db.push(self._conn, self.team, rows)

    def _where(self, start: float | None, end: float | None, project: str | None,
               member: str | None) -> tuple[str, tuple[Any, ...]]:
        sql = ("u.team = %s AND (%s::float8 IS NULL OR u.at >= to_timestamp(%s))"
               " AND (%s::float8 IS NULL OR u.at < to_timestamp(%s))"
               " AND (%s::text IS NULL OR u.member = %s)"
               " AND (%s::text IS NULL OR u.project = %s"
               " OR right(u.project, length(%s) + 1) = '/' || %s)")
        return sql, (self.team, start, start, end, end, member, member, project, project,
                     project, project)

    def usage_between(self, start: float | None, end: float | None,
                      project: str | None = None, member: str | None = None
                      ) -> tuple[int, float]:
        """(tokens, dollars) of the rows in [start, end), of one project (its remote or
        repository name, as team budgets name it) and one member if given."""
        where, args = self._where(start, end, project, member)
        [(tokens, micros)] = self._query(
            f"SELECT coalesce(sum({_TOKENS}), 0), coalesce(sum(u.cost_micros), 0)"
            f" FROM tokenbudget.usage AS u WHERE {where}", args)
        return int(tokens), int(micros) / 1_000_000

    def session_usage(self, session: str, member: str | None = None) -> tuple[int, float]:
        """(tokens, dollars) of one session (of one member's machines, if given)."""
        [(tokens, micros)] = self._query(
            f"SELECT coalesce(sum({_TOKENS}), 0), coalesce(sum(u.cost_micros), 0)"
            " FROM tokenbudget.usage AS u WHERE u.team = %s AND u.session = %s"
            " AND (%s::text IS NULL OR u.member = %s)", (self.team, session, member, member))
        return int(tokens), int(micros) / 1_000_000

    def block_activity(self, start: float | None, end: float | None,
                       member: str | None = None) -> list[float]:
        """The starts of the 15-minute buckets in [start, end) holding usage (one member's, if
        given: a 5-hour block is one person's), oldest first."""
        where, args = self._where(start, end, None, member)
        rows = self._query(
            f"SELECT DISTINCT extract(epoch FROM u.at)::float8 FROM tokenbudget.usage AS u"
            f" WHERE {where} AND {_TOKENS} > 0 ORDER BY 1", args)
        return [float(r[0]) for r in rows]

    def usage_by(self, by: str, since: str | None = None, until: str | None = None,
                 tz: Any = None, week_start: int = 0) -> list[dict[str, Any]]:
        """Report rows grouped on the server (team/report.py), days in the team's own zone
        and weeks from its own week start (`tz` and `week_start` are the local store's)."""
        from tokenbudget.team import report

        if by not in report.SHAPES:
            raise TeamError(f"the team store groups by {', '.join(report.SHAPES)}, not {by}")
        with self.connected():
            return report.fetch(self._conn, self.team, by, since, until)

    # --- what only a team has ------------------------------------------------------------

    def calendar(self) -> tuple[str, int]:
        """The team's time zone and week start; TeamError if there is no such team."""
        with self.connected():
            return db.team_info(self._conn, self.team)

    def totals(self, now: float) -> list[list[Any]]:
        """The rollups the member's budgets read at `now` (db.totals)."""
        with self.connected():
            return db.totals(self._conn, self.team, self.member, now)

    def budgets(self) -> list[dict[str, Any]]:
        with self.connected():
            return db.budgets(self._conn, self.team)

    def set_budget(self, budget: dict[str, Any]) -> None:
        with self.connected():
            db.set_budget(self._conn, self.team, budget)

    def remove_budget(self, kind: str, scope: str, name: str, command: str = "") -> bool:
        with self.connected():
            return db.remove_budget(self._conn, self.team, kind, scope, name, command)


def open_team_store(team_cfg: dict[str, str], timeout: float = db.CONNECT_TIMEOUT
                    ) -> PostgresStore:
    """The team store of a joined machine's config (`dsn`, `team`, `member`)."""
    return PostgresStore(team_cfg["dsn"], team_cfg["team"], team_cfg.get("member", ""),
                         timeout)
