#!/usr/bin/env python3
"""Ingestion costs only what is new: a Stop call after one new turn, on a 1 MB transcript and
on a 500 MB one, interleaved (and `python -c "import json"` as the usual baseline).

    python bench/incremental.py [--small-mb 1] [--big-mb 500] [--rounds 40]

Both sessions are live in the same ledger (synced once, untimed); before every call the ledger
is put back and the transcript cut back to its synced size, then one turn of 10 API requests
(about 1 MB with tool output, written as Claude Code writes it) is appended. Target: the two
medians within 10% of each other.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import hook_overhead
import synth

TURN_REQUESTS = 10


def write_transcript(root: Path, sid: str, cwd: str, target: int, seed: int, start: float
                     ) -> dict[str, Any]:
    """A session of about `target` bytes, written turn by turn; returns what the bench needs."""
    g = synth.Synth(seed)
    c = synth.Ctx(sid, cwd, f"bench-{seed}", "claude-opus-4-5-20251101")
    pdir = root / synth.project_dirname(cwd)
    pdir.mkdir(parents=True, exist_ok=True)
    path = pdir / f"{sid}.jsonl"
    size = 0
    ts = start
    pad = 12_000 if target > 50_000_000 else 2_000
    with open(path, "w", encoding="utf-8") as f:
        first = True
        while size < target:
            ts = g.turn(c, ts, TURN_REQUESTS, first=first, pad=pad) + 30
            first = False
            data = "\n".join(c.lines) + "\n"
            c.lines.clear()
            f.write(data)
            size += len(data.encode())
    return {"sid": sid, "cwd": cwd, "path": path, "size": path.stat().st_size, "last_ts": ts,
            "requests": g.truth.totals.requests}


def next_turn(s: dict[str, Any], seed: int) -> tuple[bytes, int]:
    g = synth.Synth(seed)
    c = synth.Ctx(s["sid"], s["cwd"], "bench-next", "claude-opus-4-5-20251101")
    c.context = 80_000
    g.turn(c, s["last_ts"] + 60, TURN_REQUESTS, pad=12_000)
    return ("\n".join(c.lines) + "\n").encode(), g.truth.totals.to_json()["totalTokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small-mb", type=float, default=1)
    ap.add_argument("--big-mb", type=float, default=500)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--name", default="incremental")
    a = ap.parse_args()
    py = common.bench_python()
    data = common.WORK / f"hist-incremental-{a.small_mb:g}-{a.big_mb:g}"
    state = common.WORK / "state-incremental"
    root = data / ".claude" / "projects"
    meta = data / "sessions.json"
    start = time.time() - 3 * 86400
    if not meta.exists():
        shutil.rmtree(data, ignore_errors=True)
        small = write_transcript(root, "11111111-1111-4111-8111-111111111111", "/home/dev/small",
                                 int(a.small_mb * 1e6), 1, start)
        big = write_transcript(root, "22222222-2222-4222-8222-222222222222", "/home/dev/big",
                               int(a.big_mb * 1e6), 2, start)
        meta.write_text(json.dumps({"small": small, "big": big}, default=str))
    sessions = json.loads(meta.read_text())
    for s in sessions.values():
        s["path"] = Path(s["path"])
    shutil.rmtree(state, ignore_errors=True)
    common.write_config(state, retention_days=30)
    env = common.state_env(data, state)
    t0 = time.perf_counter()
    common.run([str(py.parent / "tokenbudget"), "sync"], env=env)
    common.log(f"synced {sum(s['size'] for s in sessions.values()) / 1e6:.0f} MB in "
               f"{time.perf_counter() - t0:.1f} s")
    tb = common.data_dir(state)
    pristine = tb / "ledger.pristine.json"
    shutil.copyfile(tb / "ledger.json", pristine)
    turns = {k: next_turn(s, 7) for k, s in sessions.items()}
    counter = [0]

    def restore() -> None:
        shutil.copyfile(pristine, tb / "ledger.tmp-bench")
        os.replace(tb / "ledger.tmp-bench", tb / "ledger.json")
        (tb / "ledger.journal.jsonl").unlink(missing_ok=True)  # the last call's commit

    def call(key: str) -> float:
        s = sessions[key]
        restore()
        with open(s["path"], "r+b") as f:
            f.truncate(s["size"])
            f.seek(s["size"])
            f.write(turns[key][0])
        counter[0] += 1
        ev = common.hook_event("Stop", s["sid"], str(s["path"]), s["cwd"], counter[0])
        r = common.run([str(py), *common.HOOK_ARGS, "Stop"], stdin=ev, env=env)
        return r.seconds

    def baseline() -> float:
        return common.run([str(py), "-c", "import json"], env=env).seconds

    # Untimed check: the call counts exactly the new turn, for either size.
    for key, s in sessions.items():
        before = json.loads(pristine.read_text())["sessions"][s["sid"]]
        call(key)
        after = hook_overhead.stored(tb / "ledger.json")["sessions"][s["sid"]]
        got = (sum(sum(m[:5]) for m in after["m"].values())
               - sum(sum(m[:5]) for m in before["m"].values()))
        assert got == turns[key][1], (key, got, turns[key][1])
    times = common.interleave({"baseline": baseline, "small": lambda: call("small"),
                               "big": lambda: call("big")}, a.rounds)
    for s in sessions.values():
        with open(s["path"], "r+b") as f:
            f.truncate(s["size"])
    st = {k: common.stats(v) for k, v in times.items()}
    ratio = st["big"]["median"] / st["small"]["median"]
    out = {
        "transcripts": {k: {"bytes": s["size"], "requests": s["requests"]}
                        for k, s in sessions.items()},
        "turn": {k: {"bytes": len(t[0]), "tokens": t[1], "requests": TURN_REQUESTS}
                 for k, t in turns.items()},
        "ledger_bytes": pristine.stat().st_size,
        "stats": st, "raw": times,
        "ratio_big_over_small": ratio,
        "ratio_over_baseline": {k: st[k]["median"] / st["baseline"]["median"] for k in st},
    }
    common.save(a.name, out)
    for k in ("baseline", "small", "big"):
        print(f"{k:8s} median {common.ms(st[k]['median']):>9}  p95 {common.ms(st[k]['p95']):>9}")
    print(f"{sessions['big']['size'] / 1e6:.0f} MB vs {sessions['small']['size'] / 1e6:.1f} MB "
          f"transcript: {ratio:.3f}x (target within 1.10x)")
    if not a.keep:
        shutil.rmtree(data)


if __name__ == "__main__":
    main()
