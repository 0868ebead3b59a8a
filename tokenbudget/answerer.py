"""The resident answerer's server: one warm process answering Claude Code's http hooks.

Its client side (the setup, the secrets, the probe and the start, which the command hooks use)
is tokenbudget/resident.py; this module runs `hook.handle` for the events it receives, so it
imports the hook, which never imports it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import time

from tokenbudget import clock, paths, relay, resident
from tokenbudget.errors import TokenbudgetError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Answerer:
    """One warm process answering the http hooks, one event at a time (as one lock would)."""

    def __init__(self, setup: resident.Setup) -> None:
        import threading

        self.setup = setup
        self.key_stamp = _stamp()
        self.lock = threading.Lock()
        # Events under way, some perhaps waiting for their response without the lock
        # (hook.handle's pause): the answerer's exit waits for them (serve).
        self.in_flight = 0
        self.settled = threading.Condition(self.lock)
        self.started = clock.now()
        self.answered = 0  # http events
        self.relayed = 0  # command hooks' events, over the socket
        # Our own last failure, while it stands (doctor says it): over once an event of its
        # session (any, for a failure of no session) is answered and recorded without one.
        self.last_error: str | None = None
        self.error_of: tuple[str | None] | None = None  # (its session,)
        self.last_event = time.monotonic()
        # session -> (CLAUDE_PROJECT_DIR, its Claude config folders), as its command hooks saw
        # them: the answerer's own environment is no session's.
        self.sessions: dict[str, tuple[str | None, list[str] | None]] = {}
        self.nonces: set[str] = set()  # of the health checks answered
        # session -> why the commit after its last answer failed (_commit): said with the
        # session's next answer that Claude Code shows, which waited for it.
        self.unsaid: dict[str, str] = {}

    def health(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "started": self.started, "answered": self.answered,
                "relayed": self.relayed, "last_error": self.last_error, "port": self.setup.port}

    def save(self, **extra: Any) -> None:
        if not os.path.isdir(resident.folder()):
            return  # deleted (uninstall --purge): not brought back by an answerer on its way out
        with contextlib.suppress(OSError):
            resident.write_private(resident.state_file(), self.health() | extra)

    def answer(self, event: str, raw: bytes, disabled: bool = False,
               send: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """An http hook's event (PostToolBatch, Stop). `send`: the http handler's reply, called
        with the answer once; a call decided before the lock sends it before its commit."""
        if event not in resident.EVENTS or disabled:
            self.last_event = time.monotonic()
            if send is not None:
                send({})
            return {}
        return self._answer(event, raw, send=send)

    def relay(self, head: bytes, raw: bytes) -> dict[str, Any] | None:
        """A command hook's event handed over the socket (tokenbudget/relay.py), or (no event)
        a session's project and Claude config folders to note; None if malformed."""
        try:
            data = json.loads(head)
            event, session, project = data["event"], data["session"], data["project"]
            dirs = data["dirs"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if not all(isinstance(v, str) for v in (event, session, project)) or \
                not isinstance(dirs, list):
            return None
        if not event:
            self.note(session, project, dirs)
            return {}
        if event not in relay.RELAYED:
            return None
        self.note(_session_of(raw) or "", project, dirs)
        return self._answer(event, raw, relayed=True, async_start=data.get("async_start") is True)

    def _answer(self, event: str, raw: bytes, relayed: bool = False,
                send: Callable[[dict[str, Any]], None] | None = None,
                async_start: bool = False) -> dict[str, Any]:
        self.last_event = time.monotonic()
        with self.lock:
            self.in_flight += 1
            try:
                return self._decide(event, raw, relayed, send, async_start)
            finally:
                self.in_flight -= 1
                self.settled.notify_all()

    def _decide(self, event: str, raw: bytes, relayed: bool,
                send: Callable[[dict[str, Any]], None] | None,
                async_start: bool) -> dict[str, Any]:
        """_answer's work, under self.lock (given up only while the event waits for its
        response: hook.handle's pause)."""
        from tokenbudget import hook

        sid = _session_of(raw)
        project, dirs = self.sessions.get(sid, (None, None)) if sid else (None, None)
        # Only the http events' commits wait for their answer: a relayed command hook's
        # (a prompt refused before it runs) is decided and committed before it answers.
        later: list[Callable[[], None]] | None = [] if send is not None else None
        result = hook.handle_safely(event, raw, project=project, claude_dirs=dirs,
                                    later=later, async_start=async_start, pause=self.lock)
        if sid and hook.is_heard(event, async_start) and sid in self.unsaid:
            result = hook._with_message(result, self.unsaid.pop(sid))
        if relayed:
            self.relayed += 1
        else:
            self.answered += 1
        failure = hook.own_failure(result)
        if failure is not None:
            # This session's news left unrecorded is over once one of its events is recorded;
            # any other failure (a broken config, the ledger unreadable) is no one session's:
            # over once any event is answered and recorded without one.
            self._failed(failure, sid if hook.UNRECORDED in failure else None)
        recorded = True
        try:
            if send is not None:
                send(result)
        finally:
            if later:
                # Still under self.lock: the session's next event sees this commit.
                recorded = self._commit(event, sid, later[0])
        if failure is None and recorded:
            self._recovered(sid)
        return result

    def _failed(self, message: str, sid: str | None) -> None:
        self.last_error = message
        self.error_of = (sid,)
        self.save()

    def _recovered(self, sid: str | None) -> None:
        """An event of `sid` answered and recorded without a failure of ours: the last error,
        if it was that session's (or of no session), is over, and doctor no longer says it
        (the log keeps it)."""
        if self.last_error is not None and self.error_of in ((sid,), (None,)):
            self.last_error = None
            self.error_of = None
            self.save()

    def _commit(self, event: str, sid: str | None, commit: Callable[[], None]) -> bool:
        """A commit after its answer went (hook._commit_later); whether it was made. Its failure
        has no answer to go with: logged, kept as the last error and said with the session's
        next answer from here, and the session's next hook reads the same news again."""
        from tokenbudget import hook

        try:
            commit()
            return True
        except Exception as e:
            why = f"{type(e).__name__}: {e}" if not isinstance(e, TokenbudgetError) else str(e)
            error = (f"tokenbudget: {event}'s usage was not recorded after its answer"
                     f" ({why}); the session's next hook reads it again")
            hook.log(error)
            if sid:
                if len(self.unsaid) > 10000:
                    self.unsaid.clear()  # sessions that never came back
                self.unsaid[sid] = error
            self._failed(error, sid)
            return False

    def note(self, session: str, project: str, dirs: list[Any]) -> None:
        """Keep `session`'s project and Claude config folders, as its command hooks saw them."""
        if not session or not paths.is_session_id(session):
            return
        if len(self.sessions) > 10000:
            self.sessions.clear()
        folders = [d for d in dirs if isinstance(d, str) and os.path.isabs(d)
                   and "\x00" not in d and len(d) <= 4096][:relay.MAX_DIRS]
        self.sessions[session] = (project or None, folders or None)

    def check(self, body: bytes) -> dict[str, Any] | None:
        """A hook's health check over http: its MAC checked, then (a hook of a session whose
        answerer has no socket yet has proved itself first) the session's project and Claude
        config folders noted; None if bad or a nonce seen before (a captured check replayed)."""
        try:
            data = json.loads(body)
            nonce, session, project = data["nonce"], data["session"], data["project"]
            dirs = data.get("dirs", [])
            ok = all(isinstance(v, str) for v in (nonce, session, project)) and isinstance(
                dirs, list) and hmac.compare_digest(str(data["mac"]), resident.mac(
                    self.setup.proof, "health", nonce, session, project, json.dumps(dirs)))
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        if not ok or nonce in self.nonces:
            return None
        if len(self.nonces) > 100000:
            self.nonces.clear()  # 128-bit nonces: an old one comes back by replay only
        self.nonces.add(nonce)
        self.note(session, project, dirs)
        return self.health() | {"proof": resident.mac(self.setup.proof, "answerer", nonce)}

    def authorized(self, header: str | None) -> bool:
        expected = f"Bearer {self.setup.key}"
        return header is not None and hmac.compare_digest(header.encode(), expected.encode())

    def should_stop(self, idle: float) -> str | None:
        if time.monotonic() - self.last_event > idle:
            return "idle"
        if _stamp() != self.key_stamp:
            return "its key changed or was removed"
        return None


def _session_of(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    sid = data.get("session_id") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


def _stamp() -> tuple[int, int, int] | None:
    try:
        st = os.stat(resident.key_file())
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def serve(idle: float = resident.IDLE_SECONDS) -> None:
    """Run the answerer until it has been idle `idle` seconds or its key changes. A second one
    (started without the hooks' start lock, resident.ensure) finds the port taken and exits:
    the bind decides."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tokenbudget import hook

    setup = resident.load()
    if setup is None:
        return
    # Warm: what the locked path of a hook call imports, imported once; and the ledger its
    # last commit left, read again only where the files changed since (store.keep_warm).
    from tokenbudget import config, engine, ingest, pricing, store, sync  # noqa: F401

    store.keep_warm()

    me = Answerer(setup)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The head and the body go out as two writes: with Nagle's algorithm on, the body can
        # wait for Claude Code's delayed ACK of the head on a kept-alive connection (up to
        # 40 ms on Linux).
        disable_nagle_algorithm = True
        timeout = 5  # a client that sends nothing does not hold a thread for long

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, code: int, answer: dict[str, Any] | None) -> None:
            body = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            try:
                size = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                size = -1
            if not 0 <= size <= resident.MAX_BODY or not self.path.startswith(resident.URL_PATH):
                self._reply(400, None)
                return
            raw = self.rfile.read(size)
            name = self.path[len(resident.URL_PATH):]
            if name == "health":
                health = me.check(raw)
                self._reply(200 if health is not None else 403, health)
            elif not me.authorized(self.headers.get("Authorization")):
                self._reply(403, None)  # Claude Code: a non-blocking error; nothing recorded
            else:
                disabled = self.headers.get(resident.DISABLE_HEADER) == "1"
                me.answer(name, raw, disabled, send=self._answered)

        def _answered(self, answer: dict[str, Any]) -> None:
            # Out before a commit that may follow it (Answerer.answer): Claude Code goes on.
            self._reply(200, answer)
            self.wfile.flush()

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        # SO_REUSEADDR: a restart binds at once, whatever connections of the answerer before
        # it wait in TIME_WAIT. Linux still refuses a second listener on the port (that would
        # take SO_REUSEPORT, which binds only within one user and is not set here).
        allow_reuse_address = True

    try:
        server = Server((resident.HOST, setup.port), Handler)
    except OSError as e:
        why = f"cannot listen on {resident.HOST}:{setup.port} ({e.strerror})"
        hook.log(f"resident answerer: {why}")
        token = os.environ.get(resident.START_ENV)
        if not token:
            return
        # Another answerer of ours that won the bind (one started without the start lock) is
        # no failure: writing one would also race with that answerer's own state (its pid).
        found, info = resident.probe(setup)
        if found != "ours":
            # Said to the hook that started it, at once, rather than after its whole wait:
            # with what holds the port (that hook waits for a silent holder, taking it for
            # this answerer on its way up).
            with contextlib.suppress(OSError):
                resident.write_private(resident.state_file(), resident.read_state() | {
                    "failed_start": token, "start_error": why, "holder": found,
                    "holder_why": info.get("why", "")})
        return
    relayed: _Relayed | None = None
    try:
        relayed = _listen(me)
    except OSError as e:
        # The command hooks then decide in their own processes, as without the socket.
        hook.log(f"resident answerer: cannot listen on its socket ({e}); http only")
    me.save(stopped=None)
    hook.log(f"resident answerer {os.getpid()} listening on {resident.HOST}:{setup.port}")

    def watch() -> None:
        while True:
            time.sleep(1.0)
            why = me.should_stop(idle)
            if why is not None:
                hook.log(f"resident answerer {os.getpid()} stops: {why}")
                if relayed is not None:
                    relayed.shutdown()
                server.shutdown()
                return

    threading.Thread(target=watch, daemon=True).start()
    if relayed is not None:
        threading.Thread(target=relayed.serve_forever, kwargs={"poll_interval": 0.5},
                         daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        if relayed is not None:
            relayed.close()
        # The handlers' threads are daemons: a commit after its reply (Answerer._commit) would
        # be cut short at exit; the lock waits for it (at most the ledger lock's bound), and
        # for an event waiting for its response without the lock (hook.handle's pause), whose
        # answer Claude Code still waits for.
        with me.lock:
            me.settled.wait_for(lambda: me.in_flight == 0)
            me.save(stopped=clock.now())


class _Relayed:
    """The Unix socket the lean command hooks hand their events to (tokenbudget/relay.py)."""

    def __init__(self, server: Any, address: relay.Address, stamp: tuple[int, int]) -> None:
        self.server = server
        self.address = address
        self.stamp = stamp

    def serve_forever(self, poll_interval: float) -> None:
        self.server.serve_forever(poll_interval=poll_interval)

    def shutdown(self) -> None:
        self.server.shutdown()

    def close(self) -> None:
        self.server.server_close()
        with contextlib.suppress(OSError):
            st = os.stat(self.address.path)
            if (st.st_ino, st.st_dev) == self.stamp:  # not one a newer answerer made
                os.unlink(self.address.path)
        self.address.close()


def _listen(me: Answerer) -> _Relayed:
    """Bound after the port: only the answerer holding the port makes the socket. In the
    user's private folder, so only the user's own processes can connect (checked here too)."""
    import socketserver

    class Handler(socketserver.StreamRequestHandler):
        timeout = 5  # a client that sends nothing does not hold a thread for long

        def handle(self) -> None:
            head = self.rfile.readline(65536)
            raw = self.rfile.read(resident.MAX_BODY + 1)
            answer = me.relay(head, raw) if len(raw) <= resident.MAX_BODY else None
            if answer is not None:
                self.wfile.write(json.dumps(answer).encode())

    class Server(socketserver.ThreadingUnixStreamServer):
        daemon_threads = True

    where = paths.ensure_private_dir(resident.folder())
    if not relay.private(where):
        raise OSError(f"{where} is not the user's alone")
    address = relay.Address(where)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)  # a dead answerer's: this one holds the port now
        server = Server(address.address, Handler)
        os.chmod(address.path, 0o600)
        st = os.stat(address.path)
    except OSError:
        address.close()
        raise
    return _Relayed(server, address, (st.st_ino, st.st_dev))
