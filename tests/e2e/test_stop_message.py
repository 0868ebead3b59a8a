"""What Claude Code sends a Stop as `last_assistant_message`, against what it writes to the
transcript: the Stop hook's look for the turn's last response (hook._response_on_disk) finds
that response by the end of this text, JSON-encoded as the transcript holds it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tokenbudget import hook

from . import fake_api
from .conftest import HookRecorder, RunClaude, hook_settings

pytestmark = pytest.mark.e2e

# Final answers as a model may write them: escapes JSON needs, letters beyond ASCII, U+2028
# (a line break to str.splitlines, not to JSON), whitespace around markdown, several text
# blocks, and a text longer than anything the hook looks for.
SHAPES: dict[str, list[str]] = {
    "escapes": ['q " b \\ t\t c\x01 \u2028 é 😀 \x7f </script> end'],
    "markdown": ["  # Title\n\n- *a*\n- **b**\n\n| x | y |\n|---|---|\n\n  \n\t "],
    "several": ["First block.", "Second."],
    "long": ["".join(f"line {i}: lorem ipsum dolor sit amet\n" for i in range(3000))],
}


@pytest.fixture
def shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake answers `SHAPE <name>` with that shape's text blocks."""
    blocks = fake_api._blocks

    def shaped_blocks(served: Any, plan: Any) -> list[dict[str, Any]]:
        for name, texts in SHAPES.items():
            if f"SHAPE {name}" in plan.prompt and plan.kind == "text" and not plan.sub:
                return [{"type": "text", "text": t} for t in texts]
        return blocks(served, plan)

    monkeypatch.setattr(fake_api, "_blocks", shaped_blocks)


def _last_texts(path: Path) -> list[str]:
    """The text blocks of each assistant line, in order."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            if entry.get("type") == "assistant":
                texts += [b["text"] for b in entry["message"]["content"] if b["type"] == "text"]
    return texts


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_stop_names_the_turns_last_text_as_the_transcript_holds_it(
    shape: str, shaped: None, run_claude: RunClaude, hook_recorder: HookRecorder
) -> None:
    settings = hook_settings({"Stop": hook_recorder.command})
    run = run_claude(f"SHAPE {shape}", settings=settings)
    again = run_claude(f"SHAPE {shape}", settings=settings, args=["-c"])
    assert run.proc.returncode == again.proc.returncode == 0, run.proc.stderr[-2000:]
    stops = hook_recorder.calls("Stop")
    assert len(stops) == 2
    last = SHAPES[shape][-1]
    assert _last_texts(run.transcript_path)[-1] == last
    for call in stops:
        data = call["stdin"]
        # The last text block only, trimmed at both ends (2.1.328).
        assert data["last_assistant_message"] == last.strip()
        raw = json.dumps(data).encode()
        ev = hook.parse_event("Stop", raw, claude_dirs=[str(run.home / ".claude")])
        assert ev.transcript is not None and ev.said
        # Once written, the look finds it in one go (the second turn ends with the same
        # words as the first: its own response, after its prompt, is what is found).
        assert hook._response_on_disk(ev)
    # Cut back to the second turn's prompt, the transcript holds the same words only before
    # it: the look must not take them for the second turn's response.
    lines = run.transcript_path.read_bytes().split(b"\n")
    prompt = max(i for i, line in enumerate(lines) if b'"type":"user"' in line
                 and json.loads(line).get("type") == "user")
    cut = b"\n".join(lines[:prompt + 1]) + b"\n"
    run.transcript_path.write_bytes(cut)
    ev = hook.parse_event("Stop", json.dumps(stops[-1]["stdin"]).encode(),
                          claude_dirs=[str(run.home / ".claude")])
    assert not hook._response_on_disk(ev)


def test_a_subagent_stop_names_its_last_text_in_the_agent_transcript(
    run_claude: RunClaude, hook_recorder: HookRecorder
) -> None:
    settings = hook_settings({"SubagentStop": hook_recorder.command})
    run = run_claude("AGENT go", settings=settings, allowed_tools=("Bash", "Agent"))
    assert run.proc.returncode == 0, run.proc.stderr[-2000:]
    (call,) = hook_recorder.calls("SubagentStop")
    data = call["stdin"]
    agent = Path(data["agent_transcript_path"])
    assert data["last_assistant_message"] == _last_texts(agent)[-1].strip()
    ev = hook.parse_event("SubagentStop", json.dumps(data).encode(),
                          claude_dirs=[str(run.home / ".claude")])
    assert ev.agent is not None and ev.said and hook._response_on_disk(ev)
