"""A command hook's commit handed to a detached child, when the ledger lock is busy.

A call with news that was read and decided `{}` before the lock, far from every limit (the
hook's prepared path), needs the lock only to record what it read. When the lock is busy
(many sessions committing at once), the hook tries it for hook.DETACH_AFTER, then answers
at once and leaves the commit to a child of its own: in a session of its own (setsid), its
standard streams on /dev/null, so that Claude Code, which waits for the hook's process and
its pipes, is not held by it. The child commits as the resident answerer's commit after its
answer does (hook._commit_later), waiting for the lock as long as a hook would; if it gives
up, nothing is recorded and the session's next hook reads the same news (read positions move
only with a commit), as it would after a call that missed the lock.

At most one such child is pending per session: it holds a flock on a marker file in the
state folder (`pending/<session id>`, 0600) while it commits (a child killed -9 lets it go
too). A call of the same session that finds it held (its lock busy too) answers at once as
well and hands its news on to that child, which, once its own commit is made, records
whatever the session's transcripts hold that the ledger has not read (see _child).
"""

from __future__ import annotations

import contextlib
import os
import time

from tokenbudget import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

FOLDER = "pending"
# Commits a child makes at most after its own, for news its session's later calls handed on
# (or that came meanwhile): a session writing without pause cannot keep it alive; what is
# left is read by the session's next hook.
MAX_AGAIN = 8


def folder() -> str:
    return os.path.join(paths.data_folder(), FOLDER)


STARTED = "started"  # a child of this call's takes its commit
HANDED_ON = "handed on"  # a child of the session's is pending: it records this call's news too


def start(session_id: str, commit: Callable[[], None], more: Callable[[], bool],
          again: Callable[[], None], event: str) -> str | None:
    """Hand `commit` to a detached child of this process: STARTED (this process then answers
    and exits, without waiting for it); HANDED_ON when a child of the session's is pending
    already: this call's news, on disk, is the pending child's to record (see _child); None
    where neither can be (no fork here, the fork failed): the caller commits as it would have,
    waiting for the lock.

    In the child: `commit()`, then, for as long as `more()` (the session has news on disk
    that the ledger has not read: calls that handed theirs on meanwhile), `again()` (a
    commit that reads it)."""
    if not hasattr(os, "fork") or not paths.is_session_id(session_id):
        return None
    claimed = _claim(session_id)
    if not isinstance(claimed, tuple):
        return claimed  # HANDED_ON, or None
    fd, marker = claimed
    try:
        import sys
        import warnings

        # Whatever this process has buffered is its own to write, not the child's as well.
        sys.stdout.flush()
        sys.stderr.flush()
        with warnings.catch_warnings():
            # Python 3.12 warns of forking a process with threads, after the fork: a hook's
            # process has none (a test calling the hook in its own process may).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except (OSError, ValueError) as e:
        os.close(fd)
        _log(f"{event}: could not hand its commit to a child ({e}); waiting for the lock")
        return None
    if pid:
        os.close(fd)  # the child's copy of it holds the marker's lock
        return STARTED
    _child(session_id, commit, more, again, event, fd, marker)  # never returns
    return None  # pragma: no cover


def _child(session_id: str, commit: Callable[[], None], more: Callable[[], bool],
           again: Callable[[], None], event: str, fd: int, marker: str) -> None:
    """The child: detach, commit, let the marker go, record what calls handed on meanwhile;
    exit (never returns, never raises).

    Why nothing handed on is left behind: a call hands its news on only after that news is on
    disk and while the marker is held; the child looks for news only after it has let the
    marker go, so it sees that call's news, and records it unless another call holds the
    marker by then (whose own child, reading from where the ledger stops, records it), or
    it has made MAX_AGAIN such commits already (the session's next hook reads it)."""
    code = 0
    held: int | None = fd
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(null, n)
        if null > 2:
            os.close(null)
        _name(fd)
        commit()
        rounds = 0
        while True:
            # While the marker is held, a look for waiting news that finds none is not final
            # (a call may hand on until it is let go), but it keeps the child pending for
            # whoever waits for it (wait) while there is some.
            while rounds < MAX_AGAIN and more():
                again()
                rounds += 1
            _let_go(fd, marker)
            held = None
            if rounds >= MAX_AGAIN or not more():
                break
            again_claimed = _claim(session_id)
            for _ in range(3):  # a look (pending) holds it shared for an instant
                if again_claimed != HANDED_ON:
                    break
                time.sleep(0.01)
                again_claimed = _claim(session_id)
            if not isinstance(again_claimed, tuple):
                break  # another call's child has it (or it cannot be had: the next hook)
            fd, marker = again_claimed
            held = fd
            _name(fd)
    except BaseException as e:
        from tokenbudget.errors import TokenbudgetError

        why = str(e) if isinstance(e, TokenbudgetError) else f"{type(e).__name__}: {e}"
        _log(f"{event}: its usage was not recorded after its answer ({why}); the session's"
             " next hook reads it again")
        code = 1
    finally:
        if held is not None:
            _let_go(held, marker)
        os._exit(code)


def _name(fd: int) -> None:
    """Write this process's id in the marker it holds: who is pending, for whoever looks."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%d\n" % os.getpid(), 0)


def _let_go(fd: int, marker: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(marker)  # still held: a newcomer that opened it finds it stale (_claim)
    os.close(fd)


def _claim(session_id: str) -> tuple[int, str] | str | None:
    """The session's marker, locked (its descriptor and path); HANDED_ON when a child of the
    session's holds it; None when it cannot be had."""
    import errno

    try:
        import fcntl

        where = paths.ensure_private_dir(folder())
        marker = os.path.join(where, session_id)
    except (ImportError, OSError):
        return None
    for _ in range(3):
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            return HANDED_ON if e.errno in (errno.EAGAIN, errno.EACCES) else None
        # A child that ended unlinks its marker while it still holds it: a lock won on that
        # unlinked file is no claim on the session's. Open it again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(marker)):
                return fd, marker
        except OSError:
            pass
        os.close(fd)
    return None


def pending(session_id: str | None = None) -> list[str]:
    """The sessions (or `session_id` alone) whose detached commit is still pending. Each
    marker is locked shared for an instant to tell: a hook claiming it just then hands its news
    on to nobody (the session's next hook reads it); for tests, benches and a bounded wait."""
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
    deadline = time.monotonic() + timeout
    while True:
        left = pending(session_id)
        if not left:
            # A child lets its marker go before its last look for news, and may claim it
            # again: none pending twice, a moment apart.
            time.sleep(0.05)
            left = pending(session_id)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)


def _log(message: str) -> None:
    from tokenbudget.hook import log

    log(message)
