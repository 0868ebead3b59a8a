"""A fake Anthropic Messages API on 127.0.0.1 that real Claude Code can talk to.

What it answers is chosen from the prompt text of each request:

- ``LOOP N`` (e.g. "please LOOP 3"): a Bash ``echo step k`` tool call until N tool results have
  come back, then a text answer. ``LOOP forever`` or ``LOOP 0`` never stops asking for Bash.
- ``AGENT``: the main agent calls the ``Agent`` tool once; the subagent answers with text
  (with ``SUBLOOP N`` in the prompt, after N Bash steps of its own).
- ``PARALLEL N``: the main agent asks for N Bash calls in one answer (once), then answers text.
- ``THINK``: every answer to that prompt opens with a thinking block (with its signature).
- ``MAXTOK``: the first answer to that prompt stops at ``max_tokens`` (text cut short); Claude
  Code's request to go on carries no such word.
- ``HUGE``: every answer to that prompt reports a context of about a million tokens, so that
  Claude Code (main agent or subagent) compacts on its own before its next request.
- a compaction request (``/compact`` or automatic): an ``<analysis>``/``<summary>`` text, the
  shape Claude Code accepts at the first try (without the tags it asks a second time).
- anything else: one text answer.

Failures can be injected, none by default: ``fail_next`` queues what the next Messages requests
get instead of a whole answer (an HTTP 529 or 500, or an ``error`` event before any usage; an
``error`` event after ``message_start``, or a connection dropped there), one request each, in
order.

Every streamed answer carries usage no other request shares (input 900+n, cache creation
100+n, cache read 2000+10n, output 40+n for the n-th request), so a test can tell exactly which
requests a transcript or ledger counted. Ids are ``msg_fake_NNNNN`` and the ``request-id``
header ``req_fake_NNNNN``, as in the recorded fixtures.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)

_LOOP = re.compile(r"\bLOOP\s+(forever|\d+)\b")
_AGENT = re.compile(r"\bAGENT\b")
_SUB_LOOP = re.compile(r"\bSUBLOOP\s+(\d+)\b")
_HUGE = re.compile(r"\bHUGE\b")
_PARALLEL = re.compile(r"\bPARALLEL\s+(\d+)\b")
_THINK = re.compile(r"\bTHINK\b")
_MAXTOK = re.compile(r"\bMAXTOK\b")
HUGE_CONTEXT = 990_000
# Claude Code's compaction prompt (2.1.328) forbids tools and asks for a <summary> block; it
# arrives as the last text of the last user message, with the full tool list still attached.
_COMPACT = re.compile(r"Do NOT call any tools.*<summary>", re.DOTALL)


@dataclass(frozen=True)
class ServedRequest:
    """One Messages API answer the fake served, with the exact usage it reported."""

    n: int
    id: str
    request_id: str
    sub: bool
    model: str
    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int
    prompt: str
    kind: str  # "text", "bash", "agent", "compact" or "max_tokens"
    # The session that sent the request: its X-Claude-Code-Session-Id header (a subagent's
    # requests carry their parent's), else the request's metadata.user_id.
    session_id: str | None = None
    streamed: bool = True
    # "complete", or how a stream injected by ``fail_next`` ended after its message_start:
    # "error_event" (an overloaded_error event) or "drop" (the connection closed).
    outcome: str = "complete"

    def usage(self) -> dict[str, int]:
        """The four token counts served, keyed like the API's usage object."""
        return {name: getattr(self, name) for name in USAGE_FIELDS}

    def total_tokens(self) -> int:
        """All four token counts added up."""
        return sum(self.usage().values())

    def truth(self) -> dict[str, Any]:
        """One line of truth.jsonl, in the fixtures' format."""
        line: dict[str, Any] = {"id": self.id, "sub": self.sub, "model": self.model}
        line.update(self.usage())
        if self.session_id is not None:
            line["session"] = self.session_id
        return line


