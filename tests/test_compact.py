"""Compacted requests: kept per bucket, model and command, and read alike in either form."""

from __future__ import annotations

import copy
from datetime import UTC
from pathlib import Path
from typing import Any

from tests.helpers import install_fixture
from tokenbudget import history, ingest, query, sync
from tokenbudget.ledger import Ledger

NOW = 1795887600.0
CASES = ("slash", "compacted", "loop", "agent")


def _synced(private_home: Path) -> Ledger:
    for case in CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=NOW)
    ledger = store.snapshot()
    assert ledger["keys"]
    return ledger


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


def test_compacted_cells_name_the_command_not_the_turn(private_home: Path) -> None:
    ledger = _synced(private_home)
    turns = {pid for s in ledger["sessions"].values() for pid in s["t"]}
    assert ingest.compact(ledger, NOW + 2 * 3600) > 0
    keys = [k for s in ledger["sessions"].values() for k in s["c"]]
    commands = {k.split("\t")[2] for k in keys}
    assert commands == {"prompt", "/test"}  # /compact's usage is in no request record
    assert not commands & turns


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
