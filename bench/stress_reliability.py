#!/usr/bin/env python3
"""The heavier variants of tests/test_reliability*.py, with their figures written down.

    .venv/bin/python bench/stress_reliability.py [--quick] [--out bench/RESULTS-reliability.md]

Runs concurrent writers, concurrent hooks on growing transcripts, kill -9 at random moments,
many more Hypothesis inputs to the hook, and a settings.json editor racing install/uninstall;
on the real disk (every write fsynced) and on tmpfs where the suite runs. Everything happens
under a temporary HOME: the real one is never touched. Takes a few minutes (--quick: about one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reliability_fixtures import start_workers  # noqa: E402
from tests.reliability_workers import ledger_usage, session_usage  # noqa: E402
from tokenbudget.usage import Usage  # noqa: E402


@contextmanager
def sandbox(on_tmpfs: bool) -> Iterator[Path]:
    """A throw-away HOME (and TOKENBUDGET_HOME on disk or on tmpfs) for this process and its
    children."""
    base = Path(tempfile.mkdtemp(prefix="tb-stress-"))
    shm = Path(tempfile.mkdtemp(prefix="tb-stress-", dir="/dev/shm")) if on_tmpfs else None
    saved = {k: os.environ.get(k) for k in ("HOME", "TOKENBUDGET_HOME", "CLAUDE_CONFIG_DIR")}
    home = base / "home"
    home.mkdir()
    os.environ["HOME"] = str(home)
    os.environ["TOKENBUDGET_HOME"] = str((shm or base) / "state")
    os.environ.pop("CLAUDE_CONFIG_DIR", None)
    try:
        yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(base, ignore_errors=True)
        if shm is not None:
            shutil.rmtree(shm, ignore_errors=True)


def where(on_tmpfs: bool) -> str:
    return "tmpfs" if on_tmpfs else "disk"


def counters(writers: int, updates: int, on_tmpfs: bool) -> dict[str, Any]:
    from tokenbudget import sync

    with sandbox(on_tmpfs):
        state = Path(os.environ["TOKENBUDGET_HOME"])
        state.mkdir(parents=True)
        start = time.monotonic()
        reports = start_workers([["counter", str(w), str(updates), str(w), str(state / "go")]
                                 for w in range(writers)], state / "go", timeout=3600)
        seconds = time.monotonic() - start
        ledger = sync.open_store().snapshot()
        sent = sum(sum(r["sent"]) for r in reports)
        lists_ok = ledger["stress_lists"] == {str(r["wid"]): r["sent"] for r in reports}
        return {"test": f"concurrent transactions ({where(on_tmpfs)})",
                "size": f"{writers} processes x {updates} updates",
                "checked": writers * updates, "lost": (sent - ledger["stress_counter"])
                + (0 if lists_ok else 1), "seconds": round(seconds, 1)}


def hooks(workers: int, rounds: int, shim_calls: int, on_tmpfs: bool) -> dict[str, Any]:
    from tokenbudget import sync

    with sandbox(on_tmpfs):
        state = Path(os.environ["TOKENBUDGET_HOME"])
        state.mkdir(parents=True)
        (state / "config.json").write_text(json.dumps({"budgets": [
            {"kind": "session", "limit": "1000M"}, {"kind": "daily", "limit": "$1000000"}]}))
        start = time.monotonic()
        reports = start_workers(
            [["hooks", str(w), str(rounds), str(w), str(state / "go"), json.dumps(["*"]),
              str(shim_calls)] for w in range(workers)], state / "go", timeout=3600)
        seconds = time.monotonic() - start
        sync.sync_all(sync.open_store())
        per = session_usage()
        wrong = sum(per.get(r["sid"], Usage()) != Usage(*r["truth"]) for r in reports)
        bad = sum(len(r["bad"]) for r in reports)
        return {"test": f"concurrent hooks, growing transcripts ({where(on_tmpfs)})",
                "size": f"{workers} processes x {rounds} rounds, "
                        f"{sum(r['shim_calls'] for r in reports)} via the shim",
                "checked": sum(r["calls"] for r in reports), "lost": wrong + bad,
                "notes": f"{sum(r['lock_notes'] for r in reports)} calls allowed on lock "
                         "timeout (fail open, said why)",
                "seconds": round(seconds, 1)}


def crash(kills: int, seed: int, on_tmpfs: bool, fold: bool) -> dict[str, Any]:
    with sandbox(on_tmpfs):
        args = [str(kills), str(seed), "--rebuild", "--sessions", "8", "--grow", "3"]
        if fold:
            args.append("--fold")
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "tests.reliability_workers", "crash",
                               *args], cwd=REPO, capture_output=True, timeout=7200, check=True)
        seconds = time.monotonic() - start
        r = json.loads(proc.stdout.splitlines()[-1])
        final, truth = Usage(*r["final"]), Usage(*r["truth"])
        lost = (len(r["problems"]) + (final != truth) + len(r["wrong_sessions"])
                + (r["counter"] != r["counter_expected"]) + r["tmp_leftovers"])
        notes = (f"{r['killed_in_sync']} inside sync_all/rebuild ({r['killed_in_rebuild']} in "
                 f"a rebuild), the rest among commits; {r['requests']} requests in "
                 f"{r['sessions']} sessions; final {final.total:,} vs truth {truth.total:,}")
        if r["problems"]:
            notes += "; " + "; ".join(r["problems"][:3])
        if r["wrong_sessions"]:
            notes += f"; {len(r['wrong_sessions'])} session(s) with wrong totals"
        if r["counter"] != r["counter_expected"]:
            notes += f"; counter {r['counter']} vs {r['counter_expected']}"
        if r["tmp_leftovers"]:
            notes += f"; {r['tmp_leftovers']} temp file(s) left"
        return {"test": f"kill -9 at random moments{', folding on' if fold else ''} "
                        f"({where(on_tmpfs)})",
                "size": f"{r['kills']} kills", "checked": r["kills"], "lost": lost,
                "notes": notes, "seconds": round(seconds, 1)}


def hypothesis(examples: int) -> dict[str, Any]:
    env = dict(os.environ, TOKENBUDGET_HYPOTHESIS_EXAMPLES=str(examples))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_reliability_hook_input.py", "-k", "hostile_input_never"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=7200, check=False)
    seconds = time.monotonic() - start
    return {"test": "hostile hook input (Hypothesis, in-process)",
            "size": f"{examples} generated inputs", "checked": examples,
            "lost": 0 if proc.returncode == 0 else 1,
            "notes": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "",
            "seconds": round(seconds, 1)}


EDITOR = """
import json, os, random, sys, time
path, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for i in range(1, n + 1):
    while True:
        try:
            doc = json.load(open(path))
            break
        except ValueError:
            continue
    doc[f"edit{i}"] = i
    tmp = path + ".editor-tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)
    time.sleep(random.random() * 2 * pause)
