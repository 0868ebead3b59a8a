"""Which snapshot records hold what a call with news looks for: an index beside the snapshot.

A hook call with news reads the snapshot a record at a time (lazy.py), but four of its
questions were about every record: which sessions hold a new request's key among their
compacted keys (ingest's compacted owner, once a request), which are forks (hold S_INHERITED),
which hold folded keys (S_FOLDED_KEYS), and which read positions are its own session's (the
copy taken before the news). As text searches of every record's text they cost most of such a
call at 2,000 live sessions. A checkpoint of a large snapshot writes their answers here, and
the call finds each by a binary search of this file, mapped, not read.

The file (`<ledger stem>.index`), each part found by the header:
- a header line, JSON, naming the snapshot it was written for (its file's stamp and its
  commit time, as the hot view names it), the byte order of its numbers and the sizes of the
  parts after it;
- lines `<table><kind>\t<value>\t<n>\n` in sorted order: the table's first letter, the term's
  kind, its value as a JSON string, and the record's place in the snapshot's table (0 first);
- the compacted keys, sorted 64-bit numbers: a key's 8 bytes as a number in the machine's
  byte order (as `array` reads them; the header names it, and another order is not read),
  its low PLACE_BITS bits replaced by the place of the session holding it. A session whose
  keys are not whole slots of 16 hex digits is listed as a term (IRREGULAR) instead;
- the rows (when every row's key is written as is): JSON, where each table's rows start and
  end and how many, then, 64-bit numbers, where each row's record text starts and ends, so
  that a call cuts the snapshot into records without searching it for them (lazy.decode).
It is written after the snapshot (temp file, fsync, rename), and trusted only while its
header names the snapshot read: any other writer's snapshot (an older version's, a file edited
by hand) leaves it naming another, and the searches go back to the texts. It answers for the
records as the snapshot holds them, and may name a record too many (a key's low bits are not
kept; a field's name found in a record's text at any depth): the caller looks at every record
decoded (changed since) as well, and checks each one named, which costs a decode, never a
wrong answer.
"""

from __future__ import annotations

import json
import os
import re
import sys

