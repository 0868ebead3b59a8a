"""A throwaway PostgreSQL cluster for the team tests: made in a temporary folder, on a Unix
socket in that folder (no port to collide with), stopped and removed at the end.

initdb refuses to run as root: as root the cluster belongs to the `postgres` user and every
server command runs through `runuser`. The server is tuned for tests (no fsync), which
changes nothing the tests look at.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile


def find_bindir() -> str | None:
    """Where PostgreSQL 15's server programs are (PG_BINDIR first), or None."""
    candidates = [os.environ.get("PG_BINDIR", ""), "/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(os.path.dirname(found))
    for folder in candidates:
        if folder and os.access(os.path.join(folder, "initdb"), os.X_OK):
            return folder
    return None


class Cluster:
    """One PostgreSQL server of our own."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.folder = tempfile.mkdtemp(prefix="tb-pg-")
        self.data = os.path.join(self.folder, "data")
        self.owner: str | None = None
        if os.geteuid() == 0:
            self.owner = "postgres"
            entry = pwd.getpwnam(self.owner)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        # A watchdog in a session of its own holds the read end of a pipe from this process:
        # when this process ends, however it ends (a run stopped with kill -9 too), the pipe
        # closes and the watchdog stops the server and removes the folder.
        owner = self.owner or ""
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, os.path.join(bindir, "pg_ctl"), self.data,
             self.folder, owner],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale", "C", "--no-sync")
        self.running = False

    def _run(self, program: str, *args: str) -> None:
        cmd = [os.path.join(self.bindir, program), *args]
        if self.owner is not None:
            cmd = ["runuser", "-u", self.owner, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode != 0:
            raise RuntimeError(f"{program} failed: {out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> None:
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l",
                  os.path.join(self.folder, "server.log"), "-w", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")
            self.running = False

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host={self.folder} dbname={dbname} user={user}"

    def create_database(self, name: str) -> str:
        """A new empty database; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn(name)

    def remove(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._watchdog.stdin is not None:
            self._watchdog.stdin.close()  # nothing left for it to do: it exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(timeout=10)


# Run by the watchdog: wait for the test process to end, then stop its server and remove it.
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
pg_ctl, data, folder, owner = sys.argv[1:5]
cmd = [pg_ctl, "-D", data, "-m", "immediate", "-w", "stop"]
if owner:
    cmd = ["runuser", "-u", owner, "--", *cmd]
subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL, check=False)
shutil.rmtree(folder, ignore_errors=True)
"""
