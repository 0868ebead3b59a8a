"""The ledger's hot view: what a hook call with nothing new reads instead of the whole ledger.

Derived and rebuildable, never authoritative. Every commit writes it under the ledger's lock,
after its journal line or snapshot (tokenbudget/store.py): one file per live session
(`ledger.hot/<id>.json`: its record and its transcripts' read positions), then the shared part
(`ledger.hot.json`: the usage buckets, rollups, warnings, allow, notes and the rest a decision
reads) with the stamps of the ledger's files as that commit left them.

The live sessions' runs of slash commands (a prompt's expected cost counts them) are not in
it: that list grows with the sessions live, and rewriting it with every commit of a session
running a command cost 25 ms under the lock at 5,000 live sessions (bench/RESULTS.md). The
shared part names the commands that have live runs instead, with how many sessions have them:
a prompt of one of those is decided on the whole ledger; any other prompt has no live run to
count, on the view as on the ledger.

A reader takes no lock. It accepts the view only while the snapshot and the journal still have
those stamps, before and after it read the files it needs: every commit changes them (a
journal line makes the journal longer; a checkpoint writes a new snapshot) before it writes any
of the view, so files read between two equal sets of stamps are all of the one commit they
name. A writer killed between its journal line and the shared part leaves stamps the files no
longer have: readers take the whole ledger, and the next commit, seeing the view behind what it
read, writes the whole view again. Anything missing, unreadable or odd answers None: the caller
reads the ledger itself. The view's
files are written in place, not renamed (cheaper, under the lock): a reader that took the
stamps after a commit changed them may meet a file of that commit half written, and no part of
one parses as a view (the shared part's last line is the ended sessions' files; a session's
file is one object), so it reads the ledger.

A session's file is current whenever the shared part is: the commits that changed the session
wrote it before their shared part, and any commit whose writer died before its shared part left
the view behind, to be written whole. Each file also holds the sequence of the commit that
wrote it, which is never past the shared part's. A session with no file (new, folded, or its
file deleted by hand) is decided on the ledger, never as a session with nothing counted.

No fsync: this is derived data. After the machine loses power, a view file lost or torn is
unreadable, and one kept whose journal line was lost (or the reverse) names a journal length
the journal does not have; either way readers go to the ledger until the next commit rewrites it.
Kept to json, math and os: a hook call with nothing new imports it, and decides with it
(`quiet`, with the calendar windows it keeps in `budget-windows.json`).
"""

from __future__ import annotations

import json
import math
import os

from tokenbudget.schema import (
    FILE_SESSION,
    HOUR_COST,
    HOUR_TOKENS,
    M_COST,
    M_USAGE,
    PRE_COST,
    PRE_TOKENS,
    ROLLUP_COST,
    ROLLUP_TOKENS,
    RUN_COST,
    RUN_START,
    RUN_TOKENS,
    S_ALIASES,
    S_MODELS,
    S_PRE,
    S_PROJECT,
    S_TURNS,
    SCHEMA,
    TURN_COMMAND,
    TURN_COST,
    TURN_START,
    TURN_TOKENS,
)

TYPE_CHECKING = False  # typing stays off a hook call's imports
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from datetime import tzinfo
    from typing import Any

    from tokenbudget.ledger import Ledger
    from tokenbudget.limits import Budget

VERSION = 2  # 2: the shared part's body one line a table and an hour bucket (_body)
# In the head of a view written by a version that knows the snapshot's layout of one record a
# line (store): every snapshot it names is exactly that layout, or not in it (names_snapshot).
LAID = "laid"
# The ledger's tables a decision (engine.judge) or the quick path's checks read, whole.
SHARED = ("schema", "hours", "projects", "commands", "warned", "allow", "notices", "rebuild",
          "ended", "team", "outbox")