from tokenbudget.hot import beside
from tokenbudget.schema import (
    FILE_SESSION,
    KEY_LEN,
    S_COMPACTED_KEYS,
    S_FOLDED_KEYS,
    S_INHERITED,
    counted_keys,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

VERSION = 2  # 2: the rows part
# A snapshot this large or larger gets an index; a smaller one is searched (the tests set it
# lower, to run every search through an index).
FROM_BYTES = int(os.environ.get("TOKENBUDGET_INDEX_FROM", 256 * 1024))
PLACE_BITS = 20  # a table of more sessions than this holds gets no index
_PLACE = (1 << PLACE_BITS) - 1

# The terms, each a kind and a value.
KEY = "k"  # sessions: one of its compacted keys (ingest._holds_slot), in the numbers part
HAS = "h"  # sessions: a field it holds (S_INHERITED, S_FOLDED_KEYS)
IRREGULAR = "~"  # sessions (kind HAS): compacted keys not in whole slots of 16 hex digits
SESSION = "s"  # files: the session a read position is for

_HAS = (S_INHERITED, S_FOLDED_KEYS)
# In a record's text, each of these fields' names at any depth, with what follows it when that
# is a string of hex digits (then quoted; else empty): the compacted keys are such strings.
_FIELDS = f'"({S_INHERITED}|{S_FOLDED_KEYS}|{S_COMPACTED_KEYS})":("[0-9a-f]*"|)'.encode()
_KEYED = (S_COMPACTED_KEYS.encode(), S_FOLDED_KEYS.encode())


def file_of(ledger_file: str) -> str:
    return beside(ledger_file, ".index")


def _slots(keys: str) -> bytes | None:
    """A session's compacted keys (all of them joined) as 8 bytes a slot; None when they are
    not whole slots of 16 hex digits."""
    if len(keys) % KEY_LEN:
        return None
    try:
        got = bytes.fromhex(keys)
    except ValueError:
        return None
    return got if 2 * len(got) == len(keys) else None  # fromhex skips white space


def _session_terms(entry: Any) -> tuple[list[str], bytes | None]:
    """(the fields of HAS a session holds, its compacted keys as `_slots` gives them) from its
    record or, not decoded yet, from its text where that is plain (read whole if not)."""
    if type(entry) is bytes:
        found = re.findall(_FIELDS, entry)  # compiled once, by a checkpoint: not on import
        if not found:
            return [], b""
        # At any depth: a field or a key found one time too many costs a decode at worst.
        names = {name.decode() for name, _ in found}
        strings = [text[1:-1] for name, text in found if name in _KEYED]
        if all(s and (len(s) - 2) % KEY_LEN == 0 for name, s in found if name in _KEYED):
            return [f for f in _HAS if f in names], _slots(b"".join(strings).decode())
        entry = json.loads(entry)  # keys not all plain whole slots: as the record says
    if type(entry) is not dict:
        return [], b""
    return [f for f in _HAS if f in entry], _slots(counted_keys(entry))


def _file_sessions(files: dict[str, Any]) -> Iterator[str | None]:
    """The session of each read position, in order (its texts not decoded yet read at once)."""
    texts = [e for e in dict.values(files) if type(e) is bytes]
    read = iter(json.loads(b"[" + b",".join(texts) + b"]") if texts else ())
    for entry in dict.values(files):
        value = next(read) if type(entry) is bytes else entry
        sid = value[FILE_SESSION] if type(value) is list and len(value) > FILE_SESSION else None
        yield sid if type(sid) is str else None


def _quoted(value: str) -> str:
    return f'"{value}"' if value.isascii() and value.isalnum() else json.dumps(value)


def _prefix(table: str, kind: str, value: str) -> bytes:
    return f"{table[0]}{kind}\t{_quoted(value)}\t".encode()


def encode(stamp: tuple[int, ...], head: Any, sessions: dict[str, Any],
           files: dict[str, Any], rows: dict[str, Any] | None = None) -> bytes | None:
    """The index of these tables (dicts of records, or of their texts not decoded yet, in the
    snapshot's order) for the snapshot of this stamp and commit time, with its `rows`
    (lazy.row_spans) if given; None when it cannot index them (more sessions than PLACE_BITS
    numbers)."""
    from array import array  # here: a checkpoint's

    if len(sessions) > _PLACE:
        return None
    lines: list[str] = []
    numbers: list[int] = []
    top = ~_PLACE
    for n, entry in enumerate(dict.values(sessions)):
        has, slots = _session_terms(entry)
        lines.extend(f"s{HAS}\t\"{f}\"\t{n}\n" for f in has)
        if slots is None:
            lines.append(f"s{HAS}\t\"{IRREGULAR}\"\t{n}\n")
        elif slots:
            numbers.extend([v & top | n for v in array("Q", slots)])
    for n, sid in enumerate(_file_sessions(files)):
        if sid is not None:
            lines.append(f"f{SESSION}\t{_quoted(sid)}\t{n}\n")
    lines.sort()
    numbers.sort()
    text = "".join(lines).encode()
    keys = array("Q", numbers).tobytes()
    listed, spans = b"", b""
    if rows is not None:
        listed = json.dumps({name: [start, end, len(starts)] for name, (start, end, starts, _)
                             in rows.items()}).encode()
        spans = b"".join(array("Q", [*starts, *ends]).tobytes()
                         for _, _, starts, ends in rows.values())
    head_line = json.dumps({"index": VERSION, "at": [list(stamp), head],
                            "parts": [len(text), len(keys), len(listed), len(spans)],
                            "order": sys.byteorder}) + "\n"
    return head_line.encode() + text + keys + listed + spans


class Index:
    """An index file mapped, named by its snapshot (see `open_for`)."""

    def __init__(self, buf: Any, head: Any, at: list[int]) -> None:
        self._buf = buf
        self.head = head  # the commit time of the snapshot it was written for
        self._at = at  # where each part begins, and the last ends
        self._keys: Any = None

    def rows(self) -> dict[str, tuple[int, int, Any, Any]] | None:
        """The snapshot's rows (lazy.row_spans): table name -> (where its rows start and end,
        where each record's text starts, where it ends); None when not written."""
        if self._at[3] == self._at[2]:
            return None
        spans = memoryview(self._buf)[self._at[3] : self._at[4]].cast("Q")
        out = {}
        at = 0
        try:
            for name, (start, end, n) in json.loads(self._buf[self._at[2] : self._at[3]]).items():
                out[name] = (start, end, spans[at : at + n], spans[at + n : at + 2 * n])
                at += 2 * n
        except (ValueError, TypeError, AttributeError):
            return None  # damaged where its header could not tell: searched without it
        return out if at == len(spans) else None

    def places(self, table: str, kind: str, value: str) -> list[int]:
        """The places in the snapshot's `table` of the records found by this term."""
        if kind == KEY:
            return self._key_places(value)
        buf, prefix = self._buf, _prefix(table, kind, value)
        lo, hi = self._at[0], self._at[1]  # the sorted lines
        while lo < hi:  # the first line not below prefix; lo is always a line's start
            mid = (lo + hi) // 2
            s = buf.rfind(b"\n", lo, mid) + 1 or lo
            e = buf.find(b"\n", s) + 1
            if buf[s : e - 1] < prefix:
                lo = e
            else:
                hi = s
        found = []
        n = len(prefix)
        while lo < self._at[1] and buf[lo : lo + n] == prefix:
            e = buf.find(b"\n", lo)
            found.append(int(buf[lo + n : e]))
            lo = e + 1
        return found

    def _key_places(self, key: str) -> list[int]:
        """The places of the sessions that may hold `key` among their compacted keys: those
        whose key starts as it does, and every one whose keys are irregular."""
        found = self.places("sessions", HAS, IRREGULAR)
        slot = _slots(key)
        if slot is None or len(slot) != KEY_LEN // 2:
            return found  # not a whole slot: only an irregular session may hold it
        import bisect

        if self._keys is None:
            self._keys = memoryview(self._buf)[self._at[1] : self._at[2]].cast("Q")
        keys, top = self._keys, memoryview(slot).cast("Q")[0] & ~_PLACE
        at = bisect.bisect_left(keys, top)
        while at < len(keys) and keys[at] & ~_PLACE == top:
            found.append(keys[at] & _PLACE)
            at += 1
        return found


def entries(payload: bytes) -> tuple[set[bytes], set[int]]:
    """An index's lines and key numbers, as sets (to compare two: the tests' check)."""
    from array import array

    end = payload.find(b"\n")
    if end < 0:
        return set(), set()
    text, numbers = json.loads(payload[:end])["parts"][:2]
    lines = payload[end + 1 : end + 1 + text]
    return set(lines.splitlines()), set(array("Q", payload[end + 1 + text :][:numbers]))


def open_for(path: str, stamp: tuple[int, ...], head: Any = None) -> Index | None:
    """The index at `path` if it names the snapshot of this stamp and commit time (None: any;
    the caller compares `Index.head` once it has read it), else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            return None
        import mmap  # here: only a call with news on a large ledger reads an index

        buf = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    end = buf.find(b"\n")
    try:
        got = json.loads(buf[:end]) if end > 0 else None
    except ValueError:
        got = None
    parts = got.get("parts") if type(got) is dict else None
    at = got.get("at") if type(got) is dict else None
    if not (type(got) is dict and got.get("index") == VERSION and type(at) is list
            and len(at) == 2 and at[0] == list(stamp) and (head is None or at[1] == head)
            and got.get("order") == sys.byteorder and type(parts) is list and len(parts) == 4
            and all(type(p) is int and p >= 0 for p in parts)
            and end + 1 + sum(parts) == size and parts[1] % 8 == 0 and parts[3] % 8 == 0):
        buf.close()
        return None
    starts = [end + 1]
    for p in parts:
        starts.append(starts[-1] + p)
    return Index(buf, at[1], starts)


def remove(path: str) -> None:
    import contextlib  # here: a checkpoint's

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
