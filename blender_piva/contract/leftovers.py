"""Leftovers of dead processes: temporaries of interrupted writes, removed by the next run.

Every temporary PIVA writes carries its writer's process id in its name:

    .NAME.PID.HEX.tmp         a file being written atomically (``atomic.temp_path``)
    .NAME.partial-PID-HEX     a capture being rendered (``blender_piva/scene/capture.py``)
    .NAME.old-PID-HEX         the previous capture while a new one replaces it

A process that is killed, crashes or hits a full disk mid-write leaves them behind (a fit's
checkpoint temporary is many MB). :func:`remove_dead_leftovers` removes those whose writer is no
longer alive; where the process id cannot be checked (not a POSIX system) it removes those older
than the run that asks, and keeps everything else: a live writer's temporary is never touched.
Standard library only; no side effect at import.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

LEFTOVER_PATTERNS = (
    re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{12}\.tmp$"),
    re.compile(r"^\..+\.(?:partial|old)-(?P<pid>\d+)-[0-9a-f]{8}$"),
)
"""Names of temporaries; the ``pid`` group is the writer's process id."""


def writer_pid(name: str) -> int | None:
    """The writer's process id if ``name`` is a PIVA temporary, else None."""
    for pattern in LEFTOVER_PATTERNS:
        match = pattern.match(name)
        if match:
            return int(match.group("pid"))
    return None


def pid_alive(pid: int) -> bool | None:
    """True while process ``pid`` exists, False once it is gone, None when this system cannot tell."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return None
    return True


def remove_dead_leftovers(
    root: str | os.PathLike, *, recursive: bool = True, started: float | None = None, prefix: str = ""
) -> list[Path]:
    """Remove the temporaries under ``root`` whose writer is dead; returns what was removed.

    ``started`` (seconds since the epoch) is the start of the run that cleans up: where a process
    id cannot be checked, a temporary last modified before it is removed (without ``started``, it
    is kept). ``prefix`` limits the search to names starting with it (e.g. ``.capture.``).
    Symbolic links are neither followed nor removed; entries that vanish meanwhile are skipped.
    """
    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_link = entry.is_symlink()
            except OSError:
                continue
            pid = writer_pid(entry.name) if entry.name.startswith(prefix) else None
            if pid is not None and not is_link and _writer_is_gone(pid, entry, started):
                try:
                    if is_dir:
                        shutil.rmtree(entry.path)
                    else:
                        os.remove(entry.path)
                except FileNotFoundError:
                    continue
                except OSError:
                    continue  # not ours to remove after all (permissions): leave it
                removed.append(Path(entry.path))
            elif recursive and is_dir and not is_link:
                stack.append(Path(entry.path))
    return removed


def _writer_is_gone(pid: int, entry: os.DirEntry, started: float | None) -> bool:
    alive = pid_alive(pid)
    if alive is not None:
        return not alive
    if started is None:
        return False
    try:
        return entry.stat(follow_symlinks=False).st_mtime < started
    except OSError:
        return False