# The calendar windows whose bounds a call with nothing new takes from the window cache.
CALENDAR = ("daily", "weekly", "monthly")
BUCKET = 900  # ledger.BUCKET (a test keeps them in step): ledger.py compiles a pattern at import
HOUR = 3600
BLOCK = 5 * HOUR  # budgets.BLOCK_LENGTH
OWN_COMMANDS = ("/tokenbudget", "/tokenbudget:tokenbudget")  # engine.OWN_COMMANDS
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def beside(ledger_file: str, suffix: str) -> str:
    """The file of the ledger's named by `suffix` (its journal, view, index), beside it."""
    return (ledger_file[:-5] if ledger_file.endswith(".json") else ledger_file) + suffix


def paths(ledger_file: str) -> tuple[str, str]:
    """(the shared file, the sessions' folder) beside `ledger_file`."""
    return beside(ledger_file, ".hot.json"), beside(ledger_file, ".hot")


def journal_path(ledger_file: str) -> str:
    """The journal beside `ledger_file` (store.JsonFileStore's), without importing the store."""
    return beside(ledger_file, ".journal.jsonl")


def session_file(folder: str, session_id: str) -> str:
    """The file of a session in the view's folder, a safe name for any id."""
    if 0 < len(session_id) <= 128 and session_id[0] not in ".-" and _SAFE.issuperset(session_id):
        name = session_id
    else:
        hexed = session_id.encode("utf-8", "surrogatepass").hex()
        if len(hexed) <= 200:
            name = "%" + hexed
        else:
            import hashlib

            name = "#" + hashlib.blake2b(session_id.encode("utf-8", "surrogatepass"),
                                         digest_size=20).hexdigest()
    return os.path.join(folder, name + ".json")


def commands(session: dict[str, Any] | None) -> set[str]:
    """The slash commands a session has turns of: its runs that `Store.command_runs` counts."""
    if session is None:
        return set()
    return {t[TURN_COMMAND] for t in session[S_TURNS].values()
            if type(t[TURN_COMMAND]) is str and t[TURN_COMMAND].startswith("/")}


# --- reading ------------------------------------------------------------------------------------


def stamps(ledger_file: str, journal_file: str) -> list[Any] | None:
    """The snapshot's stamp and head and the journal's stamp, as a view records them; None if
    the snapshot cannot be read."""
    from tokenbudget.fileio import stamp as _stamp  # one stamp for the store and the view
    from tokenbudget.ledger import HEAD_UPDATED as _UPDATED

    try:
        with open(ledger_file, "rb") as f:
            st = os.fstat(f.fileno())
            found = _UPDATED.search(f.read(256))
    except OSError:
        return None
    if found is None:
        return None
    try:
        jst = os.stat(journal_file)
        jour: list[int] | None = [jst.st_dev, jst.st_ino, jst.st_size]
    except FileNotFoundError:
        jour = None
    except OSError:
        return None
    return [list(_stamp(st)), float(found.group(1)), jour]


def names_snapshot(ledger_file: str, snapshot: tuple[int, ...], head: Any,
                   laid: bool = False) -> bool:
    """Whether the view names this snapshot (its file's stamp and its commit time): then it
    is one this code wrote, or read and checked, before it wrote the view (a commit writes
    the view only after its snapshot, from the ledger it checked or built). `laid`: and the
    view was written by a version that knows the snapshot's layout of one record a line
    (LAID), so that the file is either exactly that layout or not in it at all (an older
    version names a file edited by hand as it is). Reads the shared part's first line only."""
    shared_file, _ = paths(ledger_file)
    try:
        with open(shared_file, "rb") as f:
            got = json.loads(f.readline(1 << 20))
    except (OSError, ValueError, RecursionError):
        return False
    at = got.get("at") if type(got) is dict and got.get("view") == VERSION else None
    return (type(at) is list and len(at) == 3 and at[0] == list(snapshot)
            and type(head) is float and at[1] == head and (not laid or got.get(LAID) is True))


