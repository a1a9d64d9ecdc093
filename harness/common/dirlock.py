"""One writer per output directory: an OS file lock (``fcntl.flock``) naming its holder.

``output_lock(dir, command)`` takes ``dir/.selfalign.lock`` or stops at once with one line that
names the process holding it (pid, host, command, start time). The OS drops the lock when its
holder dies, however it dies (kill -9 included); the holder's details stay in the file, so the
next process knows it is taking over a lock left behind and says so. A clean release removes
the file. Within one process the
lock is re-entrant (``selfalign run`` locks the run directory and calls commands that lock
directories inside it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from harness.common.errors import UserError

LOCK_FILE = ".selfalign.lock"
_held: dict[Path, int] = {}  # resolved directory -> nesting depth in this process


class DirectoryLockedError(UserError):
    """Another process is writing to the same output directory."""


def _describe(holder: dict) -> str:
    started = holder.get("started")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} ({holder.get('command', '?')}, since {since})"


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        holder = {"pid": "?", "command": "unreadable lock file"}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def output_lock(directory: str | Path, command: str) -> Iterator[None]:
    """Hold ``directory``'s lock for the duration (creating the directory)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        key = directory.resolve()
    except OSError as exc:
        raise UserError(f"output directory {directory}: cannot create it ({exc.strerror}); choose another path") from None
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = directory / LOCK_FILE
    fd = _acquire(path, directory)
    try:
        previous = _read_holder(fd)
        if previous.get("pid"):
            # A clean release removes the file; a holder's details mean it died holding the lock.
            print(f"note: took over the lock of {directory} left by {_describe(previous)}, which is no longer running",
                  file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            # Unlink while still holding the lock; a process that opened the old file meanwhile
            # sees that its inode is gone when it checks, and opens the path again.
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _acquire(path: Path, directory: Path) -> int:
    """An open, flocked descriptor of the file now at ``path`` (or DirectoryLockedError)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"output directory {directory}: cannot write its lock file ({exc.strerror}); make it writable or choose another path"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DirectoryLockedError(
                f"output directory {directory} is in use by {_describe(holder)}; wait for it to finish, or write to another directory"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock: retry
