"""The snapshot of one record a line (tokenbudget/lazy.py), and a hook call that decodes only
the records it touches.

The file stays the JSON every other reader parses whole; a snapshot in any other layout (an
older version's, one edited by hand) is parsed whole and written in the layout by the next
commit; a call with news decodes its own session's records and leaves every other record's
bytes as they were.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.claude_lines import Session, reply_line, set_budgets
from tokenbudget import hot, index, lazy
from tokenbudget import store as store_mod
from tokenbudget.store import JsonFileStore

# 2027-12-15 12:00 UTC: not in 2026, where every other test's data lies.
NOW = datetime(2027, 12, 15, 12, 0, tzinfo=UTC).timestamp()
SIDS = ("s-a", "s-b", "s-c", "s-d")


def _store(home: Path) -> JsonFileStore:
    return JsonFileStore(home / "tb state" / "ledger.json")


def _post(s: Session, n: int) -> dict[str, Any]:
    return s.event("PostToolUse", NOW, tool_name="Bash", tool_input={"command": f"step {n}"})


def _sessions(home: Path) -> list[Session]:
    """Four sessions, each with a turn recorded by its hooks, the journal folded."""
    set_budgets(home, {"kind": "daily", "limit": "1B"})
    out = [Session(home, sid, f"/home/dev/app{n}") for n, sid in enumerate(SIDS)]
    for n, s in enumerate(out):
        s.turn(f"p{n}", "go", NOW - 300 + n, 1_000 + n)
        assert _post(s, 0) == {}
    _store(home).checkpoint()
    return out


def _lines(path: Path) -> dict[str, bytes]:
    """The snapshot's record lines by their key's text."""
    return {line.split(b'":', 1)[0]: line.rstrip(b",") for line in
            path.read_bytes().split(b"\n") if line.startswith(b'"')}


def _whole(store: JsonFileStore) -> str:
    """The ledger as committed, parsed whole, as JSON text."""
    return json.dumps(store.read()[0])


def test_a_checkpoint_writes_one_record_a_line_that_json_reads_as_before(
        private_home: Path) -> None:
    _sessions(private_home)
    store = _store(private_home)
    raw = store.path.read_bytes()
    data = json.loads(raw)
    assert list(data["sessions"]) == list(SIDS)
    lines = _lines(store.path)
    assert all(f'"{sid}'.encode() in lines for sid in SIDS)
    assert len(lines) == len(data["sessions"]) + len(data["files"])
    assert raw == lazy.encode(data)  # and nothing else differs from json.dumps's content
    read = lazy.decode(raw)
    assert read is not None and type(read["sessions"]) is lazy.Table
    assert json.dumps(read) == json.dumps(data)


def test_a_snapshot_in_the_old_layout_is_read_whole_and_written_in_the_new_one(
        private_home: Path) -> None:
    sessions = _sessions(private_home)
    store = _store(private_home)
    whole = json.loads(store.path.read_bytes())
    store.path.write_bytes(json.dumps(whole, separators=(",", ":")).encode())  # 0.x's layout
    assert lazy.decode(store.path.read_bytes()) is None
    data, pos = store.read(lazy=True)
    assert pos is not None and not pos.relayout
    assert type(data["sessions"]) is dict and json.dumps(data) == _whole(store)
    sessions[0].write(reply_line("s-a", "s-a-r1", NOW - 10, sessions[0].cwd, input_tokens=5))
    assert _post(sessions[0], 1) == {}
    store.checkpoint()
    raw = store.path.read_bytes()
    assert raw == lazy.encode(json.loads(raw)) and b'"sessions":{\n' in raw
    assert json.loads(raw)["sessions"]["s-b"] == whole["sessions"]["s-b"]


@pytest.mark.parametrize("breaking", ["a record split over two lines", "two records on a line",
                                      "a line end missing at the table's end"])
def test_a_snapshot_with_its_layout_broken_is_read_whole_and_written_again(
        private_home: Path, breaking: str) -> None:
    """Edited by hand: the hot view no longer names it, so it is parsed whole; it is not
    what a checkpoint writes, so the first commit writes it again before the view names it
    (else the next call would split its lines into the wrong records)."""
    sessions = _sessions(private_home)
    store = _store(private_home)
    raw = store.path.read_bytes()
    truth = json.loads(raw)
    if breaking == "a record split over two lines":
        # Where a record's inner table ends, as a row of its own would: the splitter alone
        # takes it for two records.
        at = raw.index(b'"s-b":{')
        cut = raw.index(b'},"', at) + 2
        raw = raw[:cut] + b"\n" + raw[cut:]
        assert lazy.decode(raw) is not None  # the lines look like rows: only the read knows
    elif breaking == "two records on a line":
        raw = raw.replace(b',\n"s-c":', b',"s-c":', 1)
    else:
        raw = raw.replace(b'\n},"keys"', b'},"keys"', 1)
    assert json.loads(raw) == truth
    store.path.write_bytes(raw)
    data, pos = store.read(lazy=True)
    assert json.dumps(data) == json.dumps(truth | {"journal": None} and data)
    assert type(data["sessions"]) is dict and pos is not None and pos.relayout
    sessions[0].write(reply_line("s-a", "s-a-r1", NOW - 10, sessions[0].cwd, input_tokens=5))
    assert _post(sessions[0], 1) == {}
    raw = store.path.read_bytes()
    assert raw == lazy.encode(json.loads(raw))  # written again by that commit
    after, _ = store.read(lazy=True)
    assert type(after["sessions"]) is lazy.Table
    assert json.dumps(after) == _whole(store)
    assert after["sessions"]["s-b"] == truth["sessions"]["s-b"]


@pytest.mark.parametrize("indexed", [False, True], ids=["searched", "indexed"])
def test_a_call_with_news_decodes_its_own_records_and_leaves_the_others_bytes(
        private_home: Path, monkeypatch: pytest.MonkeyPatch, indexed: bool) -> None:
    # As a large ledger's checkpoint does, or a small one's.
    monkeypatch.setattr(index, "FROM_BYTES", 0 if indexed else 1 << 30)
    sessions = _sessions(private_home)
    store = _store(private_home)
    ix = Path(index.file_of(store.file))
    assert ix.exists() is indexed
    if indexed:
        assert ix.stat().st_mode & 0o777 == 0o600
        assert store.read(lazy=True)[0]["sessions"].index is not None
    before = _lines(store.path)
    assert hot.names_snapshot(store.file, _stamp(store), json.loads(store.path.read_bytes())
                              ["updated"])
    decoded: list[Any] = []
    real = lazy.load

    def spy(text: str) -> Any:
        value = real(text)
        decoded.append(value)
        return value

    sessions[1].write(reply_line("s-b", "s-b-r1", NOW - 10, sessions[1].cwd, input_tokens=50))
    with monkeypatch.context() as m:
        m.setattr(lazy, "load", spy)
        # The suite's replay check parses the committed ledger whole after each commit (and
        # so every record): this call is compared with a whole read below instead.
        m.delenv(store_mod.CHECK_ENV)
        assert _post(sessions[1], 1) == {}
    assert json.dumps(store.read()[0]) == json.dumps(store._read_cold()[0])
    # Its session's record and its transcript's read position, each by the call's read and
    # the copy before its news: no other record.
    own = [v for v in decoded if type(v) is dict]
    positions = [v for v in decoded if type(v) is list]
    assert own and positions and len(decoded) == len(own) + len(positions)
    assert all(v["p"] == sessions[1].cwd for v in own)
    assert all(v[3] == "s-b" for v in positions)
    store.checkpoint()
    after = _lines(store.path)
    assert set(after) == set(before)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {b'"s-b', str(sessions[1].path).encode().join([b'"', b""])}
    stored = store.read()[0]
    assert sum(sum(m[:5]) for m in stored["sessions"]["s-b"]["m"].values()) == (
        1_001 + 50)  # the turn's reply, then this one


def test_an_index_is_used_only_while_it_names_the_snapshot_read(
        private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index written for another snapshot (an older one, put back; or the file replaced by
    a writer that writes none) is not used, and a small ledger's checkpoint removes any."""
    monkeypatch.setattr(index, "FROM_BYTES", 0)
    sessions = _sessions(private_home)
    store = _store(private_home)
    ix = Path(index.file_of(store.file))
    old = ix.read_bytes()
    sessions[2].write(reply_line("s-c", "s-c-r1", NOW - 10, sessions[2].cwd, input_tokens=7))
    assert _post(sessions[2], 1) == {}
    store.checkpoint()
    assert store.read(lazy=True)[0]["sessions"].index is not None
    ix.write_bytes(old)
    data, _ = store.read(lazy=True)
    assert type(data["sessions"]) is lazy.Table and data["sessions"].index is None
    assert json.dumps(data) == _whole(store)
    sessions[3].write(reply_line("s-d", "s-d-r1", NOW - 9, sessions[3].cwd, input_tokens=9))
    assert _post(sessions[3], 1) == {}
    stored = store.read()[0]["sessions"]
    assert [sum(sum(m[:5]) for m in stored[sid]["m"].values()) for sid in SIDS] == [
        1_000, 1_001, 1_002 + 7, 1_003 + 9]
    monkeypatch.setattr(index, "FROM_BYTES", 1 << 30)
    store.checkpoint()
    assert not ix.exists()


