"""The Perl relay (relay.pl, `install --resident --relay perl`): the Python relay's answers
without a Python start, and the Python relay itself wherever it cannot give them exactly."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.test_resident import _relay, _stop_event, setup  # noqa: F401 (a fixture)
from tokenbudget import claude_settings, hook, relay, relay_perl, resident
from tokenbudget.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def python(private_home: Path) -> tuple[str, Path]:
    """An interpreter that notes the arguments after its `-c` code (the event, and what the Perl
    relay said happened) in a log and its working folder beside it, then runs as the real one:
    (its path, the log)."""
    log = private_home / "python ran.log"
    wrapper = private_home / "bin 'q'" / "py thon"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[sys.argv.index('-c') + 2:]) + '\\n')\n"
        f"with open({str(log) + '.cwd'!r}, 'w') as f:\n"
        "    f.write(os.getcwd())\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n")
    wrapper.chmod(0o700)
    return str(wrapper), log


def _command(python: tuple[str, Path], event: str) -> str:
    command = claude_settings.perl_relay_command(python[0], event, [str(REPO)])
    assert command is not None
    return command


def _run(command: str, raw: bytes, env: dict[str, Any] | None = None, said: bytes = b"") -> Any:
    """What the hook command prints, run by a shell as Claude Code runs it (and what it says
    on stderr: `said`)."""
    done = subprocess.run(["/bin/sh", "-c", command], input=raw, capture_output=True,
                          timeout=30, check=True, env=env)
    assert done.stderr == said
    return json.loads(done.stdout)


def _ran(python: tuple[str, Path]) -> list[list[str]]:
    """What the Python relay was started with so far (the log emptied)."""
    log = python[1]
    if not log.exists():
        return []
    lines = log.read_text().splitlines()
    log.unlink()
    return [json.loads(line) for line in lines]


class FakeAnswerer:
    """A socket in the answerer's folder that notes each request and answers `reply` (None:
    takes the event and stays silent)."""

    def __init__(self, reply: bytes | None, decide: bool = False) -> None:
        where = resident.folder()
        os.makedirs(where, mode=0o700, exist_ok=True)
        self.address = relay.Address(where)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.address.address)
        self.server.listen()
        self.reply = reply
        self.decide = decide  # as an answerer that dies after its decision, before its answer
        self.got: list[bytes] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn = self.server.accept()[0]
            except OSError:
                return
            got = b""
            while chunk := conn.recv(65536):
                got += chunk
            self.got.append(got)
            if self.decide:
                head, raw = got.split(b"\n", 1)
                hook.handle(json.loads(head)["event"], raw)
            if self.reply is None:
                self.held.append(conn)
                continue
            conn.sendall(self.reply)
            conn.close()

    def close(self) -> None:
        self.server.close()
        for conn in self.held:
            conn.close()
        os.unlink(self.address.path)
        self.address.close()


@pytest.fixture
def fake(request: pytest.FixtureRequest, private_home: Path) -> Iterator[FakeAnswerer]:
    reply, decide = getattr(request, "param", (b'{"said": "x"}', False))
    made = FakeAnswerer(reply, decide)
    yield made
    made.close()


def _config(private_home: Path, budgets: list[dict[str, Any]]) -> None:
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({"budgets": budgets}))


def test_every_relayed_event_gets_the_python_relay_s_answer_without_a_python_start(
    setup: resident.Setup, private_home: Path, recorded_day: float,  # noqa: F811
    python: tuple[str, Path],
) -> None:
    _config(private_home, [{"kind": "total", "limit": "1k"}])
    assert resident.ensure() == ("ours", "")
    base = json.loads(_stop_event(private_home))
    for n, event in enumerate(relay.RELAYED):
        raw = base | {"hook_event_name": event, "prompt": "hi", "agent_id": "a-1",
                      "source": "startup", "reason": "other"}
        expected, _ = _relay(event, json.dumps(raw | {"prompt_id": f"py-{n}"}).encode())
        got = _run(_command(python, event), json.dumps(raw | {"prompt_id": f"pl-{n}"}).encode())
        assert got == expected, event
        assert _ran(python) == []  # no Python started
        assert resident.probe(setup)[1]["relayed"] == 2 * (n + 1)  # the answerer decided both
        if event == "UserPromptSubmit":
            assert got["decision"] == "block"


def test_the_request_is_the_python_relay_s_byte_for_byte(
    fake: FakeAnswerer, python: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = '/a b/"q"/back\\slash\ttab\x01/caf\u00e9/\u2603\x7f'
    raw = b'{"session_id": "s-1", "prompt": "hi \xe2\x98\x83"}\n\x00 any bytes'
    monkeypatch.setenv("CLAUDE_PROJECT_DIR", project)
    assert _run(_command(python, "UserPromptSubmit"), raw) == {"said": "x"}
    assert fake.got == [relay.header_line("UserPromptSubmit", "", project, relay.session_dirs(),
                                          async_start=True) + raw]
    assert _ran(python) == []
    # A project folder whose name is not UTF-8: Python's own rules, in Python.
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env[b"CLAUDE_PROJECT_DIR"] = b"/bytes/\xff\xfe"
    assert _run(_command(python, "UserPromptSubmit"), raw, env) == {"said": "x"}
    assert _ran(python) == [["UserPromptSubmit"]]
    assert fake.got[1] == relay.header_line("UserPromptSubmit", "", os.fsdecode(b"/bytes/\xff\xfe"),
                                            relay.session_dirs(), async_start=True) + raw


def test_tokenbudget_disable_answers_nothing_and_asks_nobody(
    fake: FakeAnswerer, python: tuple[str, Path]
) -> None:
    env = dict(os.environ, TOKENBUDGET_DISABLE="1")
    assert _run(_command(python, "UserPromptSubmit"), b'{"prompt": "hi"}', env) == {}
    assert fake.got == [] and _ran(python) == []


def test_without_an_answerer_the_full_hook_decides_and_starts_it(
    setup: resident.Setup, private_home: Path, recorded_day: float,  # noqa: F811
    python: tuple[str, Path],
) -> None:
    _config(private_home, [{"kind": "total", "limit": "1k"}])
    assert resident.probe(setup)[0] == "down"
    event = json.loads(_stop_event(private_home)) | {"prompt": "hi", "prompt_id": "p-1"}
    answer = _run(_command(python, "UserPromptSubmit"), json.dumps(event).encode())
    assert answer["decision"] == "block"
    assert _ran(python) == [["UserPromptSubmit"]]  # the Python relay, as it was handed
    _run(_command(python, "SessionStart"), json.dumps(event | {"source": "startup"}).encode())
    assert _ran(python) == [["SessionStart"]]
    assert resident.probe(setup)[0] == "ours"  # started by the full hook
    answer = _run(_command(python, "UserPromptSubmit"),
                  json.dumps(event | {"prompt_id": "p-2"}).encode())
    assert answer["decision"] == "block" and _ran(python) == []
    assert resident.probe(setup)[1]["relayed"] == 1


def test_a_folder_others_can_write_in_goes_to_the_python_relay(
    fake: FakeAnswerer, python: tuple[str, Path]
) -> None:
    os.chmod(resident.folder(), 0o770)
    try:
        answer = _run(_command(python, "UserPromptSubmit"), b'{"prompt": "hi"}')
    finally:
        os.chmod(resident.folder(), 0o700)
    assert _ran(python) == [["UserPromptSubmit"]]
    assert fake.got == []  # neither relay used that socket
    assert "systemMessage" in answer or "decision" not in answer


def test_a_socket_path_too_long_for_sun_path_is_reached_from_its_folder(
    private_home: Path, python: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = private_home / ("d" * 60) / ("e" * 60)
    monkeypatch.setenv("TOKENBUDGET_HOME", str(deep))
    cwd = private_home / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for reply in (b'{"said": "far"}', b""):
        made = FakeAnswerer(reply)
        try:
            assert len(os.fsencode(made.address.path)) > 108
            answer = _run(_command(python, "SubagentStop"), b"{}")
            assert len(made.got) == 1
        finally:
            made.close()
        if reply:
            assert answer == {"said": "far"} and _ran(python) == []
        else:
            # Dropped: the Python relay decides, in the folder the hook was started in.
            assert answer == {} and _ran(python) == [["SubagentStop", "--relayed=dropped"]]
            assert Path(str(python[1]) + ".cwd").read_text() == str(cwd)


@pytest.mark.parametrize("name", relay_perl.ENVIRONMENT)
def test_an_environment_other_than_install_s_goes_to_the_python_relay(
    fake: FakeAnswerer, python: tuple[str, Path], name: str, private_home: Path
) -> None:
    command = _command(python, "SessionEnd")
    env = dict(os.environ)
    env[name] = str(private_home / "elsewhere") if name not in env else env[name] + "x"
    _run(command, b'{"reason": "other"}', env)  # whatever the Python relay makes of it
    assert _ran(python) == [["SessionEnd"]]
    assert _run(command, b'{"reason": "other"}') == {"said": "x"} and _ran(python) == []


def test_without_perl_or_its_script_the_python_relay_runs(
    fake: FakeAnswerer, python: tuple[str, Path], private_home: Path
) -> None:
    command = _command(python, "SubagentStop")
    empty = private_home / "no perl here"
    empty.mkdir()
    assert _run(command, b"{}", dict(os.environ, PATH=str(empty))) == {"said": "x"}
    assert _ran(python) == [["SubagentStop"]]
    gone = command.replace(relay_perl.SCRIPT, shlex.quote(str(private_home / "gone" / "relay.pl")))
    assert _run(gone, b"{}") == {"said": "x"}
    assert _ran(python) == [["SubagentStop"]]


@pytest.mark.parametrize("fake", [(None, False)], indirect=True)
def test_an_answerer_that_takes_the_event_and_stays_silent_is_not_asked_twice(
    fake: FakeAnswerer, python: tuple[str, Path], private_home: Path
) -> None:
    # relay.pl as it is, with a 1 s timeout instead of relay.TIMEOUT's 8.
    script = private_home / "relay.pl"
    text = Path(relay_perl.SCRIPT).read_text()
    assert text.count("my $TIMEOUT = 8;") == 1
    script.write_text(text.replace("my $TIMEOUT = 8;", "my $TIMEOUT = 1;"))
    command = _command(python, "UserPromptSubmit").replace(relay_perl.SCRIPT,
                                                           shlex.quote(str(script)))
    why = f"tokenbudget: the resident answerer did not answer within {relay.TIMEOUT:g} s"
    answer = _run(command, b'{"session_id": "s-1", "prompt": "hi"}', said=why.encode() + b"\n")
    assert answer == {"systemMessage": why + "; allowing."}
    assert _ran(python) == [["UserPromptSubmit", "--relayed=late"]]
    assert len(fake.got) == 1


@pytest.mark.parametrize("fake", [(b"", True), (b"{oops", True), (b"not json", True)],
                         indirect=True)
def test_an_answerer_that_dies_after_taking_the_event_leaves_it_to_the_full_hook(
    fake: FakeAnswerer, python: tuple[str, Path], private_home: Path, recorded_day: float
) -> None:
    _config(private_home, [{"kind": "total", "limit": "1k"}])
    event = json.loads(_stop_event(private_home)) | {"prompt": "hi", "prompt_id": "p-1"}
    answer = _run(_command(python, "UserPromptSubmit"), json.dumps(event).encode())
    # It recorded the event as seen: decided again here, not as a second registration's call.
    assert answer["decision"] == "block"
    assert _ran(python) == [["UserPromptSubmit", "--relayed=dropped"]]
    assert len(fake.got) == 1  # not asked again


@pytest.mark.parametrize("fake", [(b'{"systemMessage": "a note"}', False)], indirect=True)
def test_what_the_answerer_says_to_an_async_session_start_goes_to_the_log(
    fake: FakeAnswerer, python: tuple[str, Path], private_home: Path
) -> None:
    assert _run(_command(python, "SessionStart"), b'{"source": "startup"}') == {}
    assert _ran(python) == [["SessionStart", "--relayed=start"]]
    log = (private_home / "tb state" / "tokenbudget.log").read_text()
    assert 'SessionStart (async, not said): {"systemMessage": "a note"}' in log
    assert len(fake.got) == 1


def test_a_relative_folder_or_a_folder_list_is_not_written_into_the_perl_relay(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert relay_perl.baked() is not None
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", "/a,/b")
    assert relay_perl.baked() is None
    assert claude_settings.perl_relay_command(sys.executable, "SessionEnd") is None
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    monkeypatch.setenv("TOKENBUDGET_HOME", "relative/state")
    assert relay_perl.baked() is None


# --- settings ----------------------------------------------------------------------------------


def _relayed_commands(path: Path) -> dict[str, str]:
    hooks = json.loads(path.read_text())["hooks"]
    return {e: hooks[e][0]["hooks"][0]["command"] for e in relay.RELAYED}


def _install(*args: str) -> str:
    result = CliRunner().invoke(main, ["install", *args, "--no-sync"])
    assert result.exit_code == 0, result.output
    return result.output


def test_install_relay_perl_and_back_to_python_to_command_hooks_and_uninstall(
    private_home: Path,
) -> None:
    path = private_home / "my settings.json"
    _install("--resident", "--relay", "perl", "--settings", str(path))
    for event, command in _relayed_commands(path).items():
        parsed = claude_settings.parse_hook_command(command)
        assert parsed is not None and parsed.event == event
        assert parsed.perl_script == relay_perl.SCRIPT and parsed.python == sys.executable
    assert {r.event for r in claude_settings.find_registrations(path)} == set(
        claude_settings.OUR_EVENTS)
    assert "Already registered" in _install("--resident", "--relay", "perl", "--settings",
                                            str(path))
    _install("--resident", "--settings", str(path))  # the Python relay again, in place
    for command in _relayed_commands(path).values():
        parsed = claude_settings.parse_hook_command(command)
        assert parsed is not None and parsed.perl_script is None
    _install("--resident", "--relay", "perl", "--settings", str(path))
    _install("--settings", str(path))  # command hooks: no relay at all
    assert "relay_hook" not in path.read_text() and "relay.pl" not in path.read_text()
    _install("--resident", "--relay", "perl", "--settings", str(path))
    result = CliRunner().invoke(main, ["uninstall", "--settings", str(path)])
    assert result.exit_code == 0, result.output
    assert not path.exists()


def test_a_perl_relay_command_with_anything_else_in_it_is_not_ours(
    python: tuple[str, Path],
) -> None:
    command = _command(python, "UserPromptSubmit")
    assert claude_settings.is_our_command(command)
    fallback = claude_settings.hook_command(python[0], "UserPromptSubmit", [str(REPO)],
                                            claude_settings.RELAY_CODE)
    other = claude_settings.hook_command(python[0], "UserPromptSubmit", [str(REPO)], "import evil")
    for changed in (command.replace("exec perl", "exec perl -e 'evil'"),
                    command.replace(f"|| exec {fallback}", f"|| exec {other}"),
                    command.replace(relay_perl.SCRIPT, "/tmp/other.pl"),
                    command + "; evil"):
        assert not claude_settings.is_our_command(changed), changed


def test_doctor_names_a_perl_relay_without_perl_or_in_another_environment(
    private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget.doctor import Report, check_hooks

    path = private_home / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    _install("--resident", "--relay", "perl", "--settings", str(path))
    report = Report()
    check_hooks(report, private_home)
    found = [f for f in report.findings if f.title.startswith("Perl relay")]
    assert [(f.ok, f.detail) for f in found] == [(True, f"{shutil.which('perl')} "
                                                        f"{relay_perl.SCRIPT}")]
    path_was = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(private_home))
    report = Report()
    check_hooks(report, private_home)
    found = [f for f in report.findings if f.title.startswith("Perl relay")]
    assert [(f.ok, f.detail) for f in found] == [
        (False, "perl is not on PATH: SessionStart, UserPromptSubmit, SubagentStop and"
                " SessionEnd start Python instead")]
    assert "--relay python" in found[0].fix
    monkeypatch.setenv("PATH", path_was)
    monkeypatch.setenv("HOME", str(private_home / "another home"))
    report = Report()
    check_hooks(report, private_home)
    found = [f for f in report.findings if f.title.startswith("Perl relay")]
    assert [(f.ok, f.detail) for f in found] == [
        (False, "it was written for another HOME than this environment's: SessionStart,"
                " UserPromptSubmit, SubagentStop and SessionEnd start Python in it")]


def test_the_script_loads_no_module_on_linux_and_only_perl_base_s_elsewhere() -> None:
    text = Path(relay_perl.SCRIPT).read_text()
    used = sorted({line.split()[1].rstrip(";") for line in text.splitlines()
                   if line.lstrip().startswith(("use ", "require "))})
    assert used == ["strict"] and text.count("require Socket;") == 1  # perl-base ships both
    # What it has loaded when it exits (here at once: TOKENBUDGET_DISABLE).
    loaded = subprocess.run(["perl", "-e", "END { print STDERR join ',', sort keys %INC }"
                             f" do {json.dumps(relay_perl.SCRIPT)}"], input=b"",
                            capture_output=True, env=dict(os.environ, TOKENBUDGET_DISABLE="1"),
                            check=True)
    assert loaded.stdout == b"{}\n"
    assert loaded.stderr == os.fsencode(relay_perl.SCRIPT) + b",strict.pm"
    assert not stat.S_IMODE(os.stat(relay_perl.SCRIPT).st_mode) & 0o022
