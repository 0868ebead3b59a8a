"""The resident answerer's Unix socket, the client side: an event handed over, its answer back.

With `install --resident`, SessionStart, UserPromptSubmit, SubagentStop and SessionEnd stay
command hooks, but lean ones (tokenbudget/relay_hook.py): each hands its event to the warm
answerer (tokenbudget/answerer.py) over this socket, and the answerer decides it with the same
`hook.handle`. The socket lives in the answerer's folder, which is the user's alone (0700,
checked here before connecting): only the user can have created it, so it takes no proof
either way. This module imports only what a round trip on the socket needs.
"""

from __future__ import annotations

# The C module, not `socket`: that one imports enum and selectors, tens of ms of a lean
# hook's start (python -X importtime) for names it does not use.
import _socket
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

RELAYED = ("SessionStart", "UserPromptSubmit", "SubagentStop", "SessionEnd")
SOCKET_NAME = "answerer.sock"
MAX_DIRS = 16  # Claude config folders a session may name (CLAUDE_CONFIG_DIR as a list)
# Seconds the relay waits for the answerer's answer: it takes milliseconds, but an event may
# wait for the ledger lock (lock_timeout_seconds, 2 s by default) and, near a limit, for the
# transcript (1 s), twice; within Claude Code's 10 s for these hooks.
TIMEOUT = 8.0
_MAX_REPLY = 1024 * 1024
# A Unix socket's path must fit in sun_path (108 bytes on Linux, 104 on macOS).
_MAX_PATH = 100


def folder() -> str:
    from tokenbudget import paths

    return os.path.join(paths.data_folder(), "resident")


def session_dirs() -> list[str]:
    """This session's Claude config folders, absolute (the answerer runs in another folder)."""
    from tokenbudget import paths

    return [os.path.abspath(d) for d in paths.claude_config_folders()][:MAX_DIRS]


def private(where: str) -> bool:
    """Whether `where` is a folder of this user's that nobody else can write in (or read)."""
    try:
        st = os.stat(where)
    except OSError:
        return False
    return st.st_uid == os.getuid() and not st.st_mode & 0o077


class Address:
    """The socket's path as bind/connect can take it: a long one through the folder's
    descriptor (/proc/self/fd/N/..., Linux), which is closed with this object."""

    def __init__(self, where: str) -> None:
        self.path = os.path.join(where, SOCKET_NAME)
        self.fd: int | None = None
        self.address = self.path
        if len(os.fsencode(self.path)) > _MAX_PATH:
            self.fd = os.open(where, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            self.address = f"/proc/self/fd/{self.fd}/{SOCKET_NAME}"

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _quote(text: str) -> str:
    """`text` as a JSON string: what json.dumps writes, without importing json (which brings
    re and enum: milliseconds of every lean hook's start)."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch < " " or "\ud800" <= ch <= "\udfff":  # controls; a path's undecodable bytes
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def header_line(event: str, session: str, project: str, dirs: Sequence[str],
                async_start: bool = False) -> bytes:
    """The request's first line: one JSON object (the event's raw JSON follows it).
    `async_start`: the hooks' SessionStart is async (see hook.handle)."""
    listed = ", ".join(_quote(d) for d in dirs)
    return (f'{{"event": {_quote(event)}, "session": {_quote(session)}, "project":'
            f' {_quote(project)}, "dirs": [{listed}],'
            f' "async_start": {"true" if async_start else "false"}}}\n').encode()


class Dropped(Exception):
    """The answerer was handed the whole event and closed the connection without an answer
    (it died): it may have recorded the event as seen, so whoever decides it now must not
    take it for a second registration of an answered event."""


def ask(event: str, raw: bytes, session: str = "", project: str = "",
        dirs: Sequence[str] = (), async_start: bool = False) -> bytes | None:
    """The answerer's answer to `event` (its JSON), or None when it cannot be asked (no
    answerer). An empty `event`: only `session`'s project and Claude config folders noted.
    TimeoutError when it took the event but did not answer within TIMEOUT: it may still be
    deciding it, so nobody else should. Dropped when it took the event and died."""
    where = folder()
    if not private(where):
        return None
    header = header_line(event, session, project, dirs, async_start)
    chunks: list[bytes] = []
    sent = False
    try:
        address = Address(where)
        try:
            s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                s.settimeout(TIMEOUT)
                s.connect(address.address)
                s.sendall(header + raw)
                s.shutdown(_socket.SHUT_WR)
                sent = True
                while sum(map(len, chunks)) <= _MAX_REPLY:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
            finally:
                s.close()
        finally:
            address.close()
    except TimeoutError:
        if chunks or not event:
            return None
        raise
    except OSError:
        if sent and event:
            raise Dropped from None  # reset by its death
        return None
    reply = b"".join(chunks)
    if reply.startswith(b"{") and reply.endswith(b"}"):
        return reply
    if sent and event:
        raise Dropped
    return None
