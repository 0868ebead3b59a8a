"""ledger.py and store.py: a schema-1 ledger, as 0.1.0 wrote it, is migrated in place on first use.

The store's contract every backend passes is tests/test_store_contract.py, its crash tests
tests/test_store_crash.py; the record layouts and the migration registry tests/test_schema.py.

On the real file 0.1.0 wrote from the recorded transcripts (tests/fixtures/ledger-0.1.0), put
where a user's ledger is, with those transcripts where it read them: the migration adds what
0.1.0 lacked and changes nothing else; the first commit (a hook call, a CLI command) writes it
back as schema 2 and keeps the schema-1 files aside once; a journal an older writer left
replays through the migration; a migration that fails leaves the file as it was; a newer
schema is kept aside as corrupt, never reset, and so is this schema for a reader of the older.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.claude_lines import prompt_line, reply_line
from tests.conftest import RECORDED
from tests.helpers import ALL_CASES, install_fixture, truth_usage
from tests.test_cli import run
from tokenbudget import hook, journal, schema
from tokenbudget import ledger as ledger_module
from tokenbudget.errors import LedgerError
from tokenbudget.ledger import CorruptLedger, file_identity, new_ledger, validate
from tokenbudget.schema import FILE_IDENT, HOUR_TOKENS, M_USAGE, S_MODELS, MigrationError
from tokenbudget.store import open_store

Ledger = dict[str, Any]
OLD = Path(__file__).resolve().parent / "fixtures" / "ledger-0.1.0" / "ledger.json"
OLD_CLAUDE = "/home/dev/.claude"  # where its transcripts were, as make.py writes it
LOOP = "85b37d12-d6e6-4358-8473-92d2406f53a7"  # the "loop" fixture's session
TRUTH = sum(truth_usage(case).total for case in ALL_CASES)  # every request the API served


def _install_old(home: Path) -> Path:
    """The 0.1.0 ledger as this user's, its transcripts where it read them: only the folder
    and each transcript's identity (device and inode) are this machine's; return its path."""
    claude = home / ".claude"
    for case in ALL_CASES:
        install_fixture(case, claude, unique_ids=True)
    text = OLD.read_text().replace(OLD_CLAUDE, str(claude))
    for path, rec in json.loads(text)["files"].items():
        text = text.replace(f'"{rec[FILE_IDENT]}"', f'"{file_identity(os.stat(path))}"', 1)
    state = home / "tb state"
    state.mkdir(mode=0o700)
    target = state / "ledger.json"
    target.write_text(text)
    target.chmod(0o600)
    return target


def _tokens(data: Ledger) -> int:
    return sum(c[HOUR_TOKENS] for cells in data["hours"].values() for c in cells.values())


def _on_disk(path: Path) -> Ledger:
    data: Ledger = json.loads(path.read_bytes())
    return data


# --- the step ------------------------------------------------------------------------------------


def test_0_1_0_lacked_only_the_team_tables_and_the_step_adds_them_empty() -> None:
    old: Ledger = json.loads(OLD.read_bytes())
    assert old["schema"] == 1
    assert set(new_ledger()) - set(old) == {"team", "outbox"}  # what 0.1.0 did not write
    assert set(old) <= set(new_ledger())
    done = schema.migrate(old)
    assert list(done) == list(new_ledger())  # every table, in the order ledgers are written
    assert done["schema"] == 2 and done["team"] == "" and done["outbox"] == {}
    assert {k: v for k, v in done.items() if k not in ("schema", "team", "outbox")} == {
        k: v for k, v in old.items() if k != "schema"
    }
    assert validate(json.loads(OLD.read_bytes())) == done


def test_the_tables_older_schema_1_writers_lacked_are_added_empty_in_order() -> None:
    oldest = {k: v for k, v in new_ledger().items() if k not in
              ("models", "events", "allow", "ended", "team", "outbox")}
    oldest["schema"] = 1
    oldest["folded"]["sessions"] = 2
    oldest["mine"] = {"a": 1}  # a key no step knows stays, after the tables
    done = validate(json.loads(json.dumps(oldest)))
    assert list(done) == [*new_ledger(), "mine"]
    assert (done["models"], done["events"], done["allow"], done["ended"]) == ({}, {}, {}, {})
    assert done["folded"]["sessions"] == 2 and done["created"] == oldest["created"]


def test_a_table_missing_from_a_schema_2_ledger_is_damage_not_filled_in() -> None:
    data = new_ledger()
    del data["outbox"]
    with pytest.raises(CorruptLedger, match="the ledger has no 'outbox'"):
        validate(data)


# --- in place, on first use --------------------------------------------------------------------


@pytest.mark.parametrize("how", ["locked read", "known read"])
def test_the_first_commit_writes_schema_2_and_keeps_schema_1_aside_once(
    private_home: Path, how: str
) -> None:
    path = _install_old(private_home)
    raw = path.read_bytes()
    store = open_store(path=path)
    data, pos = store.read()
    assert data["schema"] == 2 and _on_disk(path)["schema"] == 1  # a read writes nothing
    assert path.read_bytes() == raw
    with store.transaction(known=(pos, data) if how == "known read" else None) as ledger:
        assert ledger["schema"] == 2 and ledger["team"] == ""  # nothing changed: written anyway
    on_disk = _on_disk(path)
    assert on_disk["schema"] == 2 and on_disk["outbox"] == {}
    assert path.read_bytes().startswith(b'{"schema":2,"app":"tokenbudget","created":')
    [kept] = path.parent.glob("ledger.json.schema1-*")
    assert kept.read_bytes() == raw and kept.stat().st_mode & 0o777 == 0o600
    assert not list(path.parent.glob("ledger.journal.jsonl.schema1-*"))  # there was none
    migrated = schema.migrate(json.loads(raw))
    assert {k: v for k, v in store.snapshot().items() if k != "updated"} == {
        k: v for k, v in migrated.items() if k != "updated"
    }
    with store.transaction() as ledger:
        ledger["warned"]["after"] = 1.0
    assert list(path.parent.glob("ledger.json.schema1-*")) == [kept]  # once
    assert _on_disk(path)["schema"] == 2 and store.snapshot()["warned"]["after"] == 1.0
    assert Path(store.journal).read_bytes().count(b"\n") == 1  # an ordinary commit again


def test_a_hook_call_on_the_0_1_0_ledger_counts_exactly_and_leaves_schema_2(
    private_home: Path, recorded_day: float
) -> None:
    path = _install_old(private_home)
    raw = path.read_bytes()
    transcript = private_home / ".claude" / "projects" / "-home-dev-project" / f"{LOOP}.jsonl"
    before = _on_disk(path)["sessions"][LOOP]
    with transcript.open("a") as f:  # one more turn since 0.1.0 last read it
        f.write(json.dumps(prompt_line(LOOP, "p-after", "go on", RECORDED + 10,
                                       "/home/dev/project")) + "\n")
        f.write(json.dumps(reply_line(LOOP, "msg-after", RECORDED + 11, "/home/dev/project",
                                      input_tokens=700, output_tokens=50)) + "\n")
    event = {"session_id": LOOP, "transcript_path": str(transcript), "cwd": "/home/dev/project",
             "hook_event_name": "Stop"}
    answer = hook.handle("Stop", json.dumps(event).encode(), now=RECORDED + 20)
    assert "systemMessage" not in answer and answer.get("continue") is not False, answer
    stored = open_store(path=path).snapshot()
    assert _tokens(stored) == TRUTH + 750  # the fixtures' transcripts, each request once
    after = stored["sessions"][LOOP]
    used = {m: sum(v[M_USAGE]) for m, v in after[S_MODELS].items()}
    was = {m: sum(v[M_USAGE]) for m, v in before[S_MODELS].items()}
    assert sum(used.values()) == sum(was.values()) + 750
    assert _on_disk(path)["schema"] == 2
    [kept] = path.parent.glob("ledger.json.schema1-*")
    assert kept.read_bytes() == raw


def test_status_on_the_0_1_0_ledger(private_home: Path, recorded_day: float) -> None:
    path = _install_old(private_home)
    (path.parent / "config.json").write_text(
        json.dumps({"version": 1, "budgets": [{"kind": "total", "limit": "5M"}]})
    )
    proc = run("status", "--json", home=private_home,
               env={"TOKENBUDGET_NOW": repr(recorded_day)})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    [total] = [b for b in json.loads(proc.stdout)["budgets"] if b["kind"] == "total"]
    assert total["used"] == TRUTH
    assert _on_disk(path)["schema"] == 2
    assert len(list(path.parent.glob("ledger.json.schema1-*"))) == 1


# --- a journal an older writer left -------------------------------------------------------------


def _older_writer_lines(snapshot: Ledger) -> tuple[bytes, Ledger]:
    """Two commits of a schema-1 writer with a journal (the versions before this schema), as
    it wrote them: the changes to the ledger as it read it, where every missing table was
    filled in empty on read. Return the lines and the ledger they leave."""
    seen = {**snapshot, **{k: v for k, v in new_ledger().items() if k not in snapshot}}
    seen["schema"] = 1
    first = journal.copy(seen)
    first["team"] = "acme"  # team join: a table 0.1.0's file does not have
    first["warned"]["daily-2026-12-06"] = RECORDED
    second = journal.copy(first)
    second["outbox"]["adj-1"] = [LOOP, "claude-opus-5-5", 1, 2, 0, 0, 0, 1995430, 0.5, "prompt",
                                 "/home/dev/project"]
    second["sessions"][LOOP]["l"] = RECORDED + 5
    lines = b""
    for seq, (a, b) in enumerate([(seen, first), (first, second)], start=1):
        sets, dels = journal.changes(a, b)
        lines += journal.encode(seq, sets, dels)
    return lines, second


def test_a_journal_left_by_a_schema_1_writer_replays_through_the_migration(
    private_home: Path,
) -> None:
    path = _install_old(private_home)
    store = open_store(path=path)
    lines, expected = _older_writer_lines(_on_disk(path))
    assert b'"outbox","adj-1"' in lines  # a table the snapshot lacks
    Path(store.journal).write_bytes(lines)
    raw = path.read_bytes()
    read = store.snapshot()
    assert read["notices"] == []  # every line applied
    assert read["team"] == "acme" and read["outbox"] == expected["outbox"]
    assert read["sessions"][LOOP]["l"] == RECORDED + 5
    want = schema.migrate({**expected, "updated": read["updated"]})
    assert json.dumps(read) == json.dumps(want)
    with store.transaction():
        pass
    assert Path(store.journal).read_bytes() == b""  # folded into the schema-2 snapshot
    assert _on_disk(path)["schema"] == 2 and _on_disk(path)["team"] == "acme"
    [kept] = path.parent.glob("ledger.json.schema1-*")
    [kept_journal] = path.parent.glob("ledger.journal.jsonl.schema1-*")
    assert kept.read_bytes() == raw and kept_journal.read_bytes() == lines
    again = store.snapshot()
    assert {k: v for k, v in again.items() if k != "updated"} == {
        k: v for k, v in read.items() if k != "updated"
    }


# --- refusals -----------------------------------------------------------------------------------


def _failing(data: Ledger) -> Ledger:
    raise ValueError("a table that cannot be moved")


_failing.__name__ = "m002_fails"


def test_a_migration_that_fails_leaves_the_file_untouched(
    private_home: Path, recorded_day: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _install_old(private_home)
    raw, mtime = path.read_bytes(), path.stat().st_mtime_ns
    monkeypatch.setattr(schema, "MIGRATIONS", [_failing])
    store = open_store(path=path)
    said = ("the ledger could not be upgraded from schema 1 to 2 (m002_fails):"
            " a table that cannot be moved")
    with pytest.raises(MigrationError, match=re.escape(said)), store.transaction():
        pass
    transcript = private_home / ".claude" / "projects" / "-home-dev-project" / f"{LOOP}.jsonl"
    event = {"session_id": LOOP, "transcript_path": str(transcript), "cwd": "/home/dev/project",
             "hook_event_name": "UserPromptSubmit", "prompt": "hi", "prompt_id": "p-new"}
    answer = hook.handle("UserPromptSubmit", json.dumps(event).encode(), now=RECORDED + 20)
    assert said in answer["systemMessage"] and answer.get("decision") != "block"  # fails open
    assert path.read_bytes() == raw and path.stat().st_mtime_ns == mtime
    kept = [p.name for p in path.parent.glob("ledger.*") if p.name != "ledger.json.lock"]
    assert kept == ["ledger.json"]  # nothing kept aside, no journal
    assert isinstance(MigrationError("x"), LedgerError)  # the CLI says it in one line


def test_a_newer_schema_is_kept_aside_as_corrupt_never_reset(private_home: Path) -> None:
    path = _install_old(private_home)
    newer = {**schema.migrate(_on_disk(path)), "schema": 3}
    path.write_text(json.dumps(newer))
    raw = path.read_bytes()
    store = open_store(path=path)
    with store.transaction() as ledger:
        assert ledger["rebuild"] is True  # the totals are rebuilt from the transcripts
        assert "the ledger has schema 3, newer than this tokenbudget understands (2)" in (
            ledger["notices"][0])
    [kept] = path.parent.glob("ledger.json.corrupt-*")
    assert kept.read_bytes() == raw
    assert not list(path.parent.glob("ledger.json.schema*"))


def test_a_schema_2_ledger_is_kept_aside_by_a_schema_1_reader(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Going back to 0.1.0 without restoring the schema-1 copy: it refuses the new file as
    a ledger from the future (kept aside, rebuilt), as this code does schema 3."""
    path = _install_old(private_home)
    store = open_store(path=path)
    with store.transaction():
        pass
    raw = path.read_bytes()
    # The reader and writer of schema 1 that 0.1.0 was.
    monkeypatch.setattr(schema, "MIGRATIONS", [])
    monkeypatch.setattr(ledger_module, "SCHEMA", 1)
    with pytest.raises(CorruptLedger, match=r"schema 2, newer than .* understands \(1\)"):
        store.read()
    with store.transaction() as ledger:
        assert ledger["rebuild"] is True and "schema 2, newer" in ledger["notices"][0]
    [kept] = path.parent.glob("ledger.json.corrupt-*")
    assert kept.read_bytes() == raw
