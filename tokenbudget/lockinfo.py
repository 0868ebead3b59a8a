"""Who holds a lock file, for messages like "held by pid 4242: tokenbudget sync".

Linux only (it reads /proc); elsewhere, or when the holder cannot be seen, the answer is None
and callers say less. Never raises: this only ever adds detail to a message about a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")
MAX_CMDLINE = 200


def holder(lock_path: Path | str) -> str | None:
    """Name the process holding `lock_path`, e.g. "pid 4242: python -P -c ... Stop"."""
    try:
        st = os.stat(lock_path)
    except OSError:
        return None  # no lock file: nobody holds it
    held, pids = _proc_locks(st.st_dev, st.st_ino)
    if not held:
        return None
    for pid in pids:
        described = _describe(pid)
        if described is not None:
            return described
    # Held, but the table's pid is unusable: an OFD lock (pid -1), or a flock taken by a process
    # that has exited since and left the descriptor to a child. Look for who has the file open.
    found = [d for d in map(_describe, _pids_with_open(st.st_dev, st.st_ino)) if d is not None]
    if len(found) == 1:
        return found[0]
    if found:
        # A process waiting for the lock has the file open too: we cannot tell them apart.
        return "one of " + "; ".join(found[:3])
    return None


def _proc_locks(dev: int, ino: int) -> tuple[bool, list[int]]:
    """Whether /proc/locks shows a lock held on (dev, ino), and the pids it names for it."""
    try:
        text = (PROC / "locks").read_text()
    except OSError:
        return False, []
    exact: list[int] = []
    same_inode: list[int] = []
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2159258 0 EOF"; a waiter's line has "->" after
        # the number: it does not hold the lock, it is queued behind the holder.
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            lock_dev = os.makedev(int(major, 16), int(minor, 16))
            lock_ino = int(inode)
        except ValueError:
            continue
        if lock_ino == ino:
            (exact if lock_dev == dev else same_inode).append(pid)
    if exact:
        return True, [p for p in exact if p > 0]
    # On overlay and some network filesystems stat() reports another device number than the
    # lock table does; an inode alone is trusted only when it points at a single process.
    if same_inode and len(set(same_inode)) == 1:
        return True, [p for p in same_inode if p > 0]
    return False, []


def _pids_with_open(dev: int, ino: int) -> list[int]:
    """Processes other than us with the file (dev, ino) open."""
    try:
        entries = list(PROC.iterdir())
    except OSError:
        return []
    me = os.getpid()
    found: list[int] = []
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue  # gone, or another user's process
        for fd in fds:
            try:
                st = os.stat(entry / "fd" / fd)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (dev, ino):
                found.append(int(entry.name))
                break
    return found


def _describe(pid: int) -> str | None:
    """The process as "pid N: command line"; None when it is gone or a zombie (it holds nothing)."""
    base = PROC / str(pid)
    try:
        stat = (base / "stat").read_text()
    except OSError:
        return None  # a stale lock table entry: that process is gone
    # "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ")".
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return None
    try:
        raw = (base / "cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    if not args:
        return f"pid {pid}"
    # The program's own name is enough; its full path only makes the line long.
    args[0] = os.path.basename(args[0])
    # One line whatever the command line holds: it ends up in a hook's message and the log.
    command = " ".join(" ".join(a.split()) for a in args)
    if len(command) > MAX_CMDLINE:
        command = command[: MAX_CMDLINE - 3] + "..."
    return f"pid {pid}: {command}"
