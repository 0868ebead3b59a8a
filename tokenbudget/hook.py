"""The hook protocol: Claude Code's event JSON in, our answer JSON out.

Run as `python -P -c 'from tokenbudget.hook import run; run()' EVENT` (or the
`tokenbudget-hook EVENT` console script) with the event on stdin. A hook never breaks Claude
Code: on its own failure it allows and says why (on stderr and in the log), unless the user
chose `fail_closed`. Claude Code reads exit code 2 as "block", so we always exit 0 and say
everything in the JSON on stdout.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

from tokenbudget import clock, paths
from tokenbudget.errors import ConfigError, LedgerError, LockTimeout, TokenbudgetError

# Every module a call imports costs it time: dataclasses, typing and pathlib stay off this path.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_STDIN = 8 * 1024 * 1024
MAX_READ_PER_CALL = 64 * 1024 * 1024  # a hook reads at most this much new transcript per call
# What a session's start reads on of each idle session before folding it (usually the total
# Claude Code wrote after that session's last hook): one with more is not idle, and its own
# hooks read it.
FOLD_READ_PER_FILE = 1024 * 1024
SESSION_END_LOCK_WAIT = 0.5  # seconds a SessionEnd waits for the ledger lock at most
# Seconds a hook waits for the response it follows (the one that asked for its tools, or a
# turn's last) to be written to the transcript.
TOOL_LINE_WAIT = 1.0
# How much of a turn's last text a Stop hook looks for in the transcript (see _needles).
SAID_CHARS = 64
# What a commit after its answer (_commit_later) may cost the session's next event: that event
# waits for it in the resident answerer, then for the lock and, near a limit, twice for the
# transcript, all within the relay's 8 s (relay.TIMEOUT; Claude Code gives these hooks 10 s).
NEXT_EVENT_BOUND = 7.0
# The most one API response can use: a prompt fills at most a 1M-token context window and the
# output is at most 128k tokens. A budget further than this from its limit cannot be crossed
# by the response a hook has not seen yet, so the hook need not wait for it.
MAX_RESPONSE_TOKENS = 2_000_000
# The dearest rate of any model in the price table, USD per million tokens (pricing.py; a test
# keeps the two in step): with MAX_RESPONSE_TOKENS, the most one response can cost.
MAX_RATE = 75.0
ENDED_WAIT = 300.0  # seconds other sessions' hooks still read an ended session's transcript
_EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolBatch",
    "Stop",
    "SubagentStop",
    "SessionEnd",
)
# Registered async (claude_settings.OUR_EVENTS): nobody reads their answer, so they give no
# warning (it would count as given); the next hook that is waited for gives it.
UNHEARD = ("SubagentStop", "SessionEnd")
# The events of a session's main agent: one of them after /clear means the session goes on
# (_goes_on).
RESUMING = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "PostToolBatch",
            "Stop")
# In the command hook's own process (run) only: the ledgers the call read, kept from being
# freed object by object as the call returns (about 10 ms at 2,000 live sessions); the process
# then ends without freeing them. None for any other caller: tests, the resident answerer.
_kept: list[Any] | None = None


class Event:
    """The fields of a hook event we use, each checked."""

    __slots__ = ("agent", "claude_dirs", "cwd", "heard", "hint", "name", "prompt", "prompt_id",
                 "raw", "said", "session_id", "source", "tools", "transcript")

    def __init__(
        self,
        name: str,
        session_id: str | None,
        transcript: str | None,
        cwd: str | None,
        prompt: str | None,
        prompt_id: str | None,
        raw: bytes,
        source: str | None = None,
        tools: tuple[str, ...] = (),
        agent: str | None = None,
        claude_dirs: list[str] | None = None,
        heard: bool = True,
        hint: bool = False,
        said: str = "",
    ) -> None:
        self.name = name
        self.session_id = session_id
        self.transcript = transcript  # resolved, inside Claude Code's projects folders
        self.cwd = cwd
        self.prompt = prompt
        self.prompt_id = prompt_id
        self.raw = raw
        self.source = source  # SessionStart: startup, resume, clear or compact
        self.tools = tools  # the tool calls it follows (their tool_use ids)
        self.agent = agent  # the subagent whose tools they are
        self.claude_dirs = claude_dirs  # the session's Claude config folders, if not ours
        self.heard = heard  # whether anyone reads the answer (see handle's `async_start`)
        self.hint = hint  # whether the answer carries the context hint (config context_hint)
        self.said = said  # Stop, SubagentStop: the end of the last response's text


def log(message: str) -> None:
    """One line in the log file (never the prompt text); logging must never fail a hook."""
    try:
        path = paths.log_file()
        paths.ensure_private_dir(os.path.dirname(path))
        try:
            if os.stat(path).st_size > 1024 * 1024:
                os.replace(path, path + ".1")
        except OSError:
            pass
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            # The log is read on this machine: its clock time, with the offset said.
            local = time.localtime(clock.now())  # the machine's zone
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", local)
            f.write(f"{stamp} {message}\n")
    except Exception:
        pass


def read_stdin() -> bytes:
    """The event JSON; empty if stdin is a terminal or absent."""
    try:
        if sys.stdin is None or sys.stdin.isatty():
            return b""
        return sys.stdin.buffer.read(MAX_STDIN)
    except (OSError, ValueError):
        return b""


def _str(data: dict[str, Any], key: str, limit: int = 4096) -> str | None:
    v = data.get(key)
    # A NUL cannot be in a real path or id, and os functions refuse it.
    return v if isinstance(v, str) and 0 < len(v) <= limit and "\x00" not in v else None


def _inside(path: str, roots: list[str]) -> bool:
    return any(path.startswith(os.path.join(root, "")) for root in roots)


def parse_event(name: str, raw: bytes, claude_dirs: list[str] | None = None) -> Event:
    """The fields we use, each checked; anything odd becomes None, never an exception.

    `claude_dirs`: the session's Claude config folders when they are not this process's own
    (the resident answerer's, as the session's command hooks told it)."""
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    sid = _str(data, "session_id", 128)
    if sid is not None and not paths.is_session_id(sid):
        sid = None
    transcript = None
    tp = _str(data, "transcript_path")
    if tp and sid:
        # Only read transcripts inside Claude Code's own data dirs, named after the session.
        roots = []
        for d in paths.claude_config_folders() if claude_dirs is None else claude_dirs:
            try:
                roots.append(os.path.realpath(os.path.join(d, "projects")))
            except (OSError, ValueError):
                continue
        try:
            resolved: str | None = os.path.realpath(tp)
        except (OSError, ValueError):
            resolved = None
        if (
            resolved is not None
            and os.path.basename(resolved) == f"{sid}.jsonl"
            and _inside(resolved, roots)
        ):
            transcript = resolved
    prompt = data.get("prompt")
    calls = data.get("tool_calls")
    ids = [c.get("tool_use_id") for c in calls if isinstance(c, dict)] if isinstance(
        calls, list) else [data.get("tool_use_id")]
    agent = _str(data, "agent_id", 128)
    said = data.get("last_assistant_message")
    return Event(
        name=name,
        session_id=sid,
        transcript=transcript,
        cwd=_str(data, "cwd"),
        prompt=prompt if isinstance(prompt, str) else None,
        prompt_id=_str(data, "prompt_id", 256),
        raw=raw,
        source=_str(data, "source", 64),
        tools=tuple(i for i in ids[:64] if isinstance(i, str) and paths.is_session_id(i)),
        agent=agent if agent is not None and paths.is_session_id(agent) else None,
        claude_dirs=claude_dirs,
        said=said.rstrip()[-SAID_CHARS:] if isinstance(said, str) else "",
    )


# --- answers -----------------------------------------------------------------------------------


def block_prompt(reason: str) -> dict[str, Any]:
    return {"decision": "block", "reason": reason}


def stop_turn(reason: str, event: str = "PreToolUse") -> dict[str, Any]:
    # continue:false ends the turn before its next API request; before a tool runs, the deny
    # keeps that tool from running as well (after it, there is nothing left to deny).
    answer: dict[str, Any] = {"continue": False, "stopReason": reason}
    if event == "PreToolUse":
        answer["hookSpecificOutput"] = {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    return answer


def _with_message(answer: dict[str, Any], message: str | None) -> dict[str, Any]:
    if message:
        answer["systemMessage"] = (
            answer["systemMessage"] + "\n" + message if "systemMessage" in answer else message
        )
    return answer


# How our own failures end what they say (fail, handle's busy lock): own_failure finds them.
ALLOWING = "; allowing."
FAIL_CLOSED = " (fail_closed is on, so "
UNRECORDED = "; decided from the ledger as last committed"


def own_failure(answer: dict[str, Any]) -> str | None:
    """What an answer says of our own failure (fail's, or a busy lock's: decided, not
    recorded), or None: the resident answerer keeps it as its last error."""
    for field in ("systemMessage", "reason", "stopReason"):
        said = answer.get(field)
        if isinstance(said, str) and "tokenbudget: " in said and any(
                mark in said for mark in (ALLOWING, FAIL_CLOSED, UNRECORDED)):
            return said
    return None


def fail(
    event: str, why: str, fail_closed: bool, ev: Event | None = None
) -> dict[str, Any]:
    """Our own failure: allow and say why, or block if the user chose fail-closed."""
    line = f"tokenbudget: {why}"
    log(f"{event}: {why}")
    print(line, file=sys.stderr)
    if fail_closed and event == "UserPromptSubmit":
        reason = f"{line}{FAIL_CLOSED}this prompt is refused)"
        _keep_stop(ev, event, None, reason)
        return block_prompt(reason)
    # engine.STOPPING's events, named here: our own failure must not hang on the engine's import.
    if fail_closed and event in ("PreToolUse", "PostToolUse", "PostToolBatch"):
        reason = f"{line}{FAIL_CLOSED}the turn stops)"
        _keep_stop(ev, event, None, reason)
        return stop_turn(reason, event)
    return {"systemMessage": f"{line}{ALLOWING}"}


# --- the work ----------------------------------------------------------------------------------


def handle(
    name: str,
    raw: bytes,
    now: float | None = None,
    project: str | None = None,
    claude_dirs: list[str] | None = None,
    retry: bool = False,
    later: list[Callable[[], None]] | None = None,
    async_start: bool = False,
    pause: Any = None,
) -> dict[str, Any]:
    """Answer one event (exceptions are the caller's to turn into a fail-open answer).

    `project` and `claude_dirs`: the session's CLAUDE_PROJECT_DIR and Claude config folders,
    for the resident answerer, whose own environment is no session's. `retry`: an event the
    answerer took and died on, decided although it may be recorded as seen. `later`: given
    (the resident answerer's http events), a call decided before the lock may leave its
    commit there instead of running it, for the caller to run once the answer is out
    (`_commit_later`). `async_start`: the hooks are `install --resident`'s, whose SessionStart
    is async (claude_settings.RESIDENT_ASYNC): nobody waits for it, and its answer, which
    Claude Code gives the model late, is kept `{}` (quiet_start): it says nothing
    (notes and warnings stay for the next hook) and the context hint goes with every prompt
    instead. Only the caller knows the layout: the lean relay hook is registered by
    `install --resident` alone. `pause`: a lock the caller holds (the resident answerer's, one
    event at a time), released while the event waits for its response in the transcript, so
    that other sessions' events are answered meanwhile."""
    from tokenbudget import config as config_mod

    ev = parse_event(name, raw, claude_dirs)
    ev.heard = is_heard(name, async_start)
    try:
        cfg = config_mod.load_config()
    except ConfigError as e:
        # A budget must never vanish silently: say the config is broken, every time.
        return fail(name, f"the config is broken ({e}); budgets are not enforced", False)
    ev.hint = cfg.context_hint and name == ("UserPromptSubmit" if async_start else "SessionStart")
    # The project's own budget file sits at its root, which a subfolder's cwd would miss.
    root = project or os.environ.get("CLAUDE_PROJECT_DIR") or ev.cwd
    if root and "\x00" in root:
        root = None
    broken = None
    try:
        budget_list = config_mod.effective_budgets(cfg, root or None)
    except ConfigError as e:
        # A broken project file (anyone's checkout may hold one) must not switch off the
        # user's own budgets: those still apply; the project's are reported, every time.
        if cfg.fail_closed:
            return fail(name, f"a project budget file is broken ({e})", True, ev)
        from tokenbudget.limits import applies_to, normalize_project

        folder = normalize_project(os.path.abspath(root)) if root else None
        budget_list = [b for b in cfg.budgets if applies_to(b, folder)]
        broken = (
            f"tokenbudget: the project's budget file is broken ({e}); its budgets are not"
            " enforced (yours are)"
        )
        log(f"{name}: {e}")
    at = now if now is not None else clock.now()
    try:
        answer = _handle(ev, cfg, budget_list, at, retry, later, pause)
        return _with_message(answer, broken)
    except LockTimeout as e:
        try:
            answer = _unlocked(ev, cfg, budget_list, at, pause)
        except (TokenbudgetError, OSError) as e2:
            return fail(name, f"{e}; not checked this time ({e2})", cfg.fail_closed, ev)
        # Said every time: each such call made the user wait, and a hung holder can be ended.
        why = f"tokenbudget: {e}{UNRECORDED}"
        log(f"{name}: {why}")
        print(why, file=sys.stderr)
        return _with_message(_with_message(answer, why), broken)
    except (TokenbudgetError, OSError) as e:
        return fail(name, f"{e}", cfg.fail_closed, ev)


def is_heard(name: str, async_start: bool = False) -> bool:
    """Whether anyone reads the answer to event `name`: not to the async ones (UNHEARD, and
    SessionStart with `async_start`: see handle)."""
    return name not in UNHEARD and not (async_start and name == "SessionStart")


def handle_safely(name: str, raw: bytes, **where: Any) -> dict[str, Any]:
    """`handle`, with its own failure turned into an answer: allow and say why, or refuse
    when the user chose fail_closed. The command hooks and the resident answerer both answer
    through here. `where`: handle's project, claude_dirs, retry, later and async_start."""
    try:
        return handle(name, raw, **where)
    except Exception as e:
        fail_closed = False
        try:
            from tokenbudget import config as config_mod

            fail_closed = config_mod.load_config().fail_closed
        except Exception:
            pass
        return fail(name, f"internal error: {type(e).__name__}: {e}", fail_closed)


def _unlocked(ev: Event, cfg: Any, budget_list: list[Any], now: float, pause: Any = None
              ) -> dict[str, Any]:
    """The answer when the lock stays busy (many sessions committing at once): the ledger as
    committed, with this session's news read into it in memory, decides. Nothing is written
    but a stop kept for `status --check`; the read positions do not move, so the next call
    that gets the lock records the same news. Under load the budget still holds: giving up
    and letting everything through is left for what cannot be read at all.

    It waits for the response the event follows where the locked way does (_handle): only
    when that response could carry a blocking budget past its limit; then it reads again."""
    near: list[bool] | None = None if _response_on_disk(ev) else []
    answer = _unlocked_once(ev, cfg, budget_list, now, near)
    if near and _await_paused(ev, pause):
        # The first reading recorded nothing (its warnings given only in memory): the second,
        # on the ledger as committed now, says all of it again.
        answer = _unlocked_once(ev, cfg, budget_list, now, None)
    return answer


def _unlocked_once(ev: Event, cfg: Any, budget_list: list[Any], now: float,
                   near: list[bool] | None) -> dict[str, Any]:
    """One reading and decision of _unlocked (`near`: see _handle_once)."""
    from tokenbudget import sync
    from tokenbudget.store import held

    store = sync.open_store(lock_timeout=cfg.lock_timeout_seconds)
    ledger = store.snapshot()
    if ledger["rebuild"]:
        raise LedgerError("the ledger is being rebuilt")
    # A `tokenbudget allow` is spent by a commit: kept, not spent, for a prompt that gets
    # the lock.
    held(ledger).keep_allow()
    if ev.transcript is not None and ev.session_id is not None:
        sync.sync_session(store, ev.transcript, ev.session_id, prices=cfg.prices, ledger=ledger,
                          max_bytes=MAX_READ_PER_CALL)
    return _decide(ev, cfg, budget_list, ledger, now, near, heard=ev.heard)


def _fingerprint(ev: Event) -> str:
    from tokenbudget.transcripts import blake2b

    return blake2b(ev.name.encode() + b"\0" + ev.raw, digest_size=10).hexdigest()


def _needles(ev: Event) -> tuple[list[bytes], bytes | None]:
    """What the transcript holds once the response the event follows is written: each tool's
    tool_use id (PostToolBatch), and the end of the turn's last text (Stop, SubagentStop: their
    `last_assistant_message`) as Claude Code's JSON writes it (JSON.stringify: the same escapes
    as json.dumps without ensure_ascii; a substring's encoding is a substring of the whole's)."""
    tools = [f'"{t}"'.encode() for t in ev.tools]
    if not ev.said or ev.name not in ("Stop", "SubagentStop"):
        return tools, None
    # A lone surrogate JSON.stringify writes as \udxxx: backslashreplace writes the same.
    return tools, json.dumps(ev.said, ensure_ascii=False)[1:-1].encode("utf-8", "backslashreplace")


def _said_in_turn(tail: bytes, said: bytes, whole: bool) -> bool | None:
    """Whether an assistant line after the tail's last user line (the turn's prompt or its
    last tool results) holds `said`; None if the tail (not the `whole` file) holds neither.

    The same words can be in the transcript before the turn's response is: an earlier turn
    that ended alike ("Done."), a prompt that asked for them, a tool result the answer
    repeats, a request's copy of the conversation. Claude Code writes a turn's last response
    after its last user line, and the next user line only after the Stop hooks ran."""
    first = 0 if whole else tail.find(b"\n") + 1  # the window may start inside a line
    end = len(tail)
    while end > first:
        start = max(first, tail.rfind(b"\n", first, end - 1) + 1)
        line, end = tail[start:end], start
        # An unescaped "type":"user" is a key of the line or of an object in it: parsed to
        # tell which. Lines that hold neither marker are skipped unparsed.
        if said not in line and b'"type":"user"' not in line:
            continue
        try:
            kind = json.loads(line).get("type")
        except (ValueError, AttributeError, RecursionError):
            continue
        if kind == "user":
            return False
        if kind == "assistant" and said in line:
            return True
    return None if not whole else False


def _response_on_disk(ev: Event) -> bool:
    """Whether the transcript holds the response the event follows (one look).

    Claude Code writes transcripts asynchronously: a PostToolBatch can run before the response
    that asked for its tools is on disk, and a Stop before the turn's last response (both seen
    with 2.1.328, the more often the busier the machine; a Stop that read only what was there
    left the turn's last response to the next hook, unsaid and, for a team, unpushed). A
    transcript that cannot be read counts as holding it: the reading that follows says what is
    wrong."""
    tools, said = _needles(ev)
    if (not tools and said is None) or ev.transcript is None or ev.session_id is None:
        return True
    path = ev.transcript
    if ev.agent is not None:
        path = os.path.join(os.path.dirname(path), ev.session_id, "subagents",
                            f"agent-{ev.agent}.jsonl")
    window = 256 * 1024
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while True:
                f.seek(max(0, size - window))
                tail = f.read(window)
                whole = window >= size
                in_turn = True if said is None else _said_in_turn(tail, said, whole)
                if in_turn is False:
                    return False
                if in_turn and all(n in tail for n in tools):
                    return True
                if whole or window >= 16 * 1024 * 1024:
                    return False
                window *= 8  # a large tool result after the response: look further back
    except OSError:
        return True


def _await_response(ev: Event) -> bool:
    """Wait, a little, until the transcript holds the response the event follows; whether it
    came. A hook that read only what was there would let the next request go when that
    response used the budget up (and a Stop would not say so)."""
    deadline = time.monotonic() + TOOL_LINE_WAIT
    while not _response_on_disk(ev):
        if time.monotonic() >= deadline:
            what = (f"of tools {', '.join(ev.tools)[:200]}" if ev.tools
                    else "that ended the turn")
            log(f"{ev.name}: the response {what} was not in the transcript after"
                f" {TOOL_LINE_WAIT:g} s; decided on what was there")
            return False
        try:
            time.sleep(0.005)
        except OSError:
            return False  # waiting is a courtesy: it never fails the hook
    return True


def _await_paused(ev: Event, pause: Any) -> bool:
    """_await_response with `pause` (see handle) released meanwhile. The first reading holds
    nothing by then (it committed, near a limit nothing is left for later, or the lock was
    busy and it recorded nothing): the second reads afresh."""
    if pause is None:
        return _await_response(ev)
    pause.release()
    try:
        return _await_response(ev)
    finally:
        pause.acquire()


def _most(cfg: Any) -> dict[str, float]:
    """The most one response can use, in each unit."""
    rate = max([MAX_RATE, *(float(v) for r in cfg.prices.values() for v in r.values())])
    return {"tokens": float(MAX_RESPONSE_TOKENS), "usd": MAX_RESPONSE_TOKENS * rate / 1e6}


def _could_cross(checks: list[Any], cfg: Any) -> bool:
    """Whether one more response could carry a blocking budget past its limit."""
    most = _most(cfg)
    return any(
        c.budget.mode == "block" and c.limit - c.used <= most.get(c.budget.unit, math.inf)
        for c in checks
    )


def _handle(ev: Event, cfg: Any, budget_list: list[Any], now: float, retry: bool = False,
            later: list[Callable[[], None]] | None = None, pause: Any = None
            ) -> dict[str, Any]:
    """The event decided on what the transcripts hold now; when the response it follows (the
    one that asked for its tools, or a turn's last) is not written yet and could still carry a
    blocking budget past its limit, decided again once it is (most calls are far from every
    limit and never wait).
    `retry`: decided even if recorded as seen; `later`, `pause`: see handle."""
    near: list[bool] | None = None if _response_on_disk(ev) else []
    answer = _handle_once(ev, cfg, budget_list, now, near, again=retry, later=later)
    if near and _await_paused(ev, pause):
        # What the first reading said (warnings it recorded as given, notes it took from the
        # ledger) is said with the second's answer: nobody else will say it.
        first = answer.get("systemMessage")
        answer = _handle_once(ev, cfg, budget_list, now, None, again=True)
        if first:
            said = first.split("\n")
            second = [m for m in answer.pop("systemMessage", "").split("\n") if m not in said]
            answer = _with_message(answer, "\n".join(said + [m for m in second if m]))
    return answer


def _handle_once(
    ev: Event, cfg: Any, budget_list: list[Any], now: float, near: list[bool] | None,
    again: bool = False, later: list[Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """One reading and decision. `near` (when given) learns whether a blocking budget is within
    one response of its limit; `again`: the second reading of the same event; `later`: see
    handle."""
    quick, known = _quick(ev, cfg, budget_list, now, near)
    if quick is not None:
        return quick
    # Imported before the lock rather than under it: every millisecond the lock is held,
    # every other session's hook waits too. The engine is not among them: a call with news
    # far from every limit is decided without it (hot.quiet, in _prepare); one that needs it
    # imports it before the lock too (in _prepare, or below).
    from tokenbudget import pricing, sync  # noqa: F401

    bound = cfg.lock_timeout_seconds
    if ev.name == "SessionEnd":
        # Claude Code gives all SessionEnd hooks about 1.5 s before it exits; whatever is not
        # recorded now is read by the next hook or sync (read positions only move on commit).
        bound = min(bound, SESSION_END_LOCK_WAIT)
    store = sync.open_store(lock_timeout=bound)
    answer: dict[str, Any] | None = {}
    messages: list[str] = []
    rebuild_owed = False
    prepared, known = _prepare(ev, cfg, budget_list, now, near, again, store, known)
    _keep(prepared, known)
    if prepared is None and (budget_list or cfg.team is not None):
        # Decided under the lock: its engine imported before it. (A prepared change decided
        # far from every limit imports it under the lock only if what others committed
        # meanwhile brings a limit near: then it is worked out again there anyway.)
        from tokenbudget import engine  # noqa: F401
    if prepared is not None and later is not None and not near and not cfg.fail_closed:
        # Decided `{}` on the news: the answer goes out first, the commit after it. Not when
        # the tools' response may still come (a second reading follows), nor with fail_closed,
        # whose user chose that our failure to record stops the turn.
        later.append(lambda: _commit_later(ev, cfg, budget_list, now, store, prepared))
        return {}
    if prepared is not None:
        with store.commit_prepared(prepared) as ledger:
            _keep(ledger)
            if ledger is None:
                return {}  # recorded as worked out before the lock: nothing to say
            answer, rebuild_owed = _work(ev, cfg, budget_list, now, near, again, store, ledger,
                                         messages, ev.heard)
    else:
        # A session starting is a cold path: it folds the journal into the snapshot once the
        # journal has grown (store.fold_due); every `claude -p` run starts a session.
        fold = ev.name == "SessionStart" and store.fold_due()
        with store.transaction(known, checkpoint=fold) as ledger:
            _keep(ledger)
            answer, rebuild_owed = _work(ev, cfg, budget_list, now, near, again, store, ledger,
                                         messages, ev.heard)
    if answer is None:
        return {}  # registered twice (plugin and settings, or two scopes): answer once
    if rebuild_owed:
        from pathlib import Path

        report = sync.sync_all(
            store,
            config_dirs=None if ev.claude_dirs is None else [Path(d) for d in ev.claude_dirs],
            prices=cfg.prices,
            retention_days=cfg.retention_days,
            # SessionEnd has ~1.5 s in all; the rest of the rebuild waits for the next call.
            deadline=time.monotonic() + (0.5 if ev.name == "SessionEnd" else 4.0),
            tz=cfg.tz(),
        )
        if report.complete:
            # Rebuilt within this call (the usual case): this event is decided on it too.
            with store.transaction() as ledger:
                answer = _decide(ev, cfg, budget_list, ledger, now, heard=ev.heard)
        elif cfg.fail_closed:
            return fail(ev.name, "the ledger is being rebuilt", True, ev)
        else:
            messages.append("tokenbudget: the ledger is being rebuilt; budgets are not enforced")
    return _with_message(answer, "\n".join(messages) if messages else None)


def _keep(*read: Any) -> None:
    """What the call read, kept until its process ends, in the command hook's own (_kept)."""
    if _kept is not None:
        _kept.extend(read)


def _prepare(
    ev: Event, cfg: Any, budget_list: list[Any], now: float, near: list[bool] | None,
    again: bool, store: Any, known: Any,
) -> tuple[Any, Any]:
    """The call's news read and decided on the ledger read without the lock, when that is all
    it does (the common call with news: a response to count, nothing to say): (a change for
    `store.commit_prepared`, None), so that the lock is held only to append it. Anything else
    (a session starting, a note or warning to give, a fork, a rebuild...) answers (None, the
    ledger read as `transaction` takes it) and is done under the lock as before."""
    if (known is None or ev.name == "SessionStart" or ev.hint or ev.transcript is None
            or ev.session_id is None):
        return None, known  # (the hint is worked out under the lock, with the news)
    pos, ledger = known
    if pos.bad or pos.migrated or ledger["rebuild"] or ledger["notices"] or ledger["ended"]:
        return None, known
    from tokenbudget import ingest, sync
    from tokenbudget.store import Prepared, copy_before_news, held

    # The copy a transaction takes before the lock, given back whole once the news is read.
    base = copy_before_news(ledger, ev.session_id)
    if held(ledger).seen_event(_fingerprint(ev), now) and not again:
        return None, (pos, base())  # answered once, under the lock
    try:
        read = sync.sync_session(store, ev.transcript, ev.session_id, prices=cfg.prices,
                                 ledger=ledger, max_bytes=MAX_READ_PER_CALL)
    except OSError:
        return None, (pos, base())  # said under the lock
    if (read.errors or len(ledger["keys"]) > ingest.COMPACT_WHEN
            or not _quiet(ev, cfg, budget_list, ledger, now, near)):
        return None, (pos, base())

    def holds(current: Any) -> bool:
        return _quiet(ev, cfg, budget_list, current, now, near)

    return Prepared(pos, base(), ledger, ev.session_id, holds), None


def _commit_later(
    ev: Event, cfg: Any, budget_list: list[Any], now: float, store: Any, prepared: Any
) -> None:
    """The commit of a call already answered `{}` (handle's `later`). Raises what the commit
    meets: nothing is recorded then, and the session's next hook reads the same news (read
    positions move only with a commit).

    When others' commits since the reading make the change stale, it is worked out again here,
    and what the engine would now say (a warning, a stop) can no longer go with the answer:
    it is neither given, nor recorded as given (a warning), nor kept as a stop. The session's
    next hook that Claude Code waits for decides on the ledger this commits and says it, and
    `status --check` reads a budget used up from the ledger itself."""
    store.lock_timeout = later_lock_wait(cfg.lock_timeout_seconds)
    with store.commit_prepared(prepared) as ledger:
        if ledger is None:
            return
        _, rebuild_owed = _work(ev, cfg, budget_list, now, None, False, store, ledger, [],
                                heard=False)
    if rebuild_owed:
        log(f"{ev.name}: the ledger is to be rebuilt; left for the session's next hook")


def later_lock_wait(lock_timeout: float) -> float:
    """How long a commit after its answer waits for the ledger lock: the configured time, cut
    so that the session's next event, which waits for it, still answers within
    NEXT_EVENT_BOUND (the default 2 s is not cut). Giving up loses nothing: the news stays
    unread for the next hook, which says why (the answerer keeps the failure for it)."""
    left = NEXT_EVENT_BOUND - lock_timeout - 2 * TOOL_LINE_WAIT
    return min(lock_timeout, max(SESSION_END_LOCK_WAIT, left))


def _work(
    ev: Event, cfg: Any, budget_list: list[Any], now: float, near: list[bool] | None,
    again: bool, store: Any, ledger: Any, messages: list[str], heard: bool = True,
) -> tuple[dict[str, Any] | None, bool]:
    """The call's reading and decision on the ledger held under the lock: (the answer, None
    for an event registered twice; whether a rebuild is owed). `heard`: False when the answer
    has gone already (_commit_later) or nobody reads it (an async SessionStart): nothing is
    said, so notes stay for the next hook."""
    from tokenbudget import sync

    answer: dict[str, Any] = {}
    plugin_root = os.environ.get("CLAUDE_PLUGIN_ROOT")
    if ev.name == "SessionStart" and plugin_root:
        # For doctor (a --plugin-dir plugin is in no settings file); before the double-
        # registration check, which may skip the plugin's copy. Unwritten, it is a lost hint.
        import contextlib

        from tokenbudget import plugin

        data = os.environ.get("CLAUDE_PLUGIN_DATA")
        with contextlib.suppress(OSError):
            plugin.note_run(plugin_root, data, sys.executable, now)
    if store.seen_event(_fingerprint(ev), now) and not again:
        return None, False
    if heard:  # else nobody reads the answer: the notes would be lost
        messages.extend(ledger["notices"])
        ledger["notices"] = []
    rebuild_owed = bool(ledger["rebuild"])
    # While a rebuild is owed the whole history is read again from where folding left it;
    # reading this session on its own first would count its folded part twice.
    if ev.transcript is not None and ev.session_id is not None and not rebuild_owed:
        try:
            read = sync.sync_session(
                store,
                ev.transcript,
                ev.session_id,
                prices=cfg.prices,
                ledger=ledger,
                max_bytes=MAX_READ_PER_CALL,
            )
        except OSError as e:
            messages.append(f"tokenbudget: could not read the transcript ({e.strerror})")
        else:
            # Unreadable files are skipped, not fatal; but this session's budgets then
            # miss their usage, and the user must hear why.
            if read.errors:
                messages.append(
                    f"tokenbudget: could not read the transcript "
                    f"({read.errors[0]}); its usage is not counted"
                )
    if not rebuild_owed:
        _read_ended(store, ledger, ev, cfg, now)
    if ev.session_id is not None and ev.name == "SessionStart":
        from tokenbudget.ingest import Ingestor

        Ingestor(ledger).session(ev.session_id, ev.cwd, now)
    _keep_small(ledger, ev, cfg, now, rebuild_owed)
    if not rebuild_owed:
        answer = _decide(ev, cfg, budget_list, ledger, now, near, heard)
    return answer, rebuild_owed


def _read_ended(store: Any, ledger: Any, ev: Event, cfg: Any, now: float) -> None:
    """After /clear, Claude Code writes the ended session's last cost-state after its last
    hook, while the next session starts: from that SessionStart on, the hooks that come next
    read what the ended sessions of its folder appended, so that budgets count it before a
    sync does."""
    from tokenbudget import sync
    from tokenbudget.schema import FILE_SESSION

    ended = ledger["ended"]
    if ev.name == "SessionStart" and ev.source == "clear" and ev.transcript is not None:
        folder = os.path.dirname(ev.transcript)
        for path, rec in ledger["files"].items():
            if os.path.dirname(path) != folder or rec[FILE_SESSION] == ev.session_id:
                continue
            try:
                recent = os.stat(path).st_mtime >= now - ENDED_WAIT
            except OSError:
                continue
            if recent:
                ended[path] = [rec[FILE_SESSION], now + ENDED_WAIT]
    for path, (sid, until) in list(ended.items()):
        if until < now or (path == ev.transcript and _goes_on(ev)):
            del ended[path]  # long done, or resumed: its own hooks read it
            continue
        try:
            sync.sync_session(
                store, path, sid, prices=cfg.prices, ledger=ledger, max_bytes=MAX_READ_PER_CALL
            )
        except OSError:
            del ended[path]


def _goes_on(ev: Event) -> bool:
    """Whether the event means its session is active again (resumed after /clear ended it):
    an event of its main agent. Not its own SessionEnd, nor a subagent's (SubagentStop, or
    any event naming an `agent_id`), though they carry the session's transcript_path (seen
    with 2.1.328): SessionEnd and SubagentStop hooks run in the background, a background
    subagent may finish after /clear, and on a loaded machine either may come after the next
    session's SessionStart, before the ended session's last total is written."""
    return ev.name in RESUMING and ev.agent is None


def _keep_small(ledger: Any, ev: Event, cfg: Any, now: float, rebuild_owed: bool) -> None:
    """Hooks keep the ledger small on their own, for users who never run the CLI: a new
    session folds idle ones into history; many request records are compacted."""
    from tokenbudget import ingest

    if rebuild_owed:
        return
    if ev.name == "SessionStart":
        from tokenbudget import sync

        ingest.prune_hours(ledger, now, cfg.tz())
        sync.fold_idle(ledger, now - cfg.retention_days * 86400, cfg.prices, FOLD_READ_PER_FILE)
        ingest.compact(ledger, now)
    elif len(ledger["keys"]) > ingest.COMPACT_WHEN:
        ingest.compact(ledger, now)


def _quick(
    ev: Event, cfg: Any, budget_list: list[Any], now: float, near: list[bool] | None = None
) -> tuple[dict[str, Any] | None, Any]:
    """The answer when the call needs no lock: nothing new to read, nothing to say or record.

    Most tool calls are like this. The ledger is read as last committed (it is replaced
    atomically, so this sees a whole one) and never written. Anything else answers None and
    goes the locked way: a session starting, something new in its transcripts, a warning or a
    block to give (and remember), a note waiting, a ledger to rebuild or recover. The ledger
    read here comes along (with its file's stamp) while it is unchanged, so that the locked
    way need not read it again.
    """
    # A session starting always takes the locked way (it records the session); the ledger is
    # still read here, so that the lock is held only to read the journal written since.
    starting = ev.name == "SessionStart"
    try:
        # The hot view first (tokenbudget/hot.py): the part of the ledger this call reads,
        # at a cost that does not grow with the sessions live. Only a quick answer is taken
        # from it; anything else is decided on the whole ledger, read below. The store's
        # module is not imported for it (2 ms a call).
        part = None if starting or ev.hint else _hot(ev, _Files(paths.ledger_file()))
        if part is not None and _nothing_to_do(ev, cfg, budget_list, part, now, near):
            return {}, None
    except Exception:
        pass  # the whole ledger decides, and meets whatever this was
    from tokenbudget.store import open_store

    store = open_store()
    try:
        ledger, stamp = store.read(lazy=True)
        _keep(ledger)
        known = (stamp, ledger) if stamp is not None else None
        quiet = not starting and _nothing_to_do(ev, cfg, budget_list, ledger, now, near)
    except Exception:
        return None, None  # whatever went wrong, the locked way meets it again and says so
    if not quiet:
        return None, known  # something to read, say or remember: the locked way does it
    if ev.hint:
        try:
            return _hinted(ev, cfg, budget_list, ledger, now), None
        except Exception:
            return None, known  # the locked way meets it again and says so
    return {}, None


class _Files:
    """The ledger's files as the store names them (store.JsonFileStore's file and journal)."""

    __slots__ = ("file", "journal")

    def __init__(self, file: str) -> None:
        from tokenbudget.hot import journal_path

        self.file = file
        self.journal = journal_path(file)


def _hot(ev: Event, store: Any) -> Any:
    """The hot view's part of the ledger for the event; None when it cannot be trusted."""
    from tokenbudget import hot
    from tokenbudget.limits import slash_command

    # A slash command's expected cost counts the live sessions' runs of it (engine.measure).
    command = slash_command(ev.prompt) if ev.name == "UserPromptSubmit" and ev.prompt else None
    return hot.read(store.file, store.journal, ev.session_id, command=command)


def _nothing_to_do(
    ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float,
    near: list[bool] | None = None,
) -> bool:
    """Whether the event needs no lock: nothing new in its transcripts or in those of a
    session that ended lately, no note waiting, no ledger to rebuild, nothing to say (`near`:
    see _quiet)."""
    if ledger["rebuild"] or ledger["notices"]:
        return False
    if (
        ev.transcript is not None
        and ev.session_id is not None
        and _unread(ledger["files"], ev.transcript, ev.session_id)
    ):
        return False
    if any(
        until >= now and _unread(ledger["files"], path, sid)
        for path, (sid, until) in ledger["ended"].items()
    ):
        return False  # a session that ended lately wrote its last total
    return _quiet(ev, cfg, budget_list, ledger, now, near)


def _unread(files: dict[str, Any], transcript: str, session_id: str) -> bool:
    """Whether any of the session's transcripts (its subagents' too) differs from what the
    ledger has read: a stat each, no reading. Keep in step with transcripts.session_files."""
    from tokenbudget.ledger import file_identity
    from tokenbudget.schema import FILE_IDENT, FILE_OFFSET

    sub = os.path.join(os.path.dirname(transcript), session_id, "subagents")
    try:
        names = [n for n in os.listdir(sub) if n.startswith("agent-") and n.endswith(".jsonl")]
    except OSError:
        names = []
    for path in [transcript, *(os.path.join(sub, n) for n in names)]:
        try:
            st = os.stat(path)
        except OSError:
            continue  # gone: nothing to read there either way
        rec = files.get(path)
        if rec is None or rec[FILE_OFFSET] != st.st_size or rec[FILE_IDENT] != file_identity(st):
            return True
    return False


def _judge(ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float) -> Any:
    """The engine's (context, checks, decision) for the event; None when no budget concerns it."""
    if not budget_list and cfg.team is None:
        return None  # and the engine need not even be imported
    from tokenbudget import engine

    return engine.judge(ev.name, budget_list, ledger, cfg, now, session_id=ev.session_id,
                        cwd=ev.cwd, prompt=ev.prompt, prompt_id=ev.prompt_id)


def _decide(
    ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float,
    near: list[bool] | None = None, heard: bool = True,
) -> dict[str, Any]:
    """The engine's answer to the event; records the warnings it gives and the `allow` it
    spends, and keeps a refusal or stop for `status --check`. `heard`: False when the answer
    has gone already (_commit_later) or nobody reads it (an async SessionStart): nothing is
    recorded or kept, and `{}` returned."""
    if ev.name != "SessionStart" and not ev.hint and _far(ev, cfg, budget_list, ledger, now,
                                                          near):
        return {}  # allowed, nothing to say or record (a session's start may give a hint)
    judged = _judge(ev, cfg, budget_list, ledger, now)
    if judged is None or ev.name in UNHEARD:
        return {}
    from tokenbudget import engine

    ctx, checks, decision = judged
    if not heard:
        if decision.action != "allow" or decision.records:
            log(f"{ev.name}: decided after its answer had gone, or with one nobody reads"
                f" ({decision.action}); left for the session's next hook")
        return {}
    if decision.action != "allow":
        reason = engine.reason(decision, ledger, ctx.tz)
        _keep_stop(ev, ev.name, decision.check, reason, now)
        return block_prompt(reason) if decision.action == "refuse" else stop_turn(reason, ev.name)
    if near is not None and _could_cross(checks, cfg):
        near.append(True)
    engine.remember(ledger, decision)
    notes = engine.notes(decision, ledger, ctx.tz)
    answer = _hint(ev, checks)
    return _with_message(answer, "\n".join(notes) if notes else None)


def _hint(ev: Event, checks: Any) -> dict[str, Any]:
    """The answer that gives the model the context hint (what each budget has left), when the
    event carries it (Event.hint); else `{}`."""
    from tokenbudget import engine

    left = engine.context_hint(checks) if ev.hint else ""
    if not left:
        return {}
    return {"hookSpecificOutput": {"hookEventName": ev.name, "additionalContext": left}}


def _hinted(ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float
            ) -> dict[str, Any]:
    """A quiet event's answer when it carries the context hint: the hint on `ledger`."""
    judged = _judge(ev, cfg, budget_list, ledger, now)
    return {} if judged is None else _hint(ev, judged[1])


def _far(
    ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float,
    near: list[bool] | None,
) -> bool:
    """Whether every budget that concerns the event is far enough from its limits that the
    engine would allow it with nothing to say or record, and (`near` given) more than one
    response from a blocking limit: found without the engine, and without importing datetime
    and zoneinfo (hot.quiet). Most calls are; for any other, the engine decides."""
    if cfg.team is not None or not budget_list or ev.name in UNHEARD:
        return False
    from tokenbudget import hot

    key = _zone_key(cfg)
    calendar = any(b.kind in hot.CALENDAR for b in budget_list)
    wins = hot.windows(paths.ledger_file(), key, cfg.week_start, now) if calendar else None
    try:
        if hot.quiet(ev.name, budget_list, ledger, now, wins, session_id=ev.session_id,
                     cwd=ev.cwd, prompt=ev.prompt, prompt_id=ev.prompt_id,
                     most=None if near is None else _most(cfg)):
            return True
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # a ledger of an odd shape: the engine meets it and says what it is
    if wins is None and calendar:
        try:  # the next call finds them (this one imports the zone's code either way)
            tz = cfg.tz()
            if _zone_key(cfg) == key:  # the system's zone did not change meanwhile
                hot.keep_windows(paths.ledger_file(), key, cfg.week_start, tz, now)
        except TokenbudgetError:
            pass  # a zone that cannot be read: the engine says so
    return False


def _quiet(
    ev: Event, cfg: Any, budget_list: list[Any], ledger: Any, now: float,
    near: list[bool] | None = None,
) -> bool:
    """Whether the engine has nothing to say to the event and nothing to record for it
    (`near`, when given, learns whether a blocking budget is within one response of its limit)."""
    if _far(ev, cfg, budget_list, ledger, now, near):
        return True
    judged = _judge(ev, cfg, budget_list, ledger, now)
    if judged is None or ev.name in UNHEARD:
        return True
    if near is not None and judged[2].action == "allow" and _could_cross(judged[1], cfg):
        near.append(True)
    return judged[2].action == "allow" and not judged[2].records


def _zone_key(cfg: Any) -> Any:
    from tokenbudget import config as config_mod
    from tokenbudget.hot import zone_key

    return zone_key(cfg.timezone, config_mod.LOCALTIME)


def _keep_stop(
    ev: Event | None, event: str, check: Any, reason: str, now: float | None = None
) -> None:
    """Keep a refusal or stop: `claude -p` shows its user neither (`status --check`). Never
    raises: the answer it goes with must still be given."""
    try:
        at = now if now is not None else clock.now()
    except TokenbudgetError:
        # A bad TOKENBUDGET_NOW: the fail-closed answer still goes out, stamped now.
        at = time.time()  # the real clock
    b = check.budget if check is not None else None
    entry = {
        "at": at,
        "session": ev.session_id if ev is not None else None,
        "prompt_id": ev.prompt_id if ev is not None else None,
        "what": "refused" if event == "UserPromptSubmit" else "stopped",
        "event": event,
        "budget": b.id if b is not None else None,
        "kind": b.kind if b is not None else None,
        "unit": b.unit if b is not None else None,
        "used": check.used if check is not None else None,
        "expected": check.expected if check is not None else None,
        "limit": check.limit if check is not None else None,
        "reason": reason,
    }
    try:
        from tokenbudget import stops

        stops.record(entry)
    except OSError as e:
        log(f"{event}: could not keep the stop for `status --check` ({e})")


def _check_key(check: Any) -> str:
    return f"{check.budget.id}|{check.budget.unit}"


def _resident(name: str, raw: bytes, answer: dict[str, Any]) -> dict[str, Any]:
    """With the resident answerer installed, the command hooks that stay make sure it answers
    before a session or a turn goes on: started when it is not running; a prompt refused while
    another process holds its port (tool events would go there), or (fail-closed) while it
    cannot be started or its key file is of an older layout (installed again, it answers).
    Never raises: the answer it amends must still be given."""
    if answer.get("decision") == "block":
        return answer  # no turn follows
    try:
        from tokenbudget import relay, resident

        ev = parse_event(name, raw)
        found, why = resident.ensure(ev.session_id or "", os.environ.get("CLAUDE_PROJECT_DIR", ""),
                                     relay.session_dirs())
        if found in ("ours", "off"):
            return answer
        setup = resident.load()
        if setup is None and found != "old":
            return answer  # uninstalled since
        message = resident.note(found, why, setup.port if setup is not None else 0)
        log(f"{name}: {message}")
        if name == "UserPromptSubmit":
            from tokenbudget import config as config_mod

            if found == "stranger" or config_mod.load_config().fail_closed:
                reason = message + ("; until then prompts are refused" if found == "stranger"
                                    else " (fail_closed is on, so this prompt is refused)")
                _keep_stop(ev, name, None, reason)
                return block_prompt(reason)
        return _with_message(answer, message)
    except Exception as e:
        return _with_message(answer, f"tokenbudget: could not check the resident answerer ({e})")


def main(argv: list[str] | None = None, stdin: bytes | None = None, retry: bool = False,
         async_start: bool = False) -> None:
    """Entry point: always prints one JSON object and exits 0. `stdin`: the event, when the
    caller (tokenbudget/relay.py) has read it already; `retry`, `async_start`: see handle."""
    args = sys.argv[1:] if argv is None else argv
    name = args[0] if args else ""
    raw = read_stdin() if stdin is None else stdin
    if not name:
        try:
            data = json.loads(raw) if raw.strip() else {}
            name = data.get("hook_event_name", "") if isinstance(data, dict) else ""
        except (ValueError, RecursionError):  # deeply nested input must not escape as a traceback
            name = ""
    if not isinstance(name, str) or name not in _EVENTS:
        print("{}")  # an event we do not know: nothing to do
        return
    if os.environ.get("TOKENBUDGET_DISABLE") == "1":
        print("{}")
        return
    answer = handle_safely(name, raw, retry=retry, async_start=async_start)
    if name in ("SessionStart", "UserPromptSubmit") and os.path.exists(
        os.path.join(paths.data_folder(), "resident", "key.json")
    ):
        answer = _resident(name, raw, answer)
    if async_start and name == "SessionStart":
        answer = quiet_start(answer)
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


def run() -> None:
    """The command hook's process: what the commands we install run (`python -P -c 'from
    tokenbudget.hook import run; run()' EVENT`). It is main() in a process of its own, which
    Claude Code starts for one event and which ends with it, so it pays neither for the cyclic
    garbage collector (off: nothing the call makes outlives the process; about 15 ms of parsing
    and copying the ledger at 2,000 live sessions) nor for freeing what it read object by
    object, nor for the interpreter's finalization: once the answer is out, the process ends
    at once (end_process). Everything the call must do is done before main returns: its commit
    is written and fsynced before the answer (store), the log line written and closed, a
    background sync started (team.cache.spawn_sync). Whatever escapes main ends the process
    the usual way. Anyone else calls main(), which returns and leaves the collector as it was
    (tests; the resident answerer calls handle; commands written by an older install)."""
    own_process()
    main()
    end_process()


def own_process() -> None:
    """This process is a command hook's own, for one call (run, relay_hook.run): the cyclic
    garbage collector off, and what the call reads kept (_kept) until end_process."""
    global _kept
    import gc

    gc.disable()
    _kept = []


def end_process() -> None:
    """End this process once its answer is out: stdout and stderr flushed (a flush that fails
    raises, as it would at a normal exit), then os._exit(0): nothing freed, no finalization."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    os._exit(0)


def quiet_start(answer: dict[str, Any]) -> dict[str, Any]:
    """What an async SessionStart prints: `{}`. Claude Code 2.1.328 does read its answer, late
    (from the session's second request on, to the model, not the user), so whatever it would
    say (a failure: the prompt's hook meets and says it again) goes to the log instead."""
    if answer:
        log(f"SessionStart (async, not said): {json.dumps(answer)[:500]}")
    return {}


if __name__ == "__main__":
    run()
