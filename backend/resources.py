"""A stage that runs out of memory or disk: one line naming the resource and the stage, and a hint
naming the setting to lower (memory) or the folder and the space the job needs (disk).

No torch import: CUDA's ``torch.cuda.OutOfMemoryError`` is recognised by its name and message, so
this module also serves a job that fails before torch is loaded.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

from blender_piva import contract
from blender_piva.contract import disk
from blender_piva.contract.layout import MEMORY_SETTINGS

from .stages.context import StageError

PREFERENCE_LABELS = {"reconstruct.rays_per_batch": "Rays per batch", "edit.render_resolution": "Edit resolution"}
"""Settings of ``contract.layout.MEMORY_SETTINGS`` that the add-on preferences also offer, by label."""

_OOM_TEXT = (
    "DefaultCPUAllocator: can't allocate memory",
    "CUDA out of memory",
    "out of memory",
    "Cannot allocate memory",
    "std::bad_alloc",
)


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError (numpy, Python), torch's CPU allocator failure, CUDA's OutOfMemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, OSError) and exc.errno == errno.ENOMEM:
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc) for text in _OOM_TEXT)


def _setting_value(spec: contract.JobSpec, dotted: str) -> int:
    block, key = dotted.split(".")
    return int(getattr(getattr(spec, block), key))


def _allocation(text: str) -> str:
    """``... you tried to allocate 4294967296 bytes ...`` -> ``could not allocate 4.0 GB``."""
    found = re.search(r"tried to allocate (\d+) bytes", text)
    if found:
        return f"could not allocate {int(found.group(1)) / 2**30:.1f} GB"
    found = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
    if found:
        return f"could not allocate {found.group(1)}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first[:160]


def out_of_memory_error(exc: BaseException, stage: str, spec: contract.JobSpec) -> StageError:
    text = str(exc)
    gpu = type(exc).__name__ == "OutOfMemoryError" or "CUDA" in text
    detail = _allocation(text) or type(exc).__name__
    dotted = MEMORY_SETTINGS.get(stage, MEMORY_SETTINGS["reconstruct"])
    label = PREFERENCE_LABELS.get(dotted, "")
    value = _setting_value(spec, dotted)
    lower = max(value // 2, 1)
    where = f"--set {dotted}={lower} on the command line"
    if label:
        where += f", or {label!r} in the add-on preferences"
    hint = f"lower {dotted} (now {value}; e.g. {where}) and start the edit again"
    if gpu and stage == "edit" and spec.model.precision in ("auto", "fp32"):
        hint += "; model precision fp16 also halves the model's memory"
    return StageError(f"out of {'GPU' if gpu else 'CPU'} memory in the {stage} stage ({detail})", hint)


def disk_full_error(exc: BaseException, stage: str, spec: contract.JobSpec) -> StageError:
    filename = getattr(exc, "filename", None)
    folder = Path(filename).parent if filename else spec.job_dir
    message, hint = disk.disk_full_message(folder, disk.job_bytes(spec, capture=False), "the job")
    return StageError(f"{message} in the {stage} stage", hint)


def resource_error(exc: BaseException, stage: str, spec: contract.JobSpec) -> StageError | None:
    """The StageError for a memory or disk exhaustion, else None (the error is something else)."""
    if disk.is_disk_full(exc):
        return disk_full_error(exc, stage, spec)
    if is_out_of_memory(exc):
        return out_of_memory_error(exc, stage, spec)
    return None