def test_a_table_behaves_as_the_dict_it_stands_for() -> None:
    data = {"sessions": {"a": {"x": [1]}, "b": {"y": 2.5}, 'q"\u00e9': {}},
            "files": {"/p": [1, "h", 3, "a", None]}}
    raw = lazy.encode({"updated": 1.0, **data})
    assert b'"q\\"\\u00e9":{}' in raw  # a key JSON escapes: read line by line

    def fresh() -> lazy.Table:
        read = lazy.decode(raw)
        assert read is not None
        return read["sessions"]

    assert dict(fresh()) == data["sessions"] and {**fresh()} == data["sessions"]
    assert fresh() == data["sessions"] and data["sessions"] == fresh()
    assert fresh().__ne__(data["sessions"]) is False and fresh() != {"a": {"x": [1]}}
    assert fresh() != None and fresh() != 3  # noqa: E711 (not a dict: not equal, no error)
    assert list(fresh().items()) == list(data["sessions"].items())
    assert list(fresh().values()) == list(data["sessions"].values())
    assert fresh().copy() == data["sessions"] and type(fresh().copy()) is dict
    assert fresh().get("a") == {"x": [1]} and fresh().get("z", 3) == 3
    assert fresh().pop("b") == {"y": 2.5} and fresh().setdefault("a") == {"x": [1]}
    assert json.dumps(fresh()) == json.dumps(data["sessions"])
    assert (fresh() | {"c": 1}) == {**data["sessions"], "c": 1}
    assert fresh()['q"\u00e9'] == {} and list(fresh()) == list(data["sessions"])
    shared = fresh()
    other = shared.share()
    shared["a"]["x"].append(2)  # decoded by one table: the other decodes its own
    assert other["a"] == {"x": [1]}


