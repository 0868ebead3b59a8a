"""The ledger's record layouts, by name, and the migrations from one schema to the next.

The ledger (ledger.py) is JSON whose records are short lists and dicts with one-letter keys, to
keep the file that every hook reads small. This module is the one place that knows which
position or key holds what: every other module reads a record through the names here, never
`rec[9]` or `s["t"]`. The names are plain module-level ints, slices and strings, so reading
through them costs a hook call nothing, and this module imports only errors.py on load.

Usage lists hold 5 counts in `usage.Usage`'s order (input, output, cache writes 5-minute and
1-hour, cache reads). A "bucket" is a time in `ledger.BUCKET`s (15 minutes) since the epoch.
"""

from __future__ import annotations

from tokenbudget.errors import CorruptLedger, LedgerError

TYPE_CHECKING = False  # typing stays off a hook call's imports
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, TypeAlias

    Ledger: TypeAlias = dict[str, Any]
    Migration: TypeAlias = Callable[[Ledger], Ledger]

SCHEMA = 2  # the ledger's schema: what `new_ledger` writes and this version understands

USAGE_LEN = 5  # counts in a usage list

# --- files: transcript path -> [identity, head digest, offset, session id, turn] --------------
# Where reading each transcript stopped. Identity is the file's "device:inode"
# (ledger.file_identity), the head digest a hash of its first bytes (a rewritten file is read
# again from its start), the offset how many bytes are read, the turn the prompt id that the
# last line read belonged to (None: none yet), so that the next line goes on in the same turn.
FILE_IDENT = 0
FILE_HEAD = 1
FILE_OFFSET = 2
FILE_SESSION = 3
FILE_TURN = 4
FILE_POS = slice(0, 3)  # identity, head digest, offset: transcripts.FilePos
FILE_LEN = 5

# --- keys: usage key -> [session id, model, 5 counts, bucket, cost, turn] ------------------------
# One API request (key: message id and request id), while its response may still be rewritten
# larger: the session that made it, its model, its usage, the bucket it was made in, its cost
# (None: no price known) and the turn (prompt id, or ingest.NO_TURN) it counts for.
REQ_SESSION = 0
REQ_MODEL = 1
REQ_USAGE = slice(2, 7)
REQ_BUCKET = 7
REQ_COST = 8
REQ_TURN = 9
REQ_LEN = 10

# --- outbox: key -> [session id, model, 5 counts, bucket, cost, command, project] -----------------
# Team mode (tokenbudget/team): usage not pushed to the team database yet, a request's (key: its
# usage key) or an adjustment's ("adj-..."), committed with the usage it copies. The first
# fields are a request record's; the turn is given as its command, and the session's project.
OUT_SESSION = 0
OUT_MODEL = 1
OUT_USAGE = slice(2, 7)
OUT_BUCKET = 7
OUT_COST = 8
OUT_COMMAND = 9
OUT_PROJECT = 10
OUT_LEN = 11

# --- hours: bucket -> project -> [tokens, cost, first second, last second] ----------------------
# Usage per 15-minute bucket (older days merged into one keyed by their local midnight's
# bucket) and project, with the first and last whole second of activity in it.
HOUR_TOKENS = 0
HOUR_COST = 1
HOUR_FIRST = 2
HOUR_LAST = 3
HOUR_LEN = 4

# --- projects, models: name -> [tokens, cost] all time, folded sessions included ----------------
ROLLUP_TOKENS = 0
ROLLUP_COST = 1
ROLLUP_LEN = 2

# --- commands: command -> recent finished runs, each [start, tokens, cost] ----------------------
# The turns of folded sessions, per command ("prompt" or a "/command"), the latest last.
RUN_START = 0
RUN_TOKENS = 1
RUN_COST = 2

# --- ended: transcript -> [session id, until] ---------------------------------------------------
# A session ended by /clear, whose last cost-state Claude Code writes after its last hook: the
# next session's hooks read its transcript until `until`.
ENDED_SESSION = 0
ENDED_UNTIL = 1