"""


def settings_race(edits: int, pause: float) -> dict[str, Any]:
    from tokenbudget import claude_settings as cs
    from tokenbudget.errors import SettingsError

    with sandbox(False) as home:
        path = home / ".claude" / "settings.json"
        path.parent.mkdir()
        path.write_text("{}")
        editor = subprocess.Popen([sys.executable, "-c", EDITOR, str(path), str(edits),
                                   str(pause)])
        ours = refused = 0
        start = time.monotonic()
        while editor.poll() is None:
            for change in (lambda: cs.install(path, "/usr/bin/python3"),
                           lambda: cs.uninstall(path)):
                try:
                    change()
                    ours += 1
                except SettingsError:
                    refused += 1  # "kept changing": left to the other writer, as designed
        seconds = time.monotonic() - start
        doc = json.loads(path.read_text())
        # The editor re-reads before each edit, so an edit we overwrote never comes back.
        lost = sum(1 for i in range(1, edits + 1) if f"edit{i}" not in doc)
        rate = edits / seconds if seconds else 0
        return {"test": "settings.json editor racing install/uninstall",
                "size": f"{edits} edits at ~{rate:,.0f}/s vs {ours} of our writes",
                "checked": edits, "lost": lost,
                "notes": f"{refused} of our writes gave up ('kept changing')",
                "seconds": round(seconds, 1)}


def long_line() -> dict[str, Any]:
    with sandbox(False) as home:
        from tests.test_transcripts import big_line, requests, transcript

        path = transcript(home)
        head, want = requests(0, 5)
        tail, want_tail = requests(50, 5)
        path.write_bytes(head + big_line(b"assistant") + tail)
        code = ("import resource, time\n"
                "from tokenbudget import sync\n"
                "t = time.monotonic()\n"
                "r = sync.sync_all(sync.open_store())\n"
                "print(r.new_requests, round(time.monotonic() - t, 2),"
                " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=600, check=True)
        new, secs, rss = proc.stdout.split()
        ok = ledger_usage() == want + want_tail
        return {"test": "a 50 MB transcript line", "size": "1 line among 10 requests",
                "checked": int(new), "lost": 0 if ok else 1,
                "notes": f"sync took {secs} s, peak RSS {rss} MB", "seconds": float(secs)}


KNOWN = """
## Why some rows lose