def _stamp(store: JsonFileStore) -> Any:
    from tokenbudget.fileio import stamp

    return stamp(store.path.stat())


def _indexed(read: dict[str, Any], raw: bytes, folder: Path) -> dict[str, Any]:
    """`read` (lazy.decode of `raw`) with the index of `raw`'s records beside its tables."""
    snap = json.loads(raw)
    text = index.encode((1, 2), 3.5, snap["sessions"], snap["files"])
    assert text is not None
    path = folder / "ledger.index"
    path.write_bytes(text)
    ix = index.open_for(str(path), (1, 2), 3.5)
    assert ix is not None
    for name in lazy.TABLES:
        read[name].index = (ix, name, list(snap[name]))
    return read


@pytest.mark.parametrize("indexed", [False, True], ids=["searched", "indexed"])
def test_a_compacted_key_is_found_in_the_same_session_read_a_record_at_a_time(
        tmp_path: Path, indexed: bool) -> None:
    """The owner of a compacted key (the last session holding it as a whole slot) is the one
    found in all sessions' keys joined, whether the records are decoded or still text, and
    whether an index names them or their texts are searched; a record changed since the
    snapshot counts as it is now."""
    from tokenbudget.ingest import KEY_LEN, Ingestor

    def key(n: int) -> str:
        return f"{n:016x}"

    assert KEY_LEN == 16
    sessions: dict[str, Any] = {
        "s1": {"k": key(1) + key(2) + key(3)},
        "s2": {"k": key(2) + key(4)[:10]},  # a short last slot
        "s3": {"k": "0" * 8 + key(5) + "0" * 8},  # key(5) across two slots: not one of them
        "s4": {"k": key(6), "kh": key(7)},
        "s5": {},
        "s6": {"k": key(3)},
    }
    asked = [key(1), key(2), key(3), key(4)[:10], key(4), key(5), key(6), key(7), key(8),
             key(6)[:8]]
    raw = lazy.encode({"sessions": sessions, "files": {}})
    changes: list[tuple[str, str]] = [("s5", key(8)), ("s6", ""), ("s1", key(2))]
    for decoded in ([], ["s6"], ["s1", "s2"], list(sessions), changes):
        for k in asked:
            plain = Ingestor({"sessions": json.loads(raw)["sessions"]})
            read = lazy.decode(raw)
            assert read is not None
            if indexed:
                _indexed(read, raw, tmp_path)
            for sid in decoded:
                if type(sid) is tuple:  # changed since the snapshot: as it is now
                    plain.L["sessions"][sid[0]]["k"] = sid[1]
                    read["sessions"][sid[0]]["k"] = sid[1]
                else:
                    read["sessions"].get(sid)  # decoded, as a call's own session is
            want = plain._compacted_search(k)
            got = Ingestor(read)._compacted_search(k)
            assert got == want, (k, decoded)
    assert Ingestor({"sessions": sessions})._compacted_search(key(3)) == "s6"
    assert Ingestor({"sessions": sessions})._compacted_search(key(2)) == "s2"


