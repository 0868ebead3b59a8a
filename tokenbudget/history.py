"""Folded sessions: the cold part of the ledger, kept out of the hook's way.

A session idle past the retention period leaves the ledger: its totals stay in the ledger's
rollups (per project, per command, per bucket), and its full record is appended to
`history.jsonl`, which only `report` and a rebuild read. The ledger thus stays small however
long the history grows.

The history line is written and fsynced before the session leaves the ledger; a crash in
between leaves the session in both, and readers let the ledger win.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenbudget import paths
from tokenbudget.ledger import Ledger

RUNS_KEPT = 50


def history_path() -> Path:
    return paths.data_dir() / "history.jsonl"


def _hourly(s: dict[str, Any], key_records: list[list[Any]]) -> dict[str, dict[str, list[Any]]]:
    """The session's usage per 15-minute bucket, model and command: [5 counts, cost]."""
    out: dict[str, dict[str, list[Any]]] = {}
    turns = s["t"]

    def add(hour: int, model: str, counts: list[int], cost: float | None, cmd: str) -> None:
        row = out.setdefault(str(hour), {}).setdefault(f"{model}\t{cmd}", [0, 0, 0, 0, 0, 0.0])
        for i in range(5):
            row[i] += counts[i]
        row[5] += cost or 0.0

    def command(turn: str) -> str:
        return str(turns[turn][0]) if turn in turns else "prompt"

    for rec in key_records:
        add(rec[7], rec[1], rec[2:7], rec[8], command(rec[9]))
    for a in s["adj"]:
        add(a[0], a[1], a[2:7], a[7], command(a[8]))
    from tokenbudget.ingest import compacted_cells

    for bucket, model, cmd, c in compacted_cells(s):
        add(bucket, model, c[:5], c[5], cmd)
    return out


def fold(ledger: Ledger, cutoff: float) -> int:
    """Move sessions whose last activity is before `cutoff` out of the ledger; return how many."""
    idle = [sid for sid, s in ledger["sessions"].items() if s["l"] < cutoff]
    if not idle:
        return 0
    idle_set = set(idle)
    # One pass over the request records, not one per session (that was quadratic).
    keys_of: dict[str, list[list[Any]]] = {}
    for rec in ledger["keys"].values():
        if rec[0] in idle_set:
            keys_of.setdefault(rec[0], []).append(rec)
    files_of: dict[str, dict[str, Any]] = {}
    for path, rec in ledger["files"].items():
        if rec[3] in idle_set:
            files_of.setdefault(rec[3], {})[path] = rec
    lines = []
    for sid in idle:
        s = ledger["sessions"][sid]
        record = {
            "sid": sid,
            "e": s.get("e", ""),
            "p": s["p"],
            "f": s["f"],
            "l": s["l"],
            "m": s["m"],
            "s": s["s"],  # usage seen per model: a resumed session's cost-state counts on it
            "hours": _hourly(s, keys_of.get(sid, [])),
            "turns": list(s["t"].values()),
            "files": files_of.get(sid, {}),
        }
        lines.append(json.dumps(record, separators=(",", ":")))
    _append(lines)
    for sid in idle:
        s = ledger["sessions"].pop(sid)
        for t in s["t"].values():
            runs = ledger["commands"].setdefault(t[0], [])
            runs.append([t[1], t[2], t[3]])
            if len(runs) > RUNS_KEPT:
                del runs[: len(runs) - RUNS_KEPT]
        folded = ledger["folded"]
        folded["sessions"] += 1
        for m in s["m"].values():
            folded["tokens"] += sum(m[:5])
            folded["cost"] += m[5]
        folded["until"] = max(folded["until"], s["l"])
        for path in files_of.get(sid, {}):
            del ledger["files"][path]
    for key in [k for k, rec in ledger["keys"].items() if rec[0] in idle_set]:
        del ledger["keys"][key]
    return len(idle)


def _append(lines: list[str]) -> None:
    path = history_path()
    paths.ensure_private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def read_records(ledger: Ledger | None = None) -> dict[str, dict[str, Any]]:
    """Every folded session's record by session id; bad lines skipped.

    A session folded several times (resumed after folding) has one record per live period,
    added up here. The same period written twice (a crash between history and ledger) counts
    once: its later line wins. With `ledger`, a period still live there is left out: the
    ledger holds it.
    """
    periods: dict[str, dict[str, dict[str, Any]]] = {}
    try:
        lines = history_path().read_bytes().splitlines()
    except OSError:
        return {}
    for n, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if _well_formed(rec):
            period = rec.get("e") or f"line {n}"
            periods.setdefault(rec["sid"], {})[str(period)] = rec
    live = {sid: s.get("e") for sid, s in ledger["sessions"].items()} if ledger else {}
    out: dict[str, dict[str, Any]] = {}
    for sid, by_period in periods.items():
        merged: dict[str, Any] | None = None
        for period, rec in by_period.items():
            if live.get(sid) == period:
                continue
            merged = rec if merged is None else _merge(merged, rec)
        if merged is not None:
            merged = dict(merged)
            merged["periods"] = [p for p in by_period if live.get(sid) != p]
            out[sid] = merged
    return out


