"""The ledger: one versioned JSON file, changed only under a lock and replaced atomically.

Every change takes the lock, re-reads the file, changes it, writes a temp file in the same folder,
fsyncs it and renames it over the old one, so readers see either the old or the new ledger, and
read positions and totals are always committed together. Nothing is ever silently reset: a file
we cannot read is moved aside and the caller rebuilds from the transcripts.

Reads and writes go through the small `Store` interface so another backend can follow.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tokenbudget import clock
from tokenbudget.errors import LedgerError, LockTimeout
from tokenbudget.schema import SCHEMA as SCHEMA

TYPE_CHECKING = False  # typing and pathlib stay off a hook call's imports (~10 ms)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Protocol, TypeAlias

    Ledger: TypeAlias = dict[str, Any]

    class Store(Protocol):
        """Where the ledger lives."""

        def transaction(self) -> Any:
            """Context manager: lock, yield the current ledger, commit it on a clean exit."""
            ...

        def snapshot(self) -> Ledger:
            """The ledger as last committed, read without the lock."""
            ...
else:
    Ledger = dict

# How every ledger we write begins (key order is new_ledger's): its commit time, "updated".
_UPDATED = re.compile(
    rb'^\{"schema":\d+,"app":"tokenbudget","created":[-0-9.eE+]+,"updated":([-0-9.eE+]+)[,}]'
)
BUCKET = 900  # seconds in one usage bucket of `hours` (15 minutes: every UTC offset divides it)


class CorruptLedger(LedgerError):
    """The ledger file exists but cannot be used as it is."""


def new_ledger() -> Ledger:
    """An empty ledger of the current schema."""
    now = clock.now()
    return {
        "schema": SCHEMA,
        "app": "tokenbudget",
        "created": now,
        "updated": now,
        "files": {},  # path -> [identity, head digest, offset, session id, turn]
        "sessions": {},  # session id -> session record (see ingest)
        "keys": {},  # usage key -> [session id, model, 5 counts, hour, cost, turn]
        # bucket (ts // BUCKET; older days merged at local midnight) -> project ->
        # [tokens, cost, first ts, last ts]
        "hours": {},
        "projects": {},  # project -> [tokens, cost] all time, folded sessions included
        "models": {},  # model -> [tokens, cost] all time, folded sessions included
        "folded": {"sessions": 0, "tokens": 0, "cost": 0.0, "until": 0.0},
        "commands": {},  # command -> recent finished runs [[start, tokens, cost], ...]
        "rates": {},  # model -> implied $/input-token weight from Claude Code's own cost
        "warned": {},
        "skipped": {},
        "events": {},  # fingerprints of recent hook events, to answer a double registration once
        "allow": {},  # `tokenbudget allow`: one prompt passes whatever the budgets
        "notices": [],  # one-line messages for the user, shown once by the next command
        "rebuild": False,  # set when a corrupt ledger was replaced: a full sync is owed
        # transcript -> [session id, until]: sessions ended by /clear, whose last cost-state
        # Claude Code writes after their last hook; the next session's hooks read it (hook.py)
        "ended": {},
        # Team mode (tokenbudget/team): the team this machine pushes to ("" when none), and
        # usage not pushed yet, key -> [session id, model, 5 counts, bucket, cost, command,
        # project], committed with the usage it copies.
        "team": "",
        "outbox": {},
    }


def file_identity(st: os.stat_result) -> str:
    """How a `files` record recognises the same file: device and inode."""
    return f"{st.st_dev}:{st.st_ino}"


def validate(data: Any) -> Ledger:
    """The parsed file as a ledger, upgraded to this schema; CorruptLedger if it cannot be."""
    if not isinstance(data, dict):
        raise CorruptLedger("the ledger is not a JSON object")
    schema = data.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise CorruptLedger("the ledger has no schema version")
    if schema > SCHEMA:
        raise CorruptLedger(
            f"the ledger has schema {schema}, newer than this tokenbudget understands ({SCHEMA})"
        )
    if schema < 1:
        raise CorruptLedger(f"the ledger has an unknown schema {schema}")
    fresh = new_ledger()
    for key, default in fresh.items():
        if key not in data:
            data[key] = default
        elif type(data[key]) is not type(default):
            raise CorruptLedger(f"the ledger's {key!r} is a {type(data[key]).__name__}")
    _check_records(data)
    return data


_NUM = (int, float)
_SESSION: dict[str, type | tuple[type, ...]] = {
    "p": str,
    "f": _NUM,
    "l": _NUM,
    "m": dict,
    "x": dict,
    "s": dict,
    "t": dict,
    "a": dict,
    "adj": list,
    "fk": list,
    "cs": dict,
}


def _per_model(value: Any) -> bool:
    return type(value) is dict and all(type(u) is list and len(u) == 5 for u in value.values())


def _check_fork(s: dict[str, Any]) -> None:
    """What ingest keeps to work a fork's inheritance out again (tokenbudget/ingest.py)."""
    if not all(_per_model(s.get(k, {})) for k in ("ib", "lc", "fc")):
        raise TypeError  # inherited, latest and first cost-state totals, per model
    if type(s.get("ie", {})) is not dict or not all(
        type(e) is list and len(e) >= 3 and type(e[2]) is dict and _per_model(e[2])
        for e in s.get("ie", {}).values()
    ):
        raise TypeError  # each candidate parent's totals at the fork point
    it = s.get("it", ["", 0])
    if type(it) is not list or len(it) != 2 or not isinstance(it[1], _NUM):
        raise TypeError  # the turn and time the inheritance is counted at
    if type(s.get("hd", {})) is not dict or not all(
        isinstance(v, str) for v in s.get("hd", {}).values()
    ):
        raise TypeError  # requests held for a requester not read yet