@dataclass(frozen=True)
class HttpCall:
    """Any HTTP request the fake received, answered or not, for debugging and assertions."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


# What ``FakeAnthropic.fail_next`` can inject: the HTTP status and error type of those
# refused before any event, and the two ways a started stream can fail.
REFUSALS = {"overloaded": (529, "overloaded_error"), "server_error": (500, "api_error")}
STREAM_FAILURES = ("error_event", "drop")
EARLY_ERROR = "early_error"


@dataclass
class _Plan:
    """What to put in one answer: its kind and at most one tool call."""

    kind: str
    tool: tuple[str, dict[str, Any]] | None
    prompt: str
    sub: bool
    # ``PARALLEL N``: this many calls of `tool` in one answer, steps 1..N.
    calls: int = 1


def usage_for(n: int) -> dict[str, int]:
    """The usage served for the n-th request (1-based), distinct for every n."""
    return {
        "input_tokens": 900 + n,
        "cache_creation_input_tokens": 100 + n,
        "cache_read_input_tokens": 2000 + 10 * n,
        "output_tokens": 40 + n,
    }


def _text_blocks(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [
        b.get("text", "")
        for b in content
        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    ]


def prompt_of(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The last prompt text in a request and how many tool results came back after it.

    Claude Code sends ``<system-reminder>`` text blocks (and background-task notifications
    wrapped in one) next to the prompt, tool results as user messages, and merges consecutive
    user entries into one message; so the prompt is the last text block that is not a reminder.
    """
    tool_results = 0
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        texts = [t for t in _text_blocks(content) if not _is_reminder(t)]
        if texts:
            # A compaction request puts its instructions after the pending tool result.
            return texts[-1], tool_results
        if isinstance(content, list):
            tool_results += sum(
                1 for b in content if isinstance(b, dict) and b.get("type") == "tool_result"
            )
    return "", tool_results


def _is_reminder(text: str) -> bool:
    return text.lstrip().startswith("<system-reminder>")


