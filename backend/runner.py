"""Runs one job: validate, then the requested stages in order, then the results manifest.

Every stage is resumable: a finished stage leaves its output (and is skipped when the job runs
again), an interrupted one leaves checkpoints it resumes from. A cancel request (``cancel.json``)
or SIGTERM makes the running stage checkpoint and stop; the process then exits with
``contract.EXIT_CANCELLED``. Stale state never blocks a run: a cancel request older than the run
and temporaries of dead processes are removed before the first stage (:func:`prepare_job_folder`),
and every folder is reused or written only when its owner marker says this job made it for the
same inputs (``stages/folders.py``).

Every run that started a stage ends with a report (``results/report.html``, ``backend/report/``):
a finished job's with its held-out views, a failed or cancelled one's with what there is. A
report that cannot be drawn is a ``log`` event, never the job's failure.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from blender_piva import contract

from .progress import JobCancelled
from .report.build import report_after_run
from .resources import resource_error
from .stages import edit, export, folders, reconstruct
from .stages.context import JobContext, ModelProvider, StageError, cancel_requested, stop_on_sigterm


@dataclass
class RunState:
    """How far a run got: whether a report of it is worth drawing when it stops early."""

    stage_started: bool = False
    """A stage began (the job has events, perhaps previews, to show)."""


@dataclass
class CaptureSummary:
    """What the validate step found in the capture folder."""

    train_views: int
    eval_views: int
    resolution: tuple[int, int]


def validate_capture(capture_dir: Path) -> CaptureSummary:
    """Check that the capture folder is complete before any heavy work starts."""
    transforms = capture_dir / contract.TRANSFORMS_FILE
    again = f"re-run the capture: delete {capture_dir} and run the edit again"
    if not transforms.is_file():
        raise StageError(
            f"no capture found: {transforms} does not exist",
            "capture the object from Blender first (the PIVA panel does it), or point capture_dir at a capture folder",
        )
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise StageError(f"{transforms} is not valid JSON ({exc.msg} at line {exc.lineno})", again) from None
    except UnicodeDecodeError:
        raise StageError(f"{transforms} is not valid JSON (it is not UTF-8 text)", again) from None
    except OSError as exc:
        raise StageError(f"{transforms} cannot be read: {exc.strerror or exc}", again) from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise StageError(f"{transforms} lists no frames", again)
    if not _is_matrix4(meta.get("normalization")):
        raise StageError(f"{transforms}: 'normalization' is not a 4x4 matrix of numbers", again)
    counts = {"train": 0, "eval": 0}
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise StageError(f"frame {index} of {transforms} is {type(frame).__name__}, not an object", again)
        for key in ("file_path", "depth_file_path"):
            name = frame.get(key)
            if not isinstance(name, str) or not (capture_dir / name).is_file():
                raise StageError(
                    f"frame {index} of {transforms}: {key} {name!r} is missing",
                    f"the capture is incomplete; {again}",
                )
        split = frame.get("split", "train")
        counts[split if split in counts else "train"] += 1
    if counts["train"] == 0:
        raise StageError(f"{transforms} has no training views", "capture with at least one training view")
    try:
        size = (int(meta.get("w", 0)), int(meta.get("h", 0)))
    except (TypeError, ValueError):
        raise StageError(f"{transforms}: 'w' and 'h' are not numbers", again) from None
    return CaptureSummary(counts["train"], counts["eval"], size)


def _is_matrix4(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(row, list) and len(row) == 4 for row in value)
        and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for row in value for x in row
        )
    )


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else MPS (Apple silicon), else the CPU; ``cuda`` or ``mps``
    that this Python's torch cannot use is an error naming the alternatives."""
    import torch

    def mps_available() -> bool:
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())

    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if name == "cuda":
        if torch.cuda.is_available():
            return torch.device("cuda")
        raise StageError(
            "device 'cuda' was requested but this Python's torch sees no CUDA GPU "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda})",
            "choose device 'cpu' or 'auto' in the add-on preferences, or install a CUDA build of torch",
        )
    if name == "mps":
        if mps_available():
            return torch.device("mps")
        mps = getattr(torch.backends, "mps", None)
        built = bool(mps is not None and mps.is_built())
        raise StageError(
            "device 'mps' (Apple silicon) was requested but this Python's torch cannot use it "
            f"(torch {torch.__version__}, built with MPS: {built}; MPS needs a Mac with Apple silicon and macOS 12.3+)",
            "choose device 'cpu' or 'auto' in the add-on preferences (or 'cuda' on an NVIDIA machine)",
        )
    raise StageError(f"unknown device {name!r}", f"one of {', '.join(contract.DEVICES)}")


