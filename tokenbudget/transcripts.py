"""Finding Claude Code's transcripts and reading what is new in them.

A transcript is JSON lines, appended to while Claude Code runs. We remember, per file, the byte
offset after the last complete line and the file's identity, so a second read costs only what was
appended. Anything we cannot read is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from tokenbudget.ledger import file_identity
from tokenbudget.limits import slash_command
from tokenbudget.paths import is_session_id
from tokenbudget.record import Record
from tokenbudget.usage import Usage

# typing costs a hook call with news about 2.5 ms to import, pathlib about 3.5 ms: paths are
# strings here (a Path given is taken as its string).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

try:  # `import hashlib` loads OpenSSL, 3 ms of every hook call; blake2b is built in without it
    from _blake2 import blake2b as blake2b
except ImportError:  # pragma: no cover - not CPython
    from hashlib import blake2b as blake2b

# A line longer than this is not a transcript entry we can use (tool output is the usual
# culprit); it is skipped without ever being held in memory whole.
MAX_LINE_BYTES = 16 * 1024 * 1024
CHUNK = 1024 * 1024
HEAD_BYTES = 256

# Entry types we act on; everything else is skipped before paying for json.loads.
_WANTED = (b'"assistant"', b'"user"', b'"cost-state"', b'"api-request"')
# A request's id (a uuid) longer than this is not one: it is not kept.
MAX_REQUEST_ID = 64
# How Claude Code begins the lines of a request's body (`api-request-blob`, one per message:
# a tool's whole output) and shape (`api-request-shape`): never needed, and a message's
# `"role":"user"` would have them parsed whole below.
_REQUEST_PARTS = b'{"type":"api-request-'
_COMMAND_NAME = re.compile(r"<command-name>\s*(/?[^<\s]+)\s*</command-name>")


class FilePos(Record):
    """Where we stopped in one transcript, and how to recognise the same file again."""

    _fields = ("ident", "head", "pos")
    __slots__ = _fields

    def __init__(self, ident: str, head: str, pos: int) -> None:
        self.ident = ident
        self.head = head
        self.pos = pos

    def to_json(self) -> list[Any]:
        return [self.ident, self.head, self.pos]

    @classmethod
    def from_json(cls, value: Any) -> FilePos:
        ident, head, pos = value
        return cls(str(ident), str(head), int(pos))


class Skipped(Record):
    """Lines passed over, by reason."""

    _fields = ("counts",)
    __slots__ = _fields

    def __init__(self, counts: dict[str, int] | None = None) -> None:
        self.counts = {} if counts is None else counts

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n


class UsageEvent(Record):
    _fields = ("key", "model", "usage", "ts", "session_id", "cwd", "origin", "ref")
    __slots__ = _fields

    def __init__(
        self,
        key: str,
        model: str,
        usage: Usage,
        ts: float,
        session_id: str,
        cwd: str | None,
        origin: str | None = None,
        ref: str | None = None,
    ) -> None:
        self.key = key
        self.model = model
        self.usage = usage
        self.ts = ts
        self.session_id = session_id
        self.cwd = cwd
        # A fork's copy names the session that made the request (`requestSessionId`).
        self.origin = origin
        # The id of the request's `api-request` line (`requestRef`); None if it names none.
        self.ref = ref


class RequestEvent(Record):
    """A request about to be sent (an `api-request` line, written before it goes out): its id,
    which every `assistant` line of its response names as `requestRef`."""

    _fields = ("request_id",)
    __slots__ = _fields

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


class PromptEvent(Record):
    _fields = ("prompt_id", "command", "ts", "session_id", "cwd")
    __slots__ = _fields

    def __init__(
        self, prompt_id: str, command: str | None, ts: float, session_id: str, cwd: str | None
    ) -> None:
        self.prompt_id = prompt_id
        self.command = command  # None: not a new command (e.g. a background task's notification)
        self.ts = ts
        self.session_id = session_id
        self.cwd = cwd


class CostStateEvent(Record):
    """A session's total as Claude Code keeps it. `written`: `startTime + totalDuration`, no
    later than when the total was written (a resumed process carries both on from the last
    total and adds only its own running time, so this falls short of the time by the pauses
    between processes; in a process's first total it is the time itself); None if absent."""

    _fields = ("session_id", "ts", "models", "written")
    __slots__ = _fields

    def __init__(
        self,
        session_id: str,
        ts: float | None,
        models: dict[str, tuple[Usage, float | None]],
        written: float | None = None,
    ) -> None:
        self.session_id = session_id
        self.ts = ts
        self.models = models
        self.written = written


Event = UsageEvent | PromptEvent | CostStateEvent | RequestEvent


class ReadResult(Record):
    _fields = ("events", "pos", "restarted", "skipped")
    __slots__ = _fields

    def __init__(
        self, events: list[Event], pos: FilePos, restarted: bool, skipped: Skipped
    ) -> None:
        self.events = events
        self.pos = pos
        self.restarted = restarted
        self.skipped = skipped


# --- discovery ---------------------------------------------------------------------------------


def projects_dirs(config_dirs: list[Path]) -> list[Path]:
    return [d / "projects" for d in config_dirs if (d / "projects").is_dir()]


def discover(config_dirs: list[Path]) -> Iterator[tuple[str, str, bool]]:
    """Every transcript: (path, session id, is a subagent's), subagents before their session."""
    for projects in projects_dirs(config_dirs):
        try:
            project_dirs = sorted(p for p in projects.iterdir() if p.is_dir())
        except OSError:
            continue
        for pdir in project_dirs:
            try:
                names = sorted(os.listdir(pdir))
            except OSError:
                continue
            for name in names:
                if not name.endswith(".jsonl"):
                    continue
                sid = name[: -len(".jsonl")]
                yield from session_files(os.path.join(pdir, name), sid)


def session_files(
    transcript: str | os.PathLike[str], session_id: str
) -> Iterator[tuple[str, str, bool]]:
    """The subagent transcripts of a session, then the session's own transcript.

    Subagents come first: a `cost-state` line in the main transcript is compared with all the
    session's usage, and the subagents' usage is part of it.
    """
    transcript = os.fspath(transcript)
    sub = os.path.join(os.path.dirname(transcript), session_id, "subagents")
    try:
        agents = sorted(
            n for n in os.listdir(sub) if n.startswith("agent-") and n.endswith(".jsonl")
        )
    except OSError:
        agents = []
    for name in agents:
        yield os.path.join(sub, name), session_id, True
    if os.path.isfile(transcript):
        yield transcript, session_id, False


# --- reading -----------------------------------------------------------------------------------


def _head_digest(data: bytes) -> str:
    return blake2b(data, digest_size=8).hexdigest()


def read_new(
    path: str | os.PathLike[str], prev: FilePos | None, max_bytes: int | None = None
) -> ReadResult:
    """Read the complete lines appended to `path` since `prev` and turn them into events.

    A file that shrank, was replaced, or no longer starts as it did is read from the start; the
    caller deduplicates, so nothing counts twice. A partial last line waits for the next read.
    With `max_bytes`, reading stops near that many bytes; the rest waits for the next read.
    """
    skipped = Skipped()
    # O_NONBLOCK: a FIFO planted where a transcript should be must not hang us.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        import stat as _stat

        if not _stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        head_len = min(HEAD_BYTES, st.st_size)
        head = _head_digest(os.pread(fd, head_len, 0)) if head_len else ""
        ident = file_identity(st)
        start = 0
        restarted = False
        if prev is not None:
            same = prev.ident == ident and st.st_size >= prev.pos
            # The head hash covers the first HEAD_BYTES; compare only what both have seen.
            if same and prev.pos >= HEAD_BYTES:
                same = prev.head == head
            if same:
                start = prev.pos
            else:
                restarted = True
        events: list[Event] = []
        end = start
        f.seek(start)
        stop = st.st_size if max_bytes is None else min(st.st_size, start + max_bytes)
        for line, line_end in _complete_lines(f, start, stop, skipped):
            end = line_end
            if line is None:
                continue
            _parse_line(line, events, skipped)
        if end < HEAD_BYTES:
            # Remember the head only once it is final, else a growing file looks replaced.
            head = _head_digest(os.pread(fd, min(end, HEAD_BYTES), 0)) if end else ""
        return ReadResult(events, FilePos(ident, head, end), restarted, skipped)


def _complete_lines(
    f: Any, start: int, size: int, skipped: Skipped
) -> Iterator[tuple[bytes | None, int]]:
    """Yield (line, offset after it) for each complete line up to `size`; None for a skipped one."""
    pos = start
    buf = b""
    too_long = False
    remaining = size - start
    while remaining > 0:
        chunk = f.read(min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line = buf[:nl]
            buf = buf[nl + 1 :]
            pos += nl + 1
            if too_long:
                too_long = False
                yield None, pos
                continue
            if len(line) > MAX_LINE_BYTES:
                skipped.add("too long")
                yield None, pos
                continue
            yield line, pos
        if len(buf) > MAX_LINE_BYTES:
            # Drop the rest of an absurd line as it streams by; count it once.
            if not too_long:
                skipped.add("too long")
            too_long = True
            pos += len(buf)
            buf = b""
    # Bytes after the last newline are a line still being written: not consumed.
    if too_long:
        # Its start was consumed; resume right after the bytes already dropped.
        yield None, pos


def _parse_line(line: bytes, events: list[Event], skipped: Skipped) -> None:
    stripped = line.strip()
    if not stripped:
        return
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        skipped.add("not JSON")  # checked without parsing: the hot path parses few lines
        return
    if stripped.startswith(_REQUEST_PARTS):
        return
    if not any(w in line for w in _WANTED):
        return
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        skipped.add("not JSON")
        return
    if not isinstance(entry, dict):
        skipped.add("not an object")
        return
    kind = entry.get("type")
    try:
        if kind == "assistant":
            ev: Event | None = _usage_event(entry, skipped)
        elif kind == "user":
            ev = _prompt_event(entry)
        elif kind == "cost-state":
            ev = _cost_state_event(entry, skipped)
        elif kind == "api-request":
            ev = _request_event(entry)
        else:
            return
    except (TypeError, ValueError, AttributeError, KeyError):
        skipped.add("malformed")
        return
    if ev is not None:
        events.append(ev)


# The timestamps Claude Code writes: UTC, to the millisecond.
_UTC_MS = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z", re.ASCII)
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAYS_BEFORE_MONTH = (0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)
_EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal()


def parse_ts(value: Any) -> float | None:
    """An ISO timestamp (as Claude Code writes them) to epoch seconds; None if unreadable."""
    if not isinstance(value, str) or not value:
        return None
    m = _UTC_MS.fullmatch(value)
    if m is not None:
        # Worked out as datetime would (importing it costs a call with news ~1.5 ms): the
        # same whole microseconds, divided the same way, so the same float (a test compares).
        y, mo, d, h, mi, sec, ms = map(int, m.groups())
        leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
        if (y >= 1 and 1 <= mo <= 12 and 1 <= d <= _DAYS_IN_MONTH[mo] + (mo == 2 and leap)
                and h < 24 and mi < 60 and sec < 60):
            p = y - 1
            ordinal = (p * 365 + p // 4 - p // 100 + p // 400
                       + _DAYS_BEFORE_MONTH[mo] + (mo > 2 and leap) + d)
            seconds = (ordinal - _EPOCH_ORDINAL) * 86400 + h * 3600 + mi * 60 + sec
            return (seconds * 1_000_000 + ms * 1000) / 1_000_000
    from datetime import datetime

    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# No request uses a billion tokens (context windows hold about a million) and no session's
# cumulative cost-state a trillion: larger numbers are garbage. Counted, they would hold every
# budget over; one past 1e308 would not even convert to a float when priced.
MAX_REQUEST_TOKENS = 10**9
MAX_SESSION_TOKENS = 10**12
MAX_COST_USD = 1e9


def _count(value: Any, limit: int = MAX_REQUEST_TOKENS) -> int:
    """A token count: a non-negative integer (0 when absent), else ValueError."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("token count is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("token count is not an integer")
        value = int(value)
    if value < 0:
        raise ValueError("token count is negative")
    if value > limit:
        raise ValueError("token count is implausibly large")
    return int(value)


def parse_usage(raw: Any) -> Usage:
    """Claude Code's `message.usage` to a Usage; ValueError for negative or non-integer counts."""
    if not isinstance(raw, dict):
        raise ValueError("usage is not an object")
    cache_write = _count(raw.get("cache_creation_input_tokens"))
    split = raw.get("cache_creation")
    w5 = w1 = 0
    if isinstance(split, dict):
        w5 = _count(split.get("ephemeral_5m_input_tokens"))
        w1 = _count(split.get("ephemeral_1h_input_tokens"))
    if w5 + w1 == 0:
        w5, w1 = cache_write, 0  # no split given: Claude Code's default cache is 5-minute
    elif w5 + w1 != cache_write and cache_write:
        w1 = min(w1, cache_write)
        w5 = cache_write - w1
    return Usage(
        _count(raw.get("input_tokens")),
        _count(raw.get("output_tokens")),
        w5,
        w1,
        _count(raw.get("cache_read_input_tokens")),
    )


def usage_key(entry: dict[str, Any]) -> str | None:
    """The identity of one API response: (message.id, requestId), else the entry's uuid."""
    message = entry.get("message") or {}
    mid = message.get("id") if isinstance(message, dict) else None
    rid = entry.get("requestId")
    if isinstance(mid, str) and mid:
        raw = f"{mid}\x00{rid if isinstance(rid, str) else ''}"
    elif isinstance(entry.get("uuid"), str) and entry["uuid"]:
        raw = f"uuid\x00{entry['uuid']}"
    else:
        return None
    return blake2b(raw.encode(), digest_size=8).hexdigest()


def _usage_event(entry: dict[str, Any], skipped: Skipped) -> UsageEvent | None:
    message = entry.get("message")
    if not isinstance(message, dict) or "usage" not in message:
        return None
    model = message.get("model")
    if not isinstance(model, str) or not model:
        model = "unknown"
    if model == "<synthetic>":
        return None  # Claude Code's own placeholder messages: no API request behind them
    try:
        usage = parse_usage(message.get("usage"))
    except ValueError:
        skipped.add("bad usage")
        return None
    key = usage_key(entry)
    ts = parse_ts(entry.get("timestamp"))
    sid = entry.get("sessionId")
    if key is None or ts is None or not isinstance(sid, str):
        skipped.add("malformed")
        return None
    cwd = entry.get("cwd")
    origin = entry.get("requestSessionId")
    return UsageEvent(
        key,
        model,
        usage,
        ts,
        sid,
        cwd if isinstance(cwd, str) else None,
        origin if isinstance(origin, str) and origin != sid and is_session_id(origin) else None,
        _request_id(entry.get("requestRef")),
    )


def _request_id(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID else None


def _request_event(entry: dict[str, Any]) -> RequestEvent | None:
    rid = _request_id(entry.get("id"))
    return None if rid is None else RequestEvent(rid)


def command_of(text: str) -> str | None:
    """The command a typed prompt starts: `/name` for a slash command, else `prompt`.

    None means the text is not a new command at all: Claude Code's own notes (a background
    task finishing, a local command's output) continue the command that was running.
    """
    stripped = text.lstrip()
    if stripped.startswith("<command-name>") or stripped.startswith("<command-message>"):
        m = _COMMAND_NAME.search(stripped)
        if m:
            name = m.group(1)
            return name if name.startswith("/") else "/" + name
    if stripped.startswith(("<task-notification>", "<local-command-", "<bash-")):
        return None
    return slash_command(stripped) or "prompt"


def _prompt_event(entry: dict[str, Any]) -> PromptEvent | None:
    if entry.get("isMeta") or entry.get("isCompactSummary"):
        return None
    message = entry.get("message")
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, list):
        texts = [c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "text"]
        if not texts or any(
            isinstance(c, dict) and c.get("type") == "tool_result" for c in content
        ):
            return None
        content = texts[0]
    if not isinstance(content, str):
        return None
    pid = entry.get("promptId")
    ts = parse_ts(entry.get("timestamp"))
    sid = entry.get("sessionId")
    if not isinstance(pid, str) or ts is None or not isinstance(sid, str):
        return None
    cwd = entry.get("cwd")
    # A subagent's prompt is not the user's: it only tells which turn launched the subagent.
    command = None if entry.get("isSidechain") else command_of(content)
    return PromptEvent(pid, command, ts, sid, cwd if isinstance(cwd, str) else None)


def _cost_state_event(entry: dict[str, Any], skipped: Skipped) -> CostStateEvent | None:
    sid = entry.get("sessionId")
    models = entry.get("modelUsage")
    if not isinstance(sid, str) or not isinstance(models, dict):
        return None
    out: dict[str, tuple[Usage, float | None]] = {}
    for model, mu in models.items():
        if not isinstance(mu, dict):
            continue
        try:
            cap = MAX_SESSION_TOKENS
            w5 = _count(mu.get("cacheCreationEphemeral5mInputTokens"), cap)
            w1 = _count(mu.get("cacheCreationEphemeral1hInputTokens"), cap)
            cw = _count(mu.get("cacheCreationInputTokens"), cap)
            if w5 + w1 != cw:
                w1 = min(w1, cw)
                w5 = cw - w1
            usage = Usage(
                _count(mu.get("inputTokens"), cap),
                _count(mu.get("outputTokens"), cap),
                w5,
                w1,
                _count(mu.get("cacheReadInputTokens"), cap),
            )
        except ValueError:
            skipped.add("bad usage")
            continue
        cost = mu.get("costUSD")
        # Infinity (which Python's JSON reader accepts) would make every later ledger write
        # fail: the ledger refuses non-finite numbers, and nothing would be committed again.
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not 0 <= cost < MAX_COST_USD
        ):
            cost = None
        out[str(model)] = (usage, None if cost is None else float(cost))
    return CostStateEvent(sid, parse_ts(entry.get("timestamp")), out, _written(entry))


def _written(entry: dict[str, Any]) -> float | None:
    """A cost-state's `startTime + totalDuration` (milliseconds) in seconds, or None."""
    start, took = entry.get("startTime"), entry.get("totalDuration")
    if (isinstance(start, bool) or not isinstance(start, int | float)
            or isinstance(took, bool) or not isinstance(took, int | float)):
        return None
    at = (start + took) / 1000
    return at if 0 < at < 1e11 and took >= 0 else None  # a time, not a NaN or a stray number


_TS = re.compile(rb'"timestamp"\s*:\s*"([^"]+)"')
_UUID = re.compile(rb'"uuid"\s*:\s*"([^"]{1,64})"')
_PARENT_UUID = re.compile(rb'"parentUuid"\s*:\s*"([^"]{1,64})"')


class ForkPoint(Record):
    """A candidate parent's `cost-state` totals at the point a fork copied it up to.

    `totals` is None when that line is there but cannot be read (torn, or a value rejected):
    the parent's total at the fork point is then unknown. `final` says whether more lines in
    the parent can still change the answer (it has not yet written anything after the point).
    `running`: `totals` are the last the parent wrote before the point ({} when none): it went
    on after the point before writing a total (a request, or a line continuing the conversation
    the fork copied, which the fork would have copied too), or has written none after the point
    yet (still running, or killed). The fork, made before any total came after the point,
    started its own from these, without the copies the parent made since.
    """

    _fields = ("totals", "final", "running")
    __slots__ = _fields

    def __init__(self, totals: dict[str, Usage] | None, final: bool,
                 running: bool = False) -> None:
        self.totals = totals
        self.final = final
        self.running = running


def copied_uuids(fork: str | os.PathLike[str]) -> tuple[set[bytes], bool]:
    """The uuids of the lines a fork copied: its lines before its own first response; and
    whether that response was there (else more copies may still come).

    Claude Code writes a fork's copies first, before the fork's first request (its own
    responses carry no `requestSessionId`); the few own lines read with them (the first
    prompt) are in no parent. The rest of the fork is not read.
    """
    copied: set[bytes] = set()
    with open(fork, "rb") as f:
        for line in f:
            if b'"type":"assistant"' in line and b'"requestSessionId"' not in line:
                return copied, True
            copied.update(_UUID.findall(line))
    return copied, False


def fork_point(copied: set[bytes], parent: str | os.PathLike[str],
               before: bool = False) -> ForkPoint | None:
    """The totals a fork that copied the lines `copied` started from; None if `parent` holds
    none of them. `before`: the parent's last totals before the fork point, whatever follows
    it (for a fork whose own first total does not hold the next ones: it was made before
    they were written).

    A fork copies the parent's lines with their uuids, and its process starts from the last
    totals the parent's transcript held when the fork was made. The fork point is the parent's
    last line the fork copied: the parent's next `cost-state` (written when that process ended)
    unless the parent went on first, showing that the fork was made before that total (it
    started from the previous one): it sent another request, or wrote a line whose parent is a
    line the fork copied (such as the summary of Stop hooks still running at the fork), which
    a fork made later copies with the rest. The parent is read from its end back to that point
    (and on to the previous `cost-state` when that is the one), never whole unless the fork
    point is at its start.
    """
    after: tuple[bytes, bool] | None = None  # the first cost-state after the point, so far
    moved_on = False  # the parent went on after the point before any cost-state
    final: bool | None = None  # set once the point is found
    for line, partial in _lines_backward(parent):
        if line is None:
            continue
        if b'"type":"cost-state"' in line:
            if final is not None:  # the last one before the point
                return ForkPoint(_totals_of(line, partial), final, running=True)
            after, moved_on = (line, partial), False
        elif final is not None:
            continue
        elif not copied.isdisjoint(_UUID.findall(line)):
            if after is not None and not moved_on:
                if not before:
                    return ForkPoint(_totals_of(*after), not after[1])
                moved_on = True  # the totals before the point, which nothing can change
            # The parent going on after the point settles it; with nothing after it yet, it
            # may still write the cost-state that is the fork's.
            final = moved_on
        elif b'"type":"assistant"' in line or not copied.isdisjoint(_PARENT_UUID.findall(line)):
            after, moved_on = None, True
    if final is None:
        return None
    return ForkPoint({}, final, running=True)


def _totals_of(line: bytes, partial: bool) -> dict[str, Usage] | None:
    """A cost-state line's totals; None when the line is torn or a value in it is rejected."""
    if partial:
        return None
    skipped = Skipped()
    events: list[Event] = []
    _parse_line(line.rstrip(b"\r"), events, skipped)
    if skipped.counts or len(events) != 1 or not isinstance(events[0], CostStateEvent):
        return None
    return {m: u for m, (u, _) in events[0].models.items()}


def _lines_backward(path: str | os.PathLike[str]) -> Iterator[tuple[bytes | None, bool]]:
    """The lines of a file from its end: (line, whether it is a last line still unfinished).

    Read a chunk at a time; a line longer than MAX_LINE_BYTES is yielded as None.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        import stat as _stat

        st = os.fstat(fd)
        if not _stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        pos = st.st_size
        buf = b""
        last = True  # the bytes after the last newline: unfinished unless empty
        too_long = False
        while pos > 0:
            n = min(CHUNK, pos)
            pos -= n
            buf = os.pread(fd, n, pos) + buf
            parts = buf.split(b"\n")
            buf = parts[0]
            for i, line in enumerate(reversed(parts[1:])):
                if too_long and i == 0:
                    too_long = False
                    yield None, False  # the start of a line dropped as it went by
                elif last and i == 0:
                    if line:  # a line still being written
                        yield (line if len(line) <= MAX_LINE_BYTES else None), True
                else:
                    yield (line if len(line) <= MAX_LINE_BYTES else None), False
                last = False
            if len(buf) > MAX_LINE_BYTES:
                too_long, buf, last = True, b"", False
        if buf and not too_long:
            yield buf, last
        elif too_long:
            yield None, False
    finally:
        os.close(fd)


def first_timestamp(path: str | os.PathLike[str]) -> float | None:
    """The first timestamp in a transcript's first 64 KiB; None if there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            data = os.pread(fd, 65536, 0)
        finally:
            os.close(fd)
    except OSError:
        return None
    m = _TS.search(data)
    return parse_ts(m.group(1).decode("ascii", "replace")) if m else None
