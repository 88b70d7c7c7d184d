"""A small disk for disk-full tests: a size-limited tmpfs, so the kernel itself answers ENOSPC.

* :func:`in_namespace` wraps a shell command so that it runs in a private mount namespace
  (``unshare -rm``) with a tmpfs mounted at a folder: nothing is mounted for anyone else, and the
  mount disappears with the command.
* :func:`mounted` mounts a tmpfs for the test process itself (needs root); tests that need the
  disk in-process use it.

Both report None / False where the machine does not allow it; the tests then inject ENOSPC at
the write instead (the one fault they cannot cause otherwise).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path


@cache
def namespaces_work() -> bool:
    """True when ``unshare -rm`` may mount a tmpfs here."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(folder)}"],
            check=False, capture_output=True, timeout=30,
        )
    return probe.returncode == 0


def in_namespace(mount: Path, size: str, command: str) -> list[str] | None:
    """argv that runs ``command`` (shell) with a ``size`` tmpfs at ``mount`` (an existing, empty
    folder); None when namespaces are not available."""
    if not namespaces_work():
        return None
    script = f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(str(mount))} && {command}"
    return ["unshare", "-rm", "sh", "-c", script]


@contextlib.contextmanager
def mounted(mount: Path, size: str) -> Iterator[bool]:
    """Mount a ``size`` tmpfs at ``mount`` for this process (root only); yields whether it worked."""
    mount.mkdir(parents=True, exist_ok=True)
    try:
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)]
        made = subprocess.run(command, check=False, capture_output=True)
        ok = made.returncode == 0
    except OSError:  # no mount command
        ok = False
    try:
        yield ok
    finally:
        if ok:
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
