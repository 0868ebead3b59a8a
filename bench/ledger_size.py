#!/usr/bin/env python3
"""How big the ledger gets, what fills it, and the hook's peak RSS, from 5,000 to 50,000 sessions.

    python bench/ledger_size.py [--chunks 10] [--chunk-sessions 5000] [--days 365]
                                [--retention-days 14] [--ref REF | --reinstall] [--name NAME]

History is added in chunks of 5,000 sessions (each spread over the same `--days` before today,
so after k chunks the user has had k*5,000 sessions that year), with `tokenbudget sync` after
each (retention: tokenbudget's default, 2 days, unless `--retention-days`; older sessions fold
into history.jsonl). After each sync: ledger.json's size and what fills it, and one PreToolUse
call's peak RSS (/usr/bin/time) and wall time against `python -c "import json"`. The all-live
worst case comes from bench/hook_overhead.py's state (5,000 sessions within 10 days), if it
exists.
Targets: ledger <= 1 MB, hook <= 50 MB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


def _size(v: Any) -> int:
    return len(json.dumps(v, separators=(",", ":")))


def breakdown(ledger: dict[str, Any]) -> dict[str, Any]:
    """Bytes of each part of the ledger, the big ones split further."""
    total = _size(ledger)
    parts = {k: _size(v) for k, v in ledger.items()}
    fields: dict[str, int] = {}
    for s in ledger["sessions"].values():
        for k, v in s.items():
            fields[k] = fields.get(k, 0) + _size(v)
    keys = ledger["keys"]
    per_key = parts["keys"] / len(keys) if keys else 0
    sample = next(iter(keys.values())) if keys else []
    # What one request record is made of: its 16-char key and the fields of its value.
    key_parts = {}
    if keys:
        recs = list(keys.values())
        key_parts = {
            "key (blake2b hex) and punctuation": 16 + 2 + 1 + 1 + 2,
            "session id": statistics.fmean(_size(r[0]) + 1 for r in recs),
            "model": statistics.fmean(_size(r[1]) + 1 for r in recs),
            "5 token counts": statistics.fmean(sum(_size(x) + 1 for x in r[2:7]) for r in recs),
            "hour": statistics.fmean(_size(r[7]) + 1 for r in recs),
            "cost (float)": statistics.fmean(_size(r[8]) + 1 for r in recs),
            "turn (prompt id)": statistics.fmean(_size(r[9]) + 1 for r in recs),
        }
        key_parts = {k: round(v, 1) for k, v in key_parts.items()}
    cells = sum(len(v) for v in ledger["hours"].values())
    # Buckets before the last 2 days hold a whole local day each (see ingest.prune_hours).
    recent = ledger["updated"] - 3 * 86400
    merged = {h: v for h, v in ledger["hours"].items() if int(h) * 900 < recent}
    detail = {
        "hours: merged days": _size(merged),
        "hours: 15-minute buckets": parts["hours"] - _size(merged),
        "files: paths": sum(_size(p) + 1 for p in ledger["files"]),
        "files: positions": parts["files"] - sum(_size(p) + 1 for p in ledger["files"]),
        "sessions c: keys (bucket, model, turn)": sum(
            _size(k) + 1 for s in ledger["sessions"].values() for k in s.get("c", {})),
        "sessions t: keys (prompt ids)": sum(
            _size(k) + 1 for s in ledger["sessions"].values() for k in s["t"]),
    }
    return {
        "bytes": total, "parts": parts,
        "share": {k: round(v / total, 3) for k, v in parts.items() if v / total >= 0.005},
        "live_sessions": len(ledger["sessions"]),
        "folded_sessions": ledger["folded"]["sessions"],
        "session_fields": fields,
        "request_records": len(keys), "bytes_per_request_record": round(per_key, 1),
        "request_record_parts": key_parts, "request_record_sample": sample,
        "requests_per_live_session": round(len(keys) / max(1, len(ledger["sessions"])), 1),
        "files": len(ledger["files"]),
        "bytes_per_file_record": round(parts["files"] / max(1, len(ledger["files"])), 1),
        "hour_buckets": len(ledger["hours"]), "hour_cells": cells,
        "merged_day_buckets": len(merged), "detail": detail,
        "bytes_per_hour_cell": round(parts["hours"] / max(1, cells), 1),
    }


def hook_cost(py: Path, env: dict[str, str], tb: Path, latest: dict[str, Any], runs: int
              ) -> dict[str, Any]:
    """Peak RSS and median wall time of one PreToolUse call (ledger put back every time)."""
    pristine = tb / "ledger.size-bench.json"  # not hook_overhead's ledger.pristine.json
    shutil.copyfile(tb / "ledger.json", pristine)
    walls, base, rss = [], [], []
    for i in range(runs):
        shutil.copyfile(pristine, tb / "ledger.json")
        ev = common.hook_event("PreToolUse", latest["session"], latest["transcript"],
                               latest["cwd"], 10 + i)
        rss.append(common.peak_rss_kb([str(py), *common.HOOK_ARGS, "PreToolUse"],
                                      stdin=ev, env=env))
        shutil.copyfile(pristine, tb / "ledger.json")
        walls.append(common.run([str(py), *common.HOOK_ARGS, "PreToolUse"],
                                stdin=ev, env=env).seconds)
        base.append(common.run([str(py), "-c", "import json"], env=env).seconds)
    shutil.copyfile(pristine, tb / "ledger.json")
    pristine.unlink()
    return {"peak_rss_kb": max(rss), "hook_median_s": statistics.median(walls),
            "baseline_median_s": statistics.median(base),
            "ratio": statistics.median(walls) / statistics.median(base),
            "baseline_rss_kb": common.peak_rss_kb([str(py), "-c", "import json"], env=env)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--chunk-sessions", type=int, default=5000)
    ap.add_argument("--days", type=float, default=365)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--name", default="ledger_size")
    ap.add_argument("--retention-days", type=int, default=None,
                    help="retention_days in config.json (default: left out, so tokenbudget's)")
    ap.add_argument("--ref", help="measure the package as committed at REF (e.g. before a change)")
    ap.add_argument("--reinstall", action="store_true", help="reinstall the working tree first")
    a = ap.parse_args()
    py = common.bench_python_at(a.ref) if a.ref else common.bench_python(reinstall=a.reinstall)
    root = common.WORK / f"hist-chunks-{a.chunk_sessions}-{a.days:g}"
    state = common.WORK / "state-chunks"
    shutil.rmtree(state, ignore_errors=True)
    common.write_config(state, retention_days=a.retention_days)
    tb = common.data_dir(state)
    steps = []
    dirs: list[Path] = []
    latest: dict[str, Any] = {"last_ts": 0}
    for k in range(1, a.chunks + 1):
        chunk = root / f"chunk-{k:02d}"
        truth = common.synth(chunk, "--sessions", str(a.chunk_sessions), "--seed", str(100 + k),
                             "--days", str(a.days), "--lean")
        dirs.append(chunk / ".claude")
        if truth["latest"]["last_ts"] > latest["last_ts"]:
            latest = truth["latest"]
        env = common.state_env(chunk, state)
        env["CLAUDE_CONFIG_DIR"] = ",".join(str(d) for d in dirs)
        t0 = time.perf_counter()
        common.run([str(py.parent / "tokenbudget"), "sync"], env=env)
        sync_s = time.perf_counter() - t0
        ledger = json.loads((tb / "ledger.json").read_text())
        step = {"sessions": k * a.chunk_sessions, "sync_seconds": round(sync_s, 1),
                "history_bytes": (tb / "history.jsonl").stat().st_size,
                "ledger": breakdown(ledger)}
        if k in (1, a.chunks) or k % 3 == 0:
            step["hook"] = hook_cost(py, env, tb, latest, a.runs)
        steps.append(step)
        b = step["ledger"]
        h = step.get("hook")
        common.log(f"{step['sessions']} sessions: ledger {b['bytes'] / 1e6:.2f} MB "
                   f"({b['live_sessions']} live, {b['request_records']} request records), sync "
                   f"{sync_s:.0f} s" + (f", hook {h['peak_rss_kb'] / 1024:.1f} MB RSS, "
                                        f"{h['ratio']:.2f}x" if h else ""))
    worst = None
    worst_state = common.WORK / "state-5000-worst"
    worst_ledger = common.data_dir(worst_state) / "ledger.pristine.json"
    if worst_ledger.exists():
        wl = json.loads(worst_ledger.read_text())
        worst = {"sessions": 5000, "ledger": breakdown(wl)}
        wt = json.loads((common.WORK / "hist-5000-worst" / "truth.json").read_text())
        wenv = common.state_env(common.WORK / "hist-5000-worst", worst_state)
        shutil.copyfile(worst_ledger, common.data_dir(worst_state) / "ledger.json")
        worst["hook"] = hook_cost(py, wenv, common.data_dir(worst_state), wt["latest"], 3)
    common.save(a.name, {"chunk_sessions": a.chunk_sessions, "days": a.days,
                         "retention_days": a.retention_days or "tokenbudget's default",
                         "measured": common.installed(py.parent.parent),
                         "steps": steps,
                         "worst_5000_all_live": worst})
    print("\nsessions  ledger MB  live  records  hook RSS MB  hook/baseline")
    for s in steps + ([worst] if worst else []):
        b, h = s["ledger"], s.get("hook")
        print(f"{s['sessions']:8d} {b['bytes'] / 1e6:9.2f} {b['live_sessions']:5d} "
              f"{b['request_records']:8d} " + (f"{h['peak_rss_kb'] / 1024:11.1f} "
                                                f"{h['ratio']:13.2f}" if h else ""))
    last = steps[-1]["ledger"]
    print(f"\nwhat fills it at {steps[-1]['sessions']} sessions ({last['bytes']} bytes):")
    fills = {f"sessions {k}": v for k, v in last["session_fields"].items()}
    fills.update({k: v for k, v in last["parts"].items() if k != "sessions"})
    fills.update(last["detail"])
    for k, v in sorted(fills.items(), key=lambda kv: -kv[1])[:16]:
        print(f"  {v / last['bytes']:6.1%} {v:9d}  {k}")
    if not a.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
