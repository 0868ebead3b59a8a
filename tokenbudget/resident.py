"""The resident answerer (opt-in): Claude Code's http hooks answered by one warm process.

`tokenbudget install --resident` registers PostToolBatch and Stop as `http` hooks to
127.0.0.1:PORT, answered here by the same `hook.handle` the command hooks run (same config,
store and ledger lock), so a session on command hooks and one on the answerer share one exact
ledger. SessionStart and UserPromptSubmit stay command hooks: they start the answerer when it
is not running and check, before every prompt, that whatever holds the port is ours.
SessionStart is async there (Claude Code does not wait for it; it answers `{}`, as Claude
Code would give an async hook's answer to the model from the second request on):
UserPromptSubmit, waited for, is the hook that starts and proves the answerer before a turn,
refuses a prompt, and says what SessionStart would have said (hook.handle's `async_start`).
SessionStart could not be http anyway: Claude Code 2.1.328 skips an http SessionStart hook
("HTTP hooks are not supported for SessionStart", in its debug log). SubagentStop and
SessionEnd stay (background, lean) command hooks too: as http hooks answered `{}` at once
they bought nothing measurable on a whole `claude -p` turn (Claude Code waits for an http
hook, `"async"` or not), and an answerer gone after an idle hour would have made Claude Code
print a connection error at every such session's exit (bench/RESULTS.md section 26).

Trust, both ways, rests on two secrets in a 0600 file of the user's (`resident/key.json`).
The bearer key is written into the user's own settings file as the http hooks' bearer header:
the answerer refuses a request without it (another local user cannot feed it events). It is
sent over http with every event, so whatever holds the port receives it: it proves nothing
about the answerer. The proof secret never leaves the file: the command hooks check the
answerer by sending a nonce and expecting an HMAC of it under that secret (a process of another
user that took the port first cannot prove it is ours, even holding the bearer key, and prompts
are refused until the port is ours again; the key it was sent is marked exposed, and the
next `install --resident` replaces it), and sign what they tell it (a session's project and
Claude config folders) with it. The answerer exits after an hour without events, or within a
second of its key file changing or going (uninstall, a new key).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import socket
import sys
import time

from tokenbudget import paths, relay
from tokenbudget.fileio import replace_atomically

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

HOST = "127.0.0.1"  # never beyond this machine
EVENTS = ("PostToolBatch", "Stop")  # answered over http; the others stay command hooks
URL_PATH = "/tokenbudget/v1/"
IDLE_SECONDS = 3600.0  # the answerer exits after this long without an event
START_WAIT = 5.0  # seconds a hook waits for an answerer it started to answer
PROBE_TIMEOUT = 3.0  # seconds a hook waits for the answerer's proof (it takes ~1 ms)
MAX_BODY = 8 * 1024 * 1024
START_ENV = "TOKENBUDGET_RESIDENT_START"
DISABLE_HEADER = "X-Tokenbudget-Disable"  # the session's TOKENBUDGET_DISABLE
_VERSION = 2  # 1 had no proof secret: read as not installed


class Setup:
    """What install --resident chose: the port, the bearer key and the proof secret (hex)."""

    __slots__ = ("key", "port", "proof")

    def __init__(self, port: int, key: str, proof: str) -> None:
        self.port = port
        self.key = key  # sent with every http hook: whoever holds the port gets it
        self.proof = proof  # never sent: the answerer's proof, the hooks' signature


def folder() -> str:
    return os.path.join(paths.data_folder(), "resident")


def key_file() -> str:
    return os.path.join(folder(), "key.json")


def state_file() -> str:
    return os.path.join(folder(), "state.json")


def exposed_file() -> str:
    return os.path.join(folder(), "exposed.json")


def start_lock_file() -> str:
    return os.path.join(folder(), "start.lock")


def senders_file() -> str:
    """Beside key.json, not in it: rewriting key.json would stop a running answerer."""
    return os.path.join(folder(), "senders.json")


def url(port: int, event: str) -> str:
    return f"http://{HOST}:{port}{URL_PATH}{event}"


def load() -> Setup | None:
    """The setup, or None when the answerer is not installed (or its key file is unreadable)."""
    try:
        with open(key_file(), encoding="utf-8") as f:
            data = json.load(f)
        port, key, proof = data["port"], data["key"], data["proof"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(port, int) or not 0 < port < 65536:
        return None
    if not all(isinstance(v, str) and len(v) >= 32 and _is_hex(v) for v in (key, proof)):
        return None
    return Setup(port, key, proof)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def write_private(path: str, data: dict[str, Any]) -> None:
    paths.ensure_private_dir(os.path.dirname(path))
    replace_atomically(path, (json.dumps(data) + "\n").encode())


def create(port: int | None = None) -> Setup:
    """New secrets, on `port` or on a free port of 127.0.0.1 (the kernel picks one); not saved."""
    if port is None:
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
    return Setup(port, os.urandom(32).hex(), os.urandom(32).hex())


def save(setup: Setup) -> None:
    """Keep the setup (0600): the hooks and the answerer read it from there."""
    write_private(key_file(), {"version": _VERSION, "port": setup.port, "key": setup.key,
                                "proof": setup.proof})


def remove() -> bool:
    """Forget the setup (a running answerer sees its key go and exits); whether there was one."""
    try:
        os.unlink(key_file())
    except FileNotFoundError:
        return False
    return True


def senders() -> list[str]:
    """The real path of every settings file `install --resident` wrote http hooks into (some
    may have lost them since: the caller reads each)."""
    try:
        with open(senders_file(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return []
    return [p for p in files if isinstance(p, str) and os.path.isabs(p) and "\x00" not in p]


def set_senders(files: Sequence[str]) -> None:
    """Record exactly `files` (real paths, in order, once each); none: the record goes."""
    unique = list(dict.fromkeys(os.path.realpath(p) for p in files))
    if unique == senders():
        return
    if not unique:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(senders_file())
        return
    write_private(senders_file(), {"files": unique})


def _key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def mark_exposed(setup: Setup) -> None:
    """Another process held the port: the http hooks that sent it events gave it the bearer
    key. Kept (a digest, never the key) until install --resident makes a new key."""
    if not exposed(setup):
        with contextlib.suppress(OSError):
            write_private(exposed_file(), {"key": _key_id(setup.key), "port": setup.port})


def exposed(setup: Setup) -> bool:
    """Whether another process has held the port while `setup`'s key was in use."""
    try:
        with open(exposed_file(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("key") == _key_id(setup.key)


def forget_exposed() -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(exposed_file())


def mac(key: str, *parts: str) -> str:
    return hmac.new(bytes.fromhex(key), "\0".join(parts).encode(), hashlib.sha256).hexdigest()


# --- the hooks' side: is the answerer there, and ours? --------------------------------------


def probe(
    setup: Setup, session: str = "", project: str = "", dirs: Sequence[str] = (),
    timeout: float = PROBE_TIMEOUT, starting: bool = False,
) -> tuple[str, dict[str, Any]]:
    """("ours", its health) / ("down", {}) / ("stranger", {"why": ...}) for whatever holds the
    port; with `session`, the answerer notes its project and Claude config folders (`dirs`):
    given only to an answerer that has proved itself (see ensure). The proof secret is never
    sent: a stranger could keep it (the bearer key, which every http hook
    sends, proves nothing). `starting`: an answerer of ours is on its way up (see ensure), so
    a holder that does not answer within `timeout` may be that one, between taking the port
    and answering: ("silent", {"why": ...}), not a stranger (one that answers without the
    proof still is)."""
    nonce = os.urandom(16).hex()
    listed = json.dumps(list(dirs))
    body = json.dumps({"nonce": nonce, "session": session, "project": project, "dirs": list(dirs),
                       "mac": mac(setup.proof, "health", nonce, session, project, listed)}
                      ).encode()
    request = (f"POST {URL_PATH}health HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json"
               f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
    try:
        conn = socket.create_connection((HOST, setup.port), timeout=timeout)
    except ConnectionRefusedError:
        return "down", {}
    except OSError as e:
        return "down", {"why": str(e)}
    try:
        with conn:
            conn.sendall(request)
            chunks: list[bytes] = []
            while sum(map(len, chunks)) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as e:
        if starting:
            return "silent", {"why": f"it did not answer ({e})"}
        mark_exposed(setup)
        return "stranger", {"why": f"it did not answer ({e})"}
    head, _, payload = b"".join(chunks).partition(b"\r\n\r\n")
    try:
        health = json.loads(payload)
        ok = head.split(b" ", 2)[1] == b"200" and hmac.compare_digest(
            str(health.get("proof", "")), mac(setup.proof, "answerer", nonce))
    except (ValueError, IndexError, AttributeError):
        ok = False
    if not ok:
        mark_exposed(setup)
        return "stranger", {"why": "it cannot prove that it is tokenbudget's answerer"}
    return "ours", health


def start(token: str = "") -> None:
    """Start the answerer detached: its own session, stdio on /dev/null (a child holding a
    hook's stdout would keep Claude Code waiting), none of the session's CLAUDE_ variables."""
    import subprocess

    import tokenbudget

    # Without `site` (as the quick hooks start): the package's own folder, then this path.
    here = os.path.dirname(os.path.dirname(os.path.abspath(tokenbudget.__file__)))
    folders = [here, *(p for p in sys.path if p and p != here)]
    code = (f"import sys; sys.path[:0] = {json.dumps(folders)}; "
            "from tokenbudget.answerer import serve; serve()")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "CLAUDECODE"))}
    env[START_ENV] = token  # named in state.json if this start fails
    where = paths.ensure_private_dir(folder())
    # The shell backgrounds it and exits at once: the answerer is nobody's child to reap.
    try:
        subprocess.run(["/bin/sh", "-c", '"$@" </dev/null >/dev/null 2>&1 &', "sh",
                        sys.executable, "-I", "-S", "-c", code],
                       cwd=where, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, start_new_session=True, check=False, timeout=10)
    except subprocess.SubprocessError as e:
        raise OSError(str(e)) from e