# --- sessions: session id -> session record (a dict) --------------------------------------------
S_PROJECT = "p"  # the working directory ("" until known)
S_FIRST = "f"  # first activity, epoch seconds
S_LAST = "l"  # last activity: the session folds into history this long after it
S_MODELS = "m"  # model -> model record (M_*): what the session counts
S_SEEN = "s"  # model -> usage in every line seen and every extra: what cost-state is compared with
S_EXTRA = "x"  # model -> usage only Claude Code's cost-state knew of (compaction, side requests)
S_TURNS = "t"  # prompt id -> turn record (TURN_*)
S_ALIASES = "a"  # prompt id of a note (a background task ended) -> the turn it goes on
S_ADJUSTMENTS = "adj"  # adjustments (ADJ_*): usage and cost counted from cost-state
S_FORK_KEYS = "fk"  # keys of other sessions' requests copied into this one (a fork's)
S_CC_COSTS = "cs"  # model -> [5 counts, cost] (CELL_*): Claude Code's own cost and what it covers
S_COPIES = "cp"  # model -> usage in the copies; present: counted by the fork rule (ingest)
S_PERIOD = "e"  # this live period's identity in history (a resumed session gets a new one)
S_CELLS = "c"  # compacted requests: cell_key(bucket, model, command) -> [5 counts, cost]
S_COMPACTED_KEYS = "k"  # keys of the compacted requests, KEY_LEN characters each, joined
KEY_LEN = 16  # a usage key: 8 bytes of blake2b in hex
S_PRE = "pre"  # [tokens, cost] (PRE_*) a resumed session used before it was folded
S_FOLDED_KEYS = "kh"  # a resumed session's keys counted before it was folded (H_KEYS), joined
S_ORIGIN = "po"  # the session its copies name as their requester
S_PARENT = "ih"  # the parent its inheritance was worked out from
S_INHERITED = "ib"  # model -> usage inherited from the parent at the fork point
S_INHERITED_UNKNOWN = "iu"  # present: the parent's totals at the fork point cannot be known
S_INHERIT_AT = "it"  # [turn, time] (INHERIT_*) the inheritance is counted at
S_CANDIDATES = "ie"  # candidate parent -> its evaluation (EVAL_*)
S_HELD = "hd"  # key -> requester: requests counted here for a requester not read yet
S_FIRST_TOTALS = "fc"  # model -> usage in the session's first cost-state
S_LATEST_TOTALS = "lc"  # model -> usage in its latest cost-state (largest seen)
S_TOTALS_AT = "cst"  # time of the latest cost-state read
# The main transcript's requests (the ids of their `api-request` lines) with no response line
# read yet, the latest ingest.OPEN_REQUESTS, oldest first: id -> 1 once a cost-state was read
# after the request's line (its total holds what the response had streamed), else 0.
S_REQUESTS = "rq"

# The keys every session record has, with the types of their values; the others are optional.
SESSION_KEYS: dict[str, type | tuple[type, ...]] = {
    S_PROJECT: str,
    S_FIRST: (int, float),
    S_LAST: (int, float),
    S_MODELS: dict,
    S_EXTRA: dict,
    S_SEEN: dict,
    S_TURNS: dict,
    S_ALIASES: dict,
    S_ADJUSTMENTS: list,
    S_FORK_KEYS: list,
    S_CC_COSTS: dict,
}

# --- a session's model record: [5 counts, cost, requests, source] -------------------------------
M_USAGE = slice(0, 5)
M_COST = 5
M_REQUESTS = 6
M_SOURCE = 7  # where the cost comes from: one of SOURCE_*
M_LEN = 8
SOURCE_TABLE = "t"  # the price table
SOURCE_CLAUDE = "c"  # Claude Code's own cost-state
SOURCE_UNPRICED = "u"  # some usage had no price
SOURCE_MIXED = "m"  # folded periods whose sources differ

# --- a session's turn record: [command, start, tokens, cost] ------------------------------------
# The command is "prompt" or a "/command"; a turn held for a subagent read before its prompt
# has start 0 until the prompt is read.
TURN_COMMAND = 0
TURN_START = 1
TURN_TOKENS = 2
TURN_COST = 3
TURN_LEN = 4

# --- a session's adjustment: [bucket, model, 5 counts, cost, turn] ------------------------------
# Usage in no assistant line, or a correction of cost, counted from cost-state (counts and cost
# may be negative: a correction).
ADJ_BUCKET = 0
ADJ_MODEL = 1
ADJ_USAGE = slice(2, 7)
ADJ_COST = 7
ADJ_TURN = 8
ADJ_LEN = 9

# --- a usage cell: [5 counts, cost] -------------------------------------------------------------
# A session's compacted requests (S_CELLS), Claude Code's own cost (S_CC_COSTS), and a history
# record's usage per bucket, model and command.
CELL_USAGE = slice(0, 5)
CELL_COST = 5
CELL_LEN = 6

# --- a session's pre: [tokens, cost] ------------------------------------------------------------
PRE_TOKENS = 0
PRE_COST = 1

# --- a session's inherit-at: [turn, time] -------------------------------------------------------
INHERIT_TURN = 0
INHERIT_TIME = 1

# --- a candidate parent's evaluation: [kind, final, totals, parent size, fork size] ------------
# Kind: EVAL_*; final: 1 when the answer needs no file (it cannot change); totals: model ->
# usage at the fork point; the sizes of both transcripts when it was worked out.
EVAL_KIND = 0
EVAL_FINAL = 1
EVAL_TOTALS = 2
EVAL_SIZES = slice(3, 5)
EVAL_KNOWN = "k"  # its totals at the fork point are known
EVAL_UNKNOWN = "u"  # its line there is torn or rejected
EVAL_NOT_PARENT = "n"  # it holds no line the fork copied

# --- a history record (one line of history.jsonl: a folded session's live period) --------------
# The session's S_PERIOD, S_PROJECT, S_FIRST, S_LAST, S_MODELS and S_SEEN under the same keys,
# and these:
H_SESSION = "sid"
H_HOURS = "hours"  # bucket -> history_key(model, command) -> [5 counts, cost] (CELL_*)
H_TURNS = "turns"  # its turn records (TURN_*)
H_FILES = "files"  # its transcripts' files entries (FILE_*)
H_KEYS = "keys"  # the keys of the requests it counted in this period, KEY_LEN characters each
H_PERIODS = "periods"  # added when read: the periods merged into one record


