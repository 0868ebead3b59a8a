"""The index beside a large snapshot (tokenbudget/index.py): it may name a record too many,
never one too few, whether a record was indexed from its text or decoded; and it is used
only for the snapshot it names.

How a hook call uses it, and that a stale one is not used, is in tests/test_lazy.py.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

from tokenbudget import index, lazy
from tokenbudget.ingest import _holds_slot
from tokenbudget.schema import FILE_SESSION, KEY_LEN, S_FOLDED_KEYS, S_INHERITED, counted_keys

STAMP = (1, 2, 3, 4, 5)
HEAD = 1765000000.25


def _key(rng: random.Random) -> str:
    return f"{rng.getrandbits(64):016x}"


def _keys(rng: random.Random) -> Any:
    """A compacted keys field as the ledger may hold it, the odd ones included."""
    n = rng.randrange(4)
    shape = rng.randrange(9)
    keys = "".join(_key(rng) for _ in range(n))
    if shape == 0:
        return keys + _key(rng)[: rng.randrange(1, KEY_LEN)]  # a short last slot
    if shape == 1:
        return keys.upper()  # hex, but not as written
    if shape == 2:
        return keys + 'x"\\\u00e9 '  # not hex: escaped in JSON
    if shape == 3:
        return rng.randrange(10**6)  # not a string at all
    return keys


def _session(rng: random.Random) -> dict[str, Any]:
    s: dict[str, Any] = {"p": "/home/dev/app", "l": 1.5}
    if rng.random() < 0.8:
        s["k"] = _keys(rng)
    if rng.random() < 0.3:
        s[S_FOLDED_KEYS] = _keys(rng)
    if rng.random() < 0.2:
        s[S_INHERITED] = {"m": [1, 2, 3, 4, 5]}
    if rng.random() < 0.3:  # the same names deeper: found one time too many at worst
        s["t"] = {"k": _key(rng), "x": {"kh": 5, "ib": "k"}}
    return s


def _read(sessions: dict[str, Any], files: dict[str, Any], tmp_path: Path,
          decoded: bool) -> index.Index:
    if decoded:
        text = index.encode(STAMP, HEAD, sessions, files)
    else:
        read = lazy.decode(lazy.encode({"sessions": sessions, "files": files}))
        assert read is not None
        text = index.encode(STAMP, HEAD, read["sessions"], read["files"])
    assert text is not None
    path = tmp_path / "ledger.index"
    path.write_bytes(text)
    ix = index.open_for(str(path), STAMP, HEAD)
    assert ix is not None
    return ix


def test_every_record_holding_a_term_is_named_whether_indexed_from_text_or_decoded(
        tmp_path: Path) -> None:
    rng = random.Random(7)
    sessions = {f"s-{n}": _session(rng) for n in range(400)}
    sessions['odd "\u00e9" \\ id'] = {"k": _key(rng) + _key(rng), S_INHERITED: {}}
    files = {f"/p/{n} x": [f"1:{n}", "h", n, rng.choice(list(sessions)), None]
             for n in range(300)}
    files["/p/none"] = ["1:0", "h", 0, None, None]
    order = list(sessions)
    read = lazy.decode(lazy.encode({"sessions": sessions, "files": files}))
    assert read is not None
    texts = index.encode(STAMP, HEAD, read["sessions"], read["files"])
    for decoded in (False, True):
        ix = _read(sessions, files, tmp_path, decoded)
        for n, (sid, s) in enumerate(sessions.items()):
            keys = counted_keys(s)
            for i in range(0, len(keys), KEY_LEN):
                key = keys[i : i + KEY_LEN]
                assert _holds_slot(s, key)
                assert sid in {order[p] for p in ix.places("sessions", index.KEY, key)}, key
            for field in (S_INHERITED, S_FOLDED_KEYS):
                if field in s:
                    assert n in ix.places("sessions", index.HAS, field)
        for n, rec in enumerate(files.values()):
            if rec[FILE_SESSION] is not None:
                assert n in ix.places("files", index.SESSION, rec[FILE_SESSION])
        # Not too many either: a key no session holds names only the irregular ones.
        irregular = set(ix.places("sessions", index.HAS, index.IRREGULAR))
        assert set(ix.places("sessions", index.KEY, "0" * KEY_LEN)) <= irregular
        assert len(irregular) < len(sessions) / 2
        assert ix.places("files", index.SESSION, "s-none") == []
    assert texts == index.encode(STAMP, HEAD, sessions, files)  # indexed from texts or records


def test_an_index_that_does_not_name_the_snapshot_or_is_cut_short_is_not_read(
        tmp_path: Path) -> None:
    sessions = {"a": {"k": "0123456789abcdef"}}
    text = index.encode(STAMP, HEAD, sessions, {})
    assert text is not None
    path = tmp_path / "ledger.index"
    path.write_bytes(text)
    assert index.open_for(str(path), STAMP, HEAD) is not None
    assert index.open_for(str(path), (1, 2, 3, 4, 6), HEAD) is None
    assert index.open_for(str(path), STAMP, HEAD + 1) is None
    wrong = text.replace(f'"index": {index.VERSION}'.encode(), b'"index": 99')
    other = {"little": b'"order": "big"', "big": b'"order": "little"'}[sys.byteorder]
    swapped = text.replace(f'"order": "{sys.byteorder}"'.encode(), other)
    assert swapped != text
    path.write_bytes(swapped)
    assert index.open_for(str(path), STAMP, HEAD) is None  # numbers in another byte order
    for broken in (text[:-1], text + b"\n", b"", b"not json\n", wrong):
        path.write_bytes(broken)
        assert index.open_for(str(path), STAMP, HEAD) is None, broken
    assert index.open_for(str(tmp_path / "none.index"), STAMP, HEAD) is None


def test_the_suites_check_takes_an_index_that_names_a_record_too_many_and_no_fewer(
        tmp_path: Path, monkeypatch: Any) -> None:
    """The per-commit check (TOKENBUDGET_STORE_CHECK) compares the index with the one the
    records give: one built from texts (a nested "k" string of hex found too) passes, one
    missing a record's term does not."""
    import os

    import pytest

    from tokenbudget import store as store_mod
    from tokenbudget.fileio import stamp

    monkeypatch.setattr(index, "FROM_BYTES", 0)
    monkeypatch.setenv(store_mod.CHECK_ENV, str(tmp_path / "check.log"))
    st = store_mod.JsonFileStore(tmp_path / "ledger.json")
    def record(**fields: Any) -> dict[str, Any]:
        return {"p": "/w", "f": 1.0, "l": 2.0, "m": {}, "x": {}, "s": {}, "t": {}, "a": {},
                "adj": [], "fk": [], "cs": {}, **fields}

    with st.transaction() as data:
        data["sessions"]["a"] = record(k="0123456789abcdef", hd={"k": "fedcba9876543210"})
        data["sessions"]["b"] = record(kh="00000000000000aa")
    read, pos = st.read(lazy=True)
    assert type(read["sessions"]) is lazy.Table
    with st.transaction((pos, read), checkpoint=True) as data:  # from the texts
        data["sessions"]["c"] = record()
    path = Path(index.file_of(st.file))
    snap = json.loads(st.path.read_bytes())
    text = path.read_bytes()
    exact = index.encode(stamp(os.stat(st.file)), snap["updated"], snap["sessions"],
                         snap["files"])
    assert exact is not None and len(text) > len(exact)  # the nested key: one too many
    st._check_index()
    head, rest = text.split(b"\n", 1)
    parts = json.loads(head)["parts"]
    cut = json.loads(head) | {"parts": [parts[0], parts[1] - 8, *parts[2:]]}
    at = parts[0] + parts[1]  # one key number fewer: the last
    path.write_bytes(json.dumps(cut).encode() + b"\n" + rest[: at - 8] + rest[at:])
    assert index.open_for(str(path), stamp(os.stat(st.file)), snap["updated"]) is not None
    with pytest.raises(AssertionError):
        st._check_index()


