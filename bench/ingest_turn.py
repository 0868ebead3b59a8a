#!/usr/bin/env python3
"""What ingesting one turn's lines costs in-process: REF's tokenbudget against this tree's.

    TB_BENCH_DIR=/tmp/tb-bench-x python bench/ingest_turn.py --before REF [--rounds 20] \
      [--reps 40] [--case loop]

The turn is a recorded fixture's main transcript (tests/fixtures/claude-code-2.1.328/CASE:
`loop` is one `claude -p` turn of 6 requests and 5 tool calls, with every line Claude Code
writes: prompts, attachments, each request's `api-request`, `-blob` and `-shape` lines,
responses, the process's cost-state). Each measurement is a child process of one version
(REF's installed copy or this tree's, as bench/common.py installs them) that reads the whole
file into a new empty ledger `--reps` times (`Ingestor.ingest_file`, what a hook call with
news does with its session's new lines, and the changes a commit would journal,
`journal.changes`) and prints the median CPU time (`time.process_time`) of one read. One round
runs each version once, in a shuffled order; the figures are the medians over rounds, their
ratio, and the after - before difference paired by round. Imports and process start are
outside the timed part: this is the ingest's own cost, which a hook call's wall time
(bench/quick_call.py) cannot resolve on a loaded machine.

`--tool-output-kb N`: a copy of the transcript with, before each `api-request` line, the
`api-request-blob` line of a user message holding a tool's output of N KB, as Claude Code
writes one for each new message it sends (the fixture's own are a few hundred bytes: the
fake API's tools print little).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "claude-code-2.1.328"

CHILD = r"""
import statistics, sys, time
import tokenbudget
assert tokenbudget.__file__.startswith(sys.prefix), tokenbudget.__file__  # the installed copy
from tokenbudget import journal
from tokenbudget.ingest import Ingestor
from tokenbudget.ledger import new_ledger
path, sid, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(reps + 2):
    base = new_ledger()
    ledger = journal.copy(base)
    t0 = time.process_time()
    Ingestor(ledger).ingest_file(path, sid, False)
    journal.changes(base, ledger)
    times.append(time.process_time() - t0)
print(statistics.median(times[2:]))
"""


def with_tool_outputs(path: Path, size: int) -> Path:
    """A copy of transcript `path` with a `size`-byte tool output's blob before each request."""
    out = common.WORK / f"tool-output-{size}" / path.name
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, line in enumerate(path.read_bytes().splitlines(keepends=True)):
        if line.startswith(b'{"type":"api-request",'):
            sid = json.loads(line)["sessionId"]
            message = {"role": "user", "content": [{"type": "tool_result",
                       "tool_use_id": f"toolu_{n:04d}", "content": "x" * size}]}
            lines.append(json.dumps({"type": "api-request-blob", "sessionId": sid,
                                     "hash": f"{n:064x}", "message": message},
                                    separators=(",", ":")).encode() + b"\n")
        lines.append(line)
    out.write_bytes(b"".join(lines))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="git ref of the code before (e.g. main)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--case", default="loop")
    ap.add_argument("--name", default="ingest_turn")
    ap.add_argument("--tool-output-kb", type=int, default=0, metavar="N")
    args = ap.parse_args()
    [path] = [p for p in (FIXTURES / args.case / "projects").glob("*/*.jsonl")]
    if args.tool_output_kb:
        path = with_tool_outputs(path, args.tool_output_kb * 1024)
    pythons = {"before": common.bench_python_at(args.before),
               "after": common.bench_python(reinstall=True)}
    env = common.clean_env()
    rng = random.Random(0)
    out: dict[str, list[float]] = {name: [] for name in pythons}
    for _ in range(args.rounds):
        order = list(pythons)
        rng.shuffle(order)
        for name in order:
            # -P: not the current folder first on the path (a checkout's package would be
            # imported instead of the installed one).
            proc = subprocess.run(
                [str(pythons[name]), "-P", "-c", CHILD, str(path), path.stem, str(args.reps)],
                check=True, capture_output=True, text=True, env=env, cwd=common.WORK)
            out[name].append(float(proc.stdout))
    before, after = (statistics.median(out[n]) for n in ("before", "after"))
    diffs = [a - b for a, b in zip(out["after"], out["before"], strict=True)]
    common.save(args.name, {
        "case": args.case, "tool_output_kb": args.tool_output_kb,
        "bytes": path.stat().st_size, "rounds": args.rounds,
        "reps": args.reps, "before_ref": args.before,
        "before": common.installed(pythons["before"].parent.parent),
        "after": common.installed(), "cpu_s": out,
    })
    print(f"{args.case} (tool outputs {args.tool_output_kb} KB): {path.stat().st_size} bytes, "
          f"{args.rounds} rounds of {args.reps}")
    print(f"before {before * 1e3:.3f} ms, after {after * 1e3:.3f} ms CPU a read, "
          f"after / before {after / before:.3f}x; paired median "
          f"{statistics.median(diffs) * 1e3:+.3f} ms, higher in "
          f"{sum(d > 0 for d in diffs)} of {len(diffs)} rounds")


if __name__ == "__main__":
    main()
