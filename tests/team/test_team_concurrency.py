"""Eight members recording and pushing at once, with replays: exact totals, nothing counted
twice, no deadlock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.team.test_team_sync import joined, local_totals, server_totals
from tokenbudget.team import db, schema

REPO = Path(__file__).resolve().parents[2]
CASES = ["plain", "agent", "compacted", "slash", "loop", "continued"]


def test_eight_members_pushing_at_once_sum_exactly(
    tmp_path: Path, pg_dsn: str, recorded_day: float
) -> None:
    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
    homes = []
    for n in range(8):
        home = tmp_path / f"member {n}"
        home.mkdir()
        joined(home, pg_dsn, f"m{n}@host{n}")
        homes.append(home)
    procs = []
    for n, home in enumerate(homes):
        env = dict(os.environ, HOME=str(home), TOKENBUDGET_HOME=str(home / "tb state"),
                   PYTHONPATH=str(REPO))
        order = CASES[n % len(CASES):] + CASES[: n % len(CASES)]  # different orders
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.team.member_worker", f"m{n}", *order],
            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert json.loads(out.splitlines()[-1]) == {"replayChanged": 0}
    locals_ = [local_totals(home) for home in homes]
    assert all(t[0] > 0 for t in locals_)
    assert server_totals(pg_dsn) == (sum(t[0] for t in locals_), sum(t[1] for t in locals_))
    for n, home in enumerate(homes):
        assert server_totals(pg_dsn, f"m{n}@host{n}") == local_totals(home)
    with db.session(pg_dsn) as conn:
        usage = conn.execute(
            "SELECT sum(input + output + cache_write + cache_read), sum(cost_micros),"
            " count(*), count(DISTINCT request_key) FROM tokenbudget.usage").fetchone()
        deadlocks = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert (usage[0], usage[1]) == server_totals(pg_dsn)  # rollups = rows: no double add
    assert usage[2] == usage[3]
    assert deadlocks == (0,)


def test_pushes_that_touch_the_same_days_in_opposite_orders_never_deadlock(pg_dsn: str) -> None:
    import threading

    from tests.team.test_team_schema import AT, row

    with db.session(pg_dsn) as conn:
        schema.migrate(conn)
        db.create_team(conn, "core")
    errors: list[str] = []

    def member(n: int) -> None:
        # Even members' first key falls on one day, odd members' on the next: without one
        # lock per team, two pushes would lock the two days' rollup rows in opposite orders.
        days = (0, 86400) if n % 2 else (86400, 0)
        try:
            with db.session(pg_dsn) as conn:
                for i in range(40):
                    db.push(conn, "core", [
                        row(f"m{n}-{i:03}-a", 10, 1, member=f"m{n}", at=AT + days[0]),
                        row(f"m{n}-{i:03}-b", 20, 2, member=f"m{n}", at=AT + days[1]),
                    ])
        except Exception as e:  # a deadlock reaches here as an error of the push
            errors.append(str(e))

    threads = [threading.Thread(target=member, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    assert server_totals(pg_dsn) == (8 * 40 * 30, 8 * 40 * 3)