Every non-zero "Lost" above should come from a known bug, each pinned by a strict xfail test:

- **kill -9 with folding on**: a kill between history.jsonl and the ledger commit makes the
  next sync fold the same session again, and `history.read_records()` adds both records up
  (final total above the truth; `test_killed_between_history_and_ledger_then_folded_again`).
  A session resumed after folding is reported with only its new usage ("totals went back";
  `test_a_session_resumed_after_folding_is_reported_whole`). The suite's kill test runs with
  folding off for that reason.
- **settings.json races**: an edit landing between our last compare and our rename is
  overwritten (`test_an_edit_between_the_last_check_and_the_rename`). The rate shown is with
  our installs running back to back; a real install runs once.
"""


def render(rows: list[dict[str, Any]], started: float) -> str:
    lines = [
        "# Reliability stress results",
        "",
        f"Written by `bench/stress_reliability.py` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" ({os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}),"
        f" {round(time.time() - started)} s in all.",
        "The suite runs smaller versions of each (tests/test_reliability*.py).",
        "\"Lost\" counts every loss, double count, torn read, wrong total or leftover found.",
        "",
        "| Test | Size | Checked | Lost | Seconds | Notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['test']} | {r['size']} | {r['checked']:,} | {r['lost']} | "
                     f"{r['seconds']} | {r.get('notes', '')} |")
    return "\n".join(lines) + "\n" + KNOWN


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, about a minute")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS-reliability.md")
    a = ap.parse_args()
    q = a.quick
    started = time.time()
    plan = [
        lambda: counters(16, 100, True),
        lambda: counters(16, 100, False),
        lambda: counters(32, 200 if not q else 50, True),
        lambda: hooks(16, 50 if not q else 20, 2, True),
        lambda: hooks(16, 25, 1, False),
        lambda: crash(200, 1, False, False),
        lambda: crash(1000 if not q else 200, 2, True, False),
        lambda: crash(400 if not q else 200, 3, True, True),
        lambda: hypothesis(3000 if not q else 500),
        lambda: settings_race(2000 if not q else 500, 0.001),
        lambda: settings_race(200 if not q else 50, 0.05),
        long_line,
    ]
    rows = []
    for step in plan:
        row = step()
        print(f"{row['test']}: {row['size']}: lost {row['lost']} ({row['seconds']} s)"
              + (f" - {row['notes']}" if row.get("notes") else ""), flush=True)
        rows.append(row)
    a.out.write_text(render(rows, started))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
