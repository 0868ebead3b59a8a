#!/usr/bin/env python3
"""Synthetic Claude Code history in the transcript format of 2.1.328, deterministic from a seed.

    python bench/synth.py OUT --sessions 3000 --target-gb 1 --seed 1

writes `OUT/.claude/projects/<project>/<session>.jsonl`, subagent transcripts in
`<session>/subagents/agent-<id>.jsonl` (+ `.meta.json`), and `OUT/truth.json`: the exact totals
of every API request generated, per UTC day, model, project and session. Point tools at it with
`HOME=OUT` or `CLAUDE_CONFIG_DIR=OUT/.claude`.

What it imitates (see tests/fixtures/claude-code-2.1.328): one API response written as one
assistant line per content block, all repeating message.id, requestId and usage; tool results
as user lines; typed prompts and slash commands (`<command-name>` plus an isMeta expansion)
with a promptId; background subagents whose lines carry the parent sessionId, isSidechain and
the launching turn's promptId; `-c` continuations (several processes in one file), each process
ending with a cumulative `cost-state` (for a share of them); forks (`--fork-session`) that copy
the parent's lines re-stamped with the new sessionId; the bulky lines that are not usage
(api-request-shape, attachments, tool output) that a reader must skip quickly.

Timestamps spread over `--days` days before `--end` (default: today 00:00 UTC). The output is
identical for the same arguments; pass `--end` explicitly to reproduce it on another day.

`--compaction RATE` adds compactions whose requests appear in no assistant line, only in the
next cost-state (as seen in the fixture `compacted`): truth.json keeps them apart ("hidden"),
because a reader of assistant lines alone (ccusage) cannot see them. Off by default.
A fork's cost-state starts from its parent's last one, which carries what the fork never
copies (the parent's subagents and compactions; a fork after a compaction copies from the last
`compact_boundary` on), and its copies keep naming the session that made each request
(`requestSessionId`), a fork of a fork's too; a quarter of forks are made from another
project's directory. A parent with subagents or compactions is forked
only when its last process wrote a cost-state. A fork of a parent whose last process wrote
none (killed) starts from the last total the parent's transcript holds, as Claude Code 2.1.328
does (seen with a parent killed, and with one still running, when the fork was made).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = "2.1.328"
# (model, share of sessions as the main model)
MODELS = (
    ("claude-opus-4-5-20251101", 0.40),
    ("claude-sonnet-4-5-20250929", 0.35),
    ("claude-opus-5-5", 0.15),
    ("claude-haiku-4-5-20251001", 0.10),
)
SUB_MODELS = ("claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929")
# USD per million tokens (input, output, cache write 5m, cache write 1h, cache read): only for
# plausible costUSD in cost-state lines.
PRICES = {
    "claude-opus-4-5-20251101": (5, 25, 6.25, 10, 0.5),
    "claude-sonnet-4-5-20250929": (3, 15, 3.75, 6, 0.3),
    "claude-opus-5-5": (4, 20, 5, 8, 0.2),
    "claude-haiku-4-5-20251001": (1, 5, 1.25, 2, 0.1),
}
COMMANDS = ("/test", "/review", "/fix-lint", "/deploy-check", "/audit:deps", "/explain")
WORDS = (
    "def", "return", "self", "import", "from", "class", "if", "else", "for", "while", "with",
    "try", "except", "raise", "yield", "lambda", "None", "True", "False", "value", "result",
    "data", "path", "file", "line", "error", "token", "budget", "ledger", "hook", "session",
    "request", "usage", "model", "cache", "input", "output", "read", "write", "lock", "json",
    "dict", "list", "str", "int", "float", "function", "test", "assert", "expected", "actual",
    "config", "project", "folder", "transcript",
)
FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")


def _dumps(obj: Any) -> str:
    # Claude Code writes compact JSON with non-ASCII characters as they are.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def iso(ts: float) -> str:
    """Epoch seconds as Claude Code writes timestamps: 2026-11-28T17:14:41.001Z."""
    ms = round(ts * 1000)
    d = datetime.fromtimestamp(ms // 1000, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def day_of(ts: float) -> str:
    ms = round(ts * 1000)
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%d")


def project_dirname(cwd: str) -> str:
    return cwd.replace("/", "-").replace(".", "-")


@dataclass
class Tally:
    """Token totals in ccusage's names, and how many requests made them."""

    requests: int = 0
    inputTokens: int = 0
    outputTokens: int = 0
    cacheCreationTokens: int = 0
    cacheReadTokens: int = 0

    def add(self, u: dict[str, int]) -> None:
        self.requests += 1
        self.inputTokens += u["input_tokens"]
        self.outputTokens += u["output_tokens"]
        self.cacheCreationTokens += u["cache_creation_input_tokens"]
        self.cacheReadTokens += u["cache_read_input_tokens"]

    def to_json(self) -> dict[str, int]:
        d = {k: getattr(self, k) for k in ("requests", *FIELDS)}
        d["totalTokens"] = sum(getattr(self, k) for k in FIELDS)
        return d


