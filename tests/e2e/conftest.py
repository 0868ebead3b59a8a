"""Fixtures that run the real Claude Code against the fake API in fake_api.py.

These tests must run in CI: a missing binary is installed by scripts/install-claude-code.sh,
and if that fails too the test fails; it is never skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from .fake_api import FakeAnthropic

E2E_DIR = Path(__file__).resolve().parent
REPO = E2E_DIR.parent.parent
# The one place the tested Claude Code version is pinned (the install script reads it too).
CLAUDE_CODE_VERSION = (E2E_DIR / "CLAUDE_CODE_VERSION").read_text(encoding="utf-8").strip()
INSTALL_SCRIPT = REPO / "scripts" / "install-claude-code.sh"
CACHED_BIN = REPO / ".cache/claude-code/node_modules/@anthropic-ai/claude-code/bin/claude.exe"
BIN_ENV = "TOKENBUDGET_CLAUDE_BIN"
DEFAULT_TIMEOUT = 120.0

# Variables of an outer Claude Code (or a developer's shell) that would point the child
# somewhere else: a real API, another account, another config dir.
_LEAKY_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR", "CLAUDECODE", "AWS_BEARER")


def claude_version(binary: Path) -> str | None:
    """What `binary --version` reports (e.g. "2.1.328"), or None if it does not run."""
    try:
        out = subprocess.run(
            [str(binary), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"\s*(\d+\.\d+\.\d+)", out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The pinned Claude Code binary: $TOKENBUDGET_CLAUDE_BIN, else <repo>/.cache (installed)."""
    override = os.environ.get(BIN_ENV)
    if override:
        binary = Path(override)
        found = claude_version(binary)
        if found != CLAUDE_CODE_VERSION:
            pytest.fail(f"{BIN_ENV}={override} reports {found!r}, want {CLAUDE_CODE_VERSION}")
        return binary
    if claude_version(CACHED_BIN) != CLAUDE_CODE_VERSION:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"{INSTALL_SCRIPT.name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    found = claude_version(CACHED_BIN)
    if found != CLAUDE_CODE_VERSION:
        pytest.fail(f"{CACHED_BIN} reports {found!r}, want {CLAUDE_CODE_VERSION}")
    return CACHED_BIN


@pytest.fixture
def fake_api(tmp_path: Path) -> Iterator[FakeAnthropic]:
    """A started fake Messages API; its truth.jsonl is left in tmp_path for post-mortems."""
    with FakeAnthropic() as fake:
        yield fake
    fake.write_truth(tmp_path / "truth.jsonl")


def project_dir_name(cwd: Path) -> str:
    """The folder name Claude Code gives a cwd under ~/.claude/projects.

    2.1.328 replaces every character that is not an ASCII letter or digit with "-"
    (so "/", ".", "_" and spaces all become "-"); test_harness checks this on the binary.
    """
    return re.sub(r"[^A-Za-z0-9]", "-", str(cwd))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file, skipping blank lines."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def assistant_usage(lines: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], dict[str, int]]:
    """Usage per (message.id, requestId) from transcript lines, largest value per field.

    One API response is written as one assistant line per content block; all repeat the
    same ids and usage, and early lines may hold partial counts, so keep the largest.
    """
    fields = (
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    )
    found: dict[tuple[str, str], dict[str, int]] = {}
    for line in lines:
        if line.get("type") != "assistant":
            continue
        message = line.get("message") or {}
        usage = message.get("usage") or {}
        key = (str(message.get("id")), str(line.get("requestId")))
        seen = found.setdefault(key, dict.fromkeys(fields, 0))
        for name in fields:
            seen[name] = max(seen[name], int(usage.get(name) or 0))
    return found