def _large(n: int = 300) -> dict[str, Any]:
    sessions = {f"s-{i:04}": {"p": f"/home/dev/{'x' * 30}/{i}", "k": f"{i:016x}"}
                for i in range(n)}
    files = {f"/p/{i}.jsonl": [f"1:{i}", "h", i, f"s-{i:04}", None] for i in range(n)}
    return {"updated": HEAD, "sessions": sessions, "files": files, "hours": {"1": [1]}}


def test_a_snapshot_is_cut_where_its_index_says_into_the_same_records(tmp_path: Path) -> None:
    """The rows the index keeps (lazy.row_spans) cut the snapshot into the very entries the
    search for them gives, in order; rows that do not fit the file are not used."""
    for data in (_large(), _large() | {"sessions": {}}, _large(1)):
        raw = lazy.encode(data)
        rows = lazy.row_spans(raw)
        assert rows is not None
        text = index.encode(STAMP, HEAD, data["sessions"], data["files"], rows)
        assert text is not None
        path = tmp_path / "ledger.index"
        path.write_bytes(text)
        ix = index.open_for(str(path), STAMP)
        assert ix is not None and ix.head == HEAD
        want, got = lazy.decode(raw), lazy.decode(raw, ix.rows())
        assert want is not None and got is not None
        for name in lazy.TABLES:
            assert list(dict.items(got[name])) == list(dict.items(want[name]))
        assert json.dumps(got) == json.dumps(data)
        # The same rows against a file one byte longer before them: not used, read right.
        shifted = raw.replace(b'{"updated":', b'{ "updated":', 1)
        assert shifted != raw
        moved = lazy.decode(shifted, ix.rows())
        assert moved is not None and json.dumps(moved) == json.dumps(data)


def test_rows_are_kept_only_when_every_key_is_written_as_is() -> None:
    data = _large()
    data["sessions"]['q"\u00e9'] = {"p": ""}
    assert lazy.row_spans(lazy.encode(data)) is None  # read on its own: no rows kept
    assert lazy.row_spans(lazy.encode(_large())) is not None
    assert lazy.row_spans(json.dumps(_large()).encode()) is None  # not in the layout


