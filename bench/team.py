#!/usr/bin/env python3
"""Team mode: what it adds to a hook call, and how fast a team's pushes go.

    python bench/team.py [--rounds 40] [--members 50] [--pushes 20] [--rows 20]

1. One PreToolUse hook call with nothing new to read, team mode off vs on (joined, a cache
   file with four team budgets, usage waiting in the outbox and a push just made, so no sync
   starts), interleaved; target: on/off <= 1.1x.
2. Push throughput and latency: a throwaway PostgreSQL cluster (tests/pgcluster.py), one team,
   `--members` threads each making `--pushes` pushes of `--rows` new requests, at once; on the
   schema with the rollups moved per row (up to m006, the baseline) and per statement (m007,
   today's), alternated (`--push-runs` each).
3. A prompt near a team limit: UserPromptSubmit on totals older than the freshness bound (the
   hook fetches them from the server, psycopg's import included) vs on fresh totals (decided
   from the cache), interleaved: what the one bounded wait costs, and so the push lag a
   member's decision near a limit can have.
Run with the project's venv (psycopg installed); writes bench/results/team.json
(`--refresh-only`, `--hook-only` and `--push-only` run one part alone, into
results/team-refresh.json, team-hook.json and team-push.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import interleave, machine, ms, save, stats  # noqa: E402
from tests.helpers import install_fixture  # noqa: E402
from tests.pgcluster import Cluster, find_bindir  # noqa: E402

HOOK = [sys.executable, "-P", "-c", "from tokenbudget.hook import main; main()", "PreToolUse"]


def _home(root: Path, team: bool) -> tuple[dict[str, str], bytes]:
    home = root / ("team on" if team else "team off")
    state = home / "tb state"
    state.mkdir(parents=True)
    config: dict[str, object] = {"budgets": [{"kind": k, "limit": "900M"} for k in
                                             ("daily", "weekly", "monthly", "session")]}
    now = time.time()
    if team:
        config["team"] = {"dsn": "host=/nowhere dbname=t", "team": "core", "member": "ann@a"}
        budgets = [{"kind": k, "scope": s, "name": "", "limit": 9e8, "unit": "tokens",
                    "mode": "block", "warn_at": 0.8}
                   for k, s in (("daily", "team"), ("weekly", "team"), ("monthly", "team"),
                                ("daily", "member"))]
        (state / "team-cache.json").write_text(json.dumps({
            "version": 1, "team": "core", "member": "ann@a", "fetched": now,
            "timezone": "UTC", "week_start": 0, "projects": {},
            "totals": [["day", time.strftime("%Y-%m-%d", time.gmtime(now)), "", "", 5000, 9]],
            "budgets": budgets}))
        (state / "team-state.json").write_text(json.dumps({"last_push": now + 3600}))
    (state / "config.json").write_text(json.dumps(config))
    transcript = next(install_fixture("loop", home / ".claude").glob("*/*.jsonl"))
    env = dict(os.environ, HOME=str(home), TOKENBUDGET_HOME=str(state), TZ="UTC")
    event = json.dumps({"session_id": transcript.stem, "transcript_path": str(transcript),
                        "cwd": "/home/dev/project", "prompt_id": "p-1",
                        "tool_name": "Bash"}).encode()
    # No tool_use_id: the hook would wait (1 s at most) for a response naming one that the
    # transcript lacks (hook.py), which is not what a call with nothing new costs.
    subprocess.run([*HOOK[:-1], "Stop"], input=event, env=env, check=True,
                   capture_output=True)
    if team:  # usage waiting to be pushed, as on a busy machine between two pushes
        ledger_path = state / "ledger.json"
        ledger = json.loads(ledger_path.read_text())
        ledger["team"] = "core"
        ledger["outbox"] = {f"k{i:04}": ["s", "m", 10, 10, 0, 0, 100, int(now // 900), 0.001,
                                         "prompt", "/home/dev/project"] for i in range(200)}
        ledger_path.write_text(json.dumps(ledger, separators=(",", ":")))
    return env, event


def hook_cost(rounds: int) -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="tb-bench-team-"))
    try:
        cases: dict[str, Callable[[], float]] = {}
        for team in (False, True):
            env, event = _home(root, team)

            def call(env: dict[str, str] = env, event: bytes = event) -> float:
                t = time.perf_counter()
                out = subprocess.run(HOOK, input=event, env=env, capture_output=True)
                elapsed = time.perf_counter() - t
                assert out.returncode == 0 and out.stdout == b"{}\n", out
                return elapsed

            cases["on" if team else "off"] = call
        times = interleave(cases, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratios = sorted(a / b for a, b in zip(times["on"], times["off"], strict=True))
    return {"off": stats(times["off"]), "on": stats(times["on"]),
            "ratio_median": ratios[len(ratios) // 2]}


# The schema a push runs on: "row" stops at the last migration with the row trigger.
SCHEMAS = {"row": "m006_push_replaces_corrections", "statement": None}


def push_load(members: int, pushes: int, rows: int, upto: str | None = None
              ) -> dict[str, Any]:
    from tokenbudget.team import db, schema

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench/team.py: PostgreSQL's server programs are needed")
    cluster = Cluster(bindir)
    cluster.start()
    try:
        dsn = cluster.create_database("bench")
        with db.session(dsn) as conn:
            schema.migrate(conn, upto=upto)
            db.create_team(conn, "core")
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        now = time.time()

        def member(n: int) -> None:
            mine: list[float] = []
            try:
                with db.session(dsn) as conn:
                    for p in range(pushes):
                        batch = [{"key": f"m{n:02}-{p:03}-{r:03}", "member": f"m{n}",
                                  "machine": f"h{n}", "session": f"s{n}",
                                  "project": f"p{n % 5}", "model": "claude-opus",
                                  "command": "prompt", "at": now - r * 60, "input": 100,
                                  "output": 50, "cache_write": 10, "cache_read": 1000,
                                  "cost_micros": 1234} for r in range(rows)]
                        t = time.perf_counter()
                        db.push(conn, "core", batch)
                        mine.append(time.perf_counter() - t)
            except Exception as e:
                errors.append(str(e))
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=member, args=(n,)) for n in range(members)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        with db.session(dsn) as conn:
            total = conn.execute("SELECT tokens FROM tokenbudget.rollups WHERE window_kind ="
                                 " 'total' AND member = '' AND project = ''").fetchone()[0]
    finally:
        cluster.remove()
    expected = members * pushes * rows * 1160
    return {"members": members, "pushes": pushes, "rows": rows, "errors": errors,
            "wall_s": wall, "rows_per_s": members * pushes * rows / wall,
            "latency": stats(latencies), "total_ok": total == expected}


def refresh_cost(rounds: int) -> dict[str, object]:
    from tokenbudget.team import db, schema

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("bench/team.py: PostgreSQL's server programs are needed")
    cluster = Cluster(bindir)
    cluster.start()
    root = Path(tempfile.mkdtemp(prefix="tb-bench-refresh-"))
    try:
        dsn = cluster.create_database("bench")
        with db.session(dsn) as conn:
            schema.migrate(conn)
            db.create_team(conn, "core")
            db.set_budget(conn, "core", {"kind": "daily", "scope": "team", "name": "",
                                         "limit": 10000, "unit": "tokens", "mode": "block",
                                         "warn_at": 0.8})
            db.push(conn, "core", [{"key": "k1", "member": "bob@b", "machine": "h",
                                    "session": "s", "project": "p", "model": "claude-opus",
                                    "command": "prompt", "at": time.time(), "input": 10500,
                                    "output": 0, "cache_write": 0, "cache_read": 0,
                                    "cost_micros": 1}])
        cases: dict[str, Callable[[], float]] = {}
        for stale in (False, True):
            home = root / ("stale" if stale else "fresh")
            state = home / "tb state"
            state.mkdir(parents=True)
            env = dict(os.environ, HOME=str(home), TOKENBUDGET_HOME=str(state), TZ="UTC")
            subprocess.run([sys.executable, "-c", "from tokenbudget.cli import main; main()",
                            "team", "join", dsn, "--team", "core", "--member", "ann@a"],
                           env=env, check=True, capture_output=True)
            cache_path = state / "team-cache.json"
            hook = [*HOOK[:-1], "UserPromptSubmit"]
            n = [0]

            def call(env: dict[str, str] = env, stale: bool = stale,
                     cache_path: Path = cache_path, hook: list[str] = hook,
                     n: list[int] = n) -> float:
                data = json.loads(cache_path.read_text())
                data["fetched"] = time.time() - (60 if stale else 0)
                cache_path.write_text(json.dumps(data))
                (cache_path.parent / "team-state.json").write_text(
                    json.dumps({"last_push": time.time() + 3600,
                                "spawned": time.time() + 3600}))
                n[0] += 1
                event = json.dumps({"session_id": "5e55a7e2-0000-4000-8000-000000000001",
                                    "cwd": "/tmp", "prompt": "go", "prompt_id": f"p{n[0]}"})
                t = time.perf_counter()
                out = subprocess.run(hook, input=event.encode(), env=env, capture_output=True)
                elapsed = time.perf_counter() - t
                refused = b"the team's daily budget is used up"
                assert out.returncode == 0 and refused in out.stdout, out
                if stale:
                    assert json.loads(cache_path.read_text())["fetched"] > time.time() - 30
                return elapsed

            cases["stale" if stale else "fresh"] = call
        times = interleave(cases, rounds)
    finally:
        cluster.remove()
        shutil.rmtree(root, ignore_errors=True)
    ratios = sorted(a / b for a, b in zip(times["stale"], times["fresh"], strict=True))
    return {"fresh": stats(times["fresh"]), "stale": stats(times["stale"]),
            "ratio_median": ratios[len(ratios) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--members", type=int, default=50)
    ap.add_argument("--pushes", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20)
    ap.add_argument("--push-runs", type=int, default=2)
    ap.add_argument("--refresh-only", action="store_true")
    ap.add_argument("--push-only", action="store_true")
    ap.add_argument("--hook-only", action="store_true")
    args = ap.parse_args()
    if args.hook_only:
        hook = hook_cost(args.rounds)
        print(f"hook call, team on vs off: {hook['ratio_median']:.3f}x "
              f"({ms(hook['on']['median'])} vs {ms(hook['off']['median'])})")  # type: ignore[index]
        save("team-hook", {"machine": machine(), "hook": hook})
        return
    if args.push_only:
        save("team-push", {"machine": machine(), "push": push_compare(args)})
        return
    refresh = refresh_cost(args.rounds)
    print(f"prompt near a team limit, totals fetched vs cached: {refresh['ratio_median']:.3f}x "
          f"({ms(refresh['stale']['median'])} vs {ms(refresh['fresh']['median'])};"  # type: ignore[index]
          f" p95 {ms(refresh['stale']['p95'])})")  # type: ignore[index]
    if args.refresh_only:
        save("team-refresh", {"machine": machine(), "refresh": refresh})
        return
    hook = hook_cost(args.rounds)
    print(f"hook call, team on vs off: {hook['ratio_median']:.3f}x "
          f"({ms(hook['on']['median'])} vs {ms(hook['off']['median'])})")  # type: ignore[index]
    push = push_compare(args)
    save("team", {"machine": machine(), "hook": hook, "push": push, "refresh": refresh})


def push_compare(args: argparse.Namespace) -> dict[str, object]:
    """The push load on both schemas, alternated; each run's figures and the ratios of the
    medians over runs (statement / row)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    for _ in range(args.push_runs):
        for name, upto in SCHEMAS.items():
            load = push_load(args.members, args.pushes, args.rows, upto)
            runs[name].append(load)
            lat = load["latency"]
            print(f"{args.members} members pushing at once, rollups per {name}:"
                  f" {load['rows_per_s']:.0f} rows/s, push p50 {ms(lat['median'])},"
                  f" p95 {ms(lat['p95'])}, errors {len(load['errors'])},"
                  f" totals exact: {load['total_ok']}")

    # Each run of the new schema against the baseline run just before it.
    pairs = list(zip(runs["row"], runs["statement"], strict=True))
    ratios = {"p50": [s["latency"]["median"] / r["latency"]["median"] for r, s in pairs],
              "rows_per_s": [s["rows_per_s"] / r["rows_per_s"] for r, s in pairs]}
    print("per statement vs per row, each pair: push p50 "
          + ", ".join(f"{x:.3f}x" for x in ratios["p50"]) + "; rows/s "
          + ", ".join(f"{x:.2f}x" for x in ratios["rows_per_s"]))
    return {"runs": runs, "ratios": ratios}


if __name__ == "__main__":
    main()