@dataclass
class ClaudeRun:
    """One finished `claude -p` process and where it wrote."""

    proc: subprocess.CompletedProcess[str]
    output: dict[str, Any] | None
    home: Path
    cwd: Path

    @property
    def session_id(self) -> str:
        """The session id from the JSON output."""
        assert self.output is not None, f"no JSON output; stderr: {self.proc.stderr[-2000:]}"
        return str(self.output["session_id"])

    @property
    def project_dir(self) -> Path:
        """~/.claude/projects/<mangled cwd> of this run."""
        return self.home / ".claude" / "projects" / project_dir_name(self.cwd)

    @property
    def transcript_path(self) -> Path:
        """The main transcript of this run's session."""
        return self.project_dir / f"{self.session_id}.jsonl"

    def transcript(self) -> list[dict[str, Any]]:
        """The main transcript's lines."""
        return read_jsonl(self.transcript_path)

    def subagent_transcripts(self) -> list[Path]:
        """subagents/agent-*.jsonl files of this session."""
        folder = self.project_dir / self.session_id / "subagents"
        return sorted(folder.glob("agent-*.jsonl"))


def wait_for_session_end(ledger_file: Path, *runs: ClaudeRun, timeout: float = 30.0) -> None:
    """Wait until each run's SessionEnd hook, which Claude Code runs in the background and does
    not wait for, has read the run's transcript to its end (its cost-state line included)."""
    import time

    from tokenbudget.errors import TokenbudgetError
    from tokenbudget.store import open_store

    deadline = time.monotonic() + timeout
    for run in runs:
        path = os.path.realpath(run.transcript_path)
        size = os.path.getsize(path)
        while True:
            try:
                rec = open_store(path=ledger_file).snapshot()["files"].get(path)
            except (OSError, TokenbudgetError):
                rec = None
            if rec is not None and rec[2] == size:
                break
            assert time.monotonic() < deadline, f"no hook read {path} to {size} bytes: {rec}"
            time.sleep(0.05)


class RunClaude(Protocol):
    """The `run_claude` fixture's call signature."""

    def __call__(
        self,
        prompt: str,
        *,
        cwd: Path | None = None,
        settings: Path | Mapping[str, Any] | None = None,
        plugin_dir: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        allowed_tools: Sequence[str] = ("Bash",),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ClaudeRun: ...


def claude_env(home: Path, base_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for an offline Claude Code talking to the fake at base_url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_LEAKY_PREFIXES)}
    env.update(
        HOME=str(home),
        ANTHROPIC_BASE_URL=base_url,
        ANTHROPIC_API_KEY="test",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        # The tests run as root in CI containers; Claude Code refuses some things as root
        # unless it believes it is sandboxed.
        IS_SANDBOX="1",
    )
    env.update(extra or {})
    return env


