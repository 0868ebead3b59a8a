#!/usr/bin/env python3
"""Hooks and `sync_all` loops folding the sessions the hooks are reading: counted exactly?

    python bench/fold_race.py --before REF [--rounds 5] [--hooks 4] [--syncs 2] [--turns 25]
        [--days 10] [--name fold_race]

Each round, for the package at REF and for this tree (in that order, with the same seed),
`--hooks` processes append to their own session's transcript and call the hook on it
(tests/reliability_workers.py `hooks`: responses of 1-3 lines, the last line sometimes cut in
two writes) while `--syncs` processes run `sync_all` again and again. tokenbudget's clock is
`--days` past the transcripts' times, so every sync folds every session it has read while its
hooks go on with it. After one last sync, the ledger's input tokens (live and folded) are
compared with what the transcripts hold. Timing is not measured: this counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    REPO,
    WORK,
    bench_python,
    bench_python_at,
    clean_env,
    log,
    save,
)

T0 = 1795800000.0  # tests/reliability_workers.py: the synthetic transcripts start here
# The workers of this tree, run by another version's Python: only tests/ comes from here,
# tokenbudget from that venv (-P keeps the working directory off sys.path).
RUNNER = """
import sys
sys.path.insert(0, sys.argv.pop(1))
from tests import reliability_workers
reliability_workers.main(sys.argv[1:])
"""
COUNT = """
import json
from tests.reliability_workers import ledger_usage, session_usage
total = ledger_usage()
print(json.dumps({"input": total.input, "sessions": {k: v.input for k, v in
                  session_usage().items()}}))
"""


def workers_dir() -> Path:
    """A folder holding only this tree's tests/reliability_workers.py."""
    out = WORK / "fold-race-workers"
    (out / "tests").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests" / "reliability_workers.py", out / "tests")
    return out


def one_run(py: Path, seed: int, a: argparse.Namespace) -> dict[str, object]:
    base = Path(tempfile.mkdtemp(prefix="tb-fold-race-", dir="/dev/shm"
                                 if os.access("/dev/shm", os.W_OK) else None))
    try:
        home, state = base / "home", base / "state"
        home.mkdir()
        state.mkdir()
        (state / "config.json").write_text(json.dumps({"version": 1, "budgets": [
            {"kind": "session", "limit": "1000M"}, {"kind": "daily", "limit": "$1000000"}]}))
        env = clean_env(HOME=str(home), TOKENBUDGET_HOME=str(state),
                        TOKENBUDGET_NOW=repr(T0 + a.days * 86400))
        wdir = str(workers_dir())
        go, stop = base / "go", base / "stop"

        def start(*argv: str) -> subprocess.Popen[bytes]:
            return subprocess.Popen([str(py), "-P", "-c", RUNNER, wdir, *argv], env=env,
                                    cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        procs = [start("hooks", str(w), str(a.turns), str(seed * 100 + w), str(go), "[]", "0")
                 for w in range(a.hooks)]
        syncs = [start("syncs", str(go), str(stop)) for _ in range(a.syncs)]
        for p in procs + syncs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == b"ready", (line, p.stderr.read() if p.stderr else b"")
        go.touch()
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err.decode()[-2000:]
            reports.append(json.loads(out.splitlines()[-1]))
        stop.touch()
        loops = []
        for p in syncs:
            out, err = p.communicate(timeout=600)
            assert p.returncode == 0, err.decode()[-2000:]
            loops.append(json.loads(out.splitlines()[-1])["syncs"])
        last = "from tokenbudget import sync; sync.sync_all(sync.open_store())"
        subprocess.run([str(py), "-P", "-c", last], env=env, cwd=base, check=True)
        counted = json.loads(subprocess.run(
            [str(py), "-P", "-c", f"import sys; sys.path.insert(0, {wdir!r})\n" + COUNT],
            env=env, cwd=base, check=True, capture_output=True).stdout)
        truth = {r["sid"]: r["truth"][0] for r in reports}
        wrong = sum(counted["sessions"].get(sid) != n for sid, n in truth.items())
        return {"truth_input": sum(truth.values()), "counted_input": counted["input"],
                "sessions_wrong": wrong, "syncs": loops,
                "bad": [b for r in reports for b in r["bad"]]}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git ref of the code to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hooks", type=int, default=4)
    ap.add_argument("--syncs", type=int, default=2)
    ap.add_argument("--turns", type=int, default=25)
    ap.add_argument("--days", type=float, default=10.0, help="the clock ahead of the transcripts")
    ap.add_argument("--name", default="fold_race", help="results/NAME.json")
    a = ap.parse_args()
    versions = {"before": bench_python_at(a.before), "after": bench_python(reinstall=True)}
    rounds = []
    for r in range(a.rounds):
        row = {name: one_run(py, r + 1, a) for name, py in versions.items()}
        log(f"round {r + 1}: " + ", ".join(
            f"{k} {v['counted_input']:,} for {v['truth_input']:,}" for k, v in row.items()))
        rounds.append(row)
    save(a.name, {"args": vars(a), "rounds": rounds})
    print("| round | truth (input) | before | after | sessions wrong before / after |")
    print("|---|---:|---:|---:|---|")
    for n, row in enumerate(rounds, 1):
        b, f = row["before"], row["after"]
        print(f"| {n} | {b['truth_input']:,} | {b['counted_input']:,} | {f['counted_input']:,}"
              f" | {b['sessions_wrong']} / {f['sessions_wrong']} of {a.hooks} |")


if __name__ == "__main__":
    main()
