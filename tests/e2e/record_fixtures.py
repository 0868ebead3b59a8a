"""Record transcript fixtures of forked sessions with the real Claude Code and the fake API.

    TOKENBUDGET_CLAUDE_BIN=... python -m tests.e2e.record_fixtures [CASE ...]

Each case is a short script of `claude -p` runs; its transcripts land in
tests/fixtures/claude-code-2.1.328/CASE/projects with the home folder shown as /home/dev,
next to truth.jsonl (every request served, with the session that sent it) and
claude-output.json (each run's JSON output). The forks make one chain, so the last run's
total_cost_usd is the cost of all of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .conftest import CACHED_BIN, claude_env, parse_output, project_dir_name
from .fake_api import FakeAnthropic

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "claude-code-2.1.328"
TOOLS = "Bash,Agent"
# The fixtures' day (tests/conftest.py RECORDED is 17:40 that day): every recording is moved
# there, keeping its own spacing, so that the tests' fixed "now" comes after it.
STARTS_AT = datetime(2026, 11, 28, 16, 0, tzinfo=UTC)
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_START_MS = re.compile(r'"startTime":(\d{13})')

Run = Callable[..., str]


def fork_compacted(run: Run) -> None:
    """A fork of a session compacted with /compact, and a fork of that fork."""
    parent = run("please LOOP 1")
    run("/compact", "-c")
    once = run("hello from the fork", "--resume", parent, "--fork-session")
    run("hello from the fork of the fork", "--resume", once, "--fork-session")


def fork_compacted_twice(run: Run) -> None:
    """A fork of a session compacted twice."""
    parent = run("please LOOP 1")
    run("/compact", "-c")
    run("more in the parent", "-c")
    run("/compact", "-c")
    run("hello from the fork", "--resume", parent, "--fork-session")


def fork_agent(run: Run) -> None:
    """A fork of a session whose turn launched a subagent, continued with -c, then a fork of
    the fork that launches its own subagent."""
    parent = run("AGENT please")
    once = run("hello from the fork", "--resume", parent, "--fork-session")
    run("more in the fork", "-c")
    run("AGENT in the fork of the fork", "--resume", once, "--fork-session")


def fork_slash_agent(run: Run) -> None:
    """A slash command that launches a subagent, in a session and in its fork."""
    parent = run("/helper first")
    run("/helper second", "--resume", parent, "--fork-session")


def fork_autocompact_subagent(run: Run) -> None:
    """A subagent whose context fills up compacts on its own (so does the main agent), then a
    fork of that session."""
    parent = run("AGENT SUBLOOP 2 HUGE")
    run("hello from the fork", "--resume", parent, "--fork-session")


def fork_elsewhere(run: Run) -> None:
    """A fork made from another directory: its transcript lands in another projects/ folder,
    one that sorts before its parent's."""
    parent = run("please LOOP 1")
    run("hello from elsewhere", "--resume", parent, "--fork-session", cwd="a elsewhere")


CASES = {
    "fork-compacted": fork_compacted,
    "fork-compacted-twice": fork_compacted_twice,
    "fork-agent": fork_agent,
    "fork-elsewhere": fork_elsewhere,
    "fork-slash-agent": fork_slash_agent,
    "fork-autocompact-subagent": fork_autocompact_subagent,
}
# Slash commands in every recording's project.
COMMANDS = {"helper.md": "Ask a helper: $ARGUMENTS. AGENT\n"}


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def moved(texts: dict[Path, str]) -> dict[Path, str]:
    """The texts with every timestamp moved by the same whole seconds to STARTS_AT."""
    first = min(_parse(m) for text in texts.values() for m in _ISO.findall(text))
    delta = timedelta(seconds=round((STARTS_AT - first).total_seconds()))

    def iso(m: re.Match[str]) -> str:
        return (_parse(m.group(0)) + delta).isoformat(timespec="milliseconds")[:-6] + "Z"

    def ms(m: re.Match[str]) -> str:
        return f'"startTime":{int(m.group(1)) + int(delta.total_seconds() * 1000)}'

    return {p: _START_MS.sub(ms, _ISO.sub(iso, text)) for p, text in texts.items()}


def record(case: str, binary: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeAnthropic() as fake:
        home = Path(tmp) / "home" / "dev"
        home.mkdir(parents=True)
        (home / ".claude.json").write_text(json.dumps({"hasCompletedOnboarding": True}))
        outputs: list[str] = []
        commands = home / "project" / ".claude" / "commands"
        commands.mkdir(parents=True)
        for name, text in COMMANDS.items():
            (commands / name).write_text(text)

        def run(prompt: str, *args: str, cwd: str = "project") -> str:
            workdir = home / cwd
            workdir.mkdir(parents=True, exist_ok=True)
            cmd = [str(binary), "-p", prompt, "--output-format", "json", "--allowedTools", TOOLS]
            done = subprocess.run(
                [*cmd, *args],
                cwd=workdir,
                env=claude_env(home, fake.base_url),
                capture_output=True,
                text=True,
                timeout=120,
                stdin=subprocess.DEVNULL,
                check=True,
            )
            out = parse_output(done.stdout)
            assert out is not None, done.stdout
            outputs.append(json.dumps(out, separators=(",", ":")))
            return str(out["session_id"])

        CASES[case](run)
        target = FIXTURES / case
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        text_from, text_to = str(home), "/home/dev"
        dir_from, dir_to = project_dir_name(home), project_dir_name(Path(text_to))
        source = home / ".claude" / "projects"
        texts = {
            target / "projects" / str(path.relative_to(source)).replace(dir_from, dir_to): (
                path.read_text(encoding="utf-8").replace(text_from, text_to)
            ).replace(dir_from, dir_to)
            for path in sorted(source.rglob("*.jsonl"))
        }
        for copy, text in moved(texts).items():
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(text, encoding="utf-8")
        fake.write_truth(target / "truth.jsonl")
        lines = "".join(o + "\n" for o in outputs)
        (target / "claude-output.json").write_text(lines.replace(text_from, text_to))


def main(argv: list[str]) -> None:
    binary = Path(os.environ.get("TOKENBUDGET_CLAUDE_BIN") or CACHED_BIN)
    for case in argv or list(CASES):
        record(case, binary)
        print(f"recorded {case}")


if __name__ == "__main__":
    main(sys.argv[1:])