@pytest.mark.parametrize("decoded", [False, True], ids=["texts", "decoded"])
def test_with_an_index_a_pass_searches_more_only_while_its_searches_look_at_few_records(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, decoded: bool) -> None:
    """A search with the index looks at the records it names and at every one decoded: with
    the records still texts, a pass searches many more keys than without an index before it
    builds the keys' index; with every record decoded (each search looks at them all, in
    Python), no more than without one (256 searches of 2,000 records cost about 5x the index
    built after 32: bench/RESULTS.md section 47)."""
    from tokenbudget import ingest

    sessions = {f"s{n}": {"k": f"{n:016x}"} for n in range(200)}
    raw = lazy.encode({"sessions": sessions, "files": {}})
    read = _indexed(lazy.decode(raw) or {}, raw, tmp_path)
    if decoded:
        read["sessions"].decode_all()
    ing = ingest.Ingestor(read)
    searched = []
    search = ing._compacted_search
    monkeypatch.setattr(ing, "_compacted_search", lambda key: searched.append(key) or search(key))
    for n in range(300):
        assert ing._compacted_owner(f"{1000 + n:016x}") is None  # held by none
    assert len(searched) == ingest.COMPACTED_SEARCHES * (1 if decoded else 8)
    assert [ing._compacted_owner(f"{n:016x}") for n in (0, 7, 199)] == ["s0", "s7", "s199"]


@pytest.mark.parametrize("indexed", [False, True], ids=["searched", "indexed"])
def test_entries_holding_a_text_are_those_of_the_dict(tmp_path: Path, indexed: bool) -> None:
    """A Table gives every entry whose text holds the needle (decoded or not), in order; with
    an index, every entry it names and every one decoded."""
    files = {f"/p/{n}": [f"1:{n}", "h", n, f"s-{n % 3}", "t"] for n in range(12)}
    raw = lazy.encode({"sessions": {}, "files": files})
    for decoded in ([], ["/p/1"], ["/p/0", "/p/4", "/p/11"]):
        read = lazy.decode(raw)
        assert read is not None
        for path in decoded:
            read["files"][path][3] = "s-1"  # what the record holds now is what counts
        want = [(p, r) for p, r in read["files"].copy().items() if r[3] == "s-1"]
        read = lazy.decode(raw)
        assert read is not None
        if indexed:
            _indexed(read, raw, tmp_path)
        for path in decoded:
            read["files"][path][3] = "s-1"
        got = [(p, r) for p, r in lazy.entries_with(read["files"], b'"s-1"',
                                                      (index.SESSION, "s-1")) if r[3] == "s-1"]
        assert got == want
        assert sum(type(v) is not bytes for v in dict.values(read["files"])) == len(
            set(decoded) | {p for p, r in files.items() if r[3] == "s-1"})