def counted_keys(s: dict[str, Any]) -> str:
    """The keys of a session's requests counted but no longer held as records, joined: those
    it compacted, and those a resumed session counted before it was folded. Its slots are
    KEY_LEN characters each from the start on (the last one may be shorter)."""
    return str(s.get(S_COMPACTED_KEYS, "")) + str(s.get(S_FOLDED_KEYS, ""))


def cell_key(bucket: int, model: str, command: str) -> str:
    """The key of a compacted cell (S_CELLS)."""
    return f"{bucket}\t{model}\t{command}"


def split_cell_key(key: str) -> tuple[int, str, str]:
    """(bucket, model, command) of a compacted cell's key."""
    bucket, model, command = key.split("\t", 2)
    return int(bucket), model, command


def history_key(model: str, command: str) -> str:
    """The key of a history record's usage cell within its bucket."""
    return f"{model}\t{command}"


def split_history_key(key: str) -> tuple[str, str]:
    """(model, command) of a history cell's key; command "" in records that lack it."""
    model, _, command = key.partition("\t")
    return model, command


# --- migrations ---------------------------------------------------------------------------------
# Step i brings a ledger from schema i + 1 to i + 2, named `m<NNN>_<what>` after the schema it
# makes (m002_...). A step takes the whole parsed ledger and returns it changed; `migrate` sets
# the new schema number. A step never fails on a record of the wrong shape: it leaves it for
# ledger.validate to refuse as corrupt (the store keeps such a file aside and rebuilds), so
# that MigrationError means only that this code could not do its part.


def _m002_tables(now: float) -> Ledger:
    """The top-level tables of an empty schema-2 ledger, in the order every ledger is written
    (the store finds "updated" at the head of the file by it). Frozen here: a later schema
    that adds a table adds it in its own step."""
    return {
        "schema": 2,
        "app": "tokenbudget",
        "created": now,
        "updated": now,
        "files": {},
        "sessions": {},
        "keys": {},
        "hours": {},
        "projects": {},
        "models": {},
        "folded": {"sessions": 0, "tokens": 0, "cost": 0.0, "until": 0.0},
        "commands": {},
        "rates": {},
        "warned": {},
        "skipped": {},
        "events": {},
        "allow": {},
        "notices": [],
        "rebuild": False,
        "ended": {},
        "team": "",
        "outbox": {},
    }


def m002_every_table(data: Ledger) -> Ledger:
    """Every top-level table a schema-2 ledger has, in its order; those missing empty.

    Schema-1 writers added tables over time without a new schema, and every schema-1 reader
    filled the missing ones in, empty, on each read: 0.1.0 wrote no "team" or "outbox" (team
    mode), earlier versions no "models", "events", "allow" or "ended". A journal line that a
    schema-1 writer appended was computed against the ledger as it read it, these tables
    filled in, and none of them ever removed one: such lines replay onto the migrated ledger
    as they did onto that one. Keys this list does not know stay, after it.
    """
    from tokenbudget import clock  # a migration is a cold path

    out = _m002_tables(clock.now())
    for key in out:
        if key in data:
            out[key] = data[key]
    out.update((k, v) for k, v in data.items() if k not in out)
    return out


MIGRATIONS: list[Migration] = [m002_every_table]


class MigrationError(LedgerError):
    """A migration step failed: the ledger on disk stays as it was."""


def _refuse(reason: str) -> Exception:
    return CorruptLedger(reason)


def migrate(data: Any, migrations: Sequence[Migration] | None = None) -> Ledger:
    """The parsed ledger `data` brought to the current schema by the steps it lacks, in order.

    `data` itself is never changed: the steps work on a copy, so a step that fails
    (MigrationError, naming it) leaves nothing half done for a caller to write back. A ledger
    of a newer or unknown schema is refused as corrupt (the store keeps it aside), in
    ledger.validate's words.
    """
    steps = MIGRATIONS if migrations is None else migrations
    current = 1 + len(steps)
    if not isinstance(data, dict):
        raise _refuse("the ledger is not a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise _refuse("the ledger has no schema version")
    if schema > current:
        raise _refuse(
            f"the ledger has schema {schema}, newer than this tokenbudget understands ({current})"
        )
    if schema < 1:
        raise _refuse(f"the ledger has an unknown schema {schema}")
    if schema == current:
        return data
    import json

    out: Ledger = json.loads(json.dumps(data))  # a deep copy: the ledger is JSON
    for n, step in enumerate(steps[schema - 1 :], start=schema):
        name = getattr(step, "__name__", repr(step))
        try:
            out = step(out)
        except Exception as e:
            raise MigrationError(
                f"the ledger could not be upgraded from schema {n} to {n + 1} ({name}): {e}"
            ) from e
        out["schema"] = n + 1
    return out