def ensure(session: str = "", project: str = "", dirs: Sequence[str] = ()) -> tuple[str, str]:
    """For the command hooks: the answerer answering as ours, started if need be, and told
    `session`'s project and Claude config folders once it has proved itself.

    ("ours", "") when it answers (now or after a start); ("down", why) when it could not be
    started; ("stranger", why) when something else holds its port; ("off", "") when the
    answerer is not installed; ("old", why) when its key file is of an older layout or
    unreadable (the http hooks still send to a port nothing answers)."""
    setup = load()
    if setup is None:
        if os.path.exists(key_file()):
            return "old", "its key file is of an older tokenbudget or cannot be read"
        return "off", ""
    found, why = _answering(setup)
    if found == "ours" and session and relay.ask("", b"", session, project, dirs) is None:
        # An answerer of an older tokenbudget has no socket: told over http, now that it has
        # proved itself (never before: a stranger on the port would learn them).
        found, info = probe(setup, session, project, dirs)
        why = info.get("why", "")
    return found, why


def _answering(setup: Setup) -> tuple[str, str]:
    """ensure's check and start: ("ours" | "down" | "stranger", why). One hook at a time starts
    the answerer, under the start lock: two started at once (a session's async SessionStart
    and its first prompt) race for the port, and the loser's check of the winner, still on its
    way up, could take it for a stranger (its key marked exposed, the prompt told the answerer
    is down). A hook that finds another one starting it waits for that answerer and proves it.
    While a start is under way, a holder of the port that does not answer yet is taken for
    that answerer on its way up (a loaded machine), not for a stranger; one that answers
    without the proof still is. All within PROBE_TIMEOUT + START_WAIT, as a check and then a
    start took before."""
    deadline = time.monotonic() + PROBE_TIMEOUT + START_WAIT
    release: Callable[[], None] | None = None
    token = ""  # of the answerer started here
    started = until = deadline  # when it was started here, and must have answered
    try:
        while True:
            if release is None:
                release = _take_start()
            free = release is not None and not token  # nothing of ours is starting
            if free and release is not None:
                # The check needs no lock; held through a silent holder's PROBE_TIMEOUT, it
                # would make the other hooks judge that stranger one after another, past their
                # bound. Taken again to start one.
                release()
                release = None
            starting = not free  # by another hook, or here
            left = deadline - time.monotonic()
            found, info = probe(setup, timeout=min(PROBE_TIMEOUT, max(left, 0.05)),
                                starting=starting)
            if found in ("ours", "stranger"):
                return found, info.get("why", "")
            if free:
                release = _take_start()  # None: another hook starts it now, waited for
            if token:
                state = read_state()
                if state.get("failed_start") == token:
                    # It found the port taken: by a stranger (it checked), or by what it says.
                    if state.get("holder") == "stranger":
                        return "stranger", str(state.get("holder_why"))
                    return "down", str(state.get("start_error"))
                if time.monotonic() >= until:
                    return "down", f"it did not answer within {until - started:.3g} s"
            elif release is not None:  # the start is this hook's, and nothing holds the port
                if time.monotonic() >= deadline:  # no time left for it to answer
                    return "down", (f"it is not running, and {PROBE_TIMEOUT + START_WAIT:g} s"
                                    " were gone before it could be started")
                token = os.urandom(8).hex()
                try:
                    start(token)
                except (OSError, ValueError) as e:
                    return "down", f"it could not be started ({e})"
                started = time.monotonic()
                until = min(started + START_WAIT, deadline)
            elif time.monotonic() >= deadline:
                return "down", (f"another hook started it, and it did not answer within"
                                f" {PROBE_TIMEOUT + START_WAIT:g} s")
            time.sleep(0.02)
    finally:
        if release is not None:
            release()


def _take_start() -> Callable[[], None] | None:
    """The start lock (its release), or None while another hook holds it: it is starting the
    answerer. Where the lock cannot be had (a folder without locks), every hook may start one,
    and the port decides between them (serve)."""
    from tokenbudget import lock

    try:
        return lock.acquire(start_lock_file(), 0)
    except TimeoutError:
        return None
    except OSError:
        return lambda: None


def note(found: str, why: str, port: int) -> str:
    """What a hook says when the answerer is not there to check the turn."""
    if found == "old":
        return (f"tokenbudget: the resident answerer must be installed again (`tokenbudget"
                f" install --resident`): {why}. Until then tool batches are not checked")
    if found == "stranger":
        return (f"tokenbudget: another process holds 127.0.0.1:{port}, where the answerer should"
                f" be ({why}): tool events would go to it. Run `tokenbudget install --resident`"
                " again for a new port and key")
    return (f"tokenbudget: the resident answerer is not running ({why}): this turn is checked"
            " before the prompt only, not after each batch of tools")


def read_state() -> dict[str, Any]:
    try:
        with open(state_file(), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