class FakeAnthropic:
    """A threaded fake of the Messages API; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        bash_command: str = "echo step {step}",
        delay: float = 0.0,
        max_requests: int = 200,
        stream_pause: float = 0.0,
    ) -> None:
        #: The Bash command a LOOP asks for; ``{step}`` becomes 1, 2, ... Change it before the
        #: run to make the tool leave a trace (e.g. ``"echo step {step} >> ran.txt"``).
        self.bash_command = bash_command
        #: Seconds to wait before answering each request.
        self.delay = delay
        #: Seconds to wait in the middle of each streamed answer, after its first block: a signal
        #: sent then lands while Claude Code holds the request's input usage but not its end.
        self.stream_pause = stream_pause
        #: From this many served requests on, every answer is plain text, so that a LOOP that
        #: enforcement failed to stop ends soon and the test fails fast instead of timing out.
        self.max_requests = max_requests
        self._lock = threading.Lock()
        self._served: list[ServedRequest] = []
        self._calls: list[HttpCall] = []
        self._max_tools = 0
        self._failures: list[str | None] = []
        self._refused: list[HttpCall] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-anthropic", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the fake listens on."""
        assert self._server is not None, "fake API not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The value for ANTHROPIC_BASE_URL."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, *failures: str | None) -> None:
        """Have the next Messages requests fail, one each, in order: "overloaded" (HTTP 529)
        or "server_error" (HTTP 500) before any event, "error_event" (message_start with its
        usage and a first block, then an overloaded_error event), "drop" (the same start,
        then the connection closes) or "early_error" (HTTP 200, then an overloaded_error event
        before any message_start); None answers that one as usual. Requests after them are
        answered as usual."""
        known = (None, EARLY_ERROR, *REFUSALS, *STREAM_FAILURES)
        unknown = [f for f in failures if f not in known]
        assert not unknown, f"unknown failures: {unknown}"
        with self._lock:
            self._failures.extend(failures)

    def _take_failure(self) -> str | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    # -- what was served --------------------------------------------------------------------------

    @property
    def requests(self) -> list[ServedRequest]:
        """Every Messages answer served so far, in order (a copy)."""
        with self._lock:
            return list(self._served)

    @property
    def refused(self) -> list[HttpCall]:
        """The Messages requests ``fail_next`` refused before any usage: an HTTP error, or an
        error event before message_start."""
        with self._lock:
            return list(self._refused)

    @property
    def calls(self) -> list[HttpCall]:
        """Every HTTP request received so far, in order (a copy)."""
        with self._lock:
            return list(self._calls)

    def total_usage(self) -> dict[str, int]:
        """Each usage field summed over every request served."""
        served = self.requests
        return {name: sum(getattr(r, name) for r in served) for name in USAGE_FIELDS}

    def total_tokens(self) -> int:
        """All tokens served: the four usage fields summed over every request."""
        return sum(self.total_usage().values())

    def write_truth(self, path: Path) -> Path:
        """Write truth.jsonl: one served request a line, as in the fixtures."""
        lines = [json.dumps(r.truth()) for r in self.requests]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    def wait_for(self, count: int, timeout: float = 30.0) -> list[ServedRequest]:
        """Wait until at least `count` requests were served (background subagents lag)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            served = self.requests
            if len(served) >= count:
                return served
            time.sleep(0.05)
        raise TimeoutError(f"only {len(self.requests)} of {count} requests arrived")

    # -- deciding an answer -----------------------------------------------------------------------

    def _record_call(self, call: HttpCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _is_subagent(self, body: dict[str, Any]) -> bool:
        # A subagent gets a shorter tool list than the main agent (8 vs 12 in 2.1.328); the
        # main agent's first request always comes first, so the longest list seen is the main's.
        count = len(body.get("tools") or [])
        with self._lock:
            self._max_tools = max(self._max_tools, count)
            return 0 < count < self._max_tools

    def _plan(self, body: dict[str, Any]) -> _Plan:
        messages = body.get("messages") or []
        prompt, tool_results = prompt_of(messages)
        sub = self._is_subagent(body)
        with self._lock:
            exhausted = len(self._served) >= self.max_requests
        if exhausted:
            return _Plan("text", None, prompt, sub)
        if _COMPACT.search(prompt):
            return _Plan("compact", None, prompt, sub)
        if _MAXTOK.search(prompt) and tool_results == 0:
            return _Plan("max_tokens", None, prompt, sub)
        parallel = _PARALLEL.search(prompt)
        if parallel and not sub and tool_results == 0:
            tool = ("Bash", {"command": self.bash_command, "description": "step"})
            return _Plan("bash", tool, prompt, sub, calls=int(parallel.group(1)))
        sub_loop = _SUB_LOOP.search(prompt)
        if sub_loop and sub and tool_results < int(sub_loop.group(1)):
            command = self.bash_command.format(step=tool_results + 1)
            return _Plan("bash", ("Bash", {"command": command, "description": "step"}), prompt, sub)
        loop = _LOOP.search(prompt)
        if loop and not sub:
            wanted = loop.group(1)
            forever = wanted == "forever" or int(wanted) == 0
            if forever or tool_results < int(wanted):
                step = tool_results + 1
                command = self.bash_command.format(step=step)
                tool = ("Bash", {"command": command, "description": "step"})
                return _Plan("bash", tool, prompt, sub)
        if _AGENT.search(prompt) and not sub and tool_results == 0:
            tool = (
                "Agent",
                {
                    "description": "helper",
                    # `AGENT SUBLOOP 3` has the subagent run three Bash steps first.
                    "prompt": "Answer briefly."
                    + (f" SUBLOOP {m.group(1)}" if (m := _SUB_LOOP.search(prompt)) else "")
                    + (" HUGE" if _HUGE.search(prompt) else ""),
                    "subagent_type": "general-purpose",
                },
            )
            return _Plan("agent", tool, prompt, sub)
        return _Plan("text", None, prompt, sub)

    def _serve(
        self, body: dict[str, Any], header_session: str | None = None, outcome: str = "complete"
    ) -> tuple[ServedRequest, _Plan]:
        plan = self._plan(body)
        with self._lock:
            n = len(self._served) + 1
            usage = usage_for(n)
            if _HUGE.search(plan.prompt) and plan.kind != "compact":
                # A context near the window's end: Claude Code compacts on its own next.
                usage["cache_read_input_tokens"] += HUGE_CONTEXT
            session = (body.get("metadata") or {}).get("user_id")
            served = ServedRequest(
                n=n,
                id=f"msg_fake_{n:05d}",
                request_id=f"req_fake_{n:05d}",
                sub=plan.sub,
                model=str(body.get("model") or "claude-fake"),
                prompt=plan.prompt,
                kind=plan.kind,
                session_id=header_session or _session_from_metadata(session),
                streamed=bool(body.get("stream")),
                outcome=outcome,
                **usage,
            )
            self._served.append(served)
        return served, plan


def _session_from_metadata(user_id: Any) -> str | None:
    # Claude Code puts the session id into metadata.user_id (a JSON string in 2.1.x).
    if not isinstance(user_id, str):
        return None
    try:
        data = json.loads(user_id)
    except ValueError:
        match = re.search(r"session_([0-9a-f-]{36})", user_id)
        return match.group(1) if match else None
    value = data.get("session_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _blocks(served: ServedRequest, plan: _Plan) -> list[dict[str, Any]]:
    """The content blocks of one answer, as the fixtures' fake wrote them."""
    if plan.kind == "compact":
        # No LOOP/AGENT words here: the summary is sent back in later requests.
        text = (
            f"<analysis>Fake analysis {served.n}.</analysis>\n"
            f"<summary>Fake summary {served.n}: earlier fake steps ran.</summary>"
        )
        return [{"type": "text", "text": text}]
    blocks: list[dict[str, Any]] = []
    if _THINK.search(plan.prompt):
        blocks.append(
            {"type": "thinking", "thinking": f"Thought {served.n}.", "signature": f"sig{served.n}"}
        )
    blocks.append({"type": "text", "text": f"Step {served.n}."})
    if plan.kind == "max_tokens":
        blocks.append({"type": "text", "text": f"Answer {served.n} is cut"})
    elif plan.tool is None:
        blocks.append({"type": "text", "text": f"Answer {served.n}."})
    elif plan.calls > 1:
        name, tool_input = plan.tool
        for k in range(1, plan.calls + 1):
            command = str(tool_input["command"]).format(step=k)
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{served.n:05d}_{k}",
                    "name": name,
                    "input": dict(tool_input, command=command),
                }
            )
    else:
        name, tool_input = plan.tool
        blocks.append(
            {"type": "tool_use", "id": f"toolu_{served.n:05d}", "name": name, "input": tool_input}
        )
    return blocks


