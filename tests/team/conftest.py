"""The team tests run against a real PostgreSQL server made for the session.

Without PostgreSQL's server programs or psycopg they are skipped, with one line saying why,
except in CI (CI=true), where a missing server is a failure: CI must run them.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import claude_bin, fake_api, run_claude  # noqa: F401  (test_team_e2e)
from tests.pgcluster import Cluster, find_bindir

SKIPPED: list[str] = []
_numbers = itertools.count()


def _unavailable() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[team]')"
    if find_bindir() is None:
        return "PostgreSQL's server programs (initdb) were not found (apt-get install postgresql)"
    return None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A PostgreSQL server of the test session's own, removed at its end."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"team tests need PostgreSQL in CI: {reason}", pytrace=False)
        SKIPPED.append(reason)
        pytest.skip(f"team tests skipped: {reason}")
    bindir = find_bindir()
    assert bindir is not None
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty database on the session's server; the server is running again after."""
    if not pg_cluster.running:
        pg_cluster.start()
    yield pg_cluster.create_database(f"t{os.getpid()}_{next(_numbers)}")
    if not pg_cluster.running:
        pg_cluster.start()


@pytest.fixture
def team_dsn(pg_dsn: str) -> str:
    """A fresh database with the team schema and the team "core"."""
    from tokenbudget.team import db, schema

    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
    return pg_dsn


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPED:
        terminalreporter.write_line(f"team tests skipped: {SKIPPED[0]}")
