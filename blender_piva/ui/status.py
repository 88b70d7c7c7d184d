"""The UI's shared state: the job the panel follows, its status in WindowManager.piva_status, and
the helpers every operator uses to start and follow a job."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import bpy

from .. import contract
from ..core.request import EditRequest, make_request

if TYPE_CHECKING:
    from ..scene.capture import CaptureSession
    from ..scene.edit_job import EditJob
    from ..scene.queue_runner import QueueRunner


class _ActiveJob:
    """The job the UI is following (at most one at a time)."""

    job: "EditJob | None" = None
    runner: "QueueRunner | None" = None
    """The variants or batch being run (ui/queue_operators.py); its current item's job is ``job``."""
    capture: "CaptureSession | None" = None
    """The capture of ``job`` while it renders, one view per timer tick (:func:`modal_capture_tick`)."""
    cancel_requested: bool = False
    cancel_sent: bool = False
    stage_started: float = 0.0
    stage_name: str = ""


ACTIVE = _ActiveJob()


def is_busy() -> bool:
    """Whether an edit or a queue is running (every run button waits for it)."""
    return ACTIVE.job is not None or ACTIVE.runner is not None


def request_from_panel(context, object_name: str) -> EditRequest:
    """The request the panel's settings and the add-on preferences describe."""
    from .preferences import get_preferences

    settings = context.scene.piva
    prefs = get_preferences(context)
    overrides: dict = {}
    model, job_root, device = contract.ModelSettings(), "", "auto"
    if prefs is not None:
        model = contract.ModelSettings(model=prefs.model or "toy", controlnet=prefs.controlnet, precision=prefs.precision)
        job_root = bpy.path.abspath(prefs.job_root) if prefs.job_root else ""
        device = prefs.device
        if prefs.render_resolution:
            overrides.setdefault("edit", {})["render_resolution"] = prefs.render_resolution
        if prefs.rays_per_batch:
            overrides.setdefault("reconstruct", {})["rays_per_batch"] = prefs.rays_per_batch
    request = make_request(
        object_name, settings.source_prompt, settings.target_prompt, settings,
        model=model, device=device, job_root=job_root, overrides=overrides,
    )
    if not settings.is_property_set("lambda_identity"):
        request.lambda_identity = None  # untouched in the panel: PIVA's own default stays in force
    return request


def modal_capture_tick(context, event) -> str:
    """The capture phase of a modal operator, one view per timer tick, so Blender redraws and
    takes input between views. Returns ``idle`` (no capture is running), ``pass`` (not a timer
    event: pass it through), ``running``, ``complete`` (the capture is written: start the
    backend) or ``cancelled`` (Esc or Cancel: the session is aborted, the scene as before).
    A failed view raises EditFailed, the session already aborted."""
    from ..scene.edit_job import EditJob

    session = ACTIVE.capture
    if session is None:
        return "idle"
    status = context.window_manager.piva_status
    if ACTIVE.cancel_requested or (event.type == "ESC" and event.value == "PRESS"):
        session.abort()
        ACTIVE.capture, ACTIVE.cancel_requested = None, False
        status.message = f"capture cancelled after {session.done} of {session.total} views"
        return "cancelled"
    if event.type != "TIMER":
        return "pass"
    try:
        complete = EditJob.capture_step(session)
    except BaseException:
        ACTIVE.capture = None
        raise
    status.stage, status.step, status.total = "capture", session.done, session.total
    status.progress = session.done / max(1, session.total)
    status.message = f"rendering view {session.done}/{session.total} (Esc cancels); UI blocked at most {session.longest_block_ms:.0f} ms"
    redraw(context)
    if complete:
        ACTIVE.capture = None
        print(f"PIVA: capture done, {session.total} views; the UI was blocked at most {session.longest_block_ms:.0f} ms at a time")
        return "complete"
    return "running"


def capture_with_progress(wm, job: "EditJob") -> None:
    """Run the job's capture in one call, with Blender's progress cursor counting the views (the
    blocking path; the panel's operators use :func:`modal_capture_tick`)."""
    wm.progress_begin(0, max(1, job.spec.capture.num_views + job.spec.capture.num_eval_views))
    try:
        job.capture(progress=lambda done, total: wm.progress_update(done))
    finally:
        wm.progress_end()


def update_status(status, event: contract.Event) -> None:
    """Reflect one backend event in WindowManager.piva_status."""
    if event.stage and event.stage != ACTIVE.stage_name:
        ACTIVE.stage_name = event.stage
        ACTIVE.stage_started = time.monotonic()
    if event.type in ("stage", "progress"):
        status.stage = event.stage
        status.step = event.step
        status.total = event.total
        status.progress = event.step / event.total if event.total else 0.0
        if event.step and event.total:
            elapsed = time.monotonic() - ACTIVE.stage_started
            status.eta_s = elapsed / event.step * (event.total - event.step)
        if event.losses:
            status.message = "  ".join(f"{k} {v:.4g}" for k, v in sorted(event.losses.items()))
    elif event.type == "preview":
        status.preview_path = event.preview
    elif event.type == "log":
        status.message = event.message
    elif event.type == "error":
        status.error = event.message
        status.hint = event.hint


def redraw(context) -> None:
    screen = context.screen
    if screen is None:
        return
    for area in screen.areas:
        if area.type == "VIEW_3D":
            area.tag_redraw()
