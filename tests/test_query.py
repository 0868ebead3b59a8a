"""query.py: report cells grouped and ordered, whichever form the ledger keeps them in."""

from __future__ import annotations

import copy
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import install_fixture
from tests.test_cli import run
from tests.test_ingest import NOW, _synced
from tests.test_report import UTC_ENV
from tokenbudget import history, ingest, query
from tokenbudget.ledger import Ledger


def _compact_by_turn(ledger: Ledger) -> None:
    """Compaction as earlier versions wrote it: cells keyed by bucket, model and turn."""
    for key, rec in list(ledger["keys"].items()):
        s = ledger["sessions"][rec[0]]
        cell = s.setdefault("c", {}).setdefault(f"{rec[7]}\t{rec[1]}\t{rec[9]}", [0] * 5 + [0.0])
        for i in range(5):
            cell[i] += rec[2 + i]
        cell[5] += rec[8] or 0.0
        s["k"] = s.get("k", "") + key
        del ledger["keys"][key]


def _reports(ledger: Ledger) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for by in query.BY_CHOICES:
        groups = query.group(by, query.cells(ledger, {}), UTC)
        out[by] = [(g.key, g.usage, round(g.cost, 9)) for g in groups]
    out["history"] = {
        sid: {h: {k: [*v[:5], round(v[5], 9)] for k, v in row.items()} for h, row in rows.items()}
        for sid, s in ledger["sessions"].items()
        for rows in [history._hourly(s, [])]
    }
    return out


def test_cells_compacted_by_turn_read_as_cells_compacted_by_command(private_home: Path) -> None:
    ledger = _synced(private_home)
    by_turn, by_command = copy.deepcopy(ledger), copy.deepcopy(ledger)
    _compact_by_turn(by_turn)
    ingest.compact(by_command, NOW + 2 * 3600)
    assert by_command["keys"] == by_turn["keys"] == {}
    reports = _reports(by_command)
    assert reports == _reports(by_turn)
    assert reports["command"] == _reports(ledger)["command"]  # and as before compaction
    # A session compacted partly each way (an upgrade in between) reads the same too.
    mixed = copy.deepcopy(ledger)
    half = dict(list(mixed["keys"].items())[::2])
    mixed["keys"] = {k: v for k, v in mixed["keys"].items() if k not in half}
    _compact_by_turn(mixed)
    mixed["keys"] = half
    ingest.compact(mixed, NOW + 2 * 3600)
    assert _reports(mixed) == reports


def test_sessions_are_sorted_by_last_activity_not_by_id_or_start(
    private_home: Path, recorded_day: float
) -> None:
    for case in ("plain", "forked", "loop"):
        install_fixture(case, private_home / ".claude")
    # The plain session (first by id and by start) goes on until 17:50: it must come last.
    path = next((private_home / ".claude" / "projects").glob("*/1c990dcd*.jsonl"))
    lines = path.read_text().splitlines()
    last = max(i for i, line in enumerate(lines) if '"type":"assistant"' in line)
    entry = json.loads(lines[last])
    entry["timestamp"] = "2026-11-28T17:50:00.000Z"
    lines[last] = json.dumps(entry)
    path.write_text("\n".join(lines) + "\n")
    proc = run("report", "--by", "session", "--csv", home=private_home, env=UTC_ENV)
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [(r["Session"][:8], r["lastActivity"][11:16]) for r in rows] == [
        ("85b37d12", "17:14"),
        ("41481808", "17:39"),
        ("1c990dcd", "17:50"),
    ]


def test_a_block_is_named_in_the_reports_zone_whatever_the_machines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time
    from zoneinfo import ZoneInfo

    from tokenbudget.ledger import BUCKET
    from tokenbudget.query import Cell, group
    from tokenbudget.usage import Usage

    at = datetime(2027, 3, 1, 17, 14, tzinfo=UTC).timestamp()
    cell = Cell("s", "/p", int(at // BUCKET), "claude-opus-5-5", Usage(10, 1, 0, 0, 0), 0.1,
                "prompt")
    monkeypatch.setenv("TZ", "America/New_York")  # the machine's zone, not the report's
    time.tzset()
    try:
        [block] = group("block", [(cell, "table")], ZoneInfo("Asia/Kolkata"))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert block.key == "2027-03-01T22:30:00+05:30"  # 17:00 UTC, the hour it started in
