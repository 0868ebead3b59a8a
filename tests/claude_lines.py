"""Transcripts written line by line, as Claude Code writes them, and hook calls on them.

For tests that need a ledger in a precise state (who ran which command, where, when, for how
much) without depending on how the ledger is stored: usage goes in through transcripts and
decisions come out of `hook.handle`, the entry points that outlive any redesign behind them.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenbudget import hook

MODEL = "claude-opus-5-5"  # $4 per million input tokens, $20 per million output tokens
_ids = itertools.count(1)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def prompt_line(sid: str, pid: str, text: str, ts: float, cwd: str) -> dict[str, Any]:
    return {
        "type": "user", "promptId": pid, "isSidechain": False,
        "message": {"role": "user", "content": text},
        "uuid": f"u-{next(_ids)}", "timestamp": iso(ts), "cwd": cwd, "sessionId": sid,
    }


def reply_line(
    sid: str, msg: str, ts: float, cwd: str, *, input_tokens: int = 0, output_tokens: int = 0,
    cache_read: int = 0, cache_write: int = 0, model: str = MODEL,
) -> dict[str, Any]:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read}
    return {
        "type": "assistant", "isSidechain": False,
        "message": {"id": msg, "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": "ok"}], "usage": usage},
        "requestId": f"req-{msg}", "uuid": f"u-{next(_ids)}", "timestamp": iso(ts),
        "cwd": cwd, "sessionId": sid,
    }


def cost_state_line(sid: str, models: dict[str, tuple[int, int, float]]) -> dict[str, Any]:
    """Claude Code's running totals: {model: (input tokens, output tokens, dollars)}."""
    return {
        "type": "cost-state", "sessionId": sid,
        "modelUsage": {
            m: {"inputTokens": i, "outputTokens": o, "cacheReadInputTokens": 0,
                "cacheCreationInputTokens": 0, "costUSD": usd}
            for m, (i, o, usd) in models.items()
        },
    }


class Session:
    """One Claude Code session in `cwd`: its transcript under `home`/.claude/projects."""

    def __init__(self, home: Path, sid: str, cwd: str) -> None:
        self.sid, self.cwd = sid, cwd
        folder = home / ".claude" / "projects" / cwd.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{sid}.jsonl"
        self.path.touch()

    def write(self, *lines: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            for line in lines:
                f.write(json.dumps(line) + "\n")

    def turn(self, pid: str, text: str, ts: float, *tokens: int) -> None:
        """A prompt at `ts` and one reply a second apart per entry of `tokens` (input tokens)."""
        self.write(prompt_line(self.sid, pid, text, ts, self.cwd))
        for k, n in enumerate(tokens, 1):
            self.write(reply_line(self.sid, f"{pid}-m{k}", ts + k, self.cwd, input_tokens=n))

    def event(self, name: str, now: float, **fields: Any) -> dict[str, Any]:
        """Claude Code's hook event `name` for this session, answered by the hook at `now`."""
        payload = {"session_id": self.sid, "transcript_path": str(self.path), "cwd": self.cwd,
                   "hook_event_name": name, **fields}
        return hook.handle(name, json.dumps(payload).encode(), now=now)

    def prompt(self, text: str, now: float, pid: str = "next") -> dict[str, Any]:
        return self.event("UserPromptSubmit", now, prompt=text, prompt_id=pid)

    def tool(self, pid: str, now: float) -> dict[str, Any]:
        # Each tool call is its own (the hook answers an identical event only once); no
        # tool_use_id, which the hook would wait for in the transcript.
        return self.event("PreToolUse", now, prompt_id=pid, tool_name="Bash",
                          tool_input={"command": f"true #{next(_ids)}"})


def record(now: float, *sessions: Session) -> None:
    """Each session's hook reads its own transcript: have each one's hook run once."""
    for s in sessions:
        s.event("Stop", now)


def set_budgets(home: Path, *budgets: dict[str, Any], **extra: Any) -> None:
    cfg = home / "tb state" / "config.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(json.dumps({"version": 1, "budgets": list(budgets), **extra}))


def refused(answer: dict[str, Any]) -> str | None:
    """The reason a prompt was refused or a turn stopped; None if it was let through."""
    if answer.get("decision") == "block":
        return str(answer["reason"])
    if answer.get("continue") is False:
        return str(answer["stopReason"])
    return None
