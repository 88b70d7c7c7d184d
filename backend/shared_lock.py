"""An exclusive lock on a folder shared by several jobs (the cached fit of one object).

Two backends that fit the same cache entry at once (two Blender sessions, or a batch and a
panel edit) would write the same checkpoints. The second waits here until the first is done, and
then finds the finished field. The lock is the operating system's, on the folder's ``.lock``
file, so the OS releases it when the process dies and a killed backend never leaves a stale lock:
``fcntl.flock`` on Linux and macOS, ``msvcrt.locking`` of the file's first byte on Windows (which
has no blocking wait for it: we retry every :data:`WINDOWS_RETRY_S`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK_FILE = ".lock"
WINDOWS = sys.platform == "win32"
"""Whether to use Windows' ``msvcrt.locking`` (else ``fcntl.flock``); the tests flip it."""
WINDOWS_RETRY_S = 0.1
"""How often a waiting Windows process tries the lock again."""


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another process holds it."""
    if WINDOWS:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock(fd: int) -> None:
    """Take the exclusive lock, waiting as long as another process holds it."""
    if WINDOWS:
        while not _try_lock(fd):
            time.sleep(WINDOWS_RETRY_S)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    """Release the lock before the descriptor closes (Windows wants the locked byte unlocked)."""
    if WINDOWS:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    # POSIX: closing the descriptor releases the flock


@contextlib.contextmanager
def folder_lock(folder: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing); ``on_wait`` is called once if
    another process holds it, before blocking."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            if on_wait is not None:
                on_wait()
            _lock(fd)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)
