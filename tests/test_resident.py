"""The resident answerer: who may talk to it, who it proves itself to, its files, its life."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import install_fixture, stored_ledger, truth_usage
from tests.test_hook import _append_request, session, session_tokens, set_budgets
from tokenbudget import answerer, claude_settings, hook, paths, relay, resident
from tokenbudget.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def setup(private_home: Path) -> Iterator[resident.Setup]:
    """An installed answerer (key file, free port); whatever it started is ended afterwards."""
    made = resident.create()
    resident.save(made)
    yield made
    pid = resident.read_state().get("pid")
    resident.remove()
    # Ended at once: that it stops by itself when its key goes, which takes it up to 1.5 s,
    # is tested on its own (test_it_exits_when_idle_and_when_its_key_goes).
    if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)


def _alive(pid: int) -> bool:
    """Running (a killed process that nobody has reaped yet is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _post(url: str, body: bytes, key: str | None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _stop_event(private_home: Path) -> bytes:
    transcript = next(install_fixture("loop", private_home / ".claude").glob("*/*.jsonl"))
    return json.dumps({"session_id": transcript.stem, "transcript_path": str(transcript),
                       "cwd": "/home/dev/project", "hook_event_name": "Stop"}).encode()


def test_it_answers_with_the_key_only_and_as_the_command_hook_would(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    state = private_home / "tb state"
    (state / "config.json").write_text(json.dumps({"budgets": [{"kind": "total",
                                                                "limit": "1k"}]}))
    assert resident.ensure() == ("ours", "")
    event = _stop_event(private_home)
    url = resident.url(setup.port, "Stop")
    assert _post(url, event, None)[0] == 403
    assert _post(url, event, "0" * 64)[0] == 403
    assert resident.probe(setup)[1]["answered"] == 0  # neither reached hook.handle
    # Its health (and a session's project) only for a hook that signs the check with the key.
    check = {"nonce": "n", "session": "s", "project": "/p", "mac": "0" * 64}
    health_url = f"http://127.0.0.1:{setup.port}{resident.URL_PATH}health"
    assert _post(health_url, json.dumps(check).encode(), setup.key) == (403, b"")
    code, body = _post(url, event, setup.key)
    assert code == 200
    answer = json.loads(body)
    assert "tokenbudget" in answer["systemMessage"]  # the 1k budget is used up: it says so
    # The same event again is a second registration's call: the command hook answers it `{}`,
    # as the answerer did the first time; one ledger, one answer.
    assert hook.handle("Stop", event) == {}
    assert resident.probe(setup)[1]["answered"] == 1


def test_a_stranger_on_the_port_is_found_out_and_prompts_are_refused(
    setup: resident.Setup, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[dict[str, Any]] = []

    class Squatter(BaseHTTPRequestHandler):
        """It has had an http hook, so it holds the bearer key, and answers with an HMAC under
        it: the key it could get proves nothing."""

        def log_message(self, *a: Any) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            proof = resident.mac(setup.key, "answerer", seen[-1]["nonce"])
            body = json.dumps({"proof": proof}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = HTTPServer(("127.0.0.1", setup.port), Squatter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        found, why = resident.probe(setup)
        assert (found, why) == ("stranger", {"why": "it cannot prove that it is tokenbudget's"
                                                    " answerer"})
        assert setup.proof not in json.dumps(seen)  # the probe never gave the secret away
        event = json.dumps({"session_id": "s-1", "prompt": "hi"}).encode()
        sys.stdin = _Stdin(event)
        try:
            hook.main(["UserPromptSubmit"])
        finally:
            sys.stdin = sys.__stdin__
        answer = json.loads(capsys.readouterr().out)
        assert answer["decision"] == "block"
        # The stranger learnt no session, project or Claude folder: those are told only to an
        # answerer that has proved itself.
        assert len(seen) == 2
        assert {(c["session"], c["project"], str(c["dirs"])) for c in seen} == {("", "", "[]")}
        assert answer["reason"] == (
            f"tokenbudget: another process holds 127.0.0.1:{setup.port}, where the answerer"
            " should be (it cannot prove that it is tokenbudget's answerer): tool events would"
            " go to it. Run `tokenbudget install --resident` again for a new port and key;"
            " until then prompts are refused")
    finally:
        server.shutdown()
        server.server_close()


class _Stdin:
    def __init__(self, data: bytes) -> None:
        import io

        self.buffer = io.BytesIO(data)

    def isatty(self) -> bool:
        return False


def _lean_hook(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], event: str,
               raw: bytes = b'{"session_id": "s-1", "prompt": "hi"}') -> dict[str, Any]:
    """What the lean command hook (relay_hook) prints for `event` with `raw` on its stdin."""
    from tokenbudget import relay_hook

    monkeypatch.setattr(sys, "argv", ["-c", event])
    monkeypatch.setattr(sys, "stdin", _Stdin(raw))
    relay_hook.main()
    answer: dict[str, Any] = json.loads(capsys.readouterr().out)
    return answer


def _config(private_home: Path, text: str) -> None:
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(text)


def test_its_files_are_private_and_two_starts_make_one_answerer(
    setup: resident.Setup, private_home: Path
) -> None:
    results: list[tuple[str, str]] = []
    threads = [threading.Thread(target=lambda: results.append(resident.ensure()))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [("ours", ""), ("ours", "")]
    folder = Path(resident.folder())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("key.json", "state.json", "start.lock"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    pid = resident.probe(setup)[1]["pid"]
    time.sleep(1.5)  # the second answerer, if one started, has found the port taken and left
    # Answerers run in their folder: every process there is one of this test's.
    here = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == str(folder):
                here.append(int(entry.name))
        except OSError:
            continue
    assert here == [pid] and resident.read_state()["pid"] == pid


def _listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:`port`, seen without connecting to it."""
    where = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as f:
        return any(fields[1] == where and fields[3] == "0A"
                   for fields in (line.split() for line in list(f)[1:]))


def test_two_hooks_finding_it_down_at_once_start_one_answerer_and_wait_for_it_however_slow(
    setup: resident.Setup, private_home: Path
) -> None:
    # A session's start: its async SessionStart and its first prompt find the answerer down at
    # once, each in its own process (ensure is those hooks' resident part). The answerer that
    # takes the port is slow to answer, as on a loaded machine: its first line in the log,
    # written between taking the port and answering, waits here on a pipe nobody reads yet,
    # for longer than a check waits for an answer.
    log = Path(paths.log_file())
    log.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(log, 0o600)
    held = log.with_name("held.fifo")
    os.link(log, held)
    code = ("import json; from tokenbudget import resident; resident.PROBE_TIMEOUT = 1.0;"
            " print(json.dumps(resident.ensure()))")
    hooks = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    deadline = time.monotonic() + 20
    while not _listening(setup.port):
        assert time.monotonic() < deadline, "no answerer took the port"
        time.sleep(0.005)
    time.sleep(1.5)  # every check in this time gets no answer
    log.unlink()  # later lines go to a file
    reader = os.open(held, os.O_RDONLY | os.O_NONBLOCK)  # the answerer (or two) goes on
    try:
        said = [hook.communicate(timeout=30)[0] for hook in hooks]
        time.sleep(0.5)  # a second answerer, if one started, has found the port taken
        lines = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 65536):
                lines += chunk
    finally:
        os.close(reader)
    assert said == ['["ours", ""]\n'] * 2
    assert not resident.exposed(setup)  # our own answerer was no stranger
    text = lines.decode() + (log.read_text() if log.exists() else "")
    assert text.count(" listening on ") == 1 and "cannot listen" not in text, text
    assert "failed_start" not in resident.read_state()


def test_a_holder_of_the_port_that_does_not_answer_is_a_stranger_when_nothing_of_ours_starts(
    setup: resident.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resident, "PROBE_TIMEOUT", 0.3)
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", setup.port))
        squatter.listen()  # connections wait in its backlog, unanswered
        assert resident.ensure() == ("stranger", "it did not answer (timed out)")
    assert resident.exposed(setup)
    assert not [p for p in Path(resident.folder()).glob("*.tmp")]


def _starts_nothing(monkeypatch: pytest.MonkeyPatch, probe: float, wait: float) -> list[str]:
    """The answerer's bounds set to `probe` and `wait` s, and `resident.start` replaced by a
    start that brings up no answerer: the list of the starts asked for."""
    monkeypatch.setattr(resident, "PROBE_TIMEOUT", probe)
    monkeypatch.setattr(resident, "START_WAIT", wait)
    started: list[str] = []
    monkeypatch.setattr(resident, "start", started.append)
    return started


def test_a_hook_waits_for_a_start_within_today_s_bounds_and_starts_none_while_another_does(
    setup: resident.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import lock

    started = _starts_nothing(monkeypatch, 0.2, 0.4)  # an answerer that never comes
    assert resident.ensure() == ("down", "it did not answer within 0.4 s")
    assert len(started) == 1
    # Another hook holds the start lock: this one waits for that answerer, starts none, and
    # gives up within the bound of a check and a start.
    release = lock.acquire(resident.start_lock_file(), 1)
    try:
        assert resident.ensure() == ("down", "another hook started it, and it did not answer"
                                             " within 0.6 s")
    finally:
        release()
    assert len(started) == 1


def test_a_stranger_taking_the_port_while_the_answerer_starts_is_a_stranger(
    setup: resident.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It takes the port between the hook's check (nothing there) and the answerer's bind, and
    # stays silent: the hook, waiting for its answerer, learns from that answerer what it met.
    squatter = socket.socket()
    real_start = resident.start

    def taken_first(token: str = "") -> None:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", setup.port))
        squatter.listen()
        real_start(token)

    monkeypatch.setattr(resident, "start", taken_first)
    try:
        assert resident.ensure() == ("stranger", "it did not answer (timed out)")
    finally:
        squatter.close()
    assert resident.exposed(setup)


def _relay(event: str, body: bytes, env: dict[str, str] | None = None) -> tuple[Any, list[str]]:
    """The lean command hook as install --resident writes it (quick start): its answer, and
    the modules of ours (and of a few costly imports) it loaded."""
    # Said as the process ends (relay_hook.run ends it with os._exit, once its answer is out).
    shown = ("print(sorted(m for m in sys.modules if m.startswith('tokenbudget') or m in"
             " ('hmac', 'hashlib', 'threading', 'http', 'socket', 'enum', 're')),"
             " file=sys.stderr, flush=True)")
    code = (f"import os, sys; end = os._exit; os._exit = lambda rc: ({shown}, end(rc)); "
            + claude_settings.fast_code([str(REPO)], claude_settings.RELAY_CODE))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", code, event], input=body,
                          capture_output=True, timeout=30, check=True, env=env)
    return json.loads(done.stdout), json.loads(done.stderr.decode().replace("'", '"'))


def test_a_command_hook_hands_its_event_to_the_answerer_over_its_socket(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    state = private_home / "tb state"
    (state / "config.json").write_text(json.dumps({"budgets": [{"kind": "total",
                                                                "limit": "1k"}]}))
    assert resident.ensure() == ("ours", "")
    event = json.loads(_stop_event(private_home)) | {"prompt": "hi", "prompt_id": "p-1"}
    answer, modules = _relay("UserPromptSubmit", json.dumps(event).encode())
    assert modules == ["tokenbudget", "tokenbudget.paths", "tokenbudget.relay",
                       "tokenbudget.relay_hook"]
    assert resident.probe(setup)[1]["relayed"] == 1  # the answerer decided it
    # As the command hook decides the same prompt (another prompt id: a new event).
    expected = hook.handle("UserPromptSubmit", json.dumps(event | {"prompt_id": "p-2"}).encode())
    assert expected["decision"] == "block"
    assert answer == expected
    # TOKENBUDGET_DISABLE=1 in the session: nothing is asked.
    off = dict(os.environ, TOKENBUDGET_DISABLE="1")
    assert _relay("UserPromptSubmit", json.dumps(event).encode(), off)[0] == {}
    assert resident.probe(setup)[1]["relayed"] == 1


def test_the_socket_request_s_first_line_is_json_whatever_the_paths_hold() -> None:
    odd = ["/a b/\"q\"/back\\slash", "/tab\tnew\nline\x01", "/caf\u00e9/\u2603",
           os.fsdecode(b"/bytes/\xff\xfe")]
    line = relay.header_line("UserPromptSubmit", "s-1", odd[0], odd)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"event": "UserPromptSubmit", "session": "s-1",
                                "project": odd[0], "dirs": odd, "async_start": False}
    assert json.loads(relay.header_line("SessionStart", "", "", [], async_start=True)) == {
        "event": "SessionStart", "session": "", "project": "", "dirs": [], "async_start": True}


def test_the_lean_hook_tells_the_answerer_that_session_start_is_async(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    from tokenbudget.store import open_store

    assert resident.ensure() == ("ours", "")
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    event = json.loads(_stop_event(private_home)) | {"hook_event_name": "SessionStart"}
    answer, modules = _relay("SessionStart", json.dumps(event).encode())
    assert answer == {} and "tokenbudget.hook" not in modules
    assert resident.probe(setup)[1]["relayed"] == 1  # the answerer decided it
    assert stored_ledger(private_home / "tb state")["notices"] == [
        "tokenbudget: a note for the next hook"]


def test_an_async_session_start_relayed_leaves_what_it_would_say_to_the_prompt(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    from tokenbudget.store import open_store

    state = private_home / "tb state"
    (state / "config.json").write_text(json.dumps({"budgets": [{"kind": "daily",
                                                                "limit": "100M"}],
                                                   "context_hint": True}))
    me = answerer.Answerer(setup)
    event = json.loads(_stop_event(private_home))
    sid = event["session_id"]
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: a note for the next hook")
    me.unsaid[sid] = "tokenbudget: a commit after its answer failed"

    def head(name: str, async_start: bool) -> bytes:
        return relay.header_line(name, "", "", [], async_start)

    start = json.dumps(event | {"hook_event_name": "SessionStart", "source": "startup"})
    assert me.relay(head("SessionStart", True), start.encode()) == {}
    assert sid in me.unsaid and sid in stored_ledger(state)["sessions"]  # type: ignore[operator]
    prompt = json.dumps(event | {"hook_event_name": "UserPromptSubmit", "prompt": "go",
                                 "prompt_id": "p-1"})
    answer = me.relay(head("UserPromptSubmit", True), prompt.encode())
    assert answer is not None
    assert answer["systemMessage"].split("\n") == [
        "tokenbudget: a note for the next hook", "tokenbudget: a commit after its answer failed"]
    assert "daily budget" in answer["hookSpecificOutput"]["additionalContext"]
    # Relayed by an older lean hook (no async_start): SessionStart is heard, as before.
    with open_store().transaction() as held:
        held["notices"].append("tokenbudget: another note")
    resumed = json.dumps(event | {"hook_event_name": "SessionStart", "source": "resume"})
    answer = me.relay(relay.header_line("SessionStart", "", "", []).replace(
        b', "async_start": false', b""), resumed.encode())
    assert answer is not None and answer["systemMessage"] == "tokenbudget: another note"
    assert "daily budget" in answer["hookSpecificOutput"]["additionalContext"]


def test_without_an_answerer_the_command_hook_decides_itself_and_starts_it(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    state = private_home / "tb state"
    (state / "config.json").write_text(json.dumps({"budgets": [{"kind": "total",
                                                                "limit": "1k"}]}))
    assert resident.probe(setup)[0] == "down"
    event = json.loads(_stop_event(private_home)) | {"prompt": "hi", "prompt_id": "p-1"}
    answer, modules = _relay("UserPromptSubmit", json.dumps(event).encode())
    assert answer["decision"] == "block"  # decided in the hook's own process
    assert "tokenbudget.hook" in modules
    # No answerer to start for a refused prompt; the next session start starts it.
    assert resident.probe(setup)[0] == "down"
    answer, modules = _relay("SessionStart", json.dumps(event | {"source": "startup"}).encode())
    assert "tokenbudget.hook" in modules
    found, health = resident.probe(setup)
    assert found == "ours" and health["relayed"] == 0
    # From then on, the answerer decides.
    answer, modules = _relay("UserPromptSubmit", json.dumps(event | {"prompt_id": "p-3"}).encode())
    assert answer["decision"] == "block" and "tokenbudget.hook" not in modules
    assert resident.probe(setup)[1]["relayed"] == 1


@pytest.mark.parametrize("fail_closed", [False, True])
def test_an_answerer_that_takes_the_event_and_stays_silent_is_our_failure(
    private_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    fail_closed: bool,
) -> None:
    _config(private_home, json.dumps({"fail_closed": fail_closed}))
    resident.save(resident.create())
    monkeypatch.setattr(relay, "TIMEOUT", 0.3)
    address = relay.Address(resident.folder())
    held: list[socket.socket] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(address.address)
        silent.listen()
        threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
        answer = _lean_hook(monkeypatch, capsys, "UserPromptSubmit")
    address.close()
    for conn in held:
        conn.close()
    said = "tokenbudget: the resident answerer did not answer within 0.3 s"
    # Not decided here too: the answerer may still be deciding it.
    if fail_closed:
        assert answer == {"decision": "block",
                          "reason": said + " (fail_closed is on, so this prompt is refused)"}
    else:
        assert answer == {"systemMessage": said + "; allowing."}
    resident.remove()


def test_an_answerer_that_dies_after_taking_the_event_lets_no_refused_prompt_through(
    private_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    recorded_day: float,
) -> None:
    # It decided the prompt (and recorded the event as seen) but died before it answered:
    # the command hook decides it again, not as a second registration of an answered event.
    _config(private_home, json.dumps({"budgets": [{"kind": "total", "limit": "1k"}]}))
    resident.save(resident.create())
    event = json.loads(_stop_event(private_home)) | {"prompt": "hi", "prompt_id": "p-1"}
    raw = json.dumps(event).encode()
    address = relay.Address(resident.folder())
    decided: list[dict[str, Any]] = []

    def dies_before_answering(server: socket.socket) -> None:
        conn = server.accept()[0]
        got = b""
        while chunk := conn.recv(65536):
            got += chunk
        decided.append(hook.handle("UserPromptSubmit", got.split(b"\n", 1)[1]))
        conn.close()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(address.address)
        server.listen()
        dying = threading.Thread(target=dies_before_answering, args=(server,), daemon=True)
        dying.start()
        monkeypatch.setattr(hook, "_resident", lambda name, raw, answer: answer)  # no restart
        answer = _lean_hook(monkeypatch, capsys, "UserPromptSubmit", raw)
        dying.join(5)
    address.close()
    assert decided and decided[0]["decision"] == "block"
    assert answer["decision"] == "block" and answer["reason"] == decided[0]["reason"]
    resident.remove()


def test_an_answerer_that_cannot_make_its_socket_still_answers_over_http(
    setup: resident.Setup, private_home: Path
) -> None:
    # Something of the user's own stands where the socket goes (a path too long for a socket
    # without /proc, on some systems, is the same case).
    (Path(resident.folder()) / relay.SOCKET_NAME).mkdir(parents=True)
    assert resident.ensure("s-1") == ("ours", "")
    assert relay.ask("", b"", "s-1") is None  # the command hooks decide in their own process
    assert resident.probe(setup)[0] == "ours"


def test_a_socket_in_a_folder_others_can_write_in_is_not_used(
    setup: resident.Setup, private_home: Path
) -> None:
    assert resident.ensure() == ("ours", "")
    assert relay.ask("", b"", "s-1") == b"{}"
    folder = resident.folder()
    os.chmod(folder, 0o770)  # a group could have put its own socket there
    try:
        assert relay.ask("", b"", "s-1") is None
    finally:
        os.chmod(folder, 0o700)


def test_a_health_check_replayed_is_refused(setup: resident.Setup) -> None:
    me = answerer.Answerer(setup)
    mac = resident.mac(setup.proof, "health", "n1", "s-1", "/p", "[]")
    check = json.dumps({"nonce": "n1", "session": "s-1", "project": "/p", "dirs": [],
                        "mac": mac}).encode()
    assert me.check(check) is not None
    assert me.sessions == {"s-1": ("/p", None)}
    me.sessions.clear()
    assert me.check(check) is None  # captured and sent again: refused, nothing noted
    assert me.sessions == {}


def test_it_exits_when_idle_and_when_its_key_goes(setup: resident.Setup) -> None:
    code = "from tokenbudget.answerer import serve; serve(idle=0.5)"
    done = subprocess.run([sys.executable, "-c", code], timeout=20, cwd=REPO)
    assert done.returncode == 0
    assert resident.read_state()["stopped"] is not None
    assert resident.ensure() == ("ours", "")
    pid = resident.probe(setup)[1]["pid"]
    resident.remove()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert resident.probe(setup)[0] == "down"


def test_a_port_that_cannot_be_bound_leaves_the_answerer_down_and_says_so_at_once(
    private_home: Path,
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        made = resident.create(holder.getsockname()[1])
        resident.save(made)
        found, why = resident.ensure()
        assert (found, why) == ("down", f"cannot listen on 127.0.0.1:{made.port} (Address"
                                        " already in use)")
        note = resident.note(found, why, made.port)
        assert note.startswith("tokenbudget: the resident answerer is not running")
    resident.remove()


# --- settings ----------------------------------------------------------------------------------


def test_install_writes_http_hooks_and_a_plain_install_takes_them_back(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    made = resident.Setup(40123, "ab" * 32, "cd" * 32)
    claude_settings.install(path, sys.executable, None, made)
    hooks = json.loads(path.read_text())["hooks"]
    assert hooks["PostToolBatch"] == [{"hooks": [{
        "type": "http", "url": "http://127.0.0.1:40123/tokenbudget/v1/PostToolBatch",
        "headers": {"Authorization": "Bearer " + "ab" * 32,
                    "X-Tokenbudget-Disable": "${TOKENBUDGET_DISABLE}"},
        "allowedEnvVars": ["TOKENBUDGET_DISABLE"], "timeout": 10}]}]
    assert hooks["Stop"][0]["hooks"][0]["type"] == "http"
    # The command hooks that stay hand their events to the answerer (relay_hook).
    for event in relay.RELAYED:
        assert hooks[event][0]["hooks"][0]["command"] == claude_settings.hook_command(
            sys.executable, event, None, claude_settings.RELAY_CODE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {r.event for r in claude_settings.find_registrations(path)} == set(
        claude_settings.OUR_EVENTS)
    claude_settings.install(path, sys.executable, None)
    again = json.loads(path.read_text())["hooks"]
    assert again == claude_settings.desired_hooks(sys.executable)
    claude_settings.install(path, sys.executable, None, made)
    claude_settings.uninstall(path)
    assert not path.exists() or "hooks" not in json.loads(path.read_text() or "{}")


def test_a_lean_command_hook_is_ours_in_both_its_forms() -> None:
    for folders in (None, ["/opt/tb site", "/opt/o'dd"]):
        command = claude_settings.hook_command("/usr/bin/python3", "UserPromptSubmit", folders,
                                               claude_settings.RELAY_CODE)
        assert claude_settings.parse_hook_command(command) == claude_settings.ParsedHook(
            "module", "UserPromptSubmit", "/usr/bin/python3",
            None if folders is None else tuple(folders))
    # Someone else's code after the same start is not ours.
    other = claude_settings.hook_command("/usr/bin/python3", "Stop", ["/x"], "import evil")
    assert claude_settings.parse_hook_command(other) is None


def test_an_http_hook_of_someone_else_is_not_ours() -> None:
    assert claude_settings.is_our_http_hook(
        {"type": "http", "url": "http://127.0.0.1:9/tokenbudget/v1/Stop"})
    for hook_entry in ({"type": "http", "url": "http://127.0.0.1:9/hooks/Stop"},
                       {"type": "http", "url": "http://example.com:9/tokenbudget/v1/Stop"},
                       {"type": "http", "url": "http://127.0.0.1:9/tokenbudget/v1/Stop?x=1"},
                       {"type": "command", "url": "http://127.0.0.1:9/tokenbudget/v1/Stop"}):
        assert not claude_settings.is_our_http_hook(hook_entry)


def test_install_resident_refuses_a_settings_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "my settings.json"
    path.write_text("{}\n")
    path.chmod(0o644)
    result = CliRunner().invoke(main, ["install", "--resident", "--settings", str(path),
                                       "--no-sync"])
    assert result.exit_code == 1
    assert result.output == (
        f"tokenbudget: cannot put the resident answerer's key in {path}: other users may read it"
        f" (mode 0644); run `chmod 600 '{path}'` first\n")
    assert path.read_text() == "{}\n" and resident.load() is None


def test_install_resident_refuses_a_project_s_shared_settings(
    private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["install", "--resident", "--scope", "project",
                                       "--python", sys.executable, "--no-sync"])
    assert result.exit_code == 1
    assert result.output.startswith("tokenbudget: --resident is for your own settings")
    assert not (tmp_path / ".claude").exists() and resident.load() is None


def test_install_resident_and_uninstall(tmp_path: Path) -> None:
    path = tmp_path / "my settings.json"
    result = CliRunner().invoke(main, ["install", "--resident", "--settings", str(path),
                                       "--no-sync"])
    assert result.exit_code == 0, result.output
    made = resident.load()
    assert made is not None and made.key in path.read_text()
    assert f"answerer on 127.0.0.1:{made.port}" in result.output
    result = CliRunner().invoke(main, ["uninstall", "--settings", str(path)])
    assert "The resident answerer is off" in result.output
    # install created the file: uninstall removes it.
    assert resident.load() is None and not path.exists()


def test_the_answerer_decides_with_the_project_the_command_hook_named(
    setup: resident.Setup, private_home: Path, tmp_path: Path, recorded_day: float
) -> None:
    # Claude Code gives an http hook none of the session's variables: CLAUDE_PROJECT_DIR, where
    # a project's budget file is, comes from the session's command hooks' checks.
    project = tmp_path / "app 'dir'"
    (project / ".claude").mkdir(parents=True)
    (project / ".claude" / "tokenbudget.json").write_text(
        json.dumps({"budgets": [{"kind": "session", "limit": "1k"}]}))
    me = answerer.Answerer(setup)
    event = json.loads(_stop_event(private_home))
    assert me.answer("Stop", json.dumps(event | {"n": 1}).encode()) == {}
    sid = event["session_id"]
    mac = resident.mac(setup.proof, "health", "n1", sid, str(project), "[]")
    check = {"nonce": "n1", "session": sid, "project": str(project), "dirs": [], "mac": mac}
    assert me.check(json.dumps(check).encode()) is not None
    answer = me.answer("Stop", json.dumps(event | {"n": 2}).encode())
    assert "session budget" in answer["systemMessage"]
    assert me.answered == 2


def test_the_answerer_keeps_its_garbage_collector_and_keeps_nothing_read(
    setup: resident.Setup, private_home: Path, recorded_day: float
) -> None:
    # A long-lived process: only a command hook's own process (hook.run) turns the collector
    # off and keeps what its call read until it ends.
    import gc

    me = answerer.Answerer(setup)
    event = json.loads(_stop_event(private_home))
    sent: list[dict[str, Any]] = []
    assert me.answer("Stop", json.dumps(event).encode(), send=sent.append) == {}
    start = json.dumps(event | {"hook_event_name": "SessionStart", "source": "resume"})
    assert me.relay(relay.header_line("SessionStart", "", "", [], True), start.encode()) == {}
    assert sent == [{}]
    assert gc.isenabled() and hook._kept is None


def test_doctor_says_whether_it_runs_its_pid_since_when_its_count_and_last_error(
    setup: resident.Setup, recorded_day: float
) -> None:
    from tokenbudget import doctor

    def finding() -> tuple[bool, str, str]:
        report = doctor.Report()
        doctor.check_resident(report)
        [only] = report.findings
        return only.ok, only.title, only.detail

    where = f"127.0.0.1:{setup.port}"
    assert finding() == (True, "resident answerer not running",
                         f"{where}: the next session or prompt starts it; last error: none")
    assert resident.ensure()[0] == "ours"
    pid = resident.read_state()["pid"]
    assert finding() == (True, "resident answerer running",
                         f"pid {pid} on {where} since 2026-11-28 17:40:00, answered 0 event(s);"
                         " last error: none")


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_prompt_while_the_answerer_cannot_start_is_told_or_with_fail_closed_refused(
    private_home: Path, capsys: pytest.CaptureFixture[str], fail_closed: bool
) -> None:
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({"fail_closed": fail_closed}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: the answerer cannot have it
        made = resident.create(holder.getsockname()[1])
        resident.save(made)
        sys.stdin = _Stdin(json.dumps({"session_id": "s-1", "prompt": "hi"}).encode())
        try:
            hook.main(["UserPromptSubmit"])
        finally:
            sys.stdin = sys.__stdin__
    answer = json.loads(capsys.readouterr().out)
    said = (f"tokenbudget: the resident answerer is not running (cannot listen on"
            f" 127.0.0.1:{made.port} (Address already in use)): this turn is checked before"
            " the prompt only, not after each batch of tools")
    if fail_closed:
        assert answer == {"decision": "block",
                          "reason": said + " (fail_closed is on, so this prompt is refused)"}
    else:
        assert answer == {"systemMessage": said}
    resident.remove()


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_key_file_of_the_older_layout_is_said_at_every_session_and_prompt(
    private_home: Path, capsys: pytest.CaptureFixture[str], fail_closed: bool
) -> None:
    """Version 1 had no proof secret: the http hooks still send to its port, where nothing
    answers, so the command hooks say so every time (and fail-closed refuses the prompt)."""
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({"fail_closed": fail_closed}))
    os.makedirs(resident.folder(), mode=0o700, exist_ok=True)
    Path(resident.key_file()).write_text(json.dumps({"version": 1, "port": 40000,
                                                     "key": os.urandom(32).hex()}))
    said = ("tokenbudget: the resident answerer must be installed again (`tokenbudget install"
            " --resident`): its key file is of an older tokenbudget or cannot be read. Until"
            " then tool batches are not checked")
    answers = []
    for name, event in [("SessionStart", {"session_id": "s-1", "source": "startup"}),
                        ("UserPromptSubmit", {"session_id": "s-1", "prompt": "hi"}),
                        ("UserPromptSubmit", {"session_id": "s-1", "prompt": "again"})]:
        sys.stdin = _Stdin(json.dumps(event).encode())
        try:
            hook.main([name])
        finally:
            sys.stdin = sys.__stdin__
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] == {"systemMessage": said}
    if fail_closed:
        prompt = {"decision": "block",
                  "reason": said + " (fail_closed is on, so this prompt is refused)"}
    else:
        prompt = {"systemMessage": said}
    assert answers[1:] == [prompt, prompt]
    assert resident.read_state() == {}  # nothing was started on the old key
    from tokenbudget import doctor

    report = doctor.Report()
    doctor.check_resident(report)
    assert [(f.ok, f.title, f.detail, f.fix) for f in report.findings] == [
        (False, "the resident answerer must be installed again",
         f"{resident.key_file()}: its key file is of an older tokenbudget or cannot be read;"
         " tool batches are not checked", "run `tokenbudget install --resident` again")]


def _cli(*args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--no-sync"] if args[0] == "install" else args)
    assert result.exit_code == 0, result.output
    return result.output


def _same(a: resident.Setup | None, b: resident.Setup | None) -> bool:
    return a is not None and b is not None and (a.port, a.key, a.proof) == (b.port, b.key, b.proof)


@pytest.fixture
def project(private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder the commands run in: its .claude/settings.local.json is one of the user's."""
    folder = tmp_path / "app 'dir'"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_a_second_settings_file_gets_the_same_port_and_key_and_keeps_the_answerer_on(
    project: Path, private_home: Path
) -> None:
    user = private_home / ".claude" / "settings.json"
    local = project / ".claude" / "settings.local.json"
    _cli("install", "--resident")
    first = resident.load()
    assert first is not None
    _cli("install", "--resident", "--scope", "local")
    assert _same(resident.load(), first)
    for path in (user, local):
        assert claude_settings.http_targets(path) == {(first.port, first.key)}
    # Back to command hooks in the project: the user's file still sends to the answerer.
    out = _cli("install", "--scope", "local")
    assert claude_settings.http_targets(local) == set()
    assert out.startswith(f"The resident answerer stays on: {user} still send(s) it"
                          " PostToolBatch and Stop.\n")
    assert _same(resident.load(), first)
    _cli("install", "--resident", "--scope", "local")
    out = _cli("uninstall", "--scope", "local")
    assert out.startswith(f"The resident answerer stays on: {user} still send(s) it")
    assert _same(resident.load(), first)
    out = _cli("uninstall")
    assert out.startswith("The resident answerer is off (it exits within a second).\n")
    assert resident.load() is None


def test_an_install_that_changes_the_hooks_restarts_the_answerer_with_the_same_key(
    project: Path, private_home: Path
) -> None:
    # A running answerer exits when its key file changes: one of an older tokenbudget would
    # take the async SessionStart install --resident now writes for a waited one.
    user = private_home / ".claude" / "settings.json"
    _cli("install", "--resident")
    first, stamp = resident.load(), answerer._stamp()
    _cli("install", "--resident")
    assert answerer._stamp() == stamp  # nothing changed: left running
    doc = json.loads(user.read_text())
    del doc["hooks"]["SessionStart"][0]["hooks"][0]["async"]  # as an older version wrote it
    user.write_text(json.dumps(doc))
    _cli("install", "--resident")
    assert answerer._stamp() != stamp and _same(resident.load(), first)


def test_install_resident_again_moves_off_a_port_a_stranger_holds(
    project: Path, private_home: Path
) -> None:
    user = private_home / ".claude" / "settings.json"
    local = project / ".claude" / "settings.local.json"
    _cli("install", "--resident")
    first = resident.load()
    assert first is not None
    _cli("install", "--resident")
    assert _same(resident.load(), first)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        threading.Thread(target=lambda: squatter.accept()[0].close(), daemon=True).start()
        out = _cli("install", "--resident", "--scope", "local")
    second = resident.load()
    assert second is not None and second.port != first.port
    assert second.key != first.key and second.proof != first.proof
    # The user's file, which held the old port and key, was moved along.
    assert f"Pointed the http hooks in {user} at the answerer's new port and key." in out
    for path in (user, local):
        assert claude_settings.http_targets(path) == {(second.port, second.key)}
    resident.remove()


def test_a_key_a_stranger_had_is_replaced_by_install_resident_after_it_left(
    project: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user = private_home / ".claude" / "settings.json"
    local = project / ".claude" / "settings.local.json"
    _cli("install", "--resident")
    _cli("install", "--resident", "--scope", "local")
    first = resident.load()
    assert first is not None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        threading.Thread(target=lambda: squatter.accept()[0].close(), daemon=True).start()
        sys.stdin = _Stdin(json.dumps({"session_id": "s-1", "prompt": "hi"}).encode())
        try:
            hook.main(["UserPromptSubmit"])
        finally:
            sys.stdin = sys.__stdin__
        assert json.loads(capsys.readouterr().out)["decision"] == "block"
    # The squatter is gone (it may have had the key): the port is free, the key is not safe.
    out = _cli("install", "--resident", "--scope", "local")
    second = resident.load()
    assert second is not None and second.port != first.port
    assert second.key != first.key and second.proof != first.proof
    assert out.startswith(f"Another process held 127.0.0.1:{first.port} and may have the"
                          f" answerer's key: a new port (127.0.0.1:{second.port}) and key.\n")
    assert f"Pointed the http hooks in {user} at the answerer's new port and key." in out
    for path in (user, local):
        assert claude_settings.http_targets(path) == {(second.port, second.key)}
    # Once replaced, the new key is kept by the next install.
    out = _cli("install", "--resident", "--scope", "local")
    assert _same(resident.load(), second) and "Another process" not in out
    resident.remove()


def test_doctor_says_a_key_a_stranger_had_until_it_is_replaced_and_uninstall_forgets_it(
    project: Path, private_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tokenbudget import doctor

    def exposed() -> list[tuple[bool, str, str, str]]:
        report = doctor.Report()
        doctor.check_resident(report)
        return [(f.ok, f.title, f.detail, f.fix) for f in report.findings if "key" in f.title]

    _cli("install", "--resident")
    first = resident.load()
    assert first is not None and exposed() == []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        threading.Thread(target=lambda: squatter.accept()[0].close(), daemon=True).start()
        assert resident.probe(first)[0] == "stranger"
    # The stranger has left: the port looks free, the key is still one it may hold.
    assert exposed() == [(
        False, "the resident answerer's key may be known to another process",
        f"127.0.0.1:{first.port}: another process held the port while this key was in use, and"
        " was sent it with tool events",
        "run `tokenbudget install --resident` again for a new port and key")]
    _cli("uninstall")
    assert resident.load() is None
    assert not os.path.exists(resident.exposed_file())


def test_a_new_key_is_not_written_into_another_settings_file_others_can_read(
    project: Path, private_home: Path
) -> None:
    user = private_home / ".claude" / "settings.json"
    local = project / ".claude" / "settings.local.json"
    _cli("install", "--resident")
    first = resident.load()
    assert first is not None
    resident.mark_exposed(first)  # the next install --resident makes a new key for both files
    user.chmod(0o644)
    before = user.read_text()
    result = CliRunner().invoke(main, ["install", "--resident", "--scope", "local", "--no-sync"])
    assert result.exit_code == 1
    assert result.output == (
        f"tokenbudget: cannot put the resident answerer's key in {user}: other users may read it"
        f" (mode 0644); run `chmod 600 '{user}'` first or `tokenbudget install --settings"
        f" '{user}'` there for command hooks\n")
    # Nothing changed: neither file, nor the key.
    assert user.read_text() == before and not local.exists()
    assert _same(resident.load(), first) and resident.exposed(first)
    user.chmod(0o600)
    _cli("install", "--resident", "--scope", "local")
    second = resident.load()
    assert second is not None and second.key != first.key
    for path in (user, local):
        assert claude_settings.http_targets(path) == {(second.port, second.key)}
    resident.remove()


def test_doctor_names_a_settings_file_whose_http_hooks_miss_the_answerer(
    project: Path, private_home: Path
) -> None:
    from tokenbudget import doctor

    user = private_home / ".claude" / "settings.json"
    _cli("install", "--resident")
    made = resident.load()
    assert made is not None

    def findings() -> list[tuple[bool, str, str, str]]:
        report = doctor.Report()
        doctor.check_resident_hooks(report, project)
        return [(f.ok, f.title, f.detail, f.fix) for f in report.findings]

    assert findings() == []
    fix = ("run `tokenbudget install --resident --scope user` (or `tokenbudget install --scope"
           " user` for command hooks)")
    title = "http hooks in user settings do not reach the resident answerer"
    said = f"{user}: PostToolBatch and Stop go to 127.0.0.1:{made.port}"
    resident.save(resident.Setup(made.port, "ef" * 32, made.proof))
    assert findings() == [(False, title, f"{said} with a key that is not the answerer's; those"
                                         " events are not checked", fix)]
    resident.save(resident.Setup(made.port + 1, made.key, made.proof))
    assert findings() == [(False, title, f"{said}, but the answerer is on 127.0.0.1:"
                                         f"{made.port + 1}; those events are not checked", fix)]
    resident.remove()
    assert findings() == [(False, title, f"{said}, but the resident answerer is not installed;"
                                         " those events are not checked", fix)]
    assert doctor.render(doctor.run(project)).endswith(
        "Something needs attention (see the lines marked !!).\n")


def _other_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A second project, its settings.local.json installed --resident from there."""
    other = tmp_path / "other \"proj\""
    other.mkdir()
    here = Path.cwd()
    monkeypatch.chdir(other)
    _cli("install", "--resident", "--scope", "local")
    monkeypatch.chdir(here)
    return Path(os.path.realpath(other / ".claude" / "settings.local.json"))


def test_uninstall_in_one_project_keeps_the_answerer_on_for_another_project_s_file(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokenbudget import doctor

    theirs = _other_project(tmp_path, monkeypatch)
    first = resident.load()
    assert first is not None
    _cli("install", "--resident", "--scope", "local")
    assert _same(resident.load(), first)
    out = _cli("uninstall", "--scope", "local")
    assert out.startswith(f"The resident answerer stays on: {theirs} still send(s) it"
                          " PostToolBatch and Stop.\n")
    assert _same(resident.load(), first)
    assert resident.senders() == [str(theirs)]
    # Doctor, run here, names the other project's file once it misses the answerer.
    resident.save(resident.Setup(first.port + 1, first.key, first.proof))
    report = doctor.Report()
    doctor.check_resident_hooks(report, project)
    where = f"--settings '{theirs}'"
    assert [(f.ok, f.title, f.detail, f.fix) for f in report.findings] == [(
        False, "http hooks in recorded settings do not reach the resident answerer",
        f"{theirs}: PostToolBatch and Stop go to 127.0.0.1:{first.port}, but the answerer is"
        f" on 127.0.0.1:{first.port + 1}; those events are not checked",
        f"run `tokenbudget install --resident {where}` (or `tokenbudget install {where}` for"
        " command hooks)")]
    resident.save(first)
    out = _cli("uninstall", "--settings", str(theirs))
    assert out.startswith("The resident answerer is off (it exits within a second).\n")
    assert resident.load() is None and resident.senders() == []
    assert not os.path.exists(resident.senders_file())


def test_a_plain_install_here_keeps_the_answerer_on_for_a_settings_file_elsewhere(
    project: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "some where"
    elsewhere.mkdir()
    chosen = elsewhere / "my settings.json"
    _cli("install", "--resident", "--settings", str(chosen))
    first = resident.load()
    assert first is not None
    _cli("install", "--resident", "--scope", "local")
    out = _cli("install", "--scope", "local")
    assert out.startswith(f"The resident answerer stays on: {os.path.realpath(chosen)} still"
                          " send(s) it PostToolBatch and Stop.\n")
    assert _same(resident.load(), first)
    assert stat.S_IMODE(os.stat(resident.senders_file()).st_mode) == 0o600
    # A file that lost its http hooks (edited by hand) is dropped from the record.
    chosen.write_text("{}")
    out = _cli("install", "--scope", "local")
    assert out.startswith("The resident answerer is off: every event is a command hook again.\n")
    assert resident.load() is None and resident.senders() == []


def test_a_move_to_a_new_port_rewrites_another_project_s_file(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = _other_project(tmp_path, monkeypatch)
    first = resident.load()
    assert first is not None
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first.port))
        squatter.listen()
        threading.Thread(target=lambda: squatter.accept()[0].close(), daemon=True).start()
        out = _cli("install", "--resident", "--scope", "local")
    second = resident.load()
    assert second is not None and second.port != first.port
    assert f"Pointed the http hooks in {theirs} at the answerer's new port and key." in out
    for path in (theirs, project / ".claude" / "settings.local.json"):
        assert claude_settings.http_targets(path) == {(second.port, second.key)}
    resident.remove()


def test_the_answerer_reads_transcripts_in_the_claude_folders_the_command_hook_named(
    setup: resident.Setup, private_home: Path, tmp_path: Path, recorded_day: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A session run with CLAUDE_CONFIG_DIR keeps its transcripts there; the answerer's own
    # environment has no CLAUDE_ variable: the folders come from the session's signed check.
    state = private_home / "tb state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "config.json").write_text(json.dumps({"budgets": [{"kind": "total",
                                                                "limit": "1k"}]}))
    config_dir = tmp_path / "claude 'config'"
    transcript = next(install_fixture("loop", config_dir).glob("*/*.jsonl"))
    event = {"session_id": transcript.stem, "transcript_path": str(transcript),
             "cwd": "/home/dev/project", "hook_event_name": "Stop"}
    me = answerer.Answerer(setup)
    # Unknown to the answerer: outside the folders it knows, the transcript is not read.
    assert me.answer("Stop", json.dumps(event | {"n": 1}).encode()) == {}
    sid = transcript.stem

    def check(dirs: list[str], signed: list[str]) -> dict[str, Any] | None:
        mac = resident.mac(setup.proof, "health", "n", sid, "", json.dumps(signed))
        return me.check(json.dumps({"nonce": "n", "session": sid, "project": "",
                                    "dirs": dirs, "mac": mac}).encode())

    assert check([str(config_dir)], []) is None  # folders the hook did not sign
    assert me.answer("Stop", json.dumps(event | {"n": 2}).encode()) == {}
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config_dir))
    assert check(relay.session_dirs(), relay.session_dirs()) is not None
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    answer = me.answer("Stop", json.dumps(event | {"n": 3}).encode())
    assert "the all-time budget is used up" in answer["systemMessage"]
    # Exactly the transcript the session's own command hook accepts.
    raw = json.dumps(event).encode()
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(config_dir))
    theirs = hook.parse_event("Stop", raw).transcript
    monkeypatch.delenv("CLAUDE_CONFIG_DIR")
    assert theirs == os.path.realpath(transcript)
    assert hook.parse_event("Stop", raw, me.sessions[sid][1]).transcript == theirs
    assert hook.parse_event("Stop", raw).transcript is None  # the answerer's own folders


def test_install_sh_purge_deletes_the_answerer_s_files_and_a_running_one_leaves_none(
    setup: resident.Setup, private_home: Path
) -> None:
    assert resident.ensure() == ("ours", "")
    pid = resident.read_state()["pid"]
    folder = Path(resident.folder())
    assert {p.name for p in folder.iterdir()} == {"key.json", "state.json", "answerer.sock",
                                                  "start.lock"}
    done = subprocess.run(["sh", str(REPO / "install.sh"), "--uninstall", "--purge"],
                          env=dict(os.environ, HOME=str(private_home)), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert not folder.exists()


def _news(private_home: Path, limit: str, lock_timeout: float) -> dict[str, str]:
    """A session the ledger has read, with one response (1000 tokens) it has not."""
    a = session(private_home)
    set_budgets(private_home, {"kind": "total", "limit": limit},
                lock_timeout_seconds=lock_timeout)
    hook.handle("SessionStart", json.dumps({**a, "source": "startup"}).encode())
    _append_request(a["transcript_path"], 1, 1000)
    return a


def _ledger_lock(private_home: Path) -> Any:
    from tokenbudget import lock

    return lock.acquire(str(private_home / "tb state" / "ledger.json.lock"), 5)


def test_an_http_event_is_answered_while_the_ledger_lock_is_held_and_committed_after(
    setup: resident.Setup, private_home: Path
) -> None:
    # Far from every limit, the answer is `{}` on the news alone: it goes out first, and the
    # commit (the lock, the journal line) follows while Claude Code goes on.
    a = _news(private_home, "1000M", lock_timeout=2.5)  # a commit after its answer: 2.5 s
    assert resident.ensure() == ("ours", "")
    event = json.dumps({**a, "hook_event_name": "Stop"}).encode()
    total = truth_usage("loop").total
    release = _ledger_lock(private_home)
    try:
        assert _post(resident.url(setup.port, "Stop"), event, setup.key) == (200, b"{}")
        time.sleep(0.2)
        assert session_tokens(private_home, a["session_id"]) == total  # not committed yet
    finally:
        release()
    deadline = time.monotonic() + 10
    while session_tokens(private_home, a["session_id"]) != total + 1000:
        assert time.monotonic() < deadline, "not committed once the lock was free"
        time.sleep(0.02)
    # The next event of the session: its news, too, is committed after its answer.
    _append_request(a["transcript_path"], 2, 500)
    assert _post(resident.url(setup.port, "Stop"), event.replace(b"}", b', "n": 2}', 1),
                 setup.key) == (200, b"{}")
    while session_tokens(private_home, a["session_id"]) != total + 1500:
        assert time.monotonic() < deadline, "the second event's news not committed"
        time.sleep(0.02)
    assert resident.probe(setup)[1]["last_error"] is None


def test_an_answerer_killed_between_its_answer_and_its_commit_loses_nothing(
    setup: resident.Setup, private_home: Path
) -> None:
    # Read positions move only with a commit: the session's next hook reads the same news.
    a = _news(private_home, "1000M", lock_timeout=2.5)  # a commit after its answer: 2.5 s
    assert resident.ensure() == ("ours", "")
    pid = resident.probe(setup)[1]["pid"]
    event = json.dumps({**a, "hook_event_name": "PostToolBatch"}).encode()
    release = _ledger_lock(private_home)
    try:
        assert _post(resident.url(setup.port, "PostToolBatch"), event, setup.key) == (200, b"{}")
        os.kill(pid, signal.SIGKILL)  # waiting for the lock, its commit not written
        deadline = time.monotonic() + 5
        while _alive(pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        release()
    total = truth_usage("loop").total
    assert session_tokens(private_home, a["session_id"]) == total
    after = json.dumps({**a, "hook_event_name": "Stop"}).encode()
    assert hook.handle("Stop", after) == {}  # the command hook, as with the answerer gone
    assert session_tokens(private_home, a["session_id"]) == total + 1000


@pytest.fixture
def in_process(setup: resident.Setup) -> Iterator[resident.Setup]:
    """`setup`, for an answerer run in the test's own process: the state it saves names the
    test's pid, which `setup` would end; removed first."""
    yield setup
    with contextlib.suppress(FileNotFoundError):
        os.remove(resident.state_file())


@pytest.mark.parametrize("failure", ["lock timeout", "bug"])
def test_a_commit_after_the_answer_that_fails_is_the_answerer_s_last_error_while_it_stands(
    in_process: resident.Setup, private_home: Path, monkeypatch: pytest.MonkeyPatch,
    failure: str
) -> None:
    from tokenbudget.store import JsonFileStore

    a = _news(private_home, "1000M", lock_timeout=0.2)
    me = answerer.Answerer(in_process)
    sent: list[dict[str, Any]] = []
    event = json.dumps({**a, "hook_event_name": "Stop"}).encode()

    def broken(self: JsonFileStore, prepared: Any) -> Any:
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        release = _ledger_lock(private_home) if failure == "lock timeout" else None
        if failure == "bug":
            patch.setattr(JsonFileStore, "commit_prepared", broken)
        try:
            assert me.answer("Stop", event, send=sent.append) == {}  # nothing raised
        finally:
            if release is not None:
                release()
    assert sent == [{}]
    why = "the ledger lock" if failure == "lock timeout" else "RuntimeError: a bug"
    error = me.last_error
    assert error is not None and why in error
    assert "Stop's usage was not recorded after its answer" in error
    assert resident.read_state()["last_error"] == error  # doctor shows it
    total = truth_usage("loop").total
    assert session_tokens(private_home, a["session_id"]) == total
    # Said with the session's next answer (which waited for that commit), once, and to no
    # other session.
    stranger = json.dumps({"session_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                           "cwd": a["cwd"], "hook_event_name": "Stop"}).encode()
    assert me.answer("Stop", stranger, send=sent.append) == {}
    assert me.last_error == error  # another session's news recorded says nothing of this one
    # A subagent's end: Claude Code shows nobody its answer (async).
    head = relay.header_line("SubagentStop", a["session_id"], "", [])
    subagent = json.dumps({**a, "hook_event_name": "SubagentStop", "agent_id": "a1"}).encode()
    with monkeypatch.context() as patch:
        # Still failing: the error stands.
        patch.setattr(JsonFileStore, "commit_prepared", broken)
        assert "RuntimeError: a bug" in me.relay(head, subagent)["systemMessage"]
    assert me.last_error is not None
    assert me.relay(head, subagent.replace(b"}", b', "n": 2}', 1)) == {}
    assert session_tokens(private_home, a["session_id"]) == total + 1000
    # Recorded now: the error is over, and doctor no longer says it (the log keeps it).
    assert me.last_error is None and resident.read_state()["last_error"] is None
    answer = me.answer("Stop", event.replace(b"}", b', "n": 2}', 1), send=sent.append)
    assert answer == sent[-1] == {"systemMessage": error}
    assert me.answer("Stop", event.replace(b"}", b', "n": 3}', 1), send=sent.append) == {}


@pytest.mark.parametrize("fail_closed", [False, True])
def test_a_prompt_decided_unrecorded_or_refused_by_our_failure_is_the_last_error_till_recorded(
    in_process: resident.Setup, private_home: Path, fail_closed: bool
) -> None:
    a = _news(private_home, "1000M", lock_timeout=0.2)
    if fail_closed:
        set_budgets(private_home, {"kind": "total", "limit": "1000M"}, lock_timeout_seconds=0.2,
                    fail_closed=True)
    me = answerer.Answerer(in_process)
    head = relay.header_line("UserPromptSubmit", a["session_id"], "", [])

    def prompt(n: int) -> bytes:
        return json.dumps({**a, "hook_event_name": "UserPromptSubmit", "prompt": "hi",
                           "prompt_id": f"p-{n}"}).encode()

    ledger_file = private_home / "tb state" / "ledger.json"
    kept = ledger_file.read_bytes()
    if fail_closed:
        ledger_file.write_text("{broken")  # nothing to decide from while the lock is busy
    release = _ledger_lock(private_home)
    try:
        answer = me.relay(head, prompt(1))
    finally:
        release()
    assert answer is not None
    if fail_closed:
        assert answer["decision"] == "block" and me.last_error == answer["reason"]
        assert "(fail_closed is on, so this prompt is refused)" in answer["reason"]
        ledger_file.write_bytes(kept)
    else:
        assert me.last_error == answer["systemMessage"]
        assert "decided from the ledger as last committed" in answer["systemMessage"]
    assert resident.read_state()["last_error"] == me.last_error
    total = truth_usage("loop").total
    assert session_tokens(private_home, a["session_id"]) == total  # not recorded
    assert me.relay(head, prompt(2)) == {}
    assert session_tokens(private_home, a["session_id"]) == total + 1000
    assert me.last_error is None and resident.read_state()["last_error"] is None


def test_an_answerer_told_to_stop_finishes_a_commit_after_its_answer_first(
    setup: resident.Setup, private_home: Path
) -> None:
    # 2.5 s: the longest a commit after its answer waits for the lock (hook.later_lock_wait).
    a = _news(private_home, "1000M", lock_timeout=2.5)
    assert hook.later_lock_wait(2.5) == 2.5
    assert resident.ensure() == ("ours", "")
    pid = resident.probe(setup)[1]["pid"]
    event = json.dumps({**a, "hook_event_name": "Stop"}).encode()
    release = _ledger_lock(private_home)
    try:
        assert _post(resident.url(setup.port, "Stop"), event, setup.key) == (200, b"{}")
        resident.remove()  # turned off: it stops within a second
        time.sleep(1.5)
        assert _alive(pid)  # its commit is waiting for the ledger lock
    finally:
        release()
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert session_tokens(private_home, a["session_id"]) == truth_usage("loop").total + 1000


@pytest.mark.parametrize("event", ["SessionStart", "UserPromptSubmit"])
def test_the_async_session_start_prints_nothing_the_answerer_would_say(
    private_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    event: str,
) -> None:
    # Claude Code reads an async SessionStart's answer after all, and gives it to the model
    # from the second request on: install --resident's SessionStart says nothing there (the
    # prompt's hook, waited for, says it to the user).
    resident.save(resident.create())
    said = {"systemMessage": "tokenbudget: something to say"}
    address = relay.Address(resident.folder())

    def answers(server: socket.socket) -> None:
        conn = server.accept()[0]
        while conn.recv(65536):
            pass
        conn.sendall(json.dumps(said).encode())
        conn.close()

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(address.address)
        server.listen()
        answering = threading.Thread(target=answers, args=(server,), daemon=True)
        answering.start()
        answer = _lean_hook(monkeypatch, capsys, event)
        answering.join(5)
    address.close()
    assert answer == ({} if event == "SessionStart" else said)
    resident.remove()


@pytest.mark.parametrize("event", ["SessionStart", "UserPromptSubmit"])
def test_the_async_session_start_decided_here_prints_nothing_either(
    private_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    event: str,
) -> None:
    # No answerer to ask (none installed): the lean hook decides in its own process, and a
    # broken config is said by the prompt's hook only.
    _config(private_home, "{not json")
    answer = _lean_hook(monkeypatch, capsys, event)
    if event == "SessionStart":
        assert answer == {}
    else:
        assert "the config is broken" in answer["systemMessage"]


def test_a_stop_waiting_for_its_response_does_not_hold_up_other_sessions(
    setup: resident.Setup, private_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answerer answers one event at a time; a Stop near a limit whose response Claude Code
    has not written yet waits for it (up to hook.TOOL_LINE_WAIT) without the answerer's lock,
    so another session's event is answered meanwhile, and the Stop then decides as before."""
    me = answerer.Answerer(setup)
    event = json.loads(_stop_event(private_home))
    set_budgets(private_home, {"kind": "session", "limit": str(truth_usage("loop").total + 10)})
    me.answer("Stop", json.dumps(event | {"n": 1}).encode())  # read once; warned at 99%
    let_go = threading.Event()
    waiting = threading.Event()

    def wait(ev: Any) -> bool:
        waiting.set()
        return let_go.wait(10)

    monkeypatch.setattr(hook, "_await_response", wait)
    late = event | {"n": 2, "last_assistant_message": "a response not written yet"}
    answers: list[dict[str, Any]] = []
    stop = threading.Thread(target=lambda: answers.append(me.answer(
        "Stop", json.dumps(late).encode())))
    stop.start()
    try:
        assert waiting.wait(10)
        other = threading.Thread(target=lambda: answers.append(me.answer(
            "Stop", json.dumps({"session_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                                "hook_event_name": "Stop"}).encode())))
        other.start()
        other.join(5)
        # Answered while the first Stop still waits: it did not queue behind it.
        assert not other.is_alive() and answers == [{}] and stop.is_alive()
    finally:
        let_go.set()
        stop.join(10)
    assert len(answers) == 2 and me.answered == 3
    assert me.lock.acquire(blocking=False)  # given back after the wait
    me.lock.release()


def test_hooks_finding_a_silent_stranger_at_once_all_refuse_it(
    setup: resident.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two sessions starting at once: four hooks check the answerer while a stranger holds its
    # port and never answers. Each is told a stranger holds it, as each was when every hook
    # checked on its own: told "down", a prompt goes on and its tool events go to the stranger.
    started = _starts_nothing(monkeypatch, 0.3, 0.5)
    results: list[tuple[str, str]] = []
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", setup.port))
        squatter.listen(16)  # connections wait in its backlog, unanswered
        threads = [threading.Thread(target=lambda: results.append(resident.ensure()))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert started == []
    assert [found for found, _ in results] == ["stranger"] * 4, results


def test_an_answerer_told_to_stop_answers_an_event_waiting_for_its_response_first(
    setup: resident.Setup, private_home: Path
) -> None:
    # A Stop near a limit whose response is not in the transcript yet waits for it without the
    # answerer's lock; the answerer, told to stop meanwhile (its key goes), must not exit
    # under it: Claude Code would get no answer at all.
    event = json.loads(_stop_event(private_home))
    set_budgets(private_home, {"kind": "session", "limit": str(truth_usage("loop").total + 10)})
    code = ("from tokenbudget import hook; hook.TOOL_LINE_WAIT = 4.0;"
            " from tokenbudget.answerer import serve; serve()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while resident.probe(setup)[0] != "ours":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        url = resident.url(setup.port, "Stop")
        assert _post(url, json.dumps(event | {"n": 1}).encode(), setup.key)[0] == 200
        late = event | {"n": 2, "last_assistant_message": "a response not written yet"}
        got: list[Any] = []

        def stop() -> None:
            try:
                got.append(_post(url, json.dumps(late).encode(), setup.key)[0])
            except OSError as e:  # urllib's errors, a connection cut short
                got.append(repr(e))

        waiting = threading.Thread(target=stop)
        waiting.start()
        time.sleep(0.5)  # it waits for its response (4 s)
        resident.remove()  # the answerer stops within a second
        waiting.join(15)
        assert got == [200]
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_broken_config_fixed_is_no_last_error_once_another_session_is_answered(
    in_process: resident.Setup, private_home: Path
) -> None:
    # The config is everyone's: once it is fixed, any session's event answered without a
    # failure ends that error; the session that met it may never come back (ended).
    me = answerer.Answerer(in_process)
    event = json.loads(_stop_event(private_home))
    _config(private_home, "{not json")
    assert "the config is broken" in me.answer("Stop", json.dumps(event).encode())[
        "systemMessage"]
    assert me.last_error is not None
    _config(private_home, json.dumps({"version": 1, "budgets": []}))
    other = event | {"session_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12}
    assert me.answer("Stop", json.dumps(other).encode()) == {}
    assert me.last_error is None


def test_a_hook_whose_bound_is_gone_starts_no_answerer_it_could_not_wait_for(
    setup: resident.Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start lock taken at the very end of a hook's bound: it used to start an answerer
    # anyway, then say it "did not answer within -0.008 s".
    started = _starts_nothing(monkeypatch, 0.0, 0.0)
    found, why = resident.ensure()
    assert (found, started) == ("down", [])
    assert why == "it is not running, and 0 s were gone before it could be started"
