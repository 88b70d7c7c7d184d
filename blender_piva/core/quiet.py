"""Blender's own output out of the terminal and into a log file, at the file-descriptor level (no bpy).

Blender's C code writes to file descriptors 1 and 2 directly (Cycles' ``Saved: '.../render.exr'``
per view, ``Read blend: ...``, ``Info: Saved copy as ...``, CUDA probing warnings): replacing
``sys.stdout`` does not catch that. :func:`redirect_fds_to` points the descriptors themselves at a
file for the duration of one call and puts them back after, flushing Python's and C's buffers on
both sides so that no line lands on the wrong side.

The headless command chooses where Blender's output goes with :func:`log_blender_output` (the job
folder's ``capture.log``); the code that calls into Blender wraps each noisy call in
:func:`blender_output`, which does nothing when no log was chosen (inside Blender's UI the output
stays in Blender's console, as users expect). File descriptors belong to the whole process, so the
choice is process-wide too.

    with log_blender_output(job_dir / "capture.log"):
        ...
        with blender_output():
            bpy.ops.render.render(write_still=True)
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable, Iterator, Union

LogTarget = Union[str, os.PathLike, Callable[[], "str | os.PathLike | None"], None]
"""A log file, or a function returning one (None: leave the output where it is)."""

_target: LogTarget = None
"""Where :func:`blender_output` sends Blender's output now (see :func:`log_blender_output`)."""


def _flush_all() -> None:
    """Flush Python's standard streams and the C library's stdio buffers."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stream has nothing to flush
                pass
    try:
        ctypes.CDLL(None).fflush(None)  # C's printf buffers (when fd 1 is a pipe, they are not line-buffered)
    except (OSError, AttributeError, TypeError):  # no C library by that name (Windows): nothing buffered we can reach
        pass


@contextmanager
def redirect_fds_to(path: str | os.PathLike, fds: tuple[int, ...] = (1, 2)) -> Iterator[Path]:
    """Point file descriptors ``fds`` (default stdout and stderr) at ``path`` (appended) inside the block.

    Catches what C code writes as well as Python's ``print``; restores the descriptors afterwards,
    also when the block raises (the traceback is then printed on the real terminal). Raises
    OSError when ``path`` cannot be opened, before anything is redirected."""
    path = Path(path)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved: list[tuple[int, int]] = []
    try:
        _flush_all()
        for fd in fds:
            saved.append((fd, os.dup(fd)))
            os.dup2(log, fd)
        yield path
    finally:
        _flush_all()
        for fd, copy in reversed(saved):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log)


@contextmanager
def log_blender_output(target: LogTarget) -> Iterator[None]:
    """Inside the block, :func:`blender_output` sends Blender's output to ``target``.

    ``target`` may be a function, called at each :func:`blender_output`, for a log whose folder
    is known only later (the job folder, made when the job starts)."""
    global _target
    previous, _target = _target, target
    try:
        yield
    finally:
        _target = previous


def current_log() -> Path | None:
    """The log file :func:`blender_output` would write to now; None when there is none."""
    target = _target() if callable(_target) else _target
    return Path(target) if target else None


@contextmanager
def blender_output() -> Iterator[Path | None]:
    """Around one noisy call into Blender: its output goes to :func:`current_log`, when one is set
    and can be written (its folder exists); else it stays where it is. Yields the log used."""
    path = current_log()
    with ExitStack() as stack:
        used = None
        if path is not None and path.parent.is_dir():
            try:
                used = stack.enter_context(redirect_fds_to(path))
            except OSError:  # an unwritable log must not stop the render: the output stays on the terminal
                used = None
        yield used
