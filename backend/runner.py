"""Runs one job: validate, then the requested stages in order, then the results manifest.

Every stage is resumable: a finished stage leaves its output (and is skipped when the job runs
again), an interrupted one leaves checkpoints it resumes from. A cancel request (``cancel.json``)
or SIGTERM makes the running stage checkpoint and stop; the process then exits with
``contract.EXIT_CANCELLED``.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from blender_piva import contract

from .progress import JobCancelled
from .stages import edit, export, reconstruct
from .stages.context import JobContext, StageError, cancel_requested, stop_on_sigterm


@dataclass
class CaptureSummary:
    """What the validate step found in the capture folder."""

    train_views: int
    eval_views: int
    resolution: tuple[int, int]


def validate_capture(capture_dir: Path) -> CaptureSummary:
    """Check that the capture folder is complete before any heavy work starts."""
    transforms = capture_dir / contract.TRANSFORMS_FILE
    if not transforms.is_file():
        raise StageError(
            f"no capture found: {transforms} does not exist",
            "capture the object from Blender first (the PIVA panel does it), or point capture_dir at a capture folder",
        )
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StageError(f"{transforms} is not valid JSON ({exc.msg} at line {exc.lineno})", "capture the object again")
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise StageError(f"{transforms} lists no frames", "capture the object again")
    counts = {"train": 0, "eval": 0}
    for index, frame in enumerate(frames):
        for key in ("file_path", "depth_file_path"):
            name = frame.get(key)
            if not isinstance(name, str) or not (capture_dir / name).is_file():
                raise StageError(
                    f"frame {index} of {transforms}: {key} {name!r} is missing",
                    "the capture is incomplete; capture the object again",
                )
        split = frame.get("split", "train")
        counts[split if split in counts else "train"] += 1
    if counts["train"] == 0:
        raise StageError(f"{transforms} has no training views", "capture with at least one training view")
    return CaptureSummary(counts["train"], counts["eval"], (int(meta.get("w", 0)), int(meta.get("h", 0))))


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else the CPU; ``cuda`` without CUDA is an error."""
    import torch

    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if name == "cuda":
            raise StageError(
                "device 'cuda' was requested but this Python's torch sees no CUDA GPU "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda})",
                "choose device 'cpu' or 'auto' in the add-on preferences, or install a CUDA build of torch",
            )
        return torch.device("cpu")
    raise StageError(f"unknown device {name!r}", ", ".join(contract.DEVICES))


def run_job(job_path: Path, echo: bool = False) -> int:
    """Run the job in ``job_path``; return the process exit code (contract.EXIT_*)."""
    job_path = Path(job_path).resolve()
    events_path = job_path.parent / contract.EVENTS_FILE
    events = contract.EventWriter(events_path, echo=print if echo else None)
    try:
        spec = contract.load_job(job_path)
    except contract.ContractError as exc:
        events.emit("error", stage="validate", message=str(exc), hint="fix the job file (the field is named above)")
        return contract.EXIT_BAD_JOB
    if Path(spec.output_dir).resolve() != job_path.parent:
        events.emit(
            "error",
            stage="validate",
            message=f"output_dir {spec.output_dir} is not the folder of the job file {job_path.parent}",
            hint="keep job.json inside the job's output_dir",
        )
        return contract.EXIT_BAD_JOB
    stop_on_sigterm()
    try:
        return _run_stages(spec, events)
    except JobCancelled as exc:
        events.emit("cancelled", stage=exc.stage, step=exc.step, message=str(exc))
        return contract.EXIT_CANCELLED
    except StageError as exc:
        events.emit("error", message=str(exc), hint=exc.hint)
        return contract.EXIT_ERROR
    except Exception as exc:  # last resort: the traceback goes to backend.log (stderr)
        traceback.print_exc(file=sys.stderr)
        events.emit("error", message=f"{type(exc).__name__}: {exc}", hint=_hint_for(exc, spec))
        return contract.EXIT_ERROR


def _hint_for(exc: BaseException, spec: contract.JobSpec) -> str:
    text = str(exc).lower()
    if "out of memory" in text:
        return "out of GPU memory: lower the render resolution or rays per batch in the preferences, or use fp16"
    return f"unexpected failure; the traceback is in {spec.job_dir / contract.LOG_FILE}"


def _run_stages(spec: contract.JobSpec, events: contract.EventWriter) -> int:
    import torch

    from . import __version__

    device = resolve_device(spec.device)
    events.emit(
        "started",
        message=f"backend {__version__}, torch {torch.__version__}, device {device}, stages {','.join(spec.stages)}",
    )
    summary = validate_capture(spec.capture_path)
    events.emit(
        "log",
        stage="validate",
        message=(
            f"capture ok: {summary.train_views} training and {summary.eval_views} held-out views at "
            f"{summary.resolution[0]}x{summary.resolution[1]}"
        ),
    )
    context = JobContext(spec=spec, events=events, device=device)
    metrics: dict[str, float] = {}
    files: dict[str, str] = {}
    for stage in spec.stages:
        if cancel_requested(spec.job_dir):
            raise JobCancelled(stage, 0)
        result = STAGES[stage](context)
        metrics.update(result.get("metrics", {}))
        files.update(result.get("files", {}))
    normalization = json.loads((spec.capture_path / contract.TRANSFORMS_FILE).read_text()).get("normalization", [])
    manifest = contract.ResultsManifest(
        job_id=spec.job_id,
        files=files,
        metrics=metrics,
        normalization=normalization,
        source_prompt=spec.source_prompt,
        target_prompt=spec.target_prompt,
        method=spec.edit.method,
        seed=spec.seed,
    )
    path = manifest.write(spec.results_path)
    events.emit("finished", results=str(path))
    return contract.EXIT_OK


StageFn = Callable[[JobContext], dict]

STAGES: dict[str, StageFn] = {
    "reconstruct": reconstruct.run,
    "edit": edit.run,
    "export": export.run,
}
"""Stage name -> function. Each returns ``{"metrics": {...}, "files": {...}}``."""
