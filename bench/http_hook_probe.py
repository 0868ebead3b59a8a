#!/usr/bin/env python3
"""What Claude Code does around one http hook: the real Claude Code runs `claude -p "please
LOOP 10"` against the end-to-end tests' fake API with only PostToolBatch registered, as an http
hook to a local `{}` answerer of each style, interleaved; per gap between two API requests, the
time from the first request to the hook's arrival and from the hook's answer to the next
request (medians of per-run medians, the first run of each style not counted).

    python bench/http_hook_probe.py [--runs 4] http10,keepalive,nodelay,close,headers,slow

Styles: http10 (HTTP/1.0, one connection a call), keepalive (HTTP/1.1), nodelay (HTTP/1.1,
Nagle off), close (HTTP/1.1, Connection: close), headers (http10 with the resident hooks'
bearer and disable headers), slow (http10 answering 15 ms after reading the event).
Needs TOKENBUDGET_CLAUDE_BIN (`bash scripts/install-claude-code.sh` prints it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resident_timeline import Fake

from tests.e2e.conftest import claude_env

STAMPS: list[tuple[str, float]] = []


def answerer(style: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            STAMPS.append(("recv", time.time()))
            if style == "slow":
                time.sleep(0.015)
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if style == "close":
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)
            STAMPS.append(("sent", time.time()))

    if style in ("keepalive", "nodelay", "close"):
        Handler.protocol_version = "HTTP/1.1"
    if style in ("nodelay", "close"):
        Handler.disable_nagle_algorithm = True
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def hook(style: str, port: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": "http", "url": f"http://127.0.0.1:{port}/x", "timeout": 10}
    if style == "headers":
        entry["headers"] = {"Authorization": "Bearer " + "ab" * 32,
                            "X-Tokenbudget-Disable": "${TOKENBUDGET_DISABLE}"}
        entry["allowedEnvVars"] = ["TOKENBUDGET_DISABLE"]
    return {"hooks": {"PostToolBatch": [{"hooks": [entry]}]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("styles")
    args = ap.parse_args()
    claude = os.environ["TOKENBUDGET_CLAUDE_BIN"]
    root = Path(tempfile.mkdtemp(prefix="http-hook-probe-"))
    home = root / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
    cwd = root / "cwd"
    cwd.mkdir()
    styles = args.styles.split(",")
    servers = {style: answerer(style) for style in styles}
    found: dict[str, list[tuple[float, float]]] = {style: [] for style in styles}
    with Fake() as fake:
        for run in range(args.runs):
            for style in styles:
                path = root / f"{style}.json"
                path.write_text(json.dumps(hook(style, servers[style].server_address[1])))
                STAMPS.clear()
                first = len(fake.arrivals)
                subprocess.run([claude, "-p", "please LOOP 10", "--output-format", "json",
                                "--allowedTools", "Bash", "--settings", str(path)], cwd=cwd,
                               env=claude_env(home, fake.base_url), capture_output=True,
                               timeout=300, check=True)
                arrivals = fake.arrivals[first:]
                sent = [t for k, t in STAMPS if k == "sent"]
                received = [t for k, t in STAMPS if k == "recv"]
                before, after = [], []
                for a, b in itertools.pairwise(arrivals):
                    out = [t for t in sent if a < t < b]
                    into = [t for t in received if a < t < b]
                    if out and into:
                        before.append(into[0] - a)
                        after.append(b - out[-1])
                if run:
                    found[style].append((statistics.median(before), statistics.median(after)))
    print(f"load average {os.getloadavg()[0]:.1f}")
    for style in styles:
        print(f"{style}: request to hook {statistics.median(x[0] for x in found[style]) * 1e3:.1f}"
              f" ms, hook answered to next request"
              f" {statistics.median(x[1] for x in found[style]) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
