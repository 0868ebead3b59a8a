"""The ledger's lock: flock(2) on `ledger.json.lock`, filelock where flock is unavailable.

flock directly, because importing filelock costs a hook call about 30 ms (bench/lock_cost.py);
it is the same lock as filelock's UnixFileLock (flock on the same file, which stays in place),
so the two exclude each other.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def acquire(path: str, timeout: float) -> Callable[[], None]:
    """Take the lock at `path`; return its release. TimeoutError after `timeout` seconds."""
    return _flock(path, timeout) or _filelock(path, timeout)


def _flock(path: str, timeout: float) -> Callable[[], None] | None:
    """Lock `path` with flock(2); return the release, or None where flock is unavailable.

    TimeoutError after `timeout` seconds.
    """
    try:
        import fcntl
    except ImportError:
        return None  # not POSIX: filelock knows the platform's own locks
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)  # another user's lock file: flock needs no write access
    delay = 0.001
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK):
                    os.close(fd)
                    return None  # a filesystem without flock: filelock falls back to a marker
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(str(path))
            waited = _wait_in_kernel(fcntl, fd, left)
            if waited:
                break
            if waited is None:
                continue  # the timer ran out: the deadline decides
            # Short waits first: a hook holds the lock for milliseconds.
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.025)
    except BaseException:
        os.close(fd)
        raise
    return lambda: os.close(fd)  # closing the only descriptor releases the lock


class _Expired(Exception):
    pass


def _expire(signum: int, frame: object) -> None:
    raise _Expired


def _wait_in_kernel(fcntl: Any, fd: int, seconds: float) -> bool | None:
    """Wait for the lock in a blocking flock, bounded by a timer: True once it is ours, None
    when the timer ran out first (the caller checks its deadline and may wait again).

    A waiter then gets the lock the moment it is released, where polling sleeps through the
    gaps and loses to newcomers: under many writers that starved some hooks past their bound.
    False (poll instead) where a timer cannot be used: outside the main thread, when the
    process already runs a timer of its own, or when SIGALRM is blocked (the wait would
    have no bound).
    """
    import signal

    if (
        not hasattr(signal, "setitimer")
        or signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0)
        or signal.SIGALRM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    ):
        return False
    try:
        previous = signal.signal(signal.SIGALRM, _expire)
    except ValueError:
        return False  # not the main thread
    try:
        # An hour at most per wait: setitimer refuses what time_t cannot hold.
        signal.setitimer(signal.ITIMER_REAL, min(max(seconds, 1e-6), 3600.0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        return None
    finally:
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
    return True


def _filelock(path: str, timeout: float) -> Callable[[], None]:
    """Lock `path` with filelock (Windows, or no flock here); TimeoutError after `timeout`."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(str(path)) from None
    return lambda: lock.release()