def _check_records(data: Ledger) -> None:
    """Every record inside has the shape the code expects, or CorruptLedger names the part.

    A ledger we wrote always passes; this catches hand edits and foreign writers, which would
    otherwise fail every hook and command later with a TypeError. Shapes only, kept cheap: it
    runs on every hook call.
    """
    part = "files"
    try:
        if not all(type(v) is list and len(v) == 5 for v in data["files"].values()):
            raise TypeError
        part = "request records"
        if not all(type(v) is list and len(v) == 10 for v in data["keys"].values()):
            raise TypeError
        part = "usage buckets"
        for h, cells in data["hours"].items():
            int(h)
            if type(cells) is not dict or not all(
                type(c) is list and len(c) == 4 for c in cells.values()
            ):
                raise TypeError
        part = "sessions"
        for s in data["sessions"].values():
            if type(s) is not dict:
                raise TypeError
            for key, kind in _SESSION.items():
                if not isinstance(s[key], kind) or isinstance(s[key], bool):
                    raise TypeError
            if not all(type(m) is list and len(m) == 8 for m in s["m"].values()):
                raise TypeError
            if not all(type(t) is list and len(t) == 4 for t in s["t"].values()):
                raise TypeError
            if not all(type(a) is list and len(a) == 9 for a in s["adj"]):
                raise TypeError
            pre = s.get("pre", [0, 0.0])  # what a resumed session used before its fold
            if type(pre) is not list or len(pre) != 2 or not all(
                isinstance(v, _NUM) and not isinstance(v, bool) for v in pre
            ):
                raise TypeError
            if "cp" in s and not all(
                type(u) is list and len(u) == 5 for u in s["cp"].values()
            ):
                raise TypeError  # a fork's copies' usage, per model
            if not all(isinstance(s.get(k, ""), str) for k in ("po", "ih")):
                raise TypeError  # the session a fork was made from
            _check_fork(s)
            if "c" in s and (
                type(s["c"]) is not dict
                or not all(type(c) is list and len(c) == 6 for c in s["c"].values())
                or not isinstance(s.get("k", ""), str)
            ):
                raise TypeError
        part = "team outbox"
        if not all(type(v) is list and len(v) == 11 for v in data["outbox"].values()):
            raise TypeError
        part = "totals"
        for key in ("sessions", "tokens", "cost", "until"):
            if not isinstance(data["folded"][key], _NUM):
                raise TypeError
        for rollup in ("projects", "models"):
            if not all(type(v) is list and len(v) == 2 for v in data[rollup].values()):
                raise TypeError
        part = "command runs"
        if not all(type(v) is list for v in data["commands"].values()):
            raise TypeError
        part = "notes"
        if not all(isinstance(n, str) for n in data["notices"]):
            raise TypeError
        if not all(
            type(e) is list and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], _NUM)
            for e in data["ended"].values()
        ):
            raise TypeError
        for table in ("events", "warned", "rates", "skipped"):
            if not all(isinstance(v, _NUM) for v in data[table].values()):
                raise TypeError
    except (TypeError, KeyError, ValueError):
        raise CorruptLedger(f"the ledger's {part} have the wrong shape") from None


