"""`tokenbudget team sync`: push this machine's outbox, pull the team's totals and budgets.

The outbox (the ledger's `outbox`, filled by ingest in the commit that counts the usage) holds
each request or correction not pushed yet. A push sends a snapshot of it, then, under the
ledger lock, drops each entry that is still what was sent; an entry that grew meanwhile stays
and goes again (the server keeps the larger). A push that dies before its commit leaves the
outbox whole; one that dies after it sends the same rows again, which changes nothing. So
every record arrives once, whatever compacts or folds the ledger in between.

The pull writes the cache file the hooks read (cache.py), with the time it was fetched.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from typing import Any

from tokenbudget import clock, paths
from tokenbudget.errors import TeamError
from tokenbudget.ledger import BUCKET
from tokenbudget.schema import (
    OUT_BUCKET,
    OUT_COMMAND,
    OUT_COST,
    OUT_MODEL,
    OUT_PROJECT,
    OUT_SESSION,
    OUT_USAGE,
)
from tokenbudget.store import Store, open_store
from tokenbudget.team import cache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from tokenbudget.team.pgstore import PostgresStore

_CREDENTIALS = re.compile(r"^([a-z+]+://)[^@/]*@", re.IGNORECASE)


def machine_name() -> str:
    return socket.gethostname() or "unknown"


def project_id(folder: str) -> str:
    """What names a project across machines: its git remote (host/path, no credentials, no
    .git), else its repository's folder name, else the folder's name."""
    if not folder:
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", folder, "config", "--get", "remote.origin.url"],
            capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL,
        )
        url = out.stdout.strip() if out.returncode == 0 else ""
        if not url:
            top = subprocess.run(
                ["git", "-C", folder, "rev-parse", "--show-toplevel"],
                capture_output=True, text=True, timeout=5, stdin=subprocess.DEVNULL,
            )
            if top.returncode == 0 and top.stdout.strip():
                return os.path.basename(top.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        url = ""
    if url:
        return normalize_remote(url)
    return os.path.basename(folder.rstrip("/")) or folder


def normalize_remote(url: str) -> str:
    """`git@host:org/app.git`, `https://user@host/org/app` -> `host/org/app`."""
    url = _CREDENTIALS.sub(r"\1", url.strip())
    url = re.sub(r"^[a-z+]+://", "", url, flags=re.IGNORECASE)
    url = re.sub(r"^[^@/]+@([^:/]+):", r"\1/", url)  # scp-like: git@host:org/app
    url = re.sub(r":\d+/", "/", url, count=1)  # a port
    url = url.removesuffix("/").removesuffix(".git")
    return url.lower() if "/" not in url else url.split("/", 1)[0].lower() + "/" + \
        url.split("/", 1)[1]


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_state() -> dict[str, Any]:
    """What the last syncs did: last push and pull times, the last error, project names."""
    return _read_json(cache.state_file())


def write_state(state: dict[str, Any]) -> None:
    cache.write_private_json(cache.state_file(), state)


def rows_of(outbox: dict[str, list[Any]], member: str, machine: str,
            projects: dict[str, str]) -> list[dict[str, Any]]:
    """The outbox as usage rows for the server (cost in whole micro-dollars)."""
    rows = []
    for key, e in outbox.items():
        folder = e[OUT_PROJECT]
        if folder not in projects:
            projects[folder] = project_id(folder)
        if key.startswith("adj-"):
            # A session's corrections are this member's own: two machines' copies of one
            # transcript (a session id seen twice) must not replace each other's.
            key = f"{key}-{member}"
        inputs, output, write_5m, write_1h, read = e[OUT_USAGE]
        rows.append({
            "key": key, "member": member, "machine": machine, "session": e[OUT_SESSION],
            "project": projects[folder], "model": e[OUT_MODEL], "command": e[OUT_COMMAND],
            "at": float(e[OUT_BUCKET] * BUCKET), "input": inputs, "output": output,
            "cache_write": write_5m + write_1h, "cache_read": read,
            "cost_micros": round((e[OUT_COST] or 0.0) * 1_000_000),
        })
    return rows


def sync(team_cfg: dict[str, str], *, pull: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    """Push the outbox, then pull; what was done. TeamError when the server fails us (the
    error is kept in the state file for `team status`)."""
    release = _lock()
    if release is None:
        return {"busy": True}
    try:
        return _sync(team_cfg, pull, timeout)
    finally:
        release()


def _sync(team_cfg: dict[str, str], pull: bool, timeout: float) -> dict[str, Any]:
    from tokenbudget.team.pgstore import open_team_store

    state = read_state()
    store = open_store()
    ledger = store.load()
    if ledger["team"] == "":
        ledger = _rejoin(store, team_cfg["team"])
    if ledger["team"] != team_cfg["team"]:
        raise TeamError("this machine's ledger is not in team mode: run `tokenbudget team join`")
    outbox = {k: list(v) for k, v in ledger["outbox"].items()}
    projects: dict[str, str] = dict(state.get("projects") or {})
    rows = rows_of(outbox, team_cfg["member"], machine_name(), projects)
    state["projects"] = projects
    state["last_attempt"] = clock.now()
    done: dict[str, Any] = {"pushed": 0, "changed": 0, "pulled": False}
    try:
        team_store = open_team_store(team_cfg, timeout)
        with team_store.connected():
            if rows:
                done["changed"] = team_store.record(rows)
                with store.transaction() as current:
                    box = current["outbox"]
                    for key, sent in outbox.items():
                        if box.get(key) == sent:
                            del box[key]
                done["pushed"] = len(rows)
                state["last_push"] = clock.now()
            if pull:
                cache.write_cache(snapshot(team_store, team_cfg, projects))
                state["last_pull"] = clock.now()
                done["pulled"] = True
        state.pop("error", None)
    except TeamError as e:
        state["error"] = str(e)
        raise
    finally:
        write_state(state)
    return done


def _rejoin(store: Store, team: str) -> dict[str, Any]:
    """A ledger rebuilt (found corrupt, or `tokenbudget rebuild`) starts with no team: this
    machine joined, so it goes on in team mode, all it holds queued again; the ledger."""
    from tokenbudget.ingest import requeue_all

    with store.transaction() as ledger:
        if ledger["team"] == "":
            ledger["team"] = team
            requeue_all(ledger)
    return store.load()


def snapshot(team_store: PostgresStore, team_cfg: dict[str, str],
             projects: dict[str, str]) -> dict[str, Any]:
    """The team's current totals and budgets, in the cache file's form."""
    zone, week_start = team_store.calendar()
    fetched = clock.now()
    return {
        "version": cache.VERSION,
        "team": team_cfg["team"],
        "member": team_cfg["member"],
        "fetched": fetched,
        "timezone": zone,
        "week_start": week_start,
        "projects": projects,
        "totals": team_store.totals(fetched),
        "budgets": team_store.budgets(),
    }


def pull(team_cfg: dict[str, str], projects: dict[str, str], *,
         timeout: float) -> dict[str, Any]:
    """Fetch the totals and budgets and cache them, without pushing or touching the ledger
    (a hook holding the ledger lock calls it); what was cached. TeamError if the server fails
    us. Each statement is cut off after `timeout` seconds."""
    from tokenbudget.team.pgstore import open_team_store

    team_store = open_team_store(team_cfg, timeout)
    with team_store.connected(statement_timeout=timeout):
        data = snapshot(team_store, team_cfg, projects)
    cache.write_cache(data)
    return data


def _lock() -> Any:
    """Take the sync lock without waiting; its release, or None when another sync holds it."""
    import fcntl

    folder = paths.ensure_private_dir(paths.data_folder())
    fd = os.open(os.path.join(folder, "team-sync.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return lambda: os.close(fd)
