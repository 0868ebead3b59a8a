"""The throwaway server outlives no test run, however the run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.pgcluster import Cluster

REPO = Path(__file__).resolve().parents[2]
RUN = """
import sys, time
sys.path.insert(0, sys.argv[1])
from tests.pgcluster import Cluster, find_bindir
cluster = Cluster(find_bindir())
cluster.start()
print(cluster.folder, flush=True)
time.sleep(300)
"""


def test_a_run_killed_outright_leaves_no_server_behind(pg_cluster: Cluster) -> None:
    run = subprocess.Popen([sys.executable, "-c", RUN, str(REPO)], stdout=subprocess.PIPE,
                           text=True)
    assert run.stdout is not None
    folder = run.stdout.readline().strip()
    pid_file = Path(folder) / "data" / "postmaster.pid"
    server = int(pid_file.read_text().split()[0])
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    run.stdout.close()
    deadline = time.monotonic() + 60
    while Path(folder).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(folder).exists()
    assert not _running(server), f"the server {server} of a killed run still runs"


def _running(pid: int) -> bool:
    """Whether `pid` runs (an ended process its parent has not reaped is a zombie: not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