def run_job(
    job_path: Path,
    echo: bool = False,
    started: float | None = None,
    *,
    models: ModelProvider | None = None,
    sigterm_cancels: bool = True,
) -> int:
    """Run the job in ``job_path``; return the process exit code (contract.EXIT_*).

    ``started`` is when the run began (seconds since the epoch; the launcher's clock, default
    now): cancel requests written before it belong to an earlier run and are removed. The
    long-lived worker (``backend/serve/``) runs every job through here too, with its model cache as
    ``models`` and ``sigterm_cancels=False`` (there SIGTERM stops the worker after the job)."""
    started = time.time() if started is None else started
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
    if sigterm_cancels:
        stop_on_sigterm()
    state = RunState()
    try:
        return _run_stages(spec, events, started, state, models)
    except JobCancelled as exc:
        _report_early_end(spec, events, state, "cancelled", str(exc))
        _emit_last(events, "cancelled", stage=exc.stage, step=exc.step, message=str(exc))
        return contract.EXIT_CANCELLED
    except StageError as exc:
        _report_early_end(spec, events, state, "failed", str(exc))
        _emit_last(events, "error", message=str(exc), hint=exc.hint)
        return contract.EXIT_ERROR
    except Exception as exc:  # last resort: the traceback goes to backend.log (stderr)
        resource = resource_error(exc, "validate", spec)
        if resource is not None:  # memory or disk ran out outside a stage (loading torch, the manifest)
            _report_early_end(spec, events, state, "failed", str(resource))
            _emit_last(events, "error", message=str(resource), hint=resource.hint)
            return contract.EXIT_ERROR
        traceback.print_exc(file=sys.stderr)
        _report_early_end(spec, events, state, "failed", f"{type(exc).__name__}: {exc}")
        _emit_last(events, "error", message=f"{type(exc).__name__}: {exc}", hint=_hint_for(exc, spec))
        return contract.EXIT_ERROR


def _report_early_end(
    spec: contract.JobSpec, events: contract.EventWriter, state: RunState, status: str, message: str
) -> None:
    """The cheap report of a run that stopped early (no rendering: curves, previews, the reason),
    before its terminal event; nothing when no stage began."""
    if state.stage_started:
        report_after_run(spec, events, status, message=message)


def _emit_last(events: contract.EventWriter, event_type: str, **fields) -> None:
    """The run's terminal event; when even that cannot be written (a full disk), one line on stderr
    instead: the extension then reports a backend that stopped without a result, and checks the disk."""
    try:
        events.emit(event_type, **fields)
    except OSError as exc:
        text = fields.get("message", "") + (f" (how to fix: {fields['hint']})" if fields.get("hint") else "")
        print(f"PIVA backend: {event_type}: {text}; the event could not be written: {exc}", file=sys.stderr)


def _hint_for(exc: BaseException, spec: contract.JobSpec) -> str:
    return f"unexpected failure; the traceback is in {spec.job_dir / contract.LOG_FILE}"


def prepare_job_folder(spec: contract.JobSpec, events: contract.EventWriter, started: float) -> contract.FolderOwner:
    """Before any stage: stale state never blocks a run, and the job folder must be this job's.

    1. remove temporaries of dead processes under the job's folders (``contract.leftovers``);
    2. remove a cancel request older than this run (``contract.CancelRequest``);
    3. claim the job folder (``folders.claim_job_folder``); a StageError when it is not this job's.
    """
    removed = [p for root in folders.leftover_roots(spec) for p in contract.remove_dead_leftovers(root, started=started)]
    if removed:
        names = ", ".join(str(p) for p in removed[:3]) + (f" and {len(removed) - 3} more" if len(removed) > 3 else "")
        events.emit("log", stage="validate", message=f"removed temporaries of interrupted runs: {names}")
    if contract.clear_stale_cancel(spec.job_dir, started):
        events.emit("log", stage="validate", message="removed a cancel request older than this run (left by an earlier cancel)")
    owner = folders.claim_job_folder(spec)
    return contract.set_state(spec.job_dir, owner, "working") if owner.done else owner


def _run_stages(
    spec: contract.JobSpec,
    events: contract.EventWriter,
    started: float,
    state: RunState,
    models: ModelProvider | None = None,
) -> int:
    import torch

    from . import __version__

    device = resolve_device(spec.device)
    events.emit(
        "started",
        message=f"backend {__version__}, torch {torch.__version__}, device {device}, stages {','.join(spec.stages)}",
    )
    owner = prepare_job_folder(spec, events, started)
    summary = validate_capture(spec.capture_path)
    events.emit(
        "log",
        stage="validate",
        message=(
            f"capture ok: {summary.train_views} training and {summary.eval_views} held-out views at "
            f"{summary.resolution[0]}x{summary.resolution[1]}"
        ),
    )
    context = JobContext(spec=spec, events=events, device=device, started=started, models=models)
    metrics: dict[str, float] = {}
    files: dict[str, str] = {}
    for stage in spec.stages:
        if cancel_requested(spec.job_dir, started):
            raise JobCancelled(stage, 0)
        state.stage_started = True
        try:
            result = STAGES[stage](context)
        except (JobCancelled, StageError):
            raise
        except Exception as exc:
            resource = resource_error(exc, stage, spec)
            if resource is None:
                raise
            raise resource from None
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
    if state.stage_started:  # the report, and the held-out views it compares, join the results
        manifest.files.update(report_after_run(spec, events, "finished", manifest=manifest, device=device))
    path = manifest.write(spec.results_path)
    contract.set_state(spec.job_dir, owner, "done")
    events.emit("finished", results=str(path))
    return contract.EXIT_OK


StageFn = Callable[[JobContext], dict]

STAGES: dict[str, StageFn] = {
    "reconstruct": reconstruct.run,
    "edit": edit.run,
    "export": export.run,
}
"""Stage name -> function. Each returns ``{"metrics": {...}, "files": {...}}``."""
