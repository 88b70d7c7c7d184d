"""Atomic file writing: readers see either the old file or the complete new one, never a part."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that readers see either the old file or the complete new one."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to a temporary file in the same folder, fsync it, then rename it over ``path``.

    The temporary file is created with mode 0666 so that the process's umask applies as to any
    ordinary file (``tempfile.mkstemp`` makes 0600 files, and reading the umask takes
    ``os.umask``, a process-wide side effect).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write names no file: say which one (e.g. on a full disk)
        raise


def temp_path(path: str | os.PathLike) -> Path:
    """Where a write of ``path`` keeps its temporary: ``.NAME.PID.HEX.tmp`` beside it.

    The writer's process id in the name lets the next run remove the temporaries of a process
    that died mid-write (``leftovers.remove_dead_leftovers``); use it for every temporary file.
    """
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
