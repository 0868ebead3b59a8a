"""A command hook's commit handed to a detached child, when the ledger lock is busy.

A call with news that was read and decided `{}` before the lock, far from every limit (the
hook's prepared path), needs the lock only to record what it read. When the lock is busy
(many sessions committing at once), the hook tries it for hook.DETACH_AFTER, then answers
at once and leaves the commit to a child of its own: in a session of its own (setsid), its
standard streams on /dev/null, so that Claude Code, which waits for the hook's process and
its pipes, is not held by it. The child waits for the lock as the resident answerer's commit
after its answer does (hook._commit_later); if it gives up, nothing is recorded and the
session's next hook reads the same news (read positions move only with a commit), as it
would after a call that missed the lock.

At most one such commit is pending per session: the child holds a flock on a marker file in
the state folder (`pending/<session id>`, 0600) until it exits (a child killed -9 lets it go
too), and a call that finds it held waits for the lock itself.
"""

from __future__ import annotations

import contextlib
import os

from tokenbudget import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

FOLDER = "pending"


def folder() -> str:
    return os.path.join(paths.data_folder(), FOLDER)


def start(session_id: str, commit: Callable[[], None], event: str) -> bool:
    """Run `commit` in a detached child of this process; whether the child took it (this
    process then answers and exits, without waiting for it). False where it cannot be: no
    fork here, a commit of the session already pending, the fork failed; the caller then
    commits as it would have (waiting for the lock)."""
    if not hasattr(os, "fork") or not paths.is_session_id(session_id):
        return False
    claimed = _claim(session_id)
    if claimed is None:
        return False
    fd, marker = claimed
    try:
        import sys

        # Whatever this process has buffered is its own to write, not the child's as well.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except (OSError, ValueError) as e:
        os.close(fd)
        _log(f"{event}: could not hand its commit to a child ({e}); waiting for the lock")
        return False
    if pid:
        os.close(fd)  # the child's copy of it holds the marker's lock
        return True
    _child(commit, event, fd, marker)  # never returns
    return False  # pragma: no cover


def _child(commit: Callable[[], None], event: str, fd: int, marker: str) -> None:
    """The child: detach, commit, let the marker go, exit (never returns, never raises)."""
    code = 0
    try:
        os.setsid()
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())  # who is pending, for whoever looks
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        commit()
    except BaseException as e:
        from tokenbudget.errors import TokenbudgetError

        why = str(e) if isinstance(e, TokenbudgetError) else f"{type(e).__name__}: {e}"
        _log(f"{event}: its usage was not recorded after its answer ({why}); the session's"
             " next hook reads it again")
        code = 1
    finally:
        with contextlib.suppress(OSError):
            os.unlink(marker)  # still held: a newcomer that opened it finds it stale (_claim)
        os._exit(code)


def _claim(session_id: str) -> tuple[int, str] | None:
    """The session's marker, locked (its descriptor and path); None when a commit of the
    session is pending (or the marker cannot be had)."""
    try:
        import fcntl

        where = paths.ensure_private_dir(folder())
        marker = os.path.join(where, session_id)
        fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A child that ended unlinks its marker while it still holds it: a lock won on that
        # unlinked file is no claim on the session's.
        if not os.path.samestat(os.fstat(fd), os.stat(marker)):
            raise OSError("the marker was replaced")
    except OSError:
        os.close(fd)
        return None
    return fd, marker


def pending(session_id: str | None = None) -> list[str]:
    """The sessions (or `session_id` alone) whose detached commit is still pending."""
    try:
        import fcntl

        names = os.listdir(folder())
    except (ImportError, OSError):
        return []
    found = []
    for name in names:
        if (session_id is not None and name != session_id) or not paths.is_session_id(name):
            continue
        try:
            fd = os.open(os.path.join(folder(), name), os.O_RDONLY)
        except OSError:
            continue  # gone: done
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            found.append(name)
        finally:
            os.close(fd)
    return found


def wait(timeout: float, session_id: str | None = None) -> list[str]:
    """Wait until no detached commit (of `session_id`, or any) is pending, `timeout` seconds
    at most; those still pending then."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = pending(session_id)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def _log(message: str) -> None:
    from tokenbudget.hook import log

    log(message)