def _flock(path: str, timeout: float) -> Callable[[], None] | None:
    """Lock `path` with flock(2); return the release, or None where flock is unavailable.

    The same lock as filelock's UnixFileLock (flock on the same file, which stays in place), so
    the two exclude each other; taken directly because importing filelock costs a hook call
    about 20 ms. TimeoutError after `timeout` seconds.
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


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _new_temp(folder: str, prefix: str) -> tuple[int, str]:
    """Create a new private `<prefix>...tmp` file in `folder`: mkstemp without the tempfile
    import (3 ms a hook call). O_EXCL makes a name collision a retry, never a shared file."""
    for n in range(100):
        path = os.path.join(folder, f"{prefix}{os.getpid()}-{time.monotonic_ns()}-{n}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _filelock(path: str, timeout: float) -> Callable[[], None]:
    """Lock `path` with filelock (Windows, or no flock here); TimeoutError after `timeout`."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=timeout, mode=0o600)
    try:
        lock.acquire()
    except Timeout:
        raise TimeoutError(str(path)) from None
    return lambda: lock.release()


class JsonFileStore:
    """The ledger as `ledger.json` beside `ledger.json.lock`."""

    def __init__(self, path: str | os.PathLike[str], lock_timeout: float = 2.0) -> None:
        self.path = path
        self.file = os.fspath(path)
        self.folder, self.name = os.path.split(self.file)
        self.lock_path = self.file + ".lock"
        self.lock_timeout = lock_timeout

    def _ensure_dir(self) -> None:
        from tokenbudget.paths import ensure_private_dir

        ensure_private_dir(self.folder or ".")

    def load(self) -> Ledger:
        """The ledger on disk (a new one if there is none); CorruptLedger if unusable."""
        return self.read()[0]

    def read(self) -> tuple[Ledger, tuple[int, ...] | None]:
        """The ledger on disk and the stamp of the file it came from (None: no file)."""
        try:
            with open(self.file, "rb") as f:
                stamp = _stamp(os.fstat(f.fileno()))
                raw = f.read()
        except FileNotFoundError:
            return new_ledger(), None
        except OSError as e:
            raise LedgerError(f"cannot read the ledger {self.file}: {e.strerror}") from None
        if not raw.strip():
            raise CorruptLedger("the ledger file is empty")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise CorruptLedger("the ledger is not valid JSON") from None
        return validate(data), stamp

    def _committed_at(self) -> float | None:
        """The "updated" time at the head of the file, without parsing the rest."""
        try:
            with open(self.file, "rb") as f:
                head = f.read(256)
        except OSError:
            return None
        found = _UPDATED.search(head)
        return float(found.group(1)) if found else None

    def snapshot(self) -> Ledger:
        return self.load()

    @contextmanager
    def transaction(
        self, known: tuple[tuple[int, ...], Ledger] | None = None
    ) -> Iterator[Ledger]:
        """Lock, yield the ledger, commit it on a clean exit.

        `known`: a ledger the caller read (with its stamp, see `read`) and left unchanged; used
        instead of reading the file again when no commit has replaced the file since.
        """
        try:
            self._ensure_dir()
            release = _flock(self.lock_path, self.lock_timeout) or _filelock(
                self.lock_path, self.lock_timeout
            )
        except TimeoutError:
            from tokenbudget.lockinfo import holder

            who = holder(self.lock_path)  # a stuck process the user can find and stop
            raise LockTimeout(
                f"the ledger lock {self.lock_path} was not obtained within {self.lock_timeout:g} s"
                + (f" (held by {who})" if who else "")
            ) from None
        except OSError as e:
            raise LedgerError(
                f"cannot lock the ledger {self.lock_path}: {e.strerror or e}"
            ) from None
        try:
            self._sweep_temps()
            try:
                st: os.stat_result | None = os.stat(self.file)
            except OSError:
                st = None
            if (
                known is not None
                and st is not None
                and _stamp(st) == known[0]
                and self._committed_at() == known[1].get("updated")
            ):
                # Every commit replaces the file and stamps "updated" first thing in it: the
                # same inode, size and mtime (which coarse clocks and inode reuse could fool)
                # and the same commit time say this is still the ledger read.
                data = known[1]
            else:
                try:
                    data = self.load()
                except CorruptLedger as e:
                    data = self._recover(str(e))
            yield data
            # This stamp tells one commit from another, so never a pinned clock.
            data["updated"] = time.time()  # the real clock
            try:
                self.write(data)
            except OSError as e:
                raise LedgerError(
                    f"cannot write the ledger {self.file}: {e.strerror or e}"
                ) from None
        finally:
            release()

    def write(self, data: Ledger) -> None:
        """Replace the ledger atomically (call with the lock held)."""
        self._ensure_dir()
        payload = json.dumps(data, separators=(",", ":"), allow_nan=False).encode()
        fd, tmp = _new_temp(self.folder or ".", self._temp_prefix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @property
    def _temp_prefix(self) -> str:
        return f".{self.name}."

    def _sweep_temps(self) -> None:
        """Remove temp files of writers killed mid-write (call with the lock held).

        Only the lock holder writes one, so any found now belongs to a dead process; a hook
        killed by Claude Code's timeout would otherwise leave a ledger-sized file each time.
        """
        try:
            with os.scandir(self.folder or ".") as entries:
                stale = [
                    e.path
                    for e in entries
                    if e.name.startswith(self._temp_prefix) and e.name.endswith(".tmp")
                ]
        except OSError:
            return
        for path in stale:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _recover(self, reason: str) -> Ledger:
        """Keep the unusable file, start a new ledger owed a rebuild from the transcripts."""
        kept = self.move_aside()
        data = new_ledger()
        data["rebuild"] = True
        data["notices"].append(
            f"tokenbudget: {reason}; kept it as {kept.name} and rebuilt the totals from the"
            " transcripts"
        )
        return data

    def move_aside(self, label: str = "corrupt") -> Path:
        """Keep a copy of an unusable ledger as `ledger.json.corrupt-<time>`; return where.

        A copy, not a move: the ledger stays in place until the caller's commit replaces it, so
        a crash in between leaves the old file (found again next time), never no ledger at all,
        which would read as a fresh one with every total at zero and no rebuild owed.
        """
        from pathlib import Path

        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(clock.now()))
        target = Path(f"{self.file}.{label}-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = Path(f"{self.file}.{label}-{stamp}-{n}")
        try:
            os.link(self.file, target)
        except OSError:
            # No hard links here (some network and FUSE filesystems): copy, privately.
            with open(self.file, "rb") as src:
                data = src.read()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
        return target
