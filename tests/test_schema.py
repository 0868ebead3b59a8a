"""schema.py: every layout's names agree with what the ledger really holds, and migrations.

The names are checked against `ledger.validate` (which shapes it accepts), against a ledger
built here by ingesting every recorded fixture (then compacted, folded and resumed), and against
one that tokenbudget 0.1.0 wrote from the same transcripts (tests/fixtures/ledger-0.1.0, made by
its make.py), which the names must read as they are: each named position holds what its name
says (an offset equals the file's size after a full read, a bucket's first second lies in that
bucket, a model's usage adds up from its requests, ...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RECORDED
from tests.helpers import ALL_CASES, install_fixture
from tokenbudget import enforce, history, hook, ingest, ledger, schema, sync, transcripts
from tokenbudget.errors import LedgerError
from tokenbudget.ledger import (
    BUCKET,
    CorruptLedger,
    file_identity,
    new_ledger,
    resolve_turn,
    validate,
)
from tokenbudget.schema import (
    ADJ_BUCKET,
    ADJ_COST,
    ADJ_LEN,
    ADJ_MODEL,
    ADJ_TURN,
    ADJ_USAGE,
    CELL_COST,
    CELL_LEN,
    CELL_USAGE,
    ENDED_SESSION,
    ENDED_UNTIL,
    EVAL_FINAL,
    EVAL_KIND,
    EVAL_KNOWN,
    EVAL_NOT_PARENT,
    EVAL_SIZES,
    EVAL_TOTALS,
    EVAL_UNKNOWN,
    FILE_HEAD,
    FILE_IDENT,
    FILE_LEN,
    FILE_OFFSET,
    FILE_POS,
    FILE_SESSION,
    FILE_TURN,
    H_FILES,
    H_HOURS,
    H_KEYS,
    H_SESSION,
    H_TURNS,
    HOUR_COST,
    HOUR_FIRST,
    HOUR_LAST,
    HOUR_LEN,
    HOUR_TOKENS,
    INHERIT_TIME,
    INHERIT_TURN,
    M_COST,
    M_LEN,
    M_REQUESTS,
    M_SOURCE,
    M_USAGE,
    OUT_COMMAND,
    OUT_COST,
    OUT_LEN,
    OUT_MODEL,
    OUT_PROJECT,
    OUT_SESSION,
    OUT_USAGE,
    PRE_COST,
    PRE_TOKENS,
    REQ_BUCKET,
    REQ_COST,
    REQ_LEN,
    REQ_MODEL,
    REQ_SESSION,
    REQ_TURN,
    REQ_USAGE,
    ROLLUP_COST,
    ROLLUP_LEN,
    ROLLUP_TOKENS,
    RUN_COST,
    RUN_START,
    RUN_TOKENS,
    S_ADJUSTMENTS,
    S_ALIASES,
    S_CANDIDATES,
    S_CC_COSTS,
    S_CELLS,
    S_COMPACTED_KEYS,
    S_COPIES,
    S_EXTRA,
    S_FIRST,
    S_FIRST_TOTALS,
    S_FOLDED_KEYS,
    S_FORK_KEYS,
    S_INHERIT_AT,
    S_INHERITED,
    S_LAST,
    S_LATEST_TOTALS,
    S_MODELS,
    S_ORIGIN,
    S_PARENT,
    S_PERIOD,
    S_PRE,
    S_PROJECT,
    S_SEEN,
    S_TOTALS_AT,
    S_TURNS,
    SESSION_KEYS,
    SOURCE_CLAUDE,
    SOURCE_MIXED,
    SOURCE_TABLE,
    SOURCE_UNPRICED,
    TURN_COMMAND,
    TURN_COST,
    TURN_LEN,
    TURN_START,
    TURN_TOKENS,
    USAGE_LEN,
    MigrationError,
    cell_key,
    migrate,
    split_cell_key,
)

Ledger = dict[str, Any]
PROJECTS = {"/home/dev/project", "/home/dev/a elsewhere"}
OLD = Path(__file__).resolve().parent / "fixtures" / "ledger-0.1.0" / "ledger.json"
OLD_CLAUDE = "/home/dev/.claude"  # where its transcripts were, as make.py writes it
DAY = (RECORDED - 86400, RECORDED)  # the fixtures were recorded within the day before RECORDED


@pytest.fixture
def synced(private_home: Path, recorded_day: float) -> Ledger:
    """Every recorded fixture ingested into one ledger (some sessions compacted by the sync)."""
    for case in ALL_CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    sync.sync_all(store, now=recorded_day)
    data: Ledger = json.loads(Path(store.file).read_bytes())
    return data


@pytest.fixture
def old() -> Ledger:
    """The ledger 0.1.0 wrote (schema 1)."""
    data: Ledger = json.loads(OLD.read_bytes())
    return data


@pytest.fixture(params=["built here", "written by 0.1.0"])
def either(request: pytest.FixtureRequest) -> Ledger:
    data: Ledger = request.getfixturevalue("synced" if request.param == "built here" else "old")
    return data


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9


def _add(into: list[Any], counts: list[int]) -> None:
    for i, v in enumerate(counts):
        into[i] += v


def _main_session(path: str) -> str:
    """The session a transcript belongs to: its name, or its folder's for a subagent's."""
    p = Path(path)
    return p.parent.parent.name if p.parent.name == "subagents" else p.stem


# --- what validate accepts ---------------------------------------------------------------------


def test_the_schema_is_the_one_ledgers_are_written_with() -> None:
    assert ledger.SCHEMA is schema.SCHEMA
    assert new_ledger()["schema"] == schema.SCHEMA == 2
    assert SESSION_KEYS == ledger._SESSION  # the keys validate requires of every session


def _shortened(data: Ledger, where: str, length: int) -> Ledger:
    """`data` with one record of the layout `where` one field short."""
    s = next(s for s in data["sessions"].values() if s[S_ADJUSTMENTS] and s.get(S_CELLS))
    model = next(iter(s[S_MODELS]))
    records = {
        "files": next(iter(data["files"].values())),
        "keys": next(iter(data["keys"].values())),
        "hours": next(iter(next(iter(data["hours"].values())).values())),
        "projects": next(iter(data["projects"].values())),
        "models": data["models"][model],
        "model record": s[S_MODELS][model],
        "turn": next(iter(s[S_TURNS].values())),
        "adjustment": s[S_ADJUSTMENTS][0],
        "cell": next(iter(s[S_CELLS].values())),
        "copies": s[S_COPIES].setdefault(model, [0] * USAGE_LEN),
    }
    assert len(records[where]) == length
    records[where].pop()
    return data


@pytest.mark.parametrize(
    ("where", "length", "part"),
    [
        ("files", FILE_LEN, "files"),
        ("keys", REQ_LEN, "request records"),
        ("hours", HOUR_LEN, "usage buckets"),
        ("projects", ROLLUP_LEN, "totals"),
        ("models", ROLLUP_LEN, "totals"),
        ("model record", M_LEN, "sessions"),
        ("turn", TURN_LEN, "sessions"),
        ("adjustment", ADJ_LEN, "sessions"),
        ("cell", CELL_LEN, "sessions"),
        ("copies", USAGE_LEN, "sessions"),
    ],
)
def test_each_layouts_length_is_the_one_validate_requires(
    either: Ledger, where: str, length: int, part: str
) -> None:
    validate(json.loads(json.dumps(either)))  # as written: every record of its full length
    short = _shortened(json.loads(json.dumps(either)), where, length)
    with pytest.raises(CorruptLedger, match=f"the ledger's {part} have the wrong shape"):
        validate(short)


def test_pre_and_ended_are_pairs_of_the_types_validate_requires(either: Ledger) -> None:
    data = json.loads(json.dumps(either))
    s = next(iter(data["sessions"].values()))
    pre = [0, 0.0]
    pre[PRE_TOKENS], pre[PRE_COST] = 12, 0.5
    s[S_PRE] = pre
    ended = ["", 0.0]
    ended[ENDED_SESSION], ended[ENDED_UNTIL] = "a-session", RECORDED
    data["ended"]["/t.jsonl"] = ended
    validate(data)
    data["ended"]["/t.jsonl"] = ended[::-1]  # a time where the session goes: refused
    with pytest.raises(CorruptLedger, match="notes"):
        validate(data)


# --- what a ledger built from the recorded transcripts holds ------------------------------------


def test_files_entries_are_where_a_full_read_stopped(synced: Ledger) -> None:
    assert len(synced["files"]) == 28
    for path, rec in synced["files"].items():
        st = os.stat(path)
        assert rec[FILE_OFFSET] == st.st_size  # all read: the offset is the file's size
        assert rec[FILE_IDENT] == file_identity(st)
        assert rec[FILE_SESSION] == _main_session(path)
        assert isinstance(rec[FILE_HEAD], str) and rec[FILE_HEAD]
        assert rec[FILE_TURN] in synced["sessions"][rec[FILE_SESSION]][S_TURNS]
        # The position is what the transcript reader resumes from: nothing new after it.
        pos = transcripts.FilePos.from_json(rec[FILE_POS])
        again = transcripts.read_new(Path(path), pos)
        assert (again.events, again.restarted, again.pos) == ([], False, pos)


def test_the_files_entries_0_1_0_wrote_are_read_the_same(old: Ledger, private_home: Path) -> None:
    for case in ALL_CASES:  # the same transcripts, in another folder and on other inodes
        install_fixture(case, private_home / ".claude", unique_ids=True)
    assert len(old["files"]) == 28
    for path, rec in old["files"].items():
        here = Path(path.replace(OLD_CLAUDE, str(private_home / ".claude"), 1))
        st = here.stat()
        assert rec[FILE_OFFSET] == st.st_size
        assert rec[FILE_IDENT].count(":") == 1 and rec[FILE_SESSION] == _main_session(path)
        s = old["sessions"][rec[FILE_SESSION]]
        if S_PRE not in s:  # resumed after its fold, nothing read since: no turns yet
            assert rec[FILE_TURN] in s[S_TURNS]
        pos = transcripts.FilePos(file_identity(st), rec[FILE_HEAD], rec[FILE_OFFSET])
        again = transcripts.read_new(here, pos)
        assert (again.events, again.restarted, again.pos) == ([], False, pos)


def _own_usage(data: Ledger) -> dict[tuple[str, str], tuple[list[int], float, int]]:
    """(session, model) -> (usage, cost, requests) added up from the records that make it."""
    out: dict[tuple[str, str], tuple[list[int], float, int]] = {}

    def add(sid: str, model: str, counts: list[int], cost: float | None, n: int) -> None:
        usage, total, requests = out.get((sid, model), ([0] * USAGE_LEN, 0.0, 0))
        _add(usage, counts)
        out[sid, model] = (usage, total + (cost or 0.0), requests + n)

    for rec in data["keys"].values():
        add(rec[REQ_SESSION], rec[REQ_MODEL], rec[REQ_USAGE], rec[REQ_COST], 1)
    for sid, s in data["sessions"].items():
        for adj in s[S_ADJUSTMENTS]:
            add(sid, adj[ADJ_MODEL], adj[ADJ_USAGE], adj[ADJ_COST], 0)
        compacted = len(s.get(S_COMPACTED_KEYS, "")) // ingest.KEY_LEN
        for key, cell in s.get(S_CELLS, {}).items():
            _, model, _ = split_cell_key(key)
            add(sid, model, cell[CELL_USAGE], cell[CELL_COST], 0)
        if compacted:  # one model in every fixture: the compacted requests are its
            [model] = s[S_MODELS]
            add(sid, model, [0] * USAGE_LEN, 0.0, compacted)
    return out


def _check_models(data: Ledger) -> None:
    own = _own_usage(data)
    assert {(sid, m) for sid, s in data["sessions"].items() for m in s[S_MODELS]} == set(own)
    for (sid, model), (usage, cost, requests) in own.items():
        m = data["sessions"][sid][S_MODELS][model]
        assert m[M_USAGE] == usage
        assert _close(m[M_COST], cost)
        assert m[M_REQUESTS] == requests
        assert m[M_SOURCE] in (SOURCE_TABLE, SOURCE_CLAUDE, SOURCE_UNPRICED)


def test_a_models_record_adds_up_from_its_requests_cells_and_adjustments(either: Ledger) -> None:
    assert len(either["keys"]) > 20 and sum(S_CELLS in s for s in either["sessions"].values()) > 10
    assert sum(bool(s[S_ADJUSTMENTS]) for s in either["sessions"].values()) >= 4
    _check_models(either)
    sources = {m[M_SOURCE] for s in either["sessions"].values() for m in s[S_MODELS].values()}
    assert sources == {SOURCE_TABLE, SOURCE_CLAUDE}


def test_claude_codes_own_cost_is_what_a_session_counts_where_it_applies(either: Ledger) -> None:
    seen = 0
    for s in either["sessions"].values():
        for model, cc in s[S_CC_COSTS].items():
            m = s[S_MODELS][model]
            assert m[M_SOURCE] == SOURCE_CLAUDE
            assert cc[CELL_USAGE] == m[M_USAGE] and _close(cc[CELL_COST], m[M_COST])
            seen += 1
    assert seen >= 12


def test_sessions_turns_and_their_usage(either: Ledger) -> None:
    commands: set[str] = set()
    extras = 0
    for sid, s in either["sessions"].items():
        if S_PRE in s:
            continue  # resumed after its fold, nothing read since (the old ledger's one)
        assert s[S_PROJECT] in PROJECTS
        assert DAY[0] < s[S_FIRST] <= s[S_LAST] < DAY[1]
        assert len(s[S_PERIOD]) == 8 and int(s[S_PERIOD], 16) >= 0
        for key, kind in SESSION_KEYS.items():
            assert isinstance(s[key], kind)
        for note in s[S_ALIASES]:  # a note's prompt id goes on in the turn it came in
            assert note not in s[S_TURNS] and resolve_turn(s, note) in s[S_TURNS]
        for model, extra in s[S_EXTRA].items():  # usage in no line: part of all seen
            assert all(a <= b for a, b in zip(extra, s[S_SEEN][model], strict=True))
            extras += any(extra)
        for t in s[S_TURNS].values():
            assert s[S_FIRST] <= t[TURN_START] <= s[S_LAST]
            commands.add(t[TURN_COMMAND])
        if S_CELLS in s:
            continue  # compacted: its requests' turns are gone
        # A turn's totals add up from the requests and adjustments counted for it.
        per_turn: dict[str, list[float]] = {}
        for rec in either["keys"].values():
            if rec[REQ_SESSION] == sid:
                t = per_turn.setdefault(rec[REQ_TURN], [0, 0.0])
                t[0] += sum(rec[REQ_USAGE])
                t[1] += rec[REQ_COST] or 0.0
        for adj in s[S_ADJUSTMENTS]:
            t = per_turn.setdefault(adj[ADJ_TURN], [0, 0.0])
            t[0] += sum(adj[ADJ_USAGE])
            t[1] += adj[ADJ_COST] or 0.0
        for pid, turn in s[S_TURNS].items():
            tokens, cost = per_turn.pop(pid, [0, 0.0])
            assert turn[TURN_TOKENS] == tokens and _close(turn[TURN_COST], cost)
        assert set(per_turn) <= {ingest.NO_TURN}
    assert commands == {"prompt", "/compact", "/helper", "/test"}
    assert extras >= 4


def _usage_by_bucket(data: Ledger) -> dict[tuple[int, str], float]:
    out: dict[tuple[int, str], float] = {}

    def add(bucket: int, sid: str, counts: list[int]) -> None:
        key = (bucket, data["sessions"][sid][S_PROJECT])
        out[key] = out.get(key, 0) + sum(counts)

    for rec in data["keys"].values():
        add(rec[REQ_BUCKET], rec[REQ_SESSION], rec[REQ_USAGE])
    for sid, s in data["sessions"].items():
        for adj in s[S_ADJUSTMENTS]:
            add(adj[ADJ_BUCKET], sid, adj[ADJ_USAGE])
        for key, cell in s.get(S_CELLS, {}).items():
            add(split_cell_key(key)[0], sid, cell[CELL_USAGE])
    return {k: v for k, v in out.items() if v}


def test_hour_buckets_hold_each_buckets_usage_and_its_seconds(either: Ledger) -> None:
    cells = {
        (int(h), project): c for h, per in either["hours"].items() for project, c in per.items()
    }
    if not either["folded"]["sessions"]:  # else some of it is in history now
        assert {k: c[HOUR_TOKENS] for k, c in cells.items()} == _usage_by_bucket(either)
    for (bucket, _), c in cells.items():
        assert bucket * BUCKET <= c[HOUR_FIRST] <= c[HOUR_LAST] < (bucket + 1) * BUCKET
        assert isinstance(c[HOUR_TOKENS], int) and isinstance(c[HOUR_COST], float)
    assert any(c[HOUR_FIRST] < c[HOUR_LAST] for c in cells.values())
    for rollup in ("projects", "models"):
        assert sum(v[ROLLUP_TOKENS] for v in either[rollup].values()) == sum(
            c[HOUR_TOKENS] for c in cells.values()
        )
        assert _close(
            sum(v[ROLLUP_COST] for v in either[rollup].values()),
            sum(c[HOUR_COST] for c in cells.values()),
        )
    for project, v in either["projects"].items():
        here = [c for (_, p), c in cells.items() if p == project]
        assert v[ROLLUP_TOKENS] == sum(c[HOUR_TOKENS] for c in here)


def test_forks_name_their_parent_and_what_they_inherited(either: Ledger) -> None:
    sessions = either["sessions"]
    compacted = {
        s[S_COMPACTED_KEYS][i : i + ingest.KEY_LEN]: sid
        for sid, s in sessions.items()
        for i in range(0, len(s.get(S_COMPACTED_KEYS, "")), ingest.KEY_LEN)
    }
    forks = {sid: s for sid, s in sessions.items() if S_ORIGIN in s}
    assert len(forks) == 9
    kinds = set()
    for sid, s in forks.items():
        assert s[S_ORIGIN] in sessions and s[S_PARENT] in sessions
        for key in s[S_FORK_KEYS]:  # copies of requests another session made
            owner = either["keys"][key][REQ_SESSION] if key in either["keys"] else compacted[key]
            assert owner != sid
        turn, at = s[S_INHERIT_AT][INHERIT_TURN], s[S_INHERIT_AT][INHERIT_TIME]
        assert turn in s[S_TURNS] and s[S_FIRST] <= at <= s[S_LAST]
        fork = next(f for p, f in either["files"].items() if Path(p).stem == sid)
        for parent, e in s[S_CANDIDATES].items():
            kinds.add(e[EVAL_KIND])
            assert e[EVAL_KIND] in (EVAL_KNOWN, EVAL_UNKNOWN, EVAL_NOT_PARENT)
            assert e[EVAL_FINAL] in (0, 1)
            parent_file = next(f for p, f in either["files"].items() if Path(p).stem == parent)
            # The sizes both transcripts had when it was worked out: read whole by then.
            assert e[EVAL_SIZES] == [parent_file[FILE_OFFSET], fork[FILE_OFFSET]]
            for usage in e[EVAL_TOTALS].values():
                assert len(usage) == USAGE_LEN
        for model, usage in s[S_INHERITED].items():
            # Inherited at least the parent's total at the fork point (more where the copies
            # hold more).
            known = s[S_CANDIDATES][s[S_PARENT]]
            assert known[EVAL_KIND] == EVAL_KNOWN
            assert all(a >= b for a, b in zip(usage, known[EVAL_TOTALS][model], strict=True))
        for model, first in s[S_FIRST_TOTALS].items():
            latest = s[S_LATEST_TOTALS][model]
            assert all(a <= b for a, b in zip(first, latest, strict=True))
        assert s[S_FIRST] <= s[S_TOTALS_AT] <= s[S_LAST]
    assert EVAL_KNOWN in kinds


def test_compacting_moves_requests_into_named_cells(synced: Ledger) -> None:
    data = json.loads(json.dumps(synced))
    keys_before = dict(data["keys"])
    moved = ingest.compact(data, RECORDED + 86400, idle=0)
    assert moved == len(keys_before) - len(data["keys"]) > 20
    _check_models(data)  # what the records held is now in the cells
    assert _usage_by_bucket(data) == _usage_by_bucket(synced)
    for sid, s in data["sessions"].items():
        joined = s.get(S_COMPACTED_KEYS, "")
        assert len(joined) % ingest.KEY_LEN == 0
        for key, rec in keys_before.items():
            if key not in data["keys"] and rec[REQ_SESSION] == sid:
                assert key in joined
        commands = {t[TURN_COMMAND] for t in s[S_TURNS].values()} | {"prompt"}
        for key in s.get(S_CELLS, {}):
            bucket, model, command = split_cell_key(key)
            assert cell_key(bucket, model, command) == key
            assert str(bucket) in data["hours"] and model in s[S_MODELS] and command in commands


def test_folding_writes_named_history_and_command_runs(synced: Ledger) -> None:
    data = json.loads(json.dumps(synced))
    sessions = dict(data["sessions"])
    files = dict(data["files"])
    keys = dict(data["keys"])
    assert history.fold(data, RECORDED + 86400) == len(sessions) == 22
    assert data["sessions"] == {} and data["files"] == {} and data["keys"] == {}
    records = history.read_records()
    assert set(records) == set(sessions)
    runs: dict[str, list[list[Any]]] = {}
    for sid, s in sessions.items():
        rec = records[sid]
        assert rec[H_SESSION] == sid and rec[S_PERIOD] == s[S_PERIOD]
        assert rec[S_PROJECT] == s[S_PROJECT] and rec[S_MODELS] == s[S_MODELS]
        assert rec[H_TURNS] == list(s[S_TURNS].values())
        assert rec[H_FILES] == {p: f for p, f in files.items() if f[FILE_SESSION] == sid}
        own = s.get(S_COMPACTED_KEYS, "") + "".join(
            k for k, r in keys.items() if r[REQ_SESSION] == sid)
        assert rec[H_KEYS] == own and len(own) == ingest.KEY_LEN * sum(
            m[M_REQUESTS] for m in s[S_MODELS].values())
        usage = [0] * USAGE_LEN
        for per in rec[H_HOURS].values():
            for cell in per.values():
                _add(usage, cell[CELL_USAGE])
        [m] = s[S_MODELS].values()
        assert usage == m[M_USAGE]
        for t in s[S_TURNS].values():
            runs.setdefault(t[TURN_COMMAND], []).append(t)
    for command, turns in runs.items():
        kept = data["commands"][command]
        assert [[r[RUN_START], r[RUN_TOKENS], r[RUN_COST]] for r in kept] == [
            [t[TURN_START], t[TURN_TOKENS], t[TURN_COST]] for t in turns
        ]
    tokens = sum(sum(s[S_MODELS][m][M_USAGE]) for s in sessions.values() for m in s[S_MODELS])
    assert data["folded"]["tokens"] == tokens


def test_a_resumed_session_carries_what_it_used_before_in_pre(synced: Ledger) -> None:
    data = json.loads(json.dumps(synced))
    sid, s = next((sid, s) for sid, s in data["sessions"].items() if s[S_CC_COSTS])
    [m] = s[S_MODELS].values()
    history.fold(data, RECORDED + 86400)
    path, rec = next((p, f) for p, f in history.folded_files().items() if Path(p).stem == sid)
    history.resume_position(data, path, rec, sid)
    assert data["files"][path] == rec
    pre = data["sessions"][sid][S_PRE]
    assert pre[PRE_TOKENS] == sum(m[M_USAGE]) > 0 and _close(pre[PRE_COST], m[M_COST])
    assert enforce.session_used(data, sid) == (float(pre[PRE_TOKENS]), pre[PRE_COST])
    assert data["sessions"][sid][S_SEEN] == s[S_SEEN]
    # What it counted before is known by its keys: a later copy of one is not new.
    folded_keys = data["sessions"][sid][S_FOLDED_KEYS]
    assert sorted(folded_keys[i:i + ingest.KEY_LEN] for i in range(0, len(folded_keys),
                                                                   ingest.KEY_LEN)) == sorted(
        k for k, r in synced["keys"].items() if r[REQ_SESSION] == sid)


def test_what_0_1_0_kept_of_a_resumed_session_and_its_folded_turns(old: Ledger) -> None:
    [(sid, s)] = [(sid, s) for sid, s in old["sessions"].items() if S_PRE in s]
    folded = old["folded"]
    assert folded["sessions"] == 1
    assert (s[S_PRE][PRE_TOKENS], s[S_PRE][PRE_COST]) == (folded["tokens"], folded["cost"])
    assert enforce.session_used(old, sid) == (float(folded["tokens"]), folded["cost"])
    [(command, runs)] = old["commands"].items()
    assert command == "prompt"
    assert sum(r[RUN_TOKENS] for r in runs) == folded["tokens"]
    assert _close(sum(r[RUN_COST] for r in runs), folded["cost"])
    assert all(DAY[0] < r[RUN_START] <= folded["until"] for r in runs)


def test_ended_entries_0_1_0_wrote_name_the_session_and_how_long_it_is_read(old: Ledger) -> None:
    assert len(old["ended"]) == 21
    for path, entry in old["ended"].items():
        assert entry[ENDED_SESSION] == old["files"][path][FILE_SESSION] == Path(path).stem
        assert entry[ENDED_UNTIL] == RECORDED + hook.ENDED_WAIT


def test_a_folded_sessions_models_merge_as_mixed_when_their_sources_differ() -> None:
    one = {S_FIRST: 1.0, S_LAST: 2.0, S_MODELS: {"m": [1, 2, 3, 4, 5, 0.5, 1, SOURCE_TABLE]},
           H_HOURS: {}, H_TURNS: [], H_FILES: {}}
    two = {**one, S_MODELS: {"m": [1, 1, 1, 1, 1, 0.25, 2, SOURCE_CLAUDE]}}
    merged = history._merge(one, two)[S_MODELS]["m"]
    assert merged[M_USAGE] == [2, 3, 4, 5, 6] and merged[M_COST] == 0.75
    assert (merged[M_REQUESTS], merged[M_SOURCE]) == (3, SOURCE_MIXED)


def test_ended_entries_name_the_session_and_how_long_it_is_read(
    synced: Ledger, private_home: Path
) -> None:
    folder = next(Path(p).parent for p in synced["files"] if "-home-dev-project" in p)
    assert folder.name == "-home-dev-project"
    event = {"session_id": "new-session", "source": "clear", "cwd": "/home/dev/project",
             "transcript_path": str(folder / "new-session.jsonl")}
    hook.handle("SessionStart", json.dumps(event).encode())
    ended = sync.open_store().snapshot()["ended"]  # the snapshot and the journal's lines
    mains = {p: f for p, f in synced["files"].items() if Path(p).parent == folder}
    assert set(ended) == set(mains)
    for path, entry in ended.items():
        assert entry[ENDED_SESSION] == mains[path][FILE_SESSION] == Path(path).stem
        assert entry[ENDED_UNTIL] == RECORDED + hook.ENDED_WAIT


def test_the_team_outbox_copies_each_request_with_its_command_and_project(
    private_home: Path, recorded_day: float
) -> None:
    from tokenbudget.team.sync import rows_of

    for case in ALL_CASES:
        install_fixture(case, private_home / ".claude", unique_ids=True)
    store = sync.open_store()
    with store.transaction() as ledger:
        ledger["team"] = "acme"  # team mode: what is counted waits in the outbox too
    sync.sync_all(store, now=recorded_day)
    data = store.snapshot()
    outbox = data["outbox"]
    requests = {k: e for k, e in outbox.items() if not k.startswith("adj-")}
    compacted = sum(len(s.get(S_COMPACTED_KEYS, "")) for s in data["sessions"].values())
    assert len(requests) == len(data["keys"]) + compacted // ingest.KEY_LEN
    # Corrections go one per session, model and bucket, summed.
    assert len(outbox) - len(requests) == sum(
        len({(a[ADJ_BUCKET], a[ADJ_MODEL]) for a in s[S_ADJUSTMENTS]})
        for s in data["sessions"].values()
    )
    for key, e in outbox.items():
        assert len(e) == OUT_LEN
        s = data["sessions"][e[OUT_SESSION]]
        assert e[OUT_PROJECT] == s[S_PROJECT] and e[OUT_MODEL] in s[S_MODELS]
        rec = data["keys"].get(key)
        if rec is not None:
            assert e[: OUT_COST + 1] == rec[: REQ_COST + 1]  # a request record's own fields
            turn = s[S_TURNS].get(rec[REQ_TURN])
            assert e[OUT_COMMAND] == (turn[TURN_COMMAND] if turn else "prompt")
    tokens = sum(sum(m[M_USAGE]) for s in data["sessions"].values() for m in s[S_MODELS].values())
    assert sum(sum(e[OUT_USAGE]) for e in outbox.values()) == tokens
    rows = rows_of(outbox, "me", "box", {})
    kinds = ("input", "output", "cache_write", "cache_read")
    assert sum(r[kind] for r in rows for kind in kinds) == tokens
    assert {r["command"] for r in rows} == {"prompt", "/compact", "/helper", "/test"}
    assert {r["at"] // BUCKET for r in rows} == {int(h) for h in data["hours"]}
    short = json.loads(json.dumps(data))
    next(iter(short["outbox"].values())).pop()
    with pytest.raises(CorruptLedger, match="the ledger's team outbox have the wrong shape"):
        validate(short)


# --- migrations --------------------------------------------------------------------------------


def test_the_registry_numbers_its_steps_by_the_schema_they_make() -> None:
    assert 1 + len(schema.MIGRATIONS) == schema.SCHEMA
    for n, step in enumerate(schema.MIGRATIONS, start=2):
        assert step.__name__.startswith(f"m{n:03d}_")


def test_a_ledger_of_this_schema_is_left_as_it_is(synced: Ledger) -> None:
    synced.pop("journal")  # the store's, not the ledger's
    before = json.dumps(synced)
    assert migrate(synced) is synced
    assert json.dumps(synced) == before
    assert json.dumps(validate(json.loads(before))) == before  # fills in nothing


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ({"schema": 3}, "the ledger has schema 3, newer than this tokenbudget understands (2)"),
        ({"schema": 0}, "the ledger has an unknown schema 0"),
        ({"schema": True}, "the ledger has no schema version"),
        ({"app": "tokenbudget"}, "the ledger has no schema version"),
        ([1], "the ledger is not a JSON object"),
    ],
)
def test_a_newer_or_unknown_schema_is_refused_in_validates_words(data: Any, said: str) -> None:
    with pytest.raises(CorruptLedger) as by_validate:
        validate(json.loads(json.dumps(data)))
    with pytest.raises(CorruptLedger) as by_migrate:
        migrate(data)
    assert str(by_migrate.value) == str(by_validate.value) == said


def _steps(calls: list[str], fail_at: str | None = None) -> list[schema.Migration]:
    """Test-only steps: 2 keeps files entries as objects, 3 renames "hours" to "buckets"."""

    def m002_files_as_objects(data: Ledger) -> Ledger:
        calls.append("m002")
        if fail_at == "m002":
            raise KeyError("missing")
        fields = ("ident", "head", "offset", "session", "turn")
        data["files"] = {p: dict(zip(fields, f, strict=True)) for p, f in data["files"].items()}
        return data

    def m003_buckets(data: Ledger) -> Ledger:
        calls.append("m003")
        assert isinstance(next(iter(data["files"].values())), dict)  # step 2 came first
        data["buckets"] = data.pop("hours")
        if fail_at == "m003":
            raise ValueError("a bucket that cannot be moved")
        return data

    return [m002_files_as_objects, m003_buckets]


def test_registered_steps_apply_in_order_from_the_files_schema(
    old: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(schema, "MIGRATIONS", _steps(calls))
    before = json.dumps(old)
    done = migrate(old)  # the schema-1 ledger 0.1.0 wrote
    assert calls == ["m002", "m003"]
    assert done["schema"] == 3 and "hours" not in done and done["buckets"] == old["hours"]
    path, rec = next(iter(old["files"].items()))
    assert done["files"][path] == {"ident": rec[FILE_IDENT], "head": rec[FILE_HEAD],
                                   "offset": rec[FILE_OFFSET], "session": rec[FILE_SESSION],
                                   "turn": rec[FILE_TURN]}
    assert json.dumps(old) == before  # the steps worked on a copy
    calls.clear()
    assert migrate(done) is done and calls == []  # up to date: nothing runs again
    half = migrate(json.loads(before), schema.MIGRATIONS[:1])  # a ledger of schema 2
    assert half["schema"] == 2 and calls == ["m002"]
    calls.clear()
    assert "buckets" in migrate(half) and calls == ["m003"]  # only the step it lacks
    with pytest.raises(CorruptLedger, match=r"schema 4, newer than .* understands \(3\)"):
        migrate({**done, "schema": 4})


@pytest.mark.parametrize("fail_at", ["m002", "m003"])
def test_a_failed_step_leaves_the_file_and_the_ledger_read_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(schema, "MIGRATIONS", _steps(calls, fail_at))
    path = tmp_path / "ledger.json"
    path.write_bytes(OLD.read_bytes())  # the schema-1 ledger 0.1.0 wrote
    raw, stat = path.read_bytes(), path.stat()
    data = json.loads(raw)
    n = int(fail_at[1:])
    name = {"m002": "m002_files_as_objects", "m003": "m003_buckets"}[fail_at]
    with pytest.raises(MigrationError) as failed:
        migrate(data)
    assert str(failed.value).startswith(
        f"the ledger could not be upgraded from schema {n - 1} to {n} ({name}): "
    )
    assert isinstance(failed.value, LedgerError)  # one line at the CLI; a hook fails open
    assert calls[-1] == fail_at
    assert data == json.loads(raw)  # nothing half done to write back
    assert path.read_bytes() == raw and path.stat().st_mtime_ns == stat.st_mtime_ns


# --- the file format ---------------------------------------------------------------------------


def test_the_names_stand_for_the_format_schema_1_files_have() -> None:
    """Changing what a name stands for changes the file format: that takes a new schema and a
    migration, never an edit here alone."""
    names = {k: v for k, v in vars(schema).items() if k.isupper() and k != "TYPE_CHECKING"}
    names.pop("SESSION_KEYS")
    names.pop("MIGRATIONS")
    assert names == {
        "SCHEMA": 2, "USAGE_LEN": 5,
        "FILE_IDENT": 0, "FILE_HEAD": 1, "FILE_OFFSET": 2, "FILE_SESSION": 3, "FILE_TURN": 4,
        "FILE_POS": slice(0, 3), "FILE_LEN": 5,
        "REQ_SESSION": 0, "REQ_MODEL": 1, "REQ_USAGE": slice(2, 7), "REQ_BUCKET": 7,
        "REQ_COST": 8, "REQ_TURN": 9, "REQ_LEN": 10,
        "HOUR_TOKENS": 0, "HOUR_COST": 1, "HOUR_FIRST": 2, "HOUR_LAST": 3, "HOUR_LEN": 4,
        "ROLLUP_TOKENS": 0, "ROLLUP_COST": 1, "ROLLUP_LEN": 2,
        "RUN_START": 0, "RUN_TOKENS": 1, "RUN_COST": 2,
        "ENDED_SESSION": 0, "ENDED_UNTIL": 1,
        "S_PROJECT": "p", "S_FIRST": "f", "S_LAST": "l", "S_MODELS": "m", "S_SEEN": "s",
        "S_EXTRA": "x", "S_TURNS": "t", "S_ALIASES": "a", "S_ADJUSTMENTS": "adj",
        "S_FORK_KEYS": "fk", "S_CC_COSTS": "cs", "S_COPIES": "cp", "S_PERIOD": "e",
        "S_CELLS": "c", "S_COMPACTED_KEYS": "k", "KEY_LEN": 16, "S_PRE": "pre", "S_ORIGIN": "po",
        "S_PARENT": "ih", "S_INHERITED": "ib", "S_INHERITED_UNKNOWN": "iu",
        "S_INHERIT_AT": "it", "S_CANDIDATES": "ie", "S_HELD": "hd", "S_FIRST_TOTALS": "fc",
        "S_LATEST_TOTALS": "lc", "S_TOTALS_AT": "cst", "S_FOLDED_KEYS": "kh",
        "S_REQUESTS": "rq",
        "M_USAGE": slice(0, 5), "M_COST": 5, "M_REQUESTS": 6, "M_SOURCE": 7, "M_LEN": 8,
        "SOURCE_TABLE": "t", "SOURCE_CLAUDE": "c", "SOURCE_UNPRICED": "u", "SOURCE_MIXED": "m",
        "TURN_COMMAND": 0, "TURN_START": 1, "TURN_TOKENS": 2, "TURN_COST": 3, "TURN_LEN": 4,
        "ADJ_BUCKET": 0, "ADJ_MODEL": 1, "ADJ_USAGE": slice(2, 7), "ADJ_COST": 7, "ADJ_TURN": 8,
        "ADJ_LEN": 9,
        "CELL_USAGE": slice(0, 5), "CELL_COST": 5, "CELL_LEN": 6,
        "PRE_TOKENS": 0, "PRE_COST": 1, "INHERIT_TURN": 0, "INHERIT_TIME": 1,
        "EVAL_KIND": 0, "EVAL_FINAL": 1, "EVAL_TOTALS": 2, "EVAL_SIZES": slice(3, 5),
        "EVAL_KNOWN": "k", "EVAL_UNKNOWN": "u", "EVAL_NOT_PARENT": "n",
        "H_SESSION": "sid", "H_HOURS": "hours", "H_TURNS": "turns", "H_FILES": "files",
        "H_PERIODS": "periods", "H_KEYS": "keys",
        "OUT_SESSION": 0, "OUT_MODEL": 1, "OUT_USAGE": slice(2, 7), "OUT_BUCKET": 7,
        "OUT_COST": 8, "OUT_COMMAND": 9, "OUT_PROJECT": 10, "OUT_LEN": 11,
    }


def test_every_key_0_1_0_wrote_in_a_session_has_a_name(old: Ledger) -> None:
    named = {v for k, v in vars(schema).items() if k.startswith("S_")}
    written = {key for s in old["sessions"].values() for key in s}
    assert written <= named
    # None held, none unknown; 0.1.0 kept no keys of a resumed session's folded requests, and
    # no requests open (optional: a session without them settles by the time rule alone).
    assert named - written == {schema.S_HELD, schema.S_INHERITED_UNKNOWN, schema.S_FOLDED_KEYS,
                               schema.S_REQUESTS}


# --- cost on a hook call -----------------------------------------------------------------------


def test_the_schema_imports_nothing_but_the_errors() -> None:
    code = ("import sys, tokenbudget.schema; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('tokenbudget'))))")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.split() == ["tokenbudget", "tokenbudget.errors", "tokenbudget.schema"]
