"""The ledger's layout: one versioned JSON document, its empty form and its shape checks.

Where it is kept, and how it changes under the lock, is tokenbudget/store.py's concern.
"""

from __future__ import annotations

import os
import re

from tokenbudget import clock
from tokenbudget.errors import CorruptLedger as CorruptLedger
from tokenbudget.schema import S_ALIASES, migrate
from tokenbudget.schema import SCHEMA as SCHEMA

# How every ledger we write begins (key order is new_ledger's): its commit time, "updated".
HEAD_UPDATED = re.compile(
    rb'^\{"schema":\d+,"app":"tokenbudget","created":[-0-9.eE+]+,"updated":([-0-9.eE+]+)[,}]'
)

TYPE_CHECKING = False  # typing stays off a hook call's imports
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Ledger: TypeAlias = dict[str, Any]
else:
    Ledger = dict

BUCKET = 900  # seconds in one usage bucket of `hours` (15 minutes: every UTC offset divides it)


def new_ledger() -> Ledger:
    """An empty ledger of the current schema."""
    now = clock.now()
    return {
        "schema": SCHEMA,
        "app": "tokenbudget",
        "created": now,
        "updated": now,
        "files": {},  # path -> [identity, head digest, offset, session id, turn]
        "sessions": {},  # session id -> session record (see ingest)
        "keys": {},  # usage key -> [session id, model, 5 counts, hour, cost, turn]
        # bucket (ts // BUCKET; older days merged at local midnight) -> project ->
        # [tokens, cost, first ts, last ts]
        "hours": {},
        "projects": {},  # project -> [tokens, cost] all time, folded sessions included
        "models": {},  # model -> [tokens, cost] all time, folded sessions included
        "folded": {"sessions": 0, "tokens": 0, "cost": 0.0, "until": 0.0},
        "commands": {},  # command -> recent finished runs [[start, tokens, cost], ...]
        "rates": {},  # model -> implied $/input-token weight from Claude Code's own cost
        "warned": {},
        "skipped": {},
        "events": {},  # fingerprints of recent hook events, to answer a double registration once
        "allow": {},  # `tokenbudget allow`: one prompt passes whatever the budgets
        "notices": [],  # one-line messages for the user, shown once by the next command
        "rebuild": False,  # set when a corrupt ledger was replaced: a full sync is owed
        # transcript -> [session id, until]: sessions ended by /clear, whose last cost-state
        # Claude Code writes after their last hook; the next session's hooks read it (hook.py)
        "ended": {},
        # Team mode (tokenbudget/team): the team this machine pushes to ("" when none), and
        # usage not pushed yet, key -> [session id, model, 5 counts, bucket, cost, command,
        # project], committed with the usage it copies.
        "team": "",
        "outbox": {},
    }


def resolve_turn(session: dict[str, Any], prompt_id: str | None) -> str | None:
    """The turn `prompt_id` counts toward: a note's prompt id is an alias of the turn it came
    in. At most 8 steps, so that a cycle in a damaged ledger cannot hang a hook."""
    aliases = session[S_ALIASES]
    for _ in range(8):
        if prompt_id is None or prompt_id not in aliases:
            break
        prompt_id = aliases[prompt_id]
    return prompt_id


def file_identity(st: os.stat_result) -> str:
    """How a `files` record recognises the same file: device and inode."""
    return f"{st.st_dev}:{st.st_ino}"


def validate(data: Any, records: bool = True) -> Ledger:
    """The parsed file as a ledger of this schema, migrated if older (schema.migrate, which
    works on a copy); CorruptLedger if it cannot be used. Every table must be there: the
    migrations add what older schemas lacked, so a table missing now is damage. `records`:
    False for a file known to have been checked (the store's snapshot that the hot view
    names): the shape of every record inside is then not checked again."""
    ledger = migrate(data)
    for key, empty in new_ledger().items():
        if key not in ledger:
            raise CorruptLedger(f"the ledger has no {key!r}")
        if type(ledger[key]) is not type(empty):
            from tokenbudget.lazy import Table  # a table read a record at a time (store)

            if type(empty) is dict and type(ledger[key]) is Table:
                continue
            raise CorruptLedger(f"the ledger's {key!r} is a {type(ledger[key]).__name__}")
    if records:
        _check_records(ledger)
    return ledger


_NUM = (int, float)
_SESSION: dict[str, type | tuple[type, ...]] = {
    "p": str,
    "f": _NUM,
    "l": _NUM,
    "m": dict,
    "x": dict,
    "s": dict,
    "t": dict,
    "a": dict,
    "adj": list,
    "fk": list,
    "cs": dict,
}