def _load(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None


def read(ledger_file: str, journal_file: str, session_id: str | None,
         command: str | None = None) -> Ledger | None:
    """The part of the ledger as last committed that a decision on `session_id` reads, from
    the view; None when the view is not known to be that ledger's (read the ledger itself).

    `command`: the slash command of a prompt; None too when live sessions have runs of it.
    """
    shared_file, folder = paths(ledger_file)
    before = stamps(ledger_file, journal_file)
    if before is None:
        return None
    got = _load_shared(shared_file)
    if got is None:
        return None
    head, body = got
    if head.get("at") != before:
        return None
    try:
        if command is not None and command in head["slash"]:
            return None
        return _part(folder, head["seq"], body, session_id,
                     lambda: stamps(ledger_file, journal_file) == before)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None  # not a view we wrote


def _load_shared(path: str) -> tuple[dict[str, Any], Any] | None:
    """The shared part's head and body; None if it cannot be read or is not of this version."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        head, body = _split(raw)
        if body is None:
            return None
        return head, _body(head, body)
    except (OSError, ValueError, RecursionError, TypeError, KeyError):
        return None


def _split(raw: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The shared part's head, parsed, and its body's bytes (None: not a view of this version)."""
    end = raw.index(b"\n") + 1
    head = json.loads(raw[:end])
    if type(head) is not dict or head.get("view") != VERSION:
        return {}, None
    return head, raw[end:]


def _body(head: dict[str, Any], raw: bytes) -> dict[str, Any]:
    """The body of the shared part from its lines: the first `head["hours"]` are the hour
    buckets (`"bucket":value`), the others the tables (`"name":value`), each line ending in a
    newline; one parse, as one object (a commit rewrites only the lines it changed)."""
    lines = raw.split(b"\n")
    n = head["hours"]
    if type(n) is not int or not 0 <= n < len(lines) or lines[-1]:
        raise ValueError("not a view we wrote")
    tables = json.loads(b'{"hours":{' + b",".join(lines[:n]) + b"}," + b",".join(lines[n:-1])
                        + b"}")
    return {"ended_files": tables.pop("ended_files"), "ledger": tables}


def _part(folder: str, seq: int, body: Any, session_id: str | None, unchanged: Any
          ) -> Ledger | None:
    mine = None
    sessions: dict[str, Any] = {}
    if session_id is not None:
        mine = _load(session_file(folder, session_id))
        # No file: not a live session, or a view damaged by hand; the ledger tells which.
        # Another id's: two ids one file name holds (a file system blind to case).
        if mine is None or mine.get("id") != session_id or not mine["seq"] <= seq:
            return None
        sessions[session_id] = mine["session"]
    if not unchanged():
        return None  # a commit came meanwhile: the files read may be of two commits
    ledger: Ledger = body["ledger"]
    if ledger["schema"] != SCHEMA:
        return None  # written by another version, in its layout: the ledger is migrated
    ledger["sessions"] = sessions
    files = dict(body["ended_files"])
    if mine is not None:
        files.update(mine["files"])
    ledger["files"] = files
    return ledger


# --- a call with nothing new: the calendar windows and the decision -----------------------------


def windows_file(ledger_file: str) -> str:
    """The window cache beside `ledger_file`: the day's, week's and month's bounds."""
    return os.path.join(os.path.dirname(ledger_file), "budget-windows.json")


def zone_key(timezone: str | None, localtime: str) -> list[Any] | None:
    """What names the zone calendar budgets follow (config.Config.tz), read without zoneinfo:
    the configured name, else $TZ and the stamp of the zone file it names, else the system's
    zone file (where its link points, and the file's stamp, so that a tzdata update or a new
    zone is a new key); None: not one the windows may be kept for."""
    from tokenbudget.fileio import stamp
    from tokenbudget.paths import zone_file

    if timezone is not None:
        return ["name", timezone]
    env = os.environ.get("TZ")
    if env is not None:
        name = env.removeprefix(":")
        if not name:
            return ["TZ", env]  # UTC
        # A zone file, named by path or found where zoneinfo looks: its stamp is in the key,
        # as the system zone's. Anything else (a POSIX rule string, which the engine reads
        # as the C library's offset of the moment) is not cached.
        found = name if os.path.isabs(name) else zone_file(name)
        try:
            return ["TZ", env, list(stamp(os.stat(found)))] if found is not None else None
        except OSError:
            return None

    try:
        link = os.readlink(localtime)
    except OSError:
        link = None
    try:
        return ["system", link, list(stamp(os.stat(localtime)))]
    except OSError:
        return None


def windows(ledger_file: str, key: list[Any] | None, week_start: int, now: float
            ) -> dict[str, tuple[float, float]] | None:
    """The calendar windows holding `now` as the cache keeps them for that zone and week;
    None when it keeps none, for another zone or week, or `now` is past them."""
    data = _load(windows_file(ledger_file)) if key is not None else None
    if type(data) is not dict or data.get("key") != key or data.get("week_start") != week_start:
        return None
    out: dict[str, tuple[float, float]] = {}
    try:
        for kind in CALENDAR:
            start, end = (float(x) for x in data[kind])
            # The engine rounds `now` to the microsecond: near an end, it decides.
            if not start <= now < end - 1e-5:
                return None
            out[kind] = (start, end)
    except (KeyError, TypeError, ValueError):
        return None
    return out


def keep_windows(ledger_file: str, key: list[Any] | None, week_start: int, tz: tzinfo,
                 now: float) -> None:
    """Write the calendar windows holding `now` in zone `tz` (named by `key`) to the cache.

    Derived data, like the view: replaced atomically, no fsync; what cannot be written is left
    for the next call."""
    if key is None:
        return
    from datetime import datetime

    from tokenbudget.budgets import window

    at = datetime.fromtimestamp(now, tz)
    data: dict[str, Any] = {"key": key, "week_start": week_start}
    for kind in CALENDAR:
        start, end = window(kind, at, tz, week_start)
        if start is None or end is None:
            return
        data[kind] = [start.timestamp(), end.timestamp()]
    import contextlib  # here: a call with nothing new imports this module

    with contextlib.suppress(OSError):
        Writer(ledger_file, "")._write(windows_file(ledger_file), data)


def quiet(event: str, budgets: list[Budget], ledger: Ledger, now: float,
          wins: dict[str, tuple[float, float]] | None, *, session_id: str | None,
          cwd: str | None, prompt: str | None, prompt_id: str | None,
          most: dict[str, float] | None) -> bool:
    """True only when the engine (engine.judge, then decide) allows the event with nothing to
    say or record: every budget that concerns it is measured at or above what it uses and
    found below its warning threshold and its limit (and, with `most`, more than one
    response of that unit from a blocking limit). False: the engine decides.

    Arithmetic on the ledger alone, without datetime, zoneinfo or the engine: the calendar
    windows come from the cache (`wins`); a 5-hour block is bounded by the most any block that
    can hold `now` uses. Every test below is monotonic in the usage, so a bound found quiet is
    a usage found quiet. Whatever else (a warning, the plugin's own command) goes to the
    engine; a team's budgets are the caller's to leave to it.
    """
    from tokenbudget.limits import applies_to, slash_command

    sessions = ledger["sessions"]
    session = sessions.get(session_id or "")
    turn = None
    starting = event == "UserPromptSubmit"
    expected = (0.0, 0.0)
    command: str | None = None
    if starting:  # engine.event_context and engine.exempt, enforce.expected
        slash = slash_command(prompt) if prompt else None
        if slash in OWN_COMMANDS:
            return False  # exempt from every budget: the engine says so
        if slash is not None:
            expected = _expected(ledger, slash, prompt_id)
        command = slash or "prompt"
    else:  # store.HeldLedger.turn_usage (the store's module is not imported here: 2 ms)
        if session is not None and prompt_id is not None:
            pid: str | None = prompt_id
            for _ in range(8):
                if pid is None or pid not in session[S_ALIASES]:
                    break
                pid = session[S_ALIASES][pid]
            turn = session[S_TURNS].get(pid)
            if turn is not None:
                command = turn[TURN_COMMAND]
    project = cwd or (session[S_PROJECT] if session else None)
    for b in budgets:
        if b.kind == "command" and b.name != command:
            continue
        if b.kind == "session" and not session_id:
            continue
        if not applies_to(b, project):
            continue
        usd = b.unit == "usd"
        used: float
        if b.kind == "session":  # enforce.session_used
            if session is None:
                used = 0.0
            else:
                pre = session.get(S_PRE) or (0, 0.0)
                models = session[S_MODELS].values()
                used = (sum(m[M_COST] for m in models) + pre[PRE_COST] if usd else
                        float(sum(sum(m[M_USAGE]) for m in models) + pre[PRE_TOKENS]))
        elif b.kind == "command":
            used = 0.0 if starting or turn is None else float(
                turn[TURN_COST if usd else TURN_TOKENS])
        elif b.kind in ("total", "project"):
            i = ROLLUP_COST if usd else ROLLUP_TOKENS
            used = float(sum(v[i] for p, v in ledger["projects"].items() if applies_to(b, p)))
        elif b.kind == "5h":
            used = _block_bound(ledger, b, now)
        else:
            if wins is None or b.kind not in wins:
                return False
            start, end = wins[b.kind]
            used = _hours(ledger, b, start, end)
        # budgets.evaluate: "ok" (hence not blocking); hook._could_cross.
        cost = expected[1] if usd else expected[0]
        if not (0 <= used < b.limit and used / b.limit < b.warn_at
                and not used + cost > b.limit):
            return False
        if most is not None and b.mode == "block" and b.limit - used <= most.get(
                b.unit, float("inf")):
            return False
    return True


def _expected(ledger: Ledger, command: str, exclude: str | None) -> tuple[float, float]:
    """enforce.expected: the 90th percentile (nearest rank, budgets.expected_cost) of the
    command's 20 latest runs (store.HeldLedger.command_runs), in tokens and in dollars."""
    runs = [list(r) for r in ledger["commands"].get(command, [])]
    for s in ledger["sessions"].values():
        for pid, t in s[S_TURNS].items():
            if t[TURN_COMMAND] == command and pid != exclude:
                runs.append([t[TURN_START], t[TURN_TOKENS], t[TURN_COST]])
    runs.sort(key=lambda r: r[RUN_START])
    out = []
    for i in (RUN_TOKENS, RUN_COST):
        latest = sorted(r[i] for r in runs[-20:])
        rank = max(1, math.ceil(round(0.9 * len(latest), 9)))
        out.append(float(latest[rank - 1]) if latest else 0.0)
    return out[0], out[1]


def _hours(ledger: Ledger, b: Budget, lo: float, hi: float) -> float:
    """enforce._hours_between over [lo, hi): the same cells, added in the same order."""
    from tokenbudget.limits import applies_to

    i = HOUR_COST if b.unit == "usd" else HOUR_TOKENS
    total = 0.0
    for h, per_project in ledger["hours"].items():
        t = int(h) * BUCKET
        if t + BUCKET <= lo or t >= hi:
            continue
        for project, cell in per_project.items():
            if applies_to(b, project):
                total += cell[i]
    return total


def _block_bound(ledger: Ledger, b: Budget, now: float) -> float:
    """At least what the 5-hour window holding `now` uses: the most any window that could
    hold it uses. A block starts on a UTC hour at or before `now` (rounded to the microsecond)
    and ends 5 hours later, after it; with no block running, the window starts at `now`'s hour.
    Each candidate's sum adds the cells of its hours in the ledger's order, as the engine does
    for the real one, so a sum over more cells is never smaller."""
    from tokenbudget.limits import applies_to

    i = HOUR_COST if b.unit == "usd" else HOUR_TOKENS
    # The first hour after now - 5h, and now's hour, each taken a second wider.
    first = int((now - BLOCK - 1) // HOUR) * HOUR + HOUR
    last = int((now + 1) // HOUR) * HOUR
    starts = range(first, last + HOUR, HOUR)
    sums = [0.0] * len(starts)
    scoped: dict[str, bool] = {}
    for h, per_project in ledger["hours"].items():
        t = int(h) * BUCKET
        if t + BUCKET <= first or t >= last + BLOCK:
            continue
        for project, cell in per_project.items():
            inside = scoped.get(project)
            if inside is None:
                inside = scoped[project] = applies_to(b, project)
            if not inside:
                continue
            for k, s in enumerate(starts):
                if s < t + BUCKET and t < s + BLOCK:
                    sums[k] += cell[i]
    return max(sums)


# --- writing (by the committer, with the ledger's lock held) -----------------------------------


class Writer:
    """Keeps one store's view in step with its commits."""

    def __init__(self, ledger_file: str, journal_file: str,
                 step: Callable[[str], None] | None = None) -> None:
        self.ledger_file = ledger_file
        self.journal_file = journal_file
        self.shared, self.folder = paths(ledger_file)
        self.step = step or (lambda _name: None)  # the crash tests stop there
        self.slash: dict[str, int] = {}  # the view's counts of live slash commands (in_step)
        self.held = b""  # the shared part's body as the view holds it (in_step)
        self.held_hours = 0  # how many of its lines are hour buckets

    def in_step(self, seq: int, at: list[Any] | None) -> bool:
        """Whether the view holds the commit `seq` whose files had stamps `at`."""
        try:
            with open(self.shared, "rb") as f:
                head, body = _split(f.read())
        except (OSError, ValueError, RecursionError):
            return False
        if (body is None or head.get("seq") != seq or at is None or head.get("at") != at
                or type(head.get("slash")) is not dict or type(head.get("hours")) is not int):
            return False
        # Every line of the body there (an hour bucket's or a table's, each ending in a
        # newline): a writer killed mid-file left a head that names the commit and a body cut
        # short, which no reader takes; rewritten whole, not kept through commits that change
        # nothing.
        if body.count(b"\n") != head["hours"] + len(SHARED):
            return False
        self.slash = head["slash"]
        self.held = body
        self.held_hours = head["hours"]
        return True

    def update(self, data: Ledger, base: Ledger, sets: list[Any], dels: list[Any], seq: int,
               at: list[Any]) -> None:
        """Write what commit `seq` changed (`sets`/`dels` turn `base` into `data`)."""
        changed = _changed_sessions(data, base, sets, dels)
        if changed is None:
            self.rebuild(data, seq, at)
            return
        moved = {p[1] for p in [*(s[0] for s in sets), *dels] if p[0] == "files"}
        self._sessions(data, changed, seq, moved)
        slash = dict(self.slash)  # read by in_step, which the caller asked first
        for sid in changed:
            for cmd in commands(base["sessions"].get(sid)):
                slash[cmd] = slash.get(cmd, 0) - 1
            for cmd in commands(data["sessions"].get(sid)):
                slash[cmd] = slash.get(cmd, 0) + 1
        self._shared(data, seq, at, {k: n for k, n in slash.items() if n > 0},
                     _changed_shared(sets, dels))

    def rebuild(self, data: Ledger, seq: int, at: list[Any]) -> None:
        """Write the whole view from `data`, and remove whatever else its folder holds."""
        import contextlib

        from tokenbudget.paths import ensure_private_dir

        ensure_private_dir(self.folder)
        # The shared part first goes: until the new one is written, no reader takes the view.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.shared)
        keep = self._sessions(data, data["sessions"], seq)
        with os.scandir(self.folder) as entries:
            stray = [e.path for e in entries if e.path not in keep]
        for path in stray:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
        self._shared(data, seq, at, _slash(data))

    def _sessions(self, data: Ledger, ids: Iterable[str], seq: int,
                  moved: set[str] | None = None) -> set[str]:
        """Write the files of sessions `ids` (remove those of sessions gone). `moved`: the
        `files` records this commit changed; the others are taken from each session's file
        as the view held it, so that a commit costs what it changed, not every record."""
        import contextlib  # not at the top: a call with nothing new imports this module

        wanted = {sid for sid in ids if sid in data["sessions"]}
        files: dict[str, dict[str, Any]] = {}
        if moved is not None:
            for sid in wanted:
                held = _load(session_file(self.folder, sid))
                if (type(held) is dict and held.get("id") == sid
                        and type(held.get("files")) is dict):
                    mine = {p: r for p, r in held["files"].items() if p not in moved}
                    for path in moved:
                        rec = data["files"].get(path)
                        if rec is not None and rec[FILE_SESSION] == sid:
                            mine[path] = rec
                    files[sid] = mine
        rest: dict[str, dict[str, Any]] = {sid: {} for sid in wanted if sid not in files}
        if rest:  # every record read (a new session's file, or the whole view)
            for path, rec in data["files"].items():
                own = rest.get(rec[FILE_SESSION])
                if own is not None:
                    own[path] = rec
            files.update(rest)
        written = set()
        for sid in ids:
            target = session_file(self.folder, sid)
            if sid in wanted:
                self._put(target, _line({"seq": seq, "id": sid, "session": data["sessions"][sid],
                                         "files": files[sid]}), "view.session")
                written.add(target)
            else:  # it left the ledger (folded, or a rebuild)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
        return written

    def _shared(self, data: Ledger, seq: int, at: list[Any], slash: dict[str, int],
                changed: tuple[set[str], set[str] | None] | None = None) -> None:
        """Write the shared part. `changed`: the tables and hour buckets (None: all of them)
        that the commit changed since the view `in_step` read; every other line is that
        view's, as it was (serialising the buckets again was most of a commit's time under
        the lock)."""
        # The transcripts of sessions that ended lately (their subagents' too), which the
        # quick path checks for a last total: a scan only while there are any.
        gone = {e[0] for e in data["ended"].values()}
        ended = {p: rec for p, rec in data["files"].items()
                 if p in data["ended"] or rec[FILE_SESSION] in gone} if gone else {}
        head = {"view": VERSION, "seq": seq, "at": at, "slash": dict(sorted(slash.items())),
                "hours": len(data["hours"]), LAID: True}
        held_hours: dict[str, bytes] = {}
        held_tables: dict[str, bytes] = {}
        tables, buckets = changed if changed is not None else (set(SHARED), None)
        if changed is not None:
            lines = self.held.split(b"\n")[:-1]
            for into, part in ((held_hours, lines[:self.held_hours]),
                               (held_tables, lines[self.held_hours:])):
                for line in part:
                    end = line.find(b'":') + 2
                    if end > 1 and b"\\" not in line[:end]:
                        # No escape in the key: json wrote it as it is (ASCII, printable).
                        into[line[1:end - 2].decode()] = line
        out = []
        for key, value in data["hours"].items():
            got = None if buckets is None or key in buckets else held_hours.get(key)
            out.append(got or _key(key) + _dumps(value))
        for table in (*(t for t in SHARED if t != "hours"), "ended_files"):
            got = None if table in tables else held_tables.get(table)
            out.append(got or _key(table) + _dumps(ended if table == "ended_files"
                                                     else data[table]))
        self._put(self.shared, _line(head) + b"\n".join(out) + b"\n", "view.shared")

    def _write(self, path: str, value: Any) -> None:
        """Replace `path` (0600) atomically: temp file beside it, rename; no fsync (above).
        For a file written without the lock (the window cache)."""
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, _line(value))
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _put(self, path: str, payload: bytes, step: str) -> None:
        """Write a file of the view (0600) in place: no temp file and rename, which cost more
        than the rest of a commit's view. A reader never takes what it read while a commit
        wrote: every commit changes the ledger's stamps before it writes any of the view, and
        a reader takes the view only when the stamps were the view's before and after it read
        (`read`); the one overlap that check cannot see, a reader that read the stamps after
        a commit changed them and the files while that commit wrote them, finds a part of
        one: no part of a file written here parses as a view (`_body`: the line of the
        ended sessions' files comes last; a session's file is one object), so it reads the
        ledger. A writer killed mid-file leaves the view behind (its shared part is not at
        the commit made), rewritten whole by the next commit.

        The file is cut to its first byte, not emptied: ext4 writes a file out at its close
        once it has been cut to nothing (auto_da_alloc, for programs that rewrite files
        without fsync), measured at 2-3 ms a file, under the ledger's lock, against
        microseconds. That one byte (`{`, the first of the file before, or a NUL in a new
        one) is no view, as an empty file was none; the first write replaces it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, 1)
            half = len(payload) // 2
            _write_all(fd, payload[:half])
            self.step(step)  # the crash tests stop here: a part written, as a kill leaves it
            _write_all(fd, payload[half:])
        finally:
            os.close(fd)


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view):]


def _slash(data: Ledger) -> dict[str, int]:
    """How many live sessions have runs of each slash command."""
    out: dict[str, int] = {}
    for s in data["sessions"].values():
        for cmd in commands(s):
            out[cmd] = out.get(cmd, 0) + 1
    return out


def _line(value: Any) -> bytes:
    return _dumps(value) + b"\n"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _key(key: str) -> bytes:
    """A key as its line of the shared part begins: `"key":` (as json writes it)."""
    if key.isascii() and key.isprintable() and '"' not in key and "\\" not in key:
        return b'"' + key.encode() + b'":'  # nothing to escape: without json's call
    return _dumps(key) + b":"


def _changed_shared(sets: list[Any], dels: list[Any]) -> tuple[set[str], set[str] | None]:
    """The shared part's tables a change touches, and its hour buckets (None: all of them).
    The ended sessions' transcripts are always worked out again (a scan only while any
    ended lately): which of `files` they hold depends on `ended` and on each record."""
    tables = {"ended_files"}
    buckets: set[str] | None = set()
    for path in [*(s[0] for s in sets), *dels]:
        if not path:
            return set(SHARED) | tables, None
        tables.add(path[0])
        if path[0] == "hours":
            if len(path) < 2 or buckets is None:
                buckets = None
            else:
                buckets.add(path[1])
    tables.discard("hours")
    return tables, buckets


def _changed_sessions(data: Ledger, base: Ledger, sets: list[Any], dels: list[Any]
                      ) -> set[str] | None:
    """The sessions whose file a change touches (their record, or a `files` record of
    theirs, before or after); None: all of them."""
    out: set[str] = set()
    for path in [*(s[0] for s in sets), *dels]:
        if len(path) < 2 and (not path or path[0] in ("sessions", "files")):
            return None
        if path[0] == "sessions":
            out.add(path[1])
        elif path[0] == "files":
            for d in (base, data):
                rec = d["files"].get(path[1])
                if rec is not None:
                    out.add(rec[FILE_SESSION])
    return out


def differences(ledger_file: str, journal_file: str, data: Ledger) -> list[str]:
    """Test-only: how the view on disk differs from the one built afresh from `data`, the
    ledger as committed (the test suite checks it after every commit)."""
    shared_file, folder = paths(ledger_file)
    out = []
    got = _load_shared(shared_file)
    if got is None:
        return ["the shared part cannot be read"]
    head, body = got
    now = stamps(ledger_file, journal_file)
    if head.get("at") != now:
        out.append(f"the view is not at the committed files: {head.get('at')} != {now}")
    fresh = _Collect(ledger_file, journal_file)
    fresh.rebuild(data, head["seq"], head["at"])
    fresh_head, fresh_body = _split(fresh.got.pop(shared_file))
    if fresh_head != head or _body(head, fresh_body or b"") != body:
        out.append("the shared part differs")
    names = set()
    for path, payloads in fresh.sessions.items():
        names.add(os.path.basename(path))
        have = _load(path)
        # Ids that one file name holds (a file system blind to case): either one's is right.
        wants = {want["id"]: want for want in map(json.loads, payloads)}
        want = wants.get(have.get("id")) if type(have) is dict else None
        if want is None or not have.pop("seq") <= head["seq"] or want.pop("seq") != head["seq"]:
            out.append(f"{path}: missing, or newer than the view")
        elif have != want:
            out.append(f"{path}: differs")
    extra = sorted(set(os.listdir(folder)) - names)
    if extra:
        out.append(f"files the view does not hold: {extra}")
    return out


class _Collect(Writer):
    """A writer that keeps what it would write (for `differences`)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.got: dict[str, Any] = {}
        self.sessions: dict[str, list[bytes]] = {}

    def rebuild(self, data: Ledger, seq: int, at: list[Any]) -> None:
        self._sessions(data, data["sessions"], seq)
        self._shared(data, seq, at, _slash(data))

    def _put(self, path: str, payload: bytes, step: str) -> None:
        if path == self.shared:
            self.got[path] = payload
        else:
            self.sessions.setdefault(path, []).append(payload)
