"""The snapshot's layout of one record a line, and its tables decoded a record at a time.

A checkpoint writes `sessions` and `files` one record a line (`encode`); the file stays the
same JSON, which every other reader parses whole as before. A hook call with news reads most
of the ledger's bytes for nothing: it touches its own session and a few others, and parsing
the whole file was most of its time at 2,000 live sessions. `decode` splits such a file into
lines and keeps each record's text (`Raw`) in a `Table`, a dict that decodes a record when it
is first read. Anything not in the layout gives None, and the caller parses the whole file.

A `Table` behaves as the dict it stands for: reading an entry decodes it; whatever walks the
table (values, items, ==, copy, json.dumps, dict(table)) decodes every entry first. Only the
code that knows it (store, journal, ingest) reads the text of an entry it need not decode:
`raw` and `share`. marshal refuses a dict subclass: a whole ledger holding Tables is copied by
`copy`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import marshal
import operator
import re
from json.decoder import scanstring  # type: ignore[attr-defined]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TABLES = ("sessions", "files")  # the tables written one record a line
_OPENS = {"sessions": '"sessions":{', "files": '"files":{'}
_MISSING = object()


def load(text: bytes) -> Any:
    """One record decoded (every Table decodes through here)."""
    return json.loads(text)


# One record's JSON text as read, not decoded yet: bytes are immutable, so tables may share
# them, and a record is a dict or a list, never bytes: an entry of this type is one not decoded.
Raw = bytes


class Table(dict):  # type: ignore[type-arg]
    """A ledger table whose entries are decoded when first read (see the module's note)."""

    __slots__ = ("_texts", "index")
    _texts: tuple[bytes, list[int], list[Any]]
    # (the index beside the snapshot these texts were read from, this table's name, its keys
    # in the snapshot's order), or None: which texts hold a term (index.py), for the searches.
    index: tuple[Any, str, list[Any]] | None

    def __init__(self, *args: Any) -> None:
        dict.__init__(self, *args)
        self.index = None

    def indexed(self, kind: str, value: str) -> set[Any] | None:
        """The keys of the entries whose text holds this term (a kind of index.py's: KEY, HAS,
        SESSION, and its value), by the index; None without one."""
        if self.index is None:
            return None
        ix, name, order = self.index
        try:
            return {order[n] for n in ix.places(name, kind, value)}
        except (ValueError, TypeError, IndexError):
            self.index = None  # damaged where its header could not tell: searched without it
            return None

    def texts(self) -> tuple[bytes, list[int], list[Any]]:
        """The texts not decoded when first asked, joined (by a NUL, which JSON text never
        holds), with where each starts and its key: searched at C speed. A text never changes
        (an entry decoded is searched as a value), so this is kept."""
        try:
            return self._texts
        except AttributeError:
            pass
        starts: list[int] = []
        keys: list[Any] = []
        texts: list[bytes] = []
        at = 0
        for key, value in dict.items(self):
            if type(value) is Raw:
                starts.append(at)
                keys.append(key)
                texts.append(value)
                at += len(value) + 1
        self._texts = (b"\0".join(texts), starts, keys)
        return self._texts

    __hash__ = None

    def _decoded(self, key: Any, value: Any) -> Any:
        if type(value) is Raw:
            value = load(value)
            dict.__setitem__(self, key, value)
        return value

    def decode_all(self) -> None:
        """Decode every entry still held as text."""
        for key, value in dict.items(self):
            if type(value) is Raw:
                dict.__setitem__(self, key, load(value))

    def raw(self, key: Any, default: Any = None) -> Any:
        """The entry as held: its `Raw` text if not decoded yet, else the value."""
        return dict.get(self, key, default)

    def raw_items(self) -> Any:
        """(key, entry as held) for every entry, in order."""
        return dict.items(self)

    def share(self) -> Table:
        """A table with the same entries, sharing the texts not decoded yet (each table
        decodes its own value) and the values decoded (as a shallow copy would)."""
        t = Table(dict.items(self))
        t.index = self.index
        return t

    def __getitem__(self, key: Any) -> Any:
        return self._decoded(key, dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        return self._decoded(key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            dict.__setitem__(self, key, default)
            return default
        return self._decoded(key, value)

    def pop(self, key: Any, *default: Any) -> Any:
        value = dict.pop(self, key, *default)
        return load(value) if type(value) is Raw else value

    def popitem(self) -> tuple[Any, Any]:
        key, value = dict.popitem(self)
        return key, load(value) if type(value) is Raw else value

    def __iter__(self) -> Any:
        # Defined so that dict(table), {**table} and dict.update(table) read the entries
        # through __getitem__ (a dict subclass keeping dict's own iterator is copied raw).
        return iter(dict.keys(self))

    def values(self) -> Any:
        self.decode_all()
        return dict.values(self)

    def items(self) -> Any:
        self.decode_all()
        return dict.items(self)

    def copy(self) -> dict[Any, Any]:
        self.decode_all()
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self.decode_all()
        if type(other) is Table:
            other.decode_all()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        same = self.__eq__(other)
        return same if same is NotImplemented else not same

    def __or__(self, other: Any) -> Any:
        return self.copy() | other

    def __repr__(self) -> str:
        self.decode_all()
        return dict.__repr__(self)

    def __reduce__(self) -> Any:
        return (dict, (self.copy(),))


def is_table(value: Any) -> bool:
    return type(value) is dict or type(value) is Table


def plain(ledger: dict[str, Any]) -> dict[str, Any]:
    """`ledger` with every Table made a plain dict (decoded), in place; returned."""
    for key, value in ledger.items():
        if type(value) is Table:
            ledger[key] = value.copy()
    return ledger


def copy(value: Any) -> Any:
    """A deep copy of a ledger (or any JSON-like value), its Tables sharing the texts they
    hold: what journal.copy gives, without decoding them."""
    if type(value) is dict and any(type(v) is Table for v in value.values()):
        out = {}
        for key, v in value.items():
            if type(v) is Table:
                t = Table(dict.items(v))
                t.index = v.index
                decoded = {k: e for k, e in dict.items(v) if type(e) is not Raw}
                if decoded:
                    for k, e in marshal.loads(marshal.dumps(decoded)).items():
                        dict.__setitem__(t, k, e)
                out[key] = t
            else:
                out[key] = marshal.loads(marshal.dumps(v))
        return out
    return marshal.loads(marshal.dumps(value))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def encode(data: dict[str, Any]) -> bytes:
    """`data` as the snapshot's JSON, TABLES one record a line (their texts not decoded are
    written as read); json.loads gives what it gives for json.dumps(data)."""
    parts = []
    for key, value in data.items():
        if key in _OPENS and is_table(value):
            rows = [
                _dumps(k) + ":" + (e.decode() if type(e) is Raw else _dumps(e))
                for k, e in dict.items(value)
            ]
            parts.append(_OPENS[key] + "\n" + "".join(r + ",\n" for r in rows[:-1])
                         + (rows[-1] + "\n" if rows else "") + "}")
        else:
            parts.append(_dumps(key) + ":" + _dumps(value))
    return ("{" + ",".join(parts) + "}").encode()


# A row as encode writes it, its key written as is (no escape): the common case, matched at
# C speed; a comma ends it, but the table's last. Any other row is read on its own (_row), and
# so is every row of a small table (the expressions are compiled only for a large one).
_ROWS = {
    "sessions": rb'^"([^"\\\n]*)":(\{[^\n]*\})(?:,$|\Z)',
    "files": rb'^"([^"\\\n]*)":(\[[^\n]*\])(?:,$|\Z)',
}
_SMALL = 16 * 1024  # bytes of rows read line by line


def _regions(raw: bytes) -> list[tuple[int, str, int, int]] | None:
    """Where each of TABLES is in the snapshot `raw`, in the file's order: (where its name
    is, the name, where its rows start, where they end); None when not in the layout."""
    found = []
    for name, opens in _OPENS.items():
        at = raw.find(opens.encode() + b"\n")
        if at < 0:
            return None  # an older writer's, or one line: quick to tell
        found.append((at, name, at + len(opens) + 1))
    found.sort()
    out = []
    done = 0
    for at, name, start in found:
        if at < done:
            return None
        end = raw.find(b"\n}", start - 1)
        if end < 0:
            return None
        out.append((at, name, start, end))
        done = end + 2
    return out


def _placed(raw: bytes, rows: dict[str, Any]) -> list[tuple[int, str, int, int]] | None:
    """_regions as `rows` (row_spans of this very file) place them, each checked where its
    table opens and closes, instead of searched for (most of the cost of a large read)."""
    out = []
    done = 0
    for start, name in sorted((cut[0], name) for name, cut in rows.items()):
        if name not in _OPENS:
            return None
        opens = _OPENS[name].encode() + b"\n"
        end = rows[name][1]
        at = start - len(opens)
        if at < done or raw[at:start] != opens or raw[end : end + 2] != b"\n}":
            return None
        out.append((at, name, start, end))
        done = end + 2
    return out if len(out) == len(_OPENS) else None


def row_spans(raw: bytes) -> dict[str, tuple[int, int, list[int], list[int]]] | None:
    """Where each row of the snapshot `raw` is (for the index beside it): table name -> (where
    its rows start and end, where each record's text starts, where it ends: its key is
    between the row's start and the text's); None unless every row is as encode writes it
    with its key written as is (the common case)."""
    regions = _regions(raw)
    if regions is None:
        return None
    out = {}
    for _, name, start, end in regions:
        keys: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        at = start
        for m in re.compile(_ROWS[name], re.M).finditer(raw, start, end):
            key = m.group(1)
            if m.start() != at or not key.isascii():
                return None  # a row not matched (read on its own: _row), or a key not ASCII
            keys.append(key.decode())
            starts.append(m.start(2))
            ends.append(m.end(2))
            at = m.end() + 1  # past the line's end
        # Every byte in a row matched (an empty table: its rows end before they start), and
        # no key twice (json.loads keeps the last).
        if (at != end + 1 if keys else end >= start) or len(set(keys)) != len(keys):
            return None
        out[name] = (start, end, starts, ends)
    return out


def decode(raw: bytes, rows: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The snapshot `raw` with its TABLES as Tables of records not decoded yet; None when it is
    not in the layout `encode` writes (then it is parsed whole). `rows`: where its rows are
    (row_spans, as the index beside it says), to cut them there instead of searching."""
    regions = _placed(raw, rows) if rows is not None else None
    if regions is None:
        regions, rows = _regions(raw), None
    if regions is None:
        return None
    skeleton: list[bytes] = []
    tables: dict[str, Table] = {}
    done = 0
    for _, name, start, end in regions:
        skeleton.append(raw[done:start - 1])  # up to the table's opening brace, included
        skeleton.append(b"}")
        # Rows placed (_placed): each table's are where they say.
        table = _cut(raw, start, *rows[name][2:]) if rows is not None \
            else _table(name, raw[start:end])
        if table is None:
            return None
        tables[name] = table
        done = end + 2
    skeleton.append(raw[done:])
    try:
        data = json.loads(b"".join(skeleton))
    except (ValueError, RecursionError):
        return None
    if type(data) is not dict:
        return None
    for name, t in tables.items():
        if data.get(name) != {}:
            return None
        data[name] = t
    return data


def _cut(raw: bytes, start: int, starts: Any, ends: Any) -> Table:
    """The Table of rows whose record texts are at `starts`/`ends` in `raw` (row_spans), the
    first row at `start`, each next one past the comma and line end of the one before; a key
    is between its row's quote and its text's colon. Cut at C speed."""
    if not len(starts):
        return Table()
    rows = itertools.chain((start,), map(operator.add, ends[:-1], itertools.repeat(2)))
    keys = map(raw.__getitem__, map(slice, map(operator.add, rows, itertools.repeat(1)),
                                     map(operator.sub, starts, itertools.repeat(2))))
    return Table(zip(map(bytes.decode, keys), map(raw.__getitem__, map(slice, starts, ends)),
                     strict=True))


def _table(name: str, rows: bytes) -> Table | None:
    """The rows of a table (one a line, a comma ending each but the last) as a Table of
    texts; None when they are not."""
    if not rows:
        return Table()
    got = re.findall(_ROWS[name], rows, re.M) if len(rows) > _SMALL else []
    n = len(got)
    if got:
        keys, values = zip(*got, strict=True)
        # Each row matched is a whole line (anchored), with its quotes, colon, comma and
        # line end: if they add up to every byte, every line is a row so written.
        if sum(map(len, keys)) + sum(map(len, values)) + 5 * n - 2 == len(rows):
            try:
                table = Table(zip(map(bytes.decode, keys), values, strict=True))
            except UnicodeDecodeError:
                return None  # a key not UTF-8: not JSON at all (its read says so)
            return table if len(table) == n else None  # a key twice: json.loads keeps the last
    # A key JSON escapes (a quote, a backslash, a character beyond ASCII): line by line.
    lines = rows.split(b"\n")
    table = Table()
    for k, line in enumerate(lines):
        last = k == len(lines) - 1
        if line.endswith(b",") == last:
            return None
        row = _row(name, line if last else line[:-1])
        if row is None:
            return None
        dict.__setitem__(table, row[0], row[1])
    n = len(lines)
    return table if len(table) == n else None  # a key twice: json.loads keeps the last


def _row(name: str, line: bytes) -> tuple[str, Raw] | None:
    try:
        text = line.decode()
        key, end = scanstring(text, 1)
    except (UnicodeDecodeError, ValueError):
        return None
    value = line[len(text[:end].encode()):]
    expect, close = (b"{", b"}") if name == "sessions" else (b"[", b"]")
    if not text.startswith('"') or not value.startswith(b":" + expect) \
            or not value.endswith(close):
        return None
    return key, value[1:]


def written_as_is(text: str) -> bool:
    """Whether JSON writes `text` as is (no escape), so that its quoted bytes are found in a
    record's text (entries_with's needle)."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text


def candidates(table: Table, keys: set[Any]) -> Any:
    """(key, value) of every entry of `table` decoded, and of those not decoded yet whose key
    is in `keys` (decoded now), in order. Walked at C speed: a call asks this of thousands."""
    held = dict.items(table)
    wanted = map(operator.or_, map(keys.__contains__, dict.keys(table)),
                 map(operator.is_not, map(type, dict.values(table)), itertools.repeat(Raw)))
    for key, value in list(itertools.compress(held, wanted)):
        yield key, table[key] if type(value) is Raw else value


def entries_with(table: dict[str, Any], needle: bytes,
                 term: tuple[str, str] | None = None) -> Any:
    """(key, value) of every entry of `table` that may hold the text `needle` as written
    (a plain dict: all of them), in order; a Table decodes only those whose text holds it.
    `needle` must be written as is in JSON (no quote, backslash, NUL or non-ASCII character).
    `term`: the index's term (kind, value: index.py) that finds every entry holding `needle`
    as the caller means it; with an index beside the snapshot, only those are decoded."""
    if type(table) is not Table:
        yield from table.items()
        return
    hits = table.indexed(*term) if term is not None else None
    if hits is not None:
        yield from candidates(table, hits)
        return
    joined, starts, keys = table.texts()
    hits = set()
    at = joined.find(needle)
    while at >= 0:
        n = bisect.bisect_right(starts, at) - 1
        hits.add(keys[n])
        at = joined.find(needle, starts[n + 1]) if n + 1 < len(starts) else -1
    searched = set(keys)
    for key, value in list(dict.items(table)):
        if type(value) is Raw:
            if key in hits or (key not in searched and needle in value):
                yield key, table[key]
        else:
            yield key, value
