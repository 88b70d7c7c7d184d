"""What a job folder needs on disk, and how both sides say that the disk is full.

The sizes are rough upper bounds computed from the job's settings (uncompressed images, the
field with Adam's two moments in its checkpoint), good for "the job needs about 120 MB" in a
disk-full message; they are not a quota. Standard library only.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
from pathlib import Path

from .settings import CaptureSettings

FIELD_BYTES = {"cpu": 9_400_000, "cuda": 49_000_000}
"""Bytes of the fitted field's weights: the CPU and the CUDA hash-grid presets of
``backend/field/ngp_field.py`` (float32; ``tests/backend/test_resources.py`` checks them)."""

_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def capture_bytes(capture: CaptureSettings) -> int:
    """A capture folder: an RGBA PNG and a 16-bit depth PNG per view, plus the render's EXR."""
    pixels = capture.resolution**2
    views = capture.num_views + capture.num_eval_views
    return views * pixels * (4 + 2) + pixels * 5 * 4 + 64_000


def stage_bytes(spec) -> dict[str, int]:
    """``{"capture": ..., "reconstruct": ..., "edit": ..., "export": ...}`` for a ``contract.JobSpec``
    (only the stages it runs; the capture always)."""
    field = FIELD_BYTES["cpu" if spec.device == "cpu" else "cuda"]
    preview = spec.edit.render_resolution**2 * 3
    sizes = {"capture": capture_bytes(spec.capture)}
    if "reconstruct" in spec.stages:
        previews = spec.reconstruct.steps // max(spec.reconstruct.preview_every, 1) + 1
        sizes["reconstruct"] = 4 * field + previews * spec.capture.resolution**2 * 3
    if "edit" in spec.stages:
        previews = spec.edit.steps // max(spec.edit.preview_every, 1) + 1
        sizes["edit"] = 4 * field + 8_000_000 + previews * preview  # + PIVA's LoRA adapters and their moments
    if "export" in spec.stages:
        sizes["export"] = 2 * spec.export.texture_size**2 * 4 + spec.export.face_budget * 400
    return sizes


def job_bytes(spec, capture: bool = True) -> int:
    """The whole job folder; ``capture=False``: what the backend stages add to an existing capture."""
    return sum(size for part, size in stage_bytes(spec).items() if capture or part != "capture")


def size_text(n: float) -> str:
    """``123456789`` -> ``"118 MB"``, ``20000`` -> ``"20 KB"``, ``3e10`` -> ``"27.9 GB"``."""
    if n < 2**20:
        return f"{max(1, math.ceil(n / 2**10))} KB"
    if n < 10 * 2**30:
        return f"{round(n / 2**20)} MB"
    return f"{n / 2**30:.1f} GB"


def is_disk_full(exc: BaseException) -> bool:
    """True for the ways a full disk (or quota) shows: ENOSPC / EDQUOT, or their text in a
    library's own error (torch and safetensors wrap the OSError in a RuntimeError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the disk that holds ``path`` (or its nearest existing parent); None if unknown."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def disk_full_message(folder: str | os.PathLike, need: int, what: str) -> tuple[str, str]:
    """(message, hint) for a write that failed in ``folder`` because its disk is full; ``need`` is
    roughly what ``what`` (e.g. "the job") takes there."""
    free = free_bytes(folder)
    left = f"{size_text(free)} free" if free is not None else "its free space is unknown"
    message = f"the disk is full: cannot write in {folder} ({left}; {what} needs about {size_text(need)})"
    hint = (
        f"free at least {size_text(need)} on that disk, or choose a job folder on a larger disk "
        "(add-on preferences, or --jobs on the command line), then run the edit again"
    )
    return message, hint
