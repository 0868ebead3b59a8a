"""The throwaway server itself: the team tests stand on it."""

from __future__ import annotations

from tests.pgcluster import Cluster


def test_the_server_is_postgresql_15_or_newer_and_fresh(pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert version is not None and int(version[0]) >= 150000
    assert tables == (0,)


def test_a_stopped_server_refuses_then_serves_again(pg_cluster: Cluster, pg_dsn: str) -> None:
    import psycopg

    pg_cluster.stop()
    try:
        psycopg.connect(pg_dsn, connect_timeout=2).close()
        raise AssertionError("connected to a stopped server")
    except psycopg.OperationalError:
        pass
    pg_cluster.start()
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
