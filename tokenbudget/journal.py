"""The ledger's write-ahead journal: one JSON line per commit, holding what that commit changed.

A line is `{"seq": N, "set": [[path, value], ...], "del": [path, ...]}`, where a path is the
list of keys from the top of the ledger down to the value replaced (or deleted). Replaying the
lines in order onto the snapshot they follow gives the ledger as last committed. The changes
are found by comparing the ledger after a transaction with a copy taken before it: nothing the
mutating code does can escape that (a test-suite check replays every commit to prove it).
Kept free of slow imports: a hook call with news runs it.
"""

from __future__ import annotations

import json
import marshal

from tokenbudget.lazy import Raw, Table, is_table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# How far down nested dicts a change is told apart: ledger -> sessions -> id -> turns -> turn.
# Deeper, a changed value is written whole.
DEPTH = 4
_MISSING = object()


def copy(value: Any) -> Any:
    """A deep copy of JSON-like data: marshal, measured 3x faster than pickle, 4x than json.
    A ledger whose tables are read a record at a time (lazy.Table) keeps them so."""
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:
        from tokenbudget import lazy

        return lazy.copy(value)


def changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """What turns `before` into `after`: (sets as [path, value], deletions as paths)."""
    sets: list[Any] = []
    dels: list[Any] = []
    _diff(before, after, [], sets, dels, DEPTH)
    return sets, dels


def _diff(
    old: dict[str, Any],
    new: dict[str, Any],
    path: list[str],
    sets: list[Any],
    dels: list[Any],
    depth: int,
) -> None:
    if not _same_order(old, new):
        sets.append([path, new])  # keys moved (one removed and put back): replace it whole
        return
    added = 0
    if type(old) is Table or type(new) is Table:
        pairs: Any = _pairs(old, new)
    else:
        pairs = ((key, value, old.get(key, _MISSING)) for key, value in new.items())
    for key, value, was in pairs:
        if was is _MISSING:
            added += 1
            sets.append([[*path, key], value])
        elif type(was) is not type(value) and not (is_table(was) and is_table(value)):
            sets.append([[*path, key], value])
        elif (type(was) is Table or type(value) is Table) and depth > 1:
            _diff(was, value, [*path, key], sets, dels, depth - 1)  # not decoded whole by ==
        elif was == value:
            # Equal dicts may differ in order (a key removed and put back): the tables' order
            # is read (the newest warning is the last), so theirs is kept; deeper, a record's
            # keys are only looked up.
            if depth == DEPTH and type(value) is dict and list(was) != list(value):
                sets.append([[*path, key], value])
        elif is_table(value) and depth > 1:
            _diff(was, value, [*path, key], sets, dels, depth - 1)
        else:
            sets.append([[*path, key], value])
    if len(old) > len(new) - added:
        dels.extend([*path, k] for k in old if k not in new)


def _pairs(old: dict[str, Any], new: dict[str, Any]) -> Any:
    """(key, new value, old value or _MISSING) of a table read a record at a time (lazy.Table)
    on either side, decoding only the records that may differ: a record's text shared by both
    (the copy taken before a change) or equal in both is the same value."""
    if old.keys() == new.keys():  # in the same order (_same_order): side by side, at C speed
        held = [(key, was, value) for key, was, value
                in zip(dict.keys(new), dict.values(old), dict.values(new), strict=True)
                if was is not value]
    else:
        get = dict.get
        held = [(key, get(old, key, _MISSING), get(new, key)) for key in dict.keys(new)]
    for key, was, value in held:
        if was is value or (type(was) is Raw and type(value) is Raw and was == value):
            continue
        if type(was) is Raw:
            was = old[key]
        if type(value) is Raw:
            value = new[key]
        yield key, value, was


def _same_order(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether replaying onto `old` gives `new`'s order: a replay keeps the kept keys' places
    and adds new ones at the end, as a dict changed in place does (a new dict may not)."""
    if len(old) == len(new) and old.keys() == new.keys():
        return list(old) == list(new)
    kept = [k for k in old if k in new]
    return list(new)[: len(kept)] == kept


def encode(seq: int, sets: list[Any], dels: list[Any]) -> bytes:
    """One journal line, newline included."""
    line = json.dumps({"seq": seq, "set": sets, "del": dels}, separators=(",", ":"),
                      allow_nan=False)
    return line.encode() + b"\n"


class Lines:
    """The usable lines of a stretch of journal, and where its complete part ends."""

    __slots__ = ("bad", "end", "entries", "last")

    def __init__(self) -> None:
        self.entries: list[tuple[int, list[Any], list[Any]]] = []
        self.last = 0  # the sequence of the last line applied (or the one it followed)
        self.end = 0  # bytes up to the end of the last complete line
        self.bad = 0  # complete lines that could not be used: skipped, and reported


def parse(raw: bytes, after: int) -> Lines:
    """The lines of `raw` newer than sequence `after`; a torn last line is left out.

    `last` stays `after`: the replay moves it on as it applies the lines.
    """
    out = Lines()
    out.last = after
    out.end = raw.rfind(b"\n") + 1
    if not out.end:
        return out
    chunks = raw[: out.end - 1].split(b"\n")
    try:
        # One parse for all: a journal we wrote is all JSON objects.
        objs = json.loads(b"[" + b",".join(chunks) + b"]")
    except (ValueError, RecursionError):
        objs = [_loads(c) for c in chunks]
    for obj in objs:
        entry = _entry(obj)
        if entry is None:
            out.bad += 1
        elif entry[0] > after:
            out.entries.append(entry)  # whether it applies, in order, the replay decides
        # else: already in the snapshot (a checkpoint ended before it emptied the journal)
    return out


def _loads(chunk: bytes) -> Any:
    try:
        return json.loads(chunk)
    except (ValueError, RecursionError):
        return None


def _entry(obj: Any) -> tuple[int, list[Any], list[Any]] | None:
    if type(obj) is not dict:
        return None
    seq, sets, dels = obj.get("seq"), obj.get("set"), obj.get("del")
    if type(seq) is not int or type(sets) is not list or type(dels) is not list:
        return None
    for s in sets:
        if type(s) is not list or len(s) != 2 or not _is_path(s[0]):
            return None
    if not all(_is_path(p) and p for p in dels):
        return None
    return seq, sets, dels


def _is_path(path: Any) -> bool:
    return type(path) is list and all(type(k) is str for k in path)


def applies(ledger: dict[str, Any], sets: list[Any], dels: list[Any]) -> bool:
    """Whether every change lands in a dict that is there (else the line is not ours)."""
    for path, value in sets:
        if not path and type(value) is not dict:
            return False
    for path in [*(s[0] for s in sets if s[0]), *dels]:
        node: Any = ledger
        for key in path[:-1]:
            node = node.get(key) if is_table(node) else None
        if not is_table(node):
            return False
    return True


def apply(ledger: dict[str, Any], sets: list[Any], dels: list[Any]) -> None:
    """Replay one line's changes onto `ledger` (checked with `applies` first)."""
    for path in dels:
        node = ledger
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    for path, value in sets:
        if not path:
            ledger.clear()
            ledger.update(value)
            continue
        node = ledger
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
