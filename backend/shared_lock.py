"""An exclusive lock on a folder shared by several jobs (the cached fit of one object).

Two backends that fit the same cache entry at once (two Blender sessions, or a batch and a
panel edit) would write the same checkpoints. The second waits here until the first is done, and
then finds the finished field. ``fcntl.flock`` locks are released by the OS when the process
dies, so a killed backend never leaves a stale lock. On systems without ``fcntl`` (Windows) the
lock is a no-op: run one backend per job folder root there.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


@contextlib.contextmanager
def folder_lock(folder: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing); ``on_wait`` is called once if
    another process holds it, before blocking."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