def _message(served: ServedRequest, plan: _Plan) -> dict[str, Any]:
    """The whole answer as one Messages API object (the non-streaming form)."""
    return {
        "id": served.id,
        "type": "message",
        "role": "assistant",
        "model": served.model,
        "content": _blocks(served, plan),
        "stop_reason": _stop_reason(plan),
        "stop_sequence": None,
        "usage": served.usage(),
    }


def _stop_reason(plan: _Plan) -> str:
    if plan.kind == "max_tokens":
        return "max_tokens"
    return "tool_use" if plan.tool else "end_turn"


def _events(served: ServedRequest, plan: _Plan) -> list[dict[str, Any]]:
    """The server-sent events of one streamed answer."""
    message = _message(served, plan)
    # The real API reports input and cache counts at the start but output only at the end.
    start = dict(message, content=[], stop_reason=None, usage=dict(served.usage(), output_tokens=1))
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        first: dict[str, Any]
        deltas: list[dict[str, Any]]
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": block["text"]}]
        elif block["type"] == "thinking":
            first = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            first = dict(block, input={})
            raw = json.dumps(block["input"])
            half = len(raw) // 2
            # Tool input arrives as pieces of JSON text, as the real API streams it.
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in (raw[:half], raw[half:])
            ]
        events.append({"type": "content_block_start", "index": index, "content_block": first})
        events += [
            {"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas
        ]
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": served.usage(),
        },
        {"type": "message_stop"},
    ]
    return events


class _Handler(BaseHTTPRequestHandler):
    owner: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _send_json(self, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any) -> None:
        self.owner._record_call(HttpCall(self.command, self.path, dict(self.headers), body))

    def do_GET(self) -> None:
        self._record(None)
        self._send_json({})

    def do_HEAD(self) -> None:
        self._record(None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        path = urlsplit(self.path).path
        if path == "/v1/messages/count_tokens":
            self._send_json({"input_tokens": 1000})
            return
        if path != "/v1/messages" or not isinstance(body, dict):
            self._send_json({})
            return
        failure = self.owner._take_failure()
        if failure in REFUSALS:
            self._refuse(*REFUSALS[failure], body)
            return
        if failure == EARLY_ERROR:
            self._refuse_in_stream(body)
            return
        outcome = failure or "complete"
        session = self.headers.get("X-Claude-Code-Session-Id")
        served, plan = self.owner._serve(body, session, outcome)
        if self.owner.delay:
            time.sleep(self.owner.delay)
        if not served.streamed:
            # Not seen from 2.1.328, but a non-streaming call costs tokens too: answer and count it.
            self._send_json(_message(served, plan), headers={"request-id": served.request_id})
            return
        events = _events(served, plan)
        if outcome in STREAM_FAILURES:
            # The start (its usage) and the first block go out, then the stream fails.
            events = events[: events.index({"type": "content_block_stop", "index": 0}) + 1]
            if outcome == "error_event":
                events.append({"type": "error", "error": _error("overloaded_error")})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("request-id", served.request_id)
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for event in events:
                chunk = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
                self.wfile.write(chunk.encode())
                if self.owner.stream_pause and event == {"type": "content_block_stop", "index": 0}:
                    self.wfile.flush()
                    time.sleep(self.owner.stream_pause)
            self.wfile.flush()
        except OSError:
            pass  # Claude Code went away mid-answer (a test interrupted it): served all the same
        self.close_connection = True

    def _note_refused(self, body: Any) -> None:
        with self.owner._lock:
            self.owner._refused.append(HttpCall(self.command, self.path, dict(self.headers), body))

    def _refuse(self, status: int, kind: str, body: Any) -> None:
        """An HTTP error before any event, as the API answers when overloaded or failing."""
        self._note_refused(body)
        data = json.dumps({"type": "error", "error": _error(kind)}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse_in_stream(self, body: Any) -> None:
        """HTTP 200, then an error event before any message_start: no usage is sent."""
        self._note_refused(body)
        event = {"type": "error", "error": _error("overloaded_error")}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(f"event: error\ndata: {json.dumps(event)}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True


def _error(kind: str) -> dict[str, str]:
    return {"type": kind, "message": f"fake {kind}"}


def iter_truth(path: Path) -> Iterator[dict[str, Any]]:
    """Read a truth.jsonl back."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


__all__ = [
    "USAGE_FIELDS",
    "FakeAnthropic",
    "HttpCall",
    "ServedRequest",
    "iter_truth",
    "prompt_of",
    "usage_for",
]
