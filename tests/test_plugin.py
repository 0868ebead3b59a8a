"""The plugin route: the environment setup-env builds, the /tokenbudget skill's CLI shim, and
the note the hooks leave for doctor when they run as a plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUP_ENV = REPO / "hooks" / "setup-env"


def _setup_env(venv: Path, version: str) -> None:
    proc = subprocess.run(
        ["sh", str(SETUP_ENV), str(REPO), str(venv), version],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _interpreter(script: Path) -> Path:
    """The Python a console script starts: its #! line, or pip's `exec` line when the path
    has a space (the #! line is then /bin/sh)."""
    lines = script.read_text().splitlines()
    assert lines[0].startswith("#!"), lines[0]
    if lines[0] == "#!/bin/sh":
        found = re.match(r"'''exec' \"([^\"]+)\" ", lines[1])
        assert found, lines[1]
        return Path(found.group(1))
    return Path(lines[0][2:].split()[0])


def test_setup_env_builds_an_environment_whose_console_script_runs(tmp_path: Path) -> None:
    data = tmp_path / "plugin data"  # a space, as in many a home folder
    venv = data / "venv"
    # What an older setup-env left: a plain folder (scripts naming venv.partial) and debris.
    (venv / "bin").mkdir(parents=True)
    (venv / ".ready").write_text("0.0.9")
    (data / "venv.partial").mkdir()
    _setup_env(venv, "0.1.0")

    assert venv.is_symlink() and (venv / ".ready").read_text() == "0.1.0"
    script = venv / "bin" / "tokenbudget"
    interpreter = _interpreter(script)
    assert interpreter.exists(), f"{script} starts {interpreter}, which does not exist"
    assert interpreter.parent.parent.parent == data
    run = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and "0.1.0" in run.stdout, run.stderr
    assert oct(venv.resolve().stat().st_mode & 0o777) == oct(0o700)
    first = venv.resolve()
    assert sorted(p.name for p in data.iterdir()) == sorted(["venv", first.name])

    # An upgrade builds beside it and swaps the link; the build it replaced stays for hooks
    # that started on it, until the next setup.
    _setup_env(venv, "0.2.0")
    assert (venv / ".ready").read_text() == "0.2.0" and venv.resolve() != first
    assert sorted(p.name for p in data.iterdir()) == sorted(
        ["venv", first.name, venv.resolve().name]
    )
    assert (
        subprocess.run([str(script), "--version"], capture_output=True, check=False).returncode == 0
    )


def test_the_hook_rebuilds_an_environment_from_an_older_setup_env(tmp_path: Path) -> None:
    data = tmp_path / "data"
    venv = data / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, venv / "bin" / "python")
    version = json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())["version"]
    (venv / ".ready").write_text(version)  # the current version, but a plain folder
    fake_root = tmp_path / "plugin"
    (fake_root / "hooks").mkdir(parents=True)
    (fake_root / ".claude-plugin").mkdir()
    shutil.copy(REPO / ".claude-plugin" / "plugin.json", fake_root / ".claude-plugin")
    marker = tmp_path / "setup ran"
    (fake_root / "hooks" / "setup-env").write_text(f'touch "{marker}"\n')
    env = {
        "TOKENBUDGET_PYTHON": "",
        "CLAUDE_PLUGIN_ROOT": str(fake_root),
        "CLAUDE_PLUGIN_DATA": str(data),
    }
    proc = subprocess.run(
        [str(REPO / "hooks" / "tokenbudget-hook"), "Stop"],
        input=b"{}",
        capture_output=True,
        env={**os.environ, **env},
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.05)
    assert marker.exists(), "an environment that is not a link was not set up again"