def _per_model(value: Any) -> bool:
    return type(value) is dict and all(type(u) is list and len(u) == 5 for u in value.values())


def _check_fork(s: dict[str, Any]) -> None:
    """What ingest keeps to work a fork's inheritance out again (tokenbudget/ingest.py)."""
    if not all(_per_model(s.get(k, {})) for k in ("ib", "lc", "fc")):
        raise TypeError  # inherited, latest and first cost-state totals, per model
    if type(s.get("ie", {})) is not dict or not all(
        type(e) is list and len(e) >= 3 and type(e[2]) is dict and _per_model(e[2])
        for e in s.get("ie", {}).values()
    ):
        raise TypeError  # each candidate parent's totals at the fork point
    it = s.get("it", ["", 0])
    if type(it) is not list or len(it) != 2 or not isinstance(it[1], _NUM):
        raise TypeError  # the turn and time the inheritance is counted at
    if type(s.get("hd", {})) is not dict or not all(
        isinstance(v, str) for v in s.get("hd", {}).values()
    ):
        raise TypeError  # requests held for a requester not read yet


def _check_records(data: Ledger) -> None:
    """Every record inside has the shape the code expects, or CorruptLedger names the part.

    A ledger we wrote always passes; this catches hand edits and foreign writers, which would
    otherwise fail every hook and command later with a TypeError. Shapes only, kept cheap: it
    runs on every hook call.
    """
    part = "files"
    try:
        if not all(type(v) is list and len(v) == 5 for v in data["files"].values()):
            raise TypeError
        part = "request records"
        if not all(type(v) is list and len(v) == 10 for v in data["keys"].values()):
            raise TypeError
        part = "usage buckets"
        for h, cells in data["hours"].items():
            int(h)
            if type(cells) is not dict or not all(
                type(c) is list and len(c) == 4 for c in cells.values()
            ):
                raise TypeError
        part = "sessions"
        for s in data["sessions"].values():
            if type(s) is not dict:
                raise TypeError
            for key, kind in _SESSION.items():
                if not isinstance(s[key], kind) or isinstance(s[key], bool):
                    raise TypeError
            if not all(type(m) is list and len(m) == 8 for m in s["m"].values()):
                raise TypeError
            if not all(type(t) is list and len(t) == 4 for t in s["t"].values()):
                raise TypeError
            if not all(type(a) is list and len(a) == 9 for a in s["adj"]):
                raise TypeError
            pre = s.get("pre", [0, 0.0])  # what a resumed session used before its fold
            if type(pre) is not list or len(pre) != 2 or not all(
                isinstance(v, _NUM) and not isinstance(v, bool) for v in pre
            ):
                raise TypeError
            if "cp" in s and not all(
                type(u) is list and len(u) == 5 for u in s["cp"].values()
            ):
                raise TypeError  # a fork's copies' usage, per model
            if not all(isinstance(s.get(k, ""), str) for k in ("po", "ih")):
                raise TypeError  # the session a fork was made from
            if type(s.get("rq", {})) is not dict or not all(
                v in (0, 1) and type(v) is int for v in s.get("rq", {}).values()
            ):
                raise TypeError  # requests with no response line yet: in a total or not
            _check_fork(s)
            if "c" in s and (
                type(s["c"]) is not dict
                or not all(type(c) is list and len(c) == 6 for c in s["c"].values())
                or not isinstance(s.get("k", ""), str)
            ):
                raise TypeError
        part = "team outbox"
        if not all(type(v) is list and len(v) == 11 for v in data["outbox"].values()):
            raise TypeError
        part = "totals"
        for key in ("sessions", "tokens", "cost", "until"):
            if not isinstance(data["folded"][key], _NUM):
                raise TypeError
        for rollup in ("projects", "models"):
            if not all(type(v) is list and len(v) == 2 for v in data[rollup].values()):
                raise TypeError
        part = "command runs"
        if not all(type(v) is list for v in data["commands"].values()):
            raise TypeError
        part = "notes"
        if not all(isinstance(n, str) for n in data["notices"]):
            raise TypeError
        if not all(
            type(e) is list and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], _NUM)
            for e in data["ended"].values()
        ):
            raise TypeError
        for table in ("events", "warned", "rates", "skipped"):
            if not all(isinstance(v, _NUM) for v in data[table].values()):
                raise TypeError
    except (TypeError, KeyError, ValueError):
        raise CorruptLedger(f"the ledger's {part} have the wrong shape") from None
