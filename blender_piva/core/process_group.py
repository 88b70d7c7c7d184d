"""Start, stop and kill the backend as its own process group, on Linux, macOS and Windows (no bpy).

The one place that knows the platform's process control:

* POSIX (Linux, macOS): the backend starts in a new session (``start_new_session``), so Ctrl+C in
  Blender's terminal does not reach it; we stop it with ``SIGTERM`` to its group (the backend
  treats it as a cancel: checkpoint, then exit) and kill it with ``SIGKILL``.
* Windows: the backend starts in a new process group (``CREATE_NEW_PROCESS_GROUP``), so Ctrl+C
  in the console does not reach it either; we stop it with ``CTRL_BREAK_EVENT`` (the backend
  handles ``SIGBREAK`` like ``SIGTERM``) and kill it with ``TerminateProcess`` (``Popen.kill``).

Every function takes ``windows`` (default: this system) so tests run the Windows branch with a
recording stand-in for ``Popen`` on any system.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

IS_WINDOWS = sys.platform == "win32"
"""Whether this system is Windows (every function below can be told otherwise)."""

_CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x00000200)
"""Windows' process creation flag (the constant exists only in Windows' ``subprocess``)."""
_CTRL_BREAK_EVENT = getattr(signal, "CTRL_BREAK_EVENT", 1)
"""Windows' console Ctrl+Break event (the constant exists only in Windows' ``signal``)."""


def _windows(windows: bool | None) -> bool:
    return IS_WINDOWS if windows is None else windows


def popen_kwargs(windows: bool | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`subprocess.Popen` that put the child in its own process group."""
    if _windows(windows):
        return {"creationflags": _CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def terminate_group(proc: subprocess.Popen, windows: bool | None = None) -> None:
    """Ask the process (and its group) to stop now: the backend checkpoints and exits.

    POSIX: ``SIGTERM`` to the group. Windows: ``CTRL_BREAK_EVENT`` to the group, or
    ``terminate()`` when the event cannot be sent (no console). A process already gone is fine."""
    if proc.poll() is not None:
        return
    if _windows(windows):
        try:
            proc.send_signal(_CTRL_BREAK_EVENT)
        except (OSError, ValueError):
            proc.terminate()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def kill_group(proc: subprocess.Popen, windows: bool | None = None) -> None:
    """Stop the process now (it may lose the steps since its last checkpoint) and reap it.

    POSIX: ``SIGKILL`` to the group. Windows: ``Popen.kill`` (TerminateProcess)."""
    if proc.poll() is not None:
        return
    if _windows(windows):
        proc.kill()
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def killed_from_outside(returncode: int | None, windows: bool | None = None) -> bool:
    """Whether an exit code means the process was killed without a chance to report (POSIX:
    ``SIGKILL``, most often the out-of-memory killer). Windows reports no such signal: False."""
    if returncode is None or _windows(windows):
        return False
    return returncode == -getattr(signal, "SIGKILL", 9)