@dataclass
class Truth:
    totals: Tally = field(default_factory=Tally)
    hidden: Tally = field(default_factory=Tally)  # compaction requests: in cost-state only
    daily: dict[str, Tally] = field(default_factory=dict)
    models: dict[str, Tally] = field(default_factory=dict)
    projects: dict[str, Tally] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)  # session -> total tokens, hidden incl.
    commands: dict[str, Tally] = field(default_factory=dict)

    def add(self, sid: str, cwd: str, model: str, ts: float, u: dict[str, int], command: str,
            hidden: bool = False) -> None:
        if hidden:
            self.hidden.add(u)
        else:
            self.totals.add(u)
            self.daily.setdefault(day_of(ts), Tally()).add(u)
        self.models.setdefault(model, Tally()).add(u)
        self.projects.setdefault(cwd, Tally()).add(u)
        self.commands.setdefault(command, Tally()).add(u)
        self.sessions[sid] = self.sessions.get(sid, 0) + sum(
            u[k] for k in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                           "cache_read_input_tokens"))


class Padding:
    """Tool output text: slices of one deterministic pool, so generating 1 GB stays fast."""

    def __init__(self, rng: random.Random, size: int = 1 << 20) -> None:
        parts: list[str] = []
        n = 0
        while n < size:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
            indent = "    " * rng.randint(0, 3)
            tail = "  # \u2014 ok" if rng.random() < 0.05 else ""
            line = indent + line + tail
            parts.append(line)
            n += len(line) + 1
        self.pool = "\n".join(parts)

    def text(self, rng: random.Random, n: int) -> str:
        n = max(1, int(n))
        out = []
        while n > 0:
            take = min(n, len(self.pool) // 2)
            start = rng.randrange(0, len(self.pool) - take)
            out.append(self.pool[start:start + take])
            n -= take
        return "".join(out)


@dataclass
class Ctx:
    """One session being written."""

    sid: str
    cwd: str
    slug: str
    model: str
    lines: list[str] = field(default_factory=list)  # the main transcript
    agents: dict[str, list[str]] = field(default_factory=dict)  # agent id -> lines
    agent_meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    parent_uuid: str | None = None
    # model -> 4 counts, cost, 5m and 1h cache writes: what the next cost-state says
    cumulative: dict[str, list[float]] = field(default_factory=dict)
    # `cumulative` as the transcript's last cost-state wrote it: what a fork starts from
    written: dict[str, list[float]] = field(default_factory=dict)
    context: int = 0  # cache-read size grows as the conversation does
    requests: int = 0
    has_sub: bool = False
    has_hidden: bool = False
    ended_with_total: bool = False  # its last process wrote a cost-state
    boundary: int = 0  # index in `lines` of the last compact_boundary (a fork copies from it)
    last_ts: float = 0.0
    fork_of: str | None = None


class Synth:
    """Makes the lines; `Synth(seed).turn(...)` is also used by the other benchmarks."""

    def __init__(self, seed: int, truth: Truth | None = None, lean: bool = False) -> None:
        self.rng = random.Random(seed)
        self.pad = Padding(random.Random(seed ^ 0x5EED))
        self.truth = truth if truth is not None else Truth()
        self.lean = lean
        self._msg = 0

    # --- ids ---------------------------------------------------------------------------------

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _b62(self, n: int) -> str:
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        return "".join(alphabet[self.rng.randrange(62)] for _ in range(n))

    def msg_id(self) -> str:
        return "msg_01" + self._b62(22)

    def req_id(self) -> str:
        return "req_011C" + self._b62(20)

    # --- lines -------------------------------------------------------------------------------

    def _common(self, c: Ctx, ts: float, *, side: bool = False, agent: str | None = None
                ) -> dict[str, Any]:
        d: dict[str, Any] = {"parentUuid": c.parent_uuid, "isSidechain": side}
        if agent:
            d["agentId"] = agent
        return d

    def _tail(self, c: Ctx, d: dict[str, Any], ts: float) -> dict[str, Any]:
        d.update({
            "uuid": self.uuid(), "timestamp": iso(ts), "userType": "external",
            "entrypoint": "cli", "cwd": c.cwd, "sessionId": c.sid, "version": VERSION,
            "gitBranch": "main", "slug": c.slug,
        })
        return d

    def _emit(self, c: Ctx, out: list[str], d: dict[str, Any]) -> None:
        if "uuid" in d:
            c.parent_uuid = d["uuid"]
        out.append(_dumps(d))

    def _attachments(self, c: Ctx, out: list[str], ts: float, first: bool) -> None:
        if self.lean:
            return
        kinds = ["environment", "model", "deferred_tools_delta", "skill_listing"] if first else []
        kinds += ["session_context", "date"]
        for k in kinds:
            a: dict[str, Any] = {"type": k}
            if k == "environment":
                a["snapshot"] = {"workingDirectory": c.cwd, "isWorktree": False, "isGitRepo": True,
                                 "platform": "linux", "shell": "bash"}
            elif k == "skill_listing":
                a.update(content="[elided]", skillCount=14,
                         names=[w for w in WORDS[:14]],
                         digests=[f"{self.rng.getrandbits(64):016x}" for _ in range(14)])
            elif k == "date":
                a["date"] = day_of(ts)
            d = self._common(c, ts)
            d.update(attachment=a, type="attachment")
            self._emit(c, out, self._tail(c, d, ts))
        if first:
            shape_hash = f"{self.rng.getrandbits(256):064x}"
            tools = [{"name": w.title(), "description": "[elided]",
                      "input_schema": {"type": "object", "properties": {"command": {
                          "type": "string", "description": self.pad.text(self.rng, 80)}}}}
                     for w in WORDS[:24]]
            out.append(_dumps({"type": "api-request-shape", "sessionId": c.sid,
                               "shapeHash": shape_hash, "timestamp": iso(ts), "version": VERSION,
                               "shape": {"system": [{"type": "text", "text": "[elided]"}],
                                         "tools": tools}}))

    def _usage(self, c: Ctx, first_of_turn: bool) -> dict[str, Any]:
        rng = self.rng
        if c.context == 0:
            cw = rng.randint(8_000, 30_000)
            inp = rng.randint(3, 4_000)
        else:
            cw = rng.randint(50, 6_000) if rng.random() < 0.9 else rng.randint(6_000, 60_000)
            inp = rng.randint(1, 40) if not first_of_turn else rng.randint(1, 3_000)
        cr = c.context
        c.context = min(c.context + cw + rng.randint(0, 3_000), 190_000)
        out = max(1, int(rng.lognormvariate(5.3, 1.1)))
        one_hour = rng.random() < 0.1
        split = ({"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0}
                 if rng.random() < 0.2 else
                 {"ephemeral_1h_input_tokens": cw if one_hour else 0,
                  "ephemeral_5m_input_tokens": 0 if one_hour else cw})
        return {
            "input_tokens": inp, "cache_creation_input_tokens": cw, "cache_read_input_tokens": cr,
            "output_tokens": out, "output_tokens_details": {"thinking_tokens": 0},
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": "standard", "cache_creation": split, "inference_geo": "",
            "iterations": [], "speed": "standard", "fallback_credit": None,
        }

    def _count(self, c: Ctx, model: str, u: dict[str, Any], ts: float, command: str,
               hidden: bool = False) -> None:
        self.truth.add(c.sid, c.cwd, model, ts, u, command, hidden)
        cum = c.cumulative.setdefault(model, [0, 0, 0, 0, 0.0, 0, 0])
        split = u.get("cache_creation") or {}
        vals = (u["input_tokens"], u["output_tokens"], u["cache_creation_input_tokens"],
                u["cache_read_input_tokens"])
        for i, v in enumerate(vals):
            cum[i] += v
        # Claude Code sums the split as the API sent it (zeros included, as the fake API did).
        cum[5] += split.get("ephemeral_5m_input_tokens", 0)
        cum[6] += split.get("ephemeral_1h_input_tokens", 0)
        p = PRICES.get(model, (3, 15, 3.75, 6, 0.3))
        w1 = split.get("ephemeral_1h_input_tokens", 0)
        cum[4] += (vals[0] * p[0] + vals[1] * p[1] + (vals[2] - w1) * p[2] + w1 * p[3]
                   + vals[3] * p[4]) / 1e6
        c.requests += 1

    def request(self, c: Ctx, out: list[str], ts: float, pid: str, command: str, *,
                model: str | None = None, last: bool, side: bool = False,
                agent: str | None = None, first_of_turn: bool = False,
                tool: str = "Bash", pad: float = 0) -> tuple[float, str | None]:
        """One API response (1-3 assistant lines) and its tool result; returns (ts, tool id)."""
        rng = self.rng
        model = model or c.model
        mid, rid, ref = self.msg_id(), self.req_id(), self.uuid()
        u = self._usage(c, first_of_turn)
        t = ts + rng.uniform(1.0, 40.0)  # the response streams in; its first line dates it
        self._count(c, model, u, t, command)
        if not self.lean:
            out.append(_dumps({
                "type": "api-request", "sessionId": c.sid, "id": ref, "timestamp": iso(ts),
                "version": VERSION, "querySource": "agent" if side else "repl_main_thread",
                "params": {"model": model, "max_tokens": 32000,
                           "betas": ["claude-code-20250219", "interleaved-thinking-2025-05-14"],
                           "thinking": {"type": "adaptive"}},
                "keep": 0, "tail": [f"{rng.getrandbits(256):064x}" for _ in range(2)],
                "requestDigest": f"{rng.getrandbits(256):064x}"}))
        blocks: list[dict[str, Any]] = []
        if rng.random() < 0.3:
            blocks.append({"type": "thinking", "thinking": "", "signature": self._b62(120)})
        blocks.append({"type": "text", "text": self.pad.text(rng, rng.randint(20, 600))})
        tool_id = None
        if not last:
            tool_id = "toolu_01" + self._b62(22)
            blocks.append({"type": "tool_use", "id": tool_id, "name": tool,
                           "input": {"command": " ".join(rng.choice(WORDS) for _ in range(6)),
                                     "description": "run it"}})
        for i, b in enumerate(blocks):
            d = self._common(c, t, side=side, agent=agent)
            d["message"] = {"id": mid, "type": "message", "role": "assistant", "model": model,
                            "content": [b], "stop_reason": "tool_use" if tool_id else "end_turn",
                            "stop_sequence": None, "usage": u, "stop_details": None}
            d.update(apiBlockIndex=i, requestId=rid, requestRef=ref, requestedModel=model,
                     promptCacheRequested="5m", type="assistant")
            self._emit(c, out, self._tail(c, d, t))
            t += rng.uniform(0.001, 0.5)
        if tool_id is not None and tool != "Agent":
            size = max(20, pad * rng.uniform(0.2, 1.8)) if pad else rng.randint(40, 1_500)
            text = self.pad.text(rng, size)
            d = self._common(c, t, side=side, agent=agent)
            d.update(promptId=pid, type="user", message={"role": "user", "content": [
                {"tool_use_id": tool_id, "type": "tool_result", "content": text,
                 "is_error": False}]})
            self._tail(c, d, t)
            d["toolUseResult"] = {"stdout": text, "stderr": "", "interrupted": False,
                                  "isImage": False}
            d["sourceToolAssistantUUID"] = c.parent_uuid
            self._emit(c, out, d)
            t += rng.uniform(0.5, 30.0)
        return t, tool_id

    def prompt(self, c: Ctx, ts: float, command: str) -> str:
        """A typed prompt or a slash command; returns its promptId."""
        pid = self.uuid()
        out = c.lines
        if not self.lean:
            out.append(_dumps({"type": "queue-operation", "operation": "enqueue",
                               "timestamp": iso(ts), "sessionId": c.sid,
                               "content": "[elided]"}))
        d = self._common(c, ts)
        d["promptId"] = pid
        if command == "prompt":
            text = self.pad.text(self.rng, self.rng.randint(10, 400))
            d.update(type="user", message={"role": "user", "content": text})
            self._emit(c, out, self._tail(c, d, ts))
        else:
            name = command[1:]
            text = (f"<command-message>{name}</command-message>\n<command-name>{command}"
                    f"</command-name>\n<command-args>--fast</command-args>")
            d.update(type="user", message={"role": "user", "content": text})
            self._emit(c, out, self._tail(c, d, ts))
            d = self._common(c, ts)
            d.update(promptId=pid, type="user", message={"role": "user", "content": [
                {"type": "text", "text": self.pad.text(self.rng, 300)}]}, isMeta=True)
            self._emit(c, out, self._tail(c, d, ts))
        return pid

    def turn(self, c: Ctx, ts: float, n_requests: int, *, command: str = "prompt",
             sub_at: int | None = None, first: bool = False, pad: float = 0) -> float:
        """A user turn of `n_requests` API requests (plus a subagent's, if `sub_at` is set)."""
        rng = self.rng
        pid = self.prompt(c, ts, command)
        self._attachments(c, c.lines, ts, first)
        t = ts + rng.uniform(0.05, 2.0)
        for i in range(n_requests):
            last = i == n_requests - 1
            tool = "Agent" if sub_at == i and not last else "Bash"
            t, tool_id = self.request(c, c.lines, t, pid, command, last=last, tool=tool,
                                      first_of_turn=i == 0, pad=pad)
            if tool == "Agent" and tool_id:
                t = self._subagent(c, t, pid, tool_id, command, pad)
        if rng.random() < 0.005:
            # Claude Code's own placeholder message: no request behind it, zero usage.
            d = self._common(c, t)
            d["message"] = {"id": self.uuid(), "type": "message", "role": "assistant",
                            "model": "<synthetic>", "content": [{"type": "text",
                                                                  "text": "API Error"}],
                            "stop_reason": "stop_sequence", "stop_sequence": "",
                            "usage": {"input_tokens": 0, "output_tokens": 0,
                                      "cache_creation_input_tokens": 0,
                                      "cache_read_input_tokens": 0}}
            d.update(type="assistant", isApiErrorMessage=True)
            self._emit(c, c.lines, self._tail(c, d, t))
        if not self.lean:
            c.lines.append(_dumps({"type": "last-prompt", "lastPrompt": "[elided]",
                                   "leafUuid": c.parent_uuid, "sessionId": c.sid}))
        c.last_ts = t
        return t

    def _subagent(self, c: Ctx, t: float, pid: str, tool_id: str, command: str,
                  pad: float) -> float:
        rng = self.rng
        agent = f"a{rng.getrandbits(64):016x}"
        c.has_sub = True
        # The launch's tool result, as Claude Code writes it for a background agent.
        d = self._common(c, t)
        d.update(promptId=pid, type="user", message={"role": "user", "content": [
            {"tool_use_id": tool_id, "type": "tool_result", "content": [
                {"type": "text", "text": f"Async agent launched successfully.\nagentId: {agent}"}]}
        ]})
        self._tail(c, d, t)
        d["toolUseResult"] = {"isAsync": True, "status": "async_launched", "agentId": agent}
        self._emit(c, c.lines, d)
        sub = Ctx(c.sid, c.cwd, c.slug, rng.choice(SUB_MODELS))
        sub.cumulative = c.cumulative  # the session's cost-state includes its subagents
        lines: list[str] = []
        st = t + rng.uniform(0.01, 0.2)
        d = self._common(sub, st, side=True, agent=agent)
        d.update(promptId=pid, agentId=agent, type="user",
                 message={"role": "user", "content": self.pad.text(rng, 200)})
        self._emit(sub, lines, self._tail(sub, d, st))
        n = rng.randint(1, 8)
        for i in range(n):
            st, _ = self.request(sub, lines, st, pid, command, last=i == n - 1, side=True,
                                 agent=agent, first_of_turn=i == 0, pad=pad)
        c.requests += sub.requests
        c.agents[agent] = lines
        c.agent_meta[agent] = {"agentType": "general-purpose", "isBuiltIn": True,
                               "description": "helper", "toolUseId": tool_id, "spawnDepth": 1,
                               "requestShape": "background", "model": sub.model,
                               "finished": True}
        # The notification that it finished: a user line that continues the same command.
        nt = max(t, st) + rng.uniform(0.1, 5.0)
        d = self._common(c, nt)
        d.update(promptId=self.uuid(), type="user", message={"role": "user", "content": (
            f"<task-notification>\n<task-id>{agent}</task-id>\n<tool-use-id>{tool_id}"
            "</tool-use-id>\n<status>completed</status>\n</task-notification>")})
        self._emit(c, c.lines, self._tail(c, d, nt))
        return nt

    def compaction(self, c: Ctx, ts: float, command: str) -> float:
        """A /compact whose request is in no assistant line: only the next cost-state has it."""
        rng = self.rng
        c.has_hidden = True
        pid = self.uuid()
        d = self._common(c, ts)
        d.update(type="system", subtype="compact_boundary", content="Conversation compacted",
                 isMeta=False, level="info",
                 compactMetadata={"trigger": "manual", "preTokens": c.context})
        c.boundary = len(c.lines)
        self._emit(c, c.lines, self._tail(c, d, ts))
        d = self._common(c, ts)
        d.update(promptId=pid, type="user", isCompactSummary=True,
                 message={"role": "user", "content": "This session is being continued from a "
                          "previous conversation. " + self.pad.text(rng, 800)})
        self._emit(c, c.lines, self._tail(c, d, ts))
        d = self._common(c, ts)
        d.update(promptId=pid, type="user", message={"role": "user", "content": (
            "<command-name>/compact</command-name>\n<command-message>compact</command-message>\n"
            "<command-args></command-args>")})
        self._emit(c, c.lines, self._tail(c, d, ts))
        u = self._usage(c, True)
        self._count(c, c.model, u, ts, command, hidden=True)
        c.context = rng.randint(3_000, 12_000)
        return ts + rng.uniform(5, 60)

    def cost_state(self, c: Ctx, ts: float) -> None:
        usage = {}
        total = 0.0
        for model, (i, o, cw, cr, cost, w5, w1) in sorted(c.cumulative.items()):
            usage[model] = {"inputTokens": i, "outputTokens": o, "thinkingTokens": 0,
                            "cacheReadInputTokens": cr, "cacheCreationInputTokens": cw,
                            "cacheCreationEphemeral5mInputTokens": w5,
                            "cacheCreationEphemeral1hInputTokens": w1, "webSearchRequests": 0,
                            "costUSD": round(cost, 6)}
            total += cost
        c.lines.append(_dumps({
            "type": "cost-state", "sessionId": c.sid, "totalCostUSD": round(total, 6),
            "totalAPIDuration": int(c.requests * 4100), "totalToolDuration": 0,
            "totalLinesAdded": 0, "totalLinesRemoved": 0, "totalDuration": 0,
            "startTime": int(ts * 1000), "modelUsage": usage, "hasUnknownModelCost": False}))
        c.written = {m: list(v) for m, v in c.cumulative.items()}

    def fork_from(self, c: Ctx, parent: Ctx, parent_lines: list[str]) -> None:
        """Start `c` as `--resume PARENT --fork-session`: the parent's lines, re-stamped."""
        c.fork_of = parent.sid
        copied = [json.loads(line) for line in parent_lines[parent.boundary:]]
        if parent.boundary:
            # After a compaction the last response before it is copied too, after the
            # summary, its usage zeroed: the one copy that names the requester.
            last = next((json.loads(line) for line in reversed(parent_lines[:parent.boundary])
                         if '"type":"assistant"' in line), None)
            if last is not None:
                last.setdefault("requestSessionId", parent.sid)
                last["message"]["usage"] = _zeroed(last["message"]["usage"])
                copied.insert(2, last)
        for d in copied:
            if d.get("type") not in ("user", "assistant", "attachment", "system"):
                continue
            d["sessionId"] = c.sid
            d["cwd"] = c.cwd  # a fork made from another directory re-stamps that too
            if d["type"] == "assistant":
                d.setdefault("requestSessionId", parent.sid)
            c.lines.append(_dumps(d))
        # Claude Code starts a fork's total from the last one its parent's transcript holds,
        # not from the parent's running total (a last process that wrote none, killed).
        c.cumulative = {m: list(v) for m, v in parent.written.items()}
        c.context = parent.context
        c.parent_uuid = parent.parent_uuid


def _zeroed(value: Any) -> Any:
    """A usage object with every count 0, as Claude Code writes a copy after a compaction."""
    if isinstance(value, dict):
        return {k: _zeroed(v) for k, v in value.items()}
    return 0 if isinstance(value, int | float) and not isinstance(value, bool) else value


def write_session(root: Path, c: Ctx) -> int:
    """Write a session's files under `root` (a projects/ folder); return the bytes written."""
    pdir = root / project_dirname(c.cwd)
    pdir.mkdir(parents=True, exist_ok=True)
    n = 0
    data = "\n".join(c.lines) + "\n"
    (pdir / f"{c.sid}.jsonl").write_text(data, encoding="utf-8")
    n += len(data.encode())
    if c.agents:
        sub = pdir / c.sid / "subagents"
        sub.mkdir(parents=True, exist_ok=True)
        for agent, lines in c.agents.items():
            data = "\n".join(lines) + "\n"
            (sub / f"agent-{agent}.jsonl").write_text(data, encoding="utf-8")
            (sub / f"agent-{agent}.meta.json").write_text(_dumps(c.agent_meta[agent]))
            n += len(data.encode())
    return n


def _geometric(rng: random.Random, mean: float) -> int:
    """0, 1, 2... with the given mean."""
    p = 1.0 / (mean + 1.0)
    return int(math.log(1.0 - rng.random()) / math.log(1.0 - p))


@dataclass
class Options:
    sessions: int = 3000
    projects: int = 0
    target_bytes: int = 0
    seed: int = 1
    days: float = 365.0
    end: float = 0.0
    subagents: float = 0.15
    forks: float = 0.02
    cost_state: float = 0.6
    slash: float = 0.15
    compaction: float = 0.0
    lean: bool = False


def plan_sessions(o: Options, rng: random.Random) -> Iterator[dict[str, Any]]:
    n_proj = o.projects or max(3, o.sessions // 75)
    projects = [f"/home/dev/{rng.choice(WORDS)}-{i:03d}" for i in range(n_proj)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(n_proj)]  # a few projects get most sessions
    for _ in range(o.sessions):
        start = o.end - o.days * 86400 * rng.random()
        processes = 1 + (_geometric(rng, 0.3) if rng.random() < 0.3 else 0)
        turns = [[1 + _geometric(rng, 5.0) for _ in range(1 + _geometric(rng, 3.0))]
                 for _ in range(processes)]
        weight = sum(map(sum, turns)) * rng.lognormvariate(0.0, 0.8)
        yield {"project": rng.choices(projects, weights)[0], "start": start, "turns": turns,
               "weight": weight, "fork": rng.random() < o.forks}


def generate(out: Path, o: Options) -> dict[str, Any]:
    """Write the history and return truth.json's content."""
    t0 = time.perf_counter()
    rng = random.Random(o.seed)
    plan = list(plan_sessions(o, rng))
    total_weight = sum(p["weight"] for p in plan) or 1.0
    synth = Synth(o.seed + 1, lean=o.lean)
    root = out / ".claude" / "projects"
    root.mkdir(parents=True, exist_ok=True)
    written = 0
    weight_done = 0.0
    per_request = 3500.0  # bytes a request takes without padding; learnt as we go
    last_by_project: dict[str, tuple[Ctx, list[str]]] = {}
    latest: tuple[float, str, str] = (0.0, "", "")
    files = 0
    for p in plan:
        weight_done += p["weight"]
        n_req = sum(map(sum, p["turns"]))
        n_tools = max(1, n_req - sum(map(len, p["turns"])))  # the last request of a turn has none
        pad = 0.0
        if o.target_bytes:
            want = o.target_bytes * weight_done / total_weight - written - n_req * per_request
            pad = max(0.0, want / (2 * n_tools))  # tool output is written twice (toolUseResult)
        sid = synth.uuid()
        model = rng.choices([m for m, _ in MODELS], [w for _, w in MODELS])[0]
        c = Ctx(sid, p["project"], "-".join(rng.choice(WORDS) for _ in range(3)), model)
        ts = p["start"]
        parent = last_by_project.get(p["project"]) if p["fork"] else None
        if p["fork"] and last_by_project and rng.random() < 0.25:
            # Forked from another directory: the fork's transcript is in its own folder.
            parent = last_by_project[rng.choice(sorted(last_by_project))]
        if parent is not None and parent[0].last_ts < o.end - 3600:
            ts = min(parent[0].last_ts + rng.uniform(60, 3 * 86400), o.end - 3600)
            synth.fork_from(c, parent[0], parent[1])
        base = written
        if c.fork_of and o.compaction and rng.random() < o.compaction:
            # A fork whose only work is /compact: a fork of it names the first session in
            # all its copies, but starts from this one's total.
            ts = synth.compaction(c, ts, "/compact")
            p["turns"] = [[]]
        for pi, turns in enumerate(p["turns"]):
            if pi:
                ts += rng.uniform(600, 3 * 86400)  # `claude -c` later on
                ts = min(ts, o.end - 60)
            for ti, n in enumerate(turns):
                command = rng.choice(COMMANDS) if rng.random() < o.slash else "prompt"
                sub_at = rng.randrange(n) if n > 1 and rng.random() < o.subagents else None
                if o.compaction and ti and rng.random() < o.compaction:
                    ts = synth.compaction(c, ts, command)
                ts = synth.turn(c, ts, n, command=command, sub_at=sub_at,
                                first=ti == 0 and pi == 0 and c.fork_of is None, pad=pad)
                ts += rng.uniform(5, 900)
            c.ended_with_total = c.has_hidden or rng.random() < o.cost_state
            if c.ended_with_total:
                synth.cost_state(c, ts)
        written += write_session(root, c)
        files += 1 + len(c.agents)
        if n_req:
            natural = (written - base - 2 * pad * n_tools) / n_req
            per_request = 0.9 * per_request + 0.1 * max(500.0, natural)
        if c.last_ts > latest[0]:
            latest = (c.last_ts, sid, p["project"])
        forkable = c.ended_with_total or not (c.has_sub or c.has_hidden)
        if forkable and len(c.lines) < 20_000:
            last_by_project[p["project"]] = (c, c.lines)
        else:
            last_by_project.pop(p["project"], None)
    t = synth.truth
    return {
        "generator": "bench/synth.py", "seed": o.seed, "sessions": o.sessions,
        "files": files, "bytes": written, "end": iso(o.end), "days": o.days,
        "seconds": round(time.perf_counter() - t0, 1),
        "latest": {"session": latest[1], "cwd": latest[2], "last_ts": latest[0],
                   "transcript": str(root / project_dirname(latest[2]) / f"{latest[1]}.jsonl")},
        "totals": t.totals.to_json(),
        "hidden": t.hidden.to_json(),
        "daily": {d: v.to_json() for d, v in sorted(t.daily.items())},
        "models": {m: v.to_json() for m, v in sorted(t.models.items())},
        "projects": {p: v.to_json() for p, v in sorted(t.projects.items())},
        "commands": {k: v.to_json() for k, v in sorted(t.commands.items())},
        "session_totals": t.sessions,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write (used as HOME)")
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--projects", type=int, default=0, help="default: sessions/75")
    ap.add_argument("--target-gb", type=float, default=0.0,
                    help="pad tool output up to about this size (0: natural size)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=float, default=365.0, help="spread sessions over this many days")
    ap.add_argument("--end", help="last moment, ISO (default: today 00:00 UTC)")
    ap.add_argument("--subagents", type=float, default=0.15, help="share of turns with one")
    ap.add_argument("--forks", type=float, default=0.02, help="share of sessions that are forks")
    ap.add_argument("--cost-state", type=float, default=0.6,
                    help="share of processes ending with a cost-state line")
    ap.add_argument("--slash", type=float, default=0.15, help="share of turns that are commands")
    ap.add_argument("--compaction", type=float, default=0.0,
                    help="share of turns preceded by a compaction (hidden requests)")
    ap.add_argument("--lean", action="store_true",
                    help="leave out the lines that carry no usage (smaller, for ledger tests)")
    a = ap.parse_args(argv)
    if a.end:
        end = datetime.fromisoformat(a.end.replace("Z", "+00:00"))
        end = end if end.tzinfo else end.replace(tzinfo=UTC)
    else:
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    o = Options(sessions=a.sessions, projects=a.projects, target_bytes=int(a.target_gb * 1e9),
                seed=a.seed, days=a.days, end=end.timestamp(), subagents=a.subagents,
                forks=a.forks, cost_state=a.cost_state, slash=a.slash, compaction=a.compaction,
                lean=a.lean)
    projects = a.out / ".claude" / "projects"
    if projects.exists() and any(projects.iterdir()):
        raise SystemExit(f"{a.out}/.claude/projects is not empty")
    truth = generate(a.out, o)
    (a.out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    print(f"{truth['sessions']} sessions, {truth['files']} files, {truth['bytes'] / 1e9:.3f} GB, "
          f"{truth['totals']['requests']} requests, {truth['totals']['totalTokens']} tokens "
          f"in {truth['seconds']} s -> {a.out}")


if __name__ == "__main__":
    main()
