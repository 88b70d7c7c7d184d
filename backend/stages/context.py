"""What the runner hands every stage: the job, where events go, the device, and how to stop.

A job stops when the user asks for it: ``cancel.json`` appears in the job folder (the extension's
Cancel button) or the process receives SIGTERM (:func:`stop_on_sigterm`). A cancel request older
than the run (left by an earlier cancel) is not for this run and is ignored (see
``contract.CancelRequest``). Stages do not poll either
themselves: :meth:`JobContext.reporter` wires both into the :class:`~backend.progress.StageReporter`
they pass down, and the stage's loop raises :class:`~backend.progress.JobCancelled` after
checkpointing.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

from blender_piva import contract

from ..progress import StageReporter


class StageError(RuntimeError):
    """A stage failed for a reason the user can act on: ``hint`` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


_SIGTERM_RECEIVED = [False]
"""Set by the SIGTERM handler; a list so the handler mutates it instead of rebinding a global."""


def _on_sigterm(signum, frame) -> None:  # pragma: no cover - exercised through a subprocess
    _SIGTERM_RECEIVED[0] = True


STOP_SIGNAL_NAMES = ("SIGTERM", "SIGBREAK")
"""The signals that cancel a job, where the system has them: SIGTERM, and on Windows SIGBREAK (the
Ctrl+Break event the extension sends there instead, ``blender_piva/core/process_group.py``)."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM (and SIGBREAK on Windows) into a cancel request: the running stage checkpoints
    and stops, then the job exits."""
    for name in STOP_SIGNAL_NAMES:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _on_sigterm)


def cancel_requested(job_dir: Path, since: float = 0.0) -> bool:
    """True once the user asked the job in ``job_dir`` to stop: SIGTERM, or a cancel file written
    at ``since`` (the run's start) or later."""
    return _SIGTERM_RECEIVED[0] or contract.cancel_requested(job_dir, since=since)


@dataclass(frozen=True)
class ModelKey:
    """What makes a loaded diffusion model reusable by another job: equal keys, same model."""

    model: str
    """Model folder or hub id (``toy`` already resolved to its folder)."""
    controlnet: str
    """Depth ControlNet folder or hub id ('' = none)."""
    device: str
    """``str(torch.device)``, e.g. ``cpu``, ``cuda``."""
    dtype: str
    """``str(torch.dtype)``, e.g. ``torch.float32``."""
    memory: str
    """Memory mode (``contract.MEMORY_MODES``), applied once at load."""


class ModelProvider(Protocol):
    """Hands the edit stage its diffusion model; the long-lived worker keeps one
    (``backend/serve/model_cache.py``). ``load`` loads it (and applies the memory mode), returning
    ``(model, applied)``: ``applied`` is what the memory mode did, for the log."""

    def get(self, key: ModelKey, load: Callable[[], tuple[Any, list[str]]], events: contract.EventWriter) -> tuple[Any, list[str]]: ...


@dataclass
class JobContext:
    """What a stage needs: the spec, the event writer, the device, and how to report."""

    spec: contract.JobSpec
    events: contract.EventWriter
    device: object  # torch.device; typed loosely so importing this module needs no torch
    started: float = 0.0
    """When the run started (seconds since the epoch): older cancel requests are not for it."""
    models: ModelProvider | None = None
    """Where the edit stage gets its diffusion model; None: it loads its own (one job per process)."""

    def reporter(self, stage: str) -> StageReporter:
        job_dir = self.spec.job_dir
        return StageReporter(
            stage=stage,
            events=self.events,
            preview_dir=job_dir / contract.PREVIEW_DIR,
            cancel_check=lambda: cancel_requested(job_dir, self.started),
            min_interval_s=0.2,
        )
