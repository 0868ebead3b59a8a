#!/usr/bin/env python3
"""Backfill and report against ccusage on the same synthetic history, in the same run.

    python bench/backfill.py [--sessions 3500 --target-gb 1.2] [--rounds 3] [--reports 5]

- `tokenbudget sync` from an empty state (the first run a user makes), and
- `tokenbudget report --by day --json` after it (nothing new to read),
each against `ccusage daily --json --offline` (npm ccusage@18, Node) reading the same files
(HOME and CLAUDE_CONFIG_DIR point both at the history). Runs are interleaved, the page cache is
warmed first (so both read from memory), TZ=UTC for both. Wall time from perf_counter, peak RSS
from /usr/bin/time. The per-day token totals of both are compared with each other and with the
generator's truth.json. Needs `npm install --prefix /tmp/ccu ccusage@18` (or --ccusage PATH).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens")


def timed(argv: list[str], env: dict[str, str], out: Path | None = None
          ) -> tuple[float, int, bytes]:
    """(seconds, peak RSS in KiB, stdout) of one run through /usr/bin/time."""
    rss = common.WORK / "time.txt"
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *argv], env=env,
                       cwd=str(common.WORK), capture_output=True)
    t = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {p.stderr.decode()[-2000:]}")
    if out is not None:
        out.write_bytes(p.stdout)
    return t, int(rss.read_text().split()[-1]), p.stdout


def by_day(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {r["date"]: {f: int(r[f]) for f in FIELDS} for r in doc["daily"]}


def compare(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]]) -> dict[str, Any]:
    days = sorted(set(a) | set(b))
    diff = [d for d in days if a.get(d) != b.get(d)]
    return {"days": len(days), "days_differing": len(diff), "examples": {
        d: {"left": a.get(d), "right": b.get(d)} for d in diff[:3]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=3500)
    ap.add_argument("--target-gb", type=float, default=1.2)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--rounds", type=int, default=3, help="syncs from empty and ccusage runs")
    ap.add_argument("--reports", type=int, default=5, help="reports per round")
    ap.add_argument("--ccusage", default="/tmp/ccu/node_modules/.bin/ccusage")
    ap.add_argument("--keep", action="store_true", help="keep the generated history")
    ap.add_argument("--name", default="backfill")
    ap.add_argument("--before", metavar="REF",
                    help="also time the first sync of the package as committed at this git ref")
    a = ap.parse_args()
    py = common.bench_python()
    tb = str(py.parent / "tokenbudget")
    data = common.WORK / f"hist-backfill-{a.sessions}-{a.target_gb:g}-{a.seed}"
    truth = common.synth(data, "--sessions", str(a.sessions), "--target-gb", str(a.target_gb),
                         "--seed", str(a.seed))
    state = common.WORK / "state-backfill"
    shutil.rmtree(state, ignore_errors=True)
    common.write_config(state)
    env = common.state_env(data, state)
    ccusage = [a.ccusage, "daily", "--json", "--offline", "--timezone", "UTC"]
    ccu_version = subprocess.run([a.ccusage, "--version"], capture_output=True, text=True,
                                 env=env).stdout.strip()
    node_version = subprocess.run(["node", "--version"], capture_output=True,
                                  text=True).stdout.strip()

    common.log("warming the page cache")
    for f in (data / ".claude" / "projects").rglob("*.jsonl"):
        f.read_bytes()
    out_dir = common.WORK / "backfill-out"
    out_dir.mkdir(exist_ok=True)

    def sync_from_empty() -> tuple[float, int]:
        shutil.rmtree(common.data_dir(state), ignore_errors=True)
        t, rss, _ = timed([tb, "sync", "--json"], env, out_dir / "sync.json")
        return t, rss

    def report() -> tuple[float, int]:
        t, rss, _ = timed([tb, "report", "--by", "day", "--json"], env, out_dir / "tb-daily.json")
        return t, rss

    def ccu() -> tuple[float, int]:
        t, rss, _ = timed(ccusage, env, out_dir / "ccusage-daily.json")
        return t, rss

    before_tb = str(common.bench_python_at(a.before).parent / "tokenbudget") if a.before else None
    before_state = common.WORK / "state-backfill-before"

    def sync_before() -> tuple[float, int]:
        assert before_tb is not None
        shutil.rmtree(before_state, ignore_errors=True)
        common.write_config(before_state)
        t, rss, _ = timed([before_tb, "sync", "--json"], common.state_env(data, before_state))
        return t, rss

    sync_from_empty()  # the state must be synced before a report is timed
    results: dict[str, list[tuple[float, int]]] = {"sync": [], "report": [], "ccusage": []}
    fns = {"sync": sync_from_empty, "report": report, "ccusage": ccu, "sync_before": sync_before}
    if before_tb:
        results["sync_before"] = []
    rng = random.Random(0)
    for r in range(a.rounds):
        order = ["sync", "ccusage", *["report"] * a.reports]
        order += ["sync_before"] if before_tb else []
        rng.shuffle(order)
        for what in order:
            fn = fns[what]
            results[what].append(fn())
            common.log(f"round {r} {what}: {results[what][-1][0]:.2f} s, "
                       f"{results[what][-1][1] / 1024:.0f} MB")
    # Outputs of the last runs, compared.
    sync_out = json.loads((out_dir / "sync.json").read_text())
    tb_doc = json.loads((out_dir / "tb-daily.json").read_text())
    cc_doc = json.loads((out_dir / "ccusage-daily.json").read_text())
    truth_days = {d: {f: v[f] for f in FIELDS} for d, v in truth["daily"].items()}
    tbd, ccd = by_day(tb_doc), by_day(cc_doc)
    # Attribution checks beyond ccusage's reach: sessions (forks) and commands (subagents).
    _, _, sess = timed([tb, "report", "--by", "session", "--json"], env)
    _, _, cmds = timed([tb, "report", "--by", "command", "--json"], env)
    sess_tb = {r["sessionId"]: r["totalTokens"] for r in json.loads(sess)["sessions"]}
    cmd_tb = {r["command"]: r["totalTokens"] for r in json.loads(cmds)["commands"]}
    wrong_sessions = {s: (sess_tb.get(s), v) for s, v in truth["session_totals"].items()
                      if sess_tb.get(s) != v}
    wrong_commands = {c: (cmd_tb.get(c), v["totalTokens"]) for c, v in truth["commands"].items()
                      if cmd_tb.get(c) != v["totalTokens"]}
    ledger_bytes = (common.data_dir(state) / "ledger.json").stat().st_size
    history_bytes = (common.data_dir(state) / "history.jsonl").stat().st_size

    st = {k: common.stats([t for t, _ in v]) for k, v in results.items()}
    rss = {k: max(m for _, m in v) for k, v in results.items()}
    out = {
        "history": {"sessions": truth["sessions"], "files": truth["files"],
                    "bytes": truth["bytes"], "requests": truth["totals"]["requests"],
                    "seed": truth["seed"], "end": truth["end"]},
        "ccusage": ccu_version, "node": node_version, "page_cache": "warm",
        "stats": st, "peak_rss_kb": rss,
        "raw": {k: [list(x) for x in v] for k, v in results.items()},
        "ratios": {
            "ccusage_over_report": st["ccusage"]["median"] / st["report"]["median"],
            "sync_over_ccusage": st["sync"]["median"] / st["ccusage"]["median"],
            "sync_rss_over_ccusage": rss["sync"] / rss["ccusage"],
            "report_rss_over_ccusage": rss["report"] / rss["ccusage"],
        },
        "sync_output": sync_out,
        "totals": {"tokenbudget": {f: tb_doc["totals"][f] for f in FIELDS},
                   "ccusage": {f: cc_doc["totals"][f] for f in FIELDS},
                   "truth": {f: truth["totals"][f] for f in FIELDS}},
        "daily_tokenbudget_vs_ccusage": compare(tbd, ccd),
        "daily_tokenbudget_vs_truth": compare(tbd, truth_days),
        "daily_ccusage_vs_truth": compare(ccd, truth_days),
        "sessions_wrong": {"count": len(wrong_sessions), "of": len(truth["session_totals"]),
                           "examples": dict(list(wrong_sessions.items())[:5])},
        "commands_wrong": wrong_commands,
        "state_bytes": {"ledger": ledger_bytes, "history": history_bytes},
    }
    common.save(a.name, out)
    r = out["ratios"]
    print(f"\nhistory: {truth['sessions']} sessions, {truth['files']} files, "
          f"{truth['bytes'] / 1e9:.2f} GB, {truth['totals']['requests']} requests")
    if before_tb:
        out["ratios"]["sync_before_over_ccusage"] = (st["sync_before"]["median"]
                                                     / st["ccusage"]["median"])
        out["ratios"]["sync_before_over_sync"] = st["sync_before"]["median"] / st["sync"]["median"]
        common.save(a.name, out)
    for k in results:
        print(f"{k:8s} median {st[k]['median']:8.2f} s  (min {st[k]['min']:.2f}, max "
              f"{st[k]['max']:.2f}, n={st[k]['n']})  peak RSS {rss[k] / 1024:7.1f} MB")
    print(f"report is {r['ccusage_over_report']:.1f}x faster than ccusage (target >= 20x)")
    print(f"first sync takes {r['sync_over_ccusage']:.2f}x ccusage's time (target <= 1)")
    print(f"peak RSS: sync {r['sync_rss_over_ccusage']:.2f}x, report "
          f"{r['report_rss_over_ccusage']:.2f}x ccusage's (target <= 1)")
    for k in ("daily_tokenbudget_vs_ccusage", "daily_tokenbudget_vs_truth",
              "daily_ccusage_vs_truth"):
        print(f"{k}: {out[k]['days_differing']} of {out[k]['days']} days differ")
    print(f"sessions attributed wrongly: {len(wrong_sessions)}; commands: {wrong_commands}")
    if not a.keep:
        shutil.rmtree(data)
        common.log(f"deleted {data}")


if __name__ == "__main__":
    main()