def start_claude(cmd: list[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start `cmd` in a process group of its own, so that a signal (a test's Ctrl-C, or the
    kill of a hung run) reaches it and the tools it started, and nothing else."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    with start_claude(cmd, cwd, env) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            pytest.fail(
                f"claude did not finish in {timeout} s: {shlex.join(cmd)}\n"
                f"stdout: {out[-2000:]}\nstderr: {err[-2000:]}"
            )
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def parse_output(stdout: str) -> dict[str, Any] | None:
    """The JSON object `--output-format json` printed, or None."""
    text = stdout.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        # Be lenient about stray lines before the object; the last line holds it.
        try:
            value = json.loads(text.splitlines()[-1])
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


@pytest.fixture
def run_claude(
    claude_bin: Path, fake_api: FakeAnthropic, private_home: Path, tmp_path: Path
) -> RunClaude:
    """Run `claude -p PROMPT --output-format json` offline; returns a ClaudeRun.

    HOME is the suite's private_home (so transcripts land in $HOME/.claude/projects) and
    the default cwd is tmp_path/"project". `settings` may be a file or a dict (written to a
    file), `args` go last (e.g. ["-c"]), `env` overrides the environment.
    """
    claude_json = private_home / ".claude.json"
    if not claude_json.exists():
        # Skips the first-run screens.
        claude_json.write_text(json.dumps({"hasCompletedOnboarding": True}), encoding="utf-8")
    default_cwd = tmp_path / "project"
    counter = iter(range(1, 1_000_000))

    def run(
        prompt: str,
        *,
        cwd: Path | None = None,
        settings: Path | Mapping[str, Any] | None = None,
        plugin_dir: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        allowed_tools: Sequence[str] = ("Bash",),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ClaudeRun:
        workdir = cwd or default_cwd
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [str(claude_bin), "-p", prompt, "--output-format", "json"]
        if allowed_tools:
            cmd += ["--allowedTools", ",".join(allowed_tools)]
        if settings is not None:
            if not isinstance(settings, Path):
                path = tmp_path / f"settings-{next(counter)}.json"
                path.write_text(json.dumps(settings, indent=2), encoding="utf-8")
                settings = path
            cmd += ["--settings", str(settings)]
        if plugin_dir is not None:
            cmd += ["--plugin-dir", str(plugin_dir)]
        cmd += list(args)
        proc = _run(cmd, workdir, claude_env(private_home, fake_api.base_url, env), timeout)
        return ClaudeRun(proc, parse_output(proc.stdout), private_home, workdir)

    return run


# -- hooks ----------------------------------------------------------------------------------------


def write_script(path: Path, text: str) -> Path:
    """Write an executable script (make the first line a shebang)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def python_command(script: Path) -> str:
    """A hook command running `script` with this test run's Python."""
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


def hook_settings(
    commands: Mapping[str, str | Sequence[str]], *, matcher: str | None = None, timeout: int = 30
) -> dict[str, Any]:
    """Settings JSON registering command hooks: {"Event": command or [commands]}."""
    hooks: dict[str, Any] = {}
    for event, command in commands.items():
        listed = [command] if isinstance(command, str) else list(command)
        group: dict[str, Any] = {
            "hooks": [{"type": "command", "command": c, "timeout": timeout} for c in listed]
        }
        if matcher is not None:
            group["matcher"] = matcher
        hooks[event] = [group]
    return {"hooks": hooks}


_RECORDER = '''\
"""Record one hook call: stdin JSON, a few env vars, and what the transcript held then."""
import json, os, sys, time

log_dir = sys.argv[1]
raw = sys.stdin.read()
try:
    data = json.loads(raw)
except ValueError:
    data = {"_raw": raw}
keys, lines = [], 0
path = data.get("transcript_path") if isinstance(data, dict) else None
if path and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("type") == "assistant":
                key = [entry.get("message", {}).get("id"), entry.get("requestId")]
                if key not in keys:
                    keys.append(key)
record = {
    "stdin": data,
    "env": {k: v for k, v in os.environ.items()
            if k.startswith(("CLAUDE_", "TOKENBUDGET_")) or k in ("HOME", "PWD")},
    "cwd": os.getcwd(),
    "transcript_lines": lines,
    "transcript_assistant_keys": keys,
    "time_ns": time.time_ns(),
}
name = "%d-%d.json" % (time.time_ns(), os.getpid())
with open(os.path.join(log_dir, name + ".tmp"), "w", encoding="utf-8") as f:
    json.dump(record, f)
os.replace(os.path.join(log_dir, name + ".tmp"), os.path.join(log_dir, name))
'''


@dataclass
class HookRecorder:
    """A hook command that records every call (stdin JSON, env, transcript state) to files."""

    script: Path
    log_dir: Path

    @property
    def command(self) -> str:
        """The command to register for any event."""
        return f"{python_command(self.script)} {shlex.quote(str(self.log_dir))}"

    def calls(self, event: str | None = None) -> list[dict[str, Any]]:
        """Recorded calls in order, optionally only those of one hook_event_name."""
        records = [json.loads(p.read_text(encoding="utf-8")) for p in self.log_dir.glob("*.json")]
        records.sort(key=lambda r: r["time_ns"])
        if event is not None:
            records = [r for r in records if r["stdin"].get("hook_event_name") == event]
        return records

    def inputs(self, event: str | None = None) -> list[dict[str, Any]]:
        """Just the stdin JSON of each recorded call."""
        return [r["stdin"] for r in self.calls(event)]


@pytest.fixture
def hook_recorder(tmp_path: Path) -> HookRecorder:
    """A HookRecorder writing under tmp_path."""
    log_dir = tmp_path / "hook-calls"
    log_dir.mkdir()
    script = write_script(tmp_path / "hooks" / "record_hook.py", _RECORDER)
    return HookRecorder(script, log_dir)


MakeScript = Callable[[str, str], Path]


@pytest.fixture
def hook_script(tmp_path: Path) -> MakeScript:
    """make(name, body) -> executable shell script under tmp_path/hooks (body after #!/bin/sh)."""

    def make(name: str, body: str) -> Path:
        return write_script(tmp_path / "hooks" / name, "#!/bin/sh\n" + body)

    return make