def _checkpointed(folder: Path, n: int) -> Any:
    """A store in `folder` with _large(n)'s sessions, checkpointed."""
    from tokenbudget import store as store_mod

    st = store_mod.JsonFileStore(folder / "ledger.json")
    with st.transaction() as data:
        for sid, rec in _large(n)["sessions"].items():
            data["sessions"][sid] = {"f": 1.0, "l": 2.0, "m": {}, "x": {}, "s": {}, "t": {},
                                     "a": {}, "adj": [], "fk": [], "cs": {}, **rec}
    st.checkpoint()
    return st


def test_a_read_takes_the_rows_of_its_own_snapshot_only(
        tmp_path: Path, monkeypatch: Any) -> None:
    """A hook's read cuts a large snapshot where its index says (no search for the rows); an
    index with this file's stamp but another commit time is not used, its rows neither."""
    import pytest

    monkeypatch.setattr(index, "FROM_BYTES", 0)
    st = _checkpointed(tmp_path, 50)
    whole = json.dumps(st.read()[0])
    searched = lazy._table
    with monkeypatch.context() as m:
        m.setattr(lazy, "_table", lambda *a: pytest.fail("searched for the rows"))
        read, _ = st.read(lazy=True)
        assert json.dumps(read) == whole and read["sessions"].index is not None
    path = Path(index.file_of(st.file))
    head, rest = path.read_bytes().split(b"\n", 1)
    other = json.loads(head)
    other["at"][1] += 1.0
    path.write_bytes(json.dumps(other).encode() + b"\n" + rest)
    called = []
    with monkeypatch.context() as m:
        m.setattr(lazy, "_table", lambda *a: called.append(a[0]) or searched(*a))
        read, _ = st.read(lazy=True)
    assert json.dumps(read) == whole and read["sessions"].index is None
    assert sorted(called) == ["files", "sessions"]


def test_the_suites_check_refuses_rows_that_do_not_cut_their_snapshot_into_its_records(
        tmp_path: Path, monkeypatch: Any) -> None:
    """The suite's check reads the ledger whole (never through the rows): it compares the
    records the index's rows cut the snapshot into with those a search finds."""
    import os

    import pytest

    from tokenbudget import store as store_mod
    from tokenbudget.fileio import stamp

    monkeypatch.setattr(index, "FROM_BYTES", 0)
    monkeypatch.setenv(store_mod.CHECK_ENV, str(tmp_path / "check.log"))
    st = _checkpointed(tmp_path, 5)
    st._check_index()
    raw = st.path.read_bytes()
    snap = json.loads(raw)
    rows = lazy.row_spans(raw)
    assert rows is not None
    start, end, starts, ends = rows["sessions"]
    # The first two rows' texts swapped: each table still opens and closes where it says.
    rows["sessions"] = (start, end, [starts[1], starts[0], *starts[2:]],
                        [ends[1], ends[0], *ends[2:]])
    text = index.encode(stamp(os.stat(st.file)), snap["updated"], snap["sessions"],
                        snap["files"], rows)
    assert text is not None
    Path(index.file_of(st.file)).write_bytes(text)
    with pytest.raises(AssertionError, match="rows"):
        st._check_index()


def test_an_index_damaged_where_its_header_cannot_tell_is_searched_without(
        tmp_path: Path) -> None:
    """Bytes of an index changed in place, its size kept (a damaged disk): a search that meets
    them answers as without an index, and rows that do not parse are not used."""
    from tokenbudget.ingest import Ingestor

    data = _large(40)
    raw = lazy.encode(data)
    text = index.encode(STAMP, HEAD, data["sessions"], data["files"], lazy.row_spans(raw))
    assert text is not None
    head, rest = text.split(b"\n", 1)
    parts = json.loads(head)["parts"]
    lines = rest[: parts[0]]
    listed = rest[parts[0] + parts[1] : parts[0] + parts[1] + parts[2]]
    import re

    places = re.sub(rb"\t(\d+)\n", lambda m: b"\t" + b"x" * len(m[1]) + b"\n", lines)
    damaged = (head + b"\n" + places
               + rest[parts[0] : parts[0] + parts[1]] + b"{" * len(listed)
               + rest[parts[0] + parts[1] + parts[2] :])
    assert len(damaged) == len(text) and damaged != text
    path = tmp_path / "ledger.index"
    path.write_bytes(damaged)
    ix = index.open_for(str(path), STAMP, HEAD)
    assert ix is not None and ix.rows() is None
    whole = lazy.decode(raw, ix.rows())
    assert whole is not None and json.dumps(whole) == json.dumps(data)
    read = lazy.decode(raw)
    assert read is not None
    for name in lazy.TABLES:
        read[name].index = (ix, name, list(data[name]))
    got = [p for p, r in lazy.entries_with(read["files"], b'"s-0003"',
                                           (index.SESSION, "s-0003")) if r[3] == "s-0003"]
    assert got == ["/p/3.jsonl"] and read["files"].index is None  # the damage was met
    plain = Ingestor({"sessions": json.loads(json.dumps(data["sessions"]))})
    for key in ("0000000000000003", "00000000000000ff"):
        assert Ingestor(read)._compacted_search(key) == plain._compacted_search(key)
