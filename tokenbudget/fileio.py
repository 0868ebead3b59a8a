"""Durable file replacement: the one way tokenbudget replaces a file it owns.

Write a private temp file in the same folder, fsync it, rename it over the target, fsync the
folder: readers see the old file or the new one, and after a crash the rename is either whole
or not there. Kept off slow imports (no tempfile, pathlib, typing; contextlib where it is used): a
hook call writes the ledger through it.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing stays off a hook call's imports
if TYPE_CHECKING:
    from collections.abc import Callable


def stamp(st: os.stat_result) -> tuple[int, ...]:
    """What tells one version of a file from another: device, inode, size, mtime, and the
    inode's change time, which a write in place moves on even when its mtime is put back
    (`cp -p` or `rsync -t --inplace` over the file, `touch -r` after an edit)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def new_temp(folder: str, prefix: str) -> tuple[int, str]:
    """Create a new private `<prefix>...tmp` file in `folder`; return its descriptor and path.

    mkstemp without the tempfile import (3 ms a hook call); O_EXCL makes a name collision a
    retry, never a shared file.
    """
    for n in range(100):
        path = os.path.join(folder, f"{prefix}{os.getpid()}-{time.monotonic_ns()}-{n}.tmp")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable; a no-op where a folder cannot be opened (Windows)."""
    try:
        fd = os.open(folder or os.curdir, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder: the rename is as durable as they allow
    finally:
        os.close(fd)


def replace_atomically(
    path: str,
    data: bytes,
    *,
    prefix: str | None = None,
    step: Callable[[str], None] | None = None,
) -> None:
    """Replace `path` with `data` (0600) atomically and durably; OSError if it cannot.

    `prefix` names the temp file (default `.<name>.`), so that its owner can sweep the temps
    of writers killed mid-write. `step`, when given, is called with "temp", "synced" and
    "renamed" as the write passes them (the ledger's crash tests stop there).
    """
    folder, name = os.path.split(path)
    folder = folder or os.curdir
    fd, tmp = new_temp(folder, prefix if prefix is not None else f".{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if step is not None:
                f.flush()
                step("temp")
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        if step is not None:
            step("synced")
        os.replace(tmp, path)
    except BaseException:
        import contextlib  # here: a hook call with nothing new imports this module

        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_folder(folder)
    if step is not None:
        step("renamed")
