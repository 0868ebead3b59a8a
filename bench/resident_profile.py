#!/usr/bin/env python3
"""Where the resident answerer's time goes: the real Claude Code runs `claude -p "please LOOP
N"` against the end-to-end tests' fake API with `install --resident`'s hooks, its answerer
run under cProfile; prints the calls that took most of `hook.handle`'s time.

    python bench/resident_profile.py [--loop 30] [--runs 2]

Needs the pinned Claude Code (TOKENBUDGET_CLAUDE_BIN, or `bash scripts/install-claude-code.sh`).
Uses this checkout's tokenbudget (the interpreter running this script), five budgets none of
which is near (bench/common.py), in a temporary home.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

sys.path.insert(0, str(common.REPO))
from tests.e2e.conftest import claude_env
from tests.e2e.fake_api import FakeAnthropic

# The answerer under the profiler: each event's hook.handle (one at a time, in a thread of
# its own) is what is profiled.
SERVE = """
import cProfile, sys
from tokenbudget import hook, resident
prof = cProfile.Profile()
real = hook.handle
def handle(*args, **kwargs):
    prof.enable()
    try:
        return real(*args, **kwargs)
    finally:
        prof.disable()
hook.handle = handle
from tokenbudget import answerer
answerer.serve()
prof.dump_stats(sys.argv[1])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", type=int, default=30)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    claude = os.environ.get("TOKENBUDGET_CLAUDE_BIN") or subprocess.run(
        ["bash", str(common.REPO / "scripts" / "install-claude-code.sh")], check=True,
        capture_output=True, text=True).stdout.strip().splitlines()[-1]
    root = Path(tempfile.mkdtemp(prefix="resident-profile-"))
    home = root / "home dir"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    state = home / "tb state"
    common.write_config(state, retention_days=None)
    os.environ["TOKENBUDGET_HOME"] = str(state)
    os.environ["HOME"] = str(home)
    from tokenbudget import claude_settings, resident

    setup = resident.create()
    resident.save(setup)
    settings = home / "settings.json"
    hooks = claude_settings.desired_hooks(
        sys.executable, claude_settings.site_paths(sys.executable), setup)
    settings.write_text(json.dumps({"hooks": hooks}))
    out = home / "answerer.prof"
    answerer = subprocess.Popen([sys.executable, "-c", SERVE, str(out)], cwd=str(home))
    while resident.probe(setup)[0] != "ours":
        time.sleep(0.02)
    cwd = home / "project"
    cwd.mkdir()
    with FakeAnthropic(max_requests=10**9) as fake:
        for _ in range(args.runs):
            done = subprocess.run(
                [claude, "-p", f"please LOOP {args.loop}", "--output-format", "json",
                 "--allowedTools", "Bash", "--settings", str(settings)],
                cwd=cwd, env=claude_env(home, fake.base_url), capture_output=True, text=True,
                timeout=600, check=False)
            assert json.loads(done.stdout.splitlines()[-1])["terminal_reason"] == "completed"
    resident.remove()  # the answerer exits within a second, writing its profile
    answerer.wait(timeout=30)
    text = io.StringIO()
    stats = pstats.Stats(str(out), stream=text)
    stats.sort_stats("cumulative").print_stats(
        r"hook.py:\d+\((handle|_await_response|_quick|_decide)\)|store.py:\d+\(transaction\)|"
        r"sync_session|fsync|sleep")
    print(text.getvalue().split("filename:lineno(function)", 1)[-1])
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