def _well_formed(rec: object) -> bool:
    """A record with the fields readers use, of their types: a hand edit or another writer's
    line is skipped like a line cut short, never a KeyError in every report."""
    if not isinstance(rec, dict) or not isinstance(rec.get("sid"), str):
        return False
    num = (int, float)
    try:
        return (
            isinstance(rec["p"], str)
            and all(isinstance(rec[k], num) and not isinstance(rec[k], bool) for k in "fl")
            and all(isinstance(rec[k], dict) for k in ("m", "hours"))
            and all(isinstance(rec.get(k, {}), dict) for k in ("s", "files"))
            and all(int(h) >= 0 and isinstance(v, dict) for h, v in rec["hours"].items())
            and isinstance(rec["turns"], list)
            and all(
                isinstance(t, list) and len(t) == 4 and isinstance(t[0], str)
                and all(isinstance(x, num) for x in t[1:])
                for t in rec["turns"]
            )
        )
    except (KeyError, ValueError, TypeError):
        return False


def _merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A session folded twice (resumed after folding): its two records add up."""
    merged = dict(new)
    merged["f"] = min(old["f"], new["f"])
    merged["l"] = max(old["l"], new["l"])
    models = {k: list(v) for k, v in old["m"].items()}
    for model, m in new["m"].items():
        cur = models.setdefault(model, [0, 0, 0, 0, 0, 0.0, 0, m[7]])
        for i in range(7):
            cur[i] += m[i]
        if m[7] != cur[7]:
            cur[7] = "m"
    merged["m"] = models
    hours = {h: {mo: list(v) for mo, v in hv.items()} for h, hv in old["hours"].items()}
    for h, hv in new["hours"].items():
        for mo, v in hv.items():
            cur = hours.setdefault(h, {}).setdefault(mo, [0, 0, 0, 0, 0, 0.0])
            for i in range(6):
                cur[i] += v[i]
    merged["hours"] = hours
    merged["turns"] = old["turns"] + new["turns"]
    merged["files"] = {**old["files"], **new["files"]}
    return merged


def folded_files() -> dict[str, list[Any]]:
    """Read positions of every folded transcript."""
    out: dict[str, list[Any]] = {}
    for rec in read_records().values():
        out.update(rec.get("files", {}))
    return out


def folded_position(path: str) -> list[Any] | None:
    return folded_files().get(path)


def resume_position(ledger: Ledger, path: str, rec: list[Any], sid: str) -> None:
    """A folded session's transcript grew: go on from where folding left it.

    The live record carries what the session used before it was folded, so that its session
    budget goes on from there rather than from zero.
    """
    ledger["files"][path] = [rec[0], rec[1], rec[2], sid, rec[4] if len(rec) > 4 else None]
    from tokenbudget.ingest import Ingestor

    s = Ingestor(ledger).session(sid)
    if "pre" not in s:
        folded = read_records(ledger).get(sid)
        tokens = sum(sum(m[:5]) for m in folded["m"].values()) if folded else 0
        cost = sum(m[5] for m in folded["m"].values()) if folded else 0.0
        s["pre"] = [tokens, cost]
        # The resumed process's cost-state covers the session's whole life: what was seen
        # before the fold is not new (records folded before "s" was kept: their usage).
        if folded:
            before = folded.get("s") or {m: v[:5] for m, v in folded["m"].items()}
            for model, seen in before.items():
                cur = s["s"].get(model, [0, 0, 0, 0, 0])
                s["s"][model] = [a + b for a, b in zip(cur, seen[:5], strict=True)]


def restore_into(ledger: Ledger, now: float) -> None:
    """Refill a rebuilt ledger's rollups from the folded sessions."""
    from tokenbudget.ingest import BUCKETS_KEPT
    from tokenbudget.ledger import BUCKET

    oldest = int(now // BUCKET) - BUCKETS_KEPT
    for rec in read_records().values():
        folded = ledger["folded"]
        tokens = sum(sum(m[:5]) for m in rec["m"].values())
        cost = sum(m[5] for m in rec["m"].values())
        folded["sessions"] += 1
        folded["tokens"] += tokens
        folded["cost"] += cost
        folded["until"] = max(folded["until"], rec["l"])
        p = ledger["projects"].setdefault(rec["p"], [0, 0.0])
        p[0] += tokens
        p[1] += cost
        for model, m in rec["m"].items():
            mr = ledger["models"].setdefault(model, [0, 0.0])
            mr[0] += sum(m[:5])
            mr[1] += m[5]
        for t in rec["turns"]:
            runs = ledger["commands"].setdefault(t[0], [])
            runs.append([t[1], t[2], t[3]])
            del runs[: max(0, len(runs) - RUNS_KEPT)]
        for h, per_model in rec["hours"].items():
            if int(h) < oldest:
                continue
            start = int(h) * BUCKET
            # Only the session's own first and last moments are known: the bucket's edges
            # stand in for the rest.
            first, last = int(max(rec["f"], start)), int(min(rec["l"], start + BUCKET - 1))
            for v in per_model.values():
                bucket = ledger["hours"].setdefault(h, {})
                b = bucket.setdefault(rec["p"], [0, 0.0, first, last])
                b[0] += sum(v[:5])
                b[1] += v[5]
                b[2], b[3] = min(b[2], first), max(b[3], last)
