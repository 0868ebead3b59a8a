"""The local ledger's usage as hour-by-model cells: the one reader of its usage records.

A live session's usage is in three record kinds (its request records, its adjustments from
Claude Code's own totals, its compacted cells), a folded session's in its history record;
this module turns each into the same `Cell`, with where its cost came from, so that every
grouping of them (query.py) adds up to the same totals. It is the JSON store's own: a caller
asks the store (`Store.cells`), never the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tokenbudget.ingest import compacted_cells
from tokenbudget.ledger import Ledger
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_MODEL,
    ADJ_TURN,
    ADJ_USAGE,
    CELL_COST,
    CELL_USAGE,
    H_HOURS,
    M_SOURCE,
    REQ_BUCKET,
    REQ_COST,
    REQ_MODEL,
    REQ_SESSION,
    REQ_TURN,
    REQ_USAGE,
    S_ADJUSTMENTS,
    S_MODELS,
    S_PROJECT,
    S_TURNS,
    SOURCE_TABLE,
    TURN_COMMAND,
    split_history_key,
)
from tokenbudget.usage import Usage


@dataclass
class Cell:
    """Usage of one session, in one hour, with one model."""

    sid: str
    project: str
    hour: int
    model: str
    usage: Usage
    cost: float
    command: str


def cells(ledger: Ledger, records: dict[str, dict[str, Any]]) -> Iterator[tuple[Cell, str]]:
    """Every hour-by-model cell, with where its cost came from ("t" table, "c" Claude Code...:
    schema.SOURCE_*).

    `records` as `history.read_records(ledger)` gives them: a period still live is the ledger's.
    """
    sessions = ledger["sessions"]
    by_session = _keys_by_session(ledger)
    for sid, s in sessions.items():
        turns = s[S_TURNS]
        project = s[S_PROJECT]
        src = {model: m[M_SOURCE] for model, m in s[S_MODELS].items()}
        for rec in by_session.get(sid, []):
            model = rec[REQ_MODEL]
            yield (
                Cell(sid, project, rec[REQ_BUCKET], model, Usage(*rec[REQ_USAGE]),
                     rec[REQ_COST] or 0.0, _command(turns, rec[REQ_TURN])),
                src.get(model, SOURCE_TABLE),
            )
        for a in s[S_ADJUSTMENTS]:
            model = a[ADJ_MODEL]
            yield (
                Cell(sid, project, a[ADJ_BUCKET], model, Usage(*a[ADJ_USAGE]),
                     a[ADJ_COST] or 0.0, _command(turns, a[ADJ_TURN])),
                src.get(model, SOURCE_TABLE),
            )
        for bucket, model, cmd, c in compacted_cells(s):
            yield (
                Cell(sid, project, bucket, model, Usage(*c[CELL_USAGE]), c[CELL_COST], cmd),
                src.get(model, SOURCE_TABLE),
            )
    for sid, folded in records.items():
        src = {model: m[M_SOURCE] for model, m in folded[S_MODELS].items()}
        for h, per_model in folded[H_HOURS].items():
            for model_cmd, v in per_model.items():
                model, cmd = split_history_key(model_cmd)
                yield (
                    Cell(sid, folded[S_PROJECT], int(h), model, Usage(*v[CELL_USAGE]),
                         v[CELL_COST], cmd or "prompt"),
                    src.get(model, SOURCE_TABLE),
                )


def _command(turns: dict[str, list[Any]], turn: str) -> str:
    """The command of a session's turn `turn` ("prompt" for none)."""
    command: str = turns[turn][TURN_COMMAND] if turn in turns else "prompt"
    return command


def _keys_by_session(ledger: Ledger) -> dict[str, list[list[Any]]]:
    # Built afresh for every call: a cache keyed by id(ledger) handed a new ledger the index of
    # an old one that had been freed at the same address, and missed changes to the same one.
    idx: dict[str, list[list[Any]]] = {}
    for rec in ledger["keys"].values():
        idx.setdefault(rec[REQ_SESSION], []).append(rec)
    return idx