def test_a_large_table_is_read_the_same_and_a_row_out_of_shape_is_refused() -> None:
    """Past lazy._SMALL the rows are matched all at once: the same entries as line by line, a
    key JSON escapes read on its own, and a row that is not one refuses the layout."""
    sessions = {f"s-{n:04}": {"p": f"/home/dev/{'x' * 40}/{n}", "m": {"a": [n, 0.5]}}
                for n in range(400)}
    sessions['q"\u00e9'] = {"p": ""}
    raw = lazy.encode({"updated": 1.0, "sessions": sessions, "files": {}})
    assert len(raw) > 2 * lazy._SMALL
    read = lazy.decode(raw)
    assert read is not None and json.dumps(read) == json.dumps(
        {"updated": 1.0, "sessions": sessions, "files": {}})
    for broken in (raw.replace(b'"s-0007":{', b'"s-0007":[{', 1).replace(
                       b'"s-0008"', b'"s-0007x"', 1),  # a value not a record's
                   raw.replace(b'"s-0010":{', b's-0010:{', 1),  # a key unquoted
                   raw.replace(b'},\n"s-0011"', b'}\n"s-0011"', 1),  # a comma missing
                   raw.replace(b'}\n}', b'},\n}', 1),  # a comma after the last row
                   raw.replace(b'"s-0014":{', b'"s-0014"x{', 1)):  # no colon
        assert broken != raw and lazy.decode(broken) is None
    # A key not UTF-8 in a table whose rows are all matched at once: refused, not raised.
    del sessions['q"\u00e9']
    plain = lazy.encode({"updated": 1.0, "sessions": sessions, "files": {}})
    assert lazy.decode(plain) is not None
    assert lazy.decode(plain.replace(b'"s-0013":{', b'"s-\xff":{', 1)) is None


def test_a_split_record_named_by_an_older_versions_view_is_read_whole(
        private_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An older version (no layout) reads a file edited by hand whole, appends its commit
    and writes a view that names the file, as it names any file it checked. Its lines are
    not this code's: they are read whole (and the file written again), never split into
    records that are not (a record cut in two by hand, read as two)."""
    sessions = _sessions(private_home)
    store = _store(private_home)
    raw = store.path.read_bytes()
    truth = json.loads(raw)
    at = raw.index(b'"s-b":{')
    cut = raw.index(b'},"', at) + 2
    raw = raw[:cut] + b"\n" + raw[cut:]
    assert json.loads(raw) == truth
    store.path.write_bytes(raw)
    # The older version's commit: it never compares the file with the layout, and its view's
    # head has only the fields it knows.
    with monkeypatch.context() as m:
        m.setattr(store_mod, "_unlike_layout", lambda data, raw: False)
        m.delenv(store_mod.CHECK_ENV)  # its own check would be a newer version's
        sessions[0].write(reply_line("s-a", "s-a-r1", NOW - 10, sessions[0].cwd,
                                     input_tokens=5))
        assert _post(sessions[0], 1) == {}
    shared = Path(hot.paths(store.file)[0])
    head, rest = shared.read_bytes().split(b"\n", 1)
    older = {k: v for k, v in json.loads(head).items()
             if k in ("view", "seq", "at", "slash", "hours")}
    shared.write_bytes(json.dumps(older, separators=(",", ":")).encode() + b"\n" + rest)
    assert store.path.read_bytes() == raw
    assert hot.names_snapshot(store.file, _stamp(store), truth["updated"])
    data, pos = store.read(lazy=True)
    assert list(data["sessions"]) == list(truth["sessions"])  # no record made of half a line
    assert data["sessions"]["s-b"] == truth["sessions"]["s-b"]
    assert pos is not None and pos.relayout
    sessions[1].write(reply_line("s-b", "s-b-r1", NOW - 5, sessions[1].cwd, input_tokens=7))
    assert _post(sessions[1], 1) == {}
    raw = store.path.read_bytes()
    assert raw == lazy.encode(json.loads(raw))  # written again by this code's commit
    after, _ = store.read(lazy=True)
    assert type(after["sessions"]) is lazy.Table
    assert json.dumps(after) == _whole(store)
