#!/usr/bin/env python3
"""The lean command hook of resident mode against the full one, per call: SessionStart and
UserPromptSubmit as `install --resident` writes them now (`relay_hook`: the event handed to
the running answerer over its Unix socket) and as it wrote them before (the whole hook in its
own process), interleaved, each call a new session; wall time of the hook process, and CPU
(the hook process's and the answerer's).

    python bench/relay_hook.py [--rounds 40] [--save NAME]

Uses this checkout's tokenbudget (the interpreter running this script, started `-I -S` as
the installed hooks are), five budgets none of which is near (bench/common.py), in a
temporary home; the answerer is started once, as the first session of the hour does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))


def _cpu_answerer(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--save", default="relay_hook",
                    help="results/NAME.json (the default overwrites the last run's)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="relay-hook-"))
    home = root / "home dir"
    (home / ".claude").mkdir(parents=True)
    state = home / "tb state"
    common.write_config(state, retention_days=None)
    os.environ.update(TOKENBUDGET_HOME=str(state), HOME=str(home))
    from tokenbudget import claude_settings, resident

    resident.save(resident.create())
    assert resident.ensure() == ("ours", "")
    pid = int(resident.read_state()["pid"])
    folders = claude_settings.site_paths(sys.executable)
    assert folders is not None
    commands = {
        "full": claude_settings.HOOK_CODE,
        "lean": claude_settings.RELAY_CODE,
    }
    rows: dict[str, list[tuple[float, float]]] = {}
    try:
        for event in ("SessionStart", "UserPromptSubmit"):
            for name in commands:
                rows[f"{event} {name}"] = []
            for i in range(args.rounds + 2):  # two warm-ups
                order = list(commands.items()) if i % 2 else list(commands.items())[::-1]
                for name, code in order:
                    sid = str(uuid.uuid4())
                    body = json.dumps({"session_id": sid, "transcript_path": str(
                        home / ".claude" / "projects" / "p" / f"{sid}.jsonl"), "cwd": str(home),
                        "hook_event_name": event, "source": "startup", "prompt": "hi",
                        "prompt_id": sid}).encode()
                    argv = [sys.executable, "-I", "-S", "-c",
                            claude_settings.fast_code(folders, code), event]
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    a0 = _cpu_answerer(pid)
                    t0 = time.perf_counter()
                    done = subprocess.run(argv, input=body, capture_output=True, check=True)
                    wall = time.perf_counter() - t0
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                           + _cpu_answerer(pid) - a0)
                    assert json.loads(done.stdout) == {}, done.stdout
                    if i >= 2:
                        rows[f"{event} {name}"].append((wall, cpu))
    finally:
        resident.remove()  # the answerer exits within a second
        time.sleep(1.5)
        shutil.rmtree(root, ignore_errors=True)
    print(f"{args.rounds} calls each, interleaved; load average {os.getloadavg()[0]:.1f}\n")
    print("| hook | wall, median | CPU, median (hook + answerer) |")
    print("|---|---|---|")
    for key, values in rows.items():
        wall = statistics.median(v[0] for v in values) * 1000
        cpu = statistics.median(v[1] for v in values) * 1000
        print(f"| {key} | {wall:.1f} ms | {cpu:.1f} ms |")
    for event in ("SessionStart", "UserPromptSubmit"):
        pairs = zip(rows[f"{event} lean"], rows[f"{event} full"], strict=True)
        ratios = [a[0] / b[0] for a, b in pairs]
        print(f"\n{event}: lean / full wall, paired: median {statistics.median(ratios):.2f}x")
    common.save(args.save, {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
