"""The reconstruct stage: fit the neural field to the capture (shared by jobs on one object).

The field's folder may be a cache entry shared by several jobs (``blender_piva/core/cache.py``): the
fit holds a lock on it, so a second job waits and then reuses the finished field. The folder is
used only when its owner marker says it was made from this capture with these settings
(``folders.py``); a folder holding anything else stops the job before anything is written to it.
"""

from __future__ import annotations

import math

from blender_piva import contract

from . import folders
from .context import JobContext, StageError
from ..shared_lock import folder_lock


def run(ctx: JobContext) -> dict:
    spec = ctx.spec
    out_dir = spec.reconstruction_path
    inputs = folders.reconstruction_inputs(spec)
    folders.check(out_dir, "reconstruction", inputs)  # refuse a foreign folder before the lock file goes in

    def waiting() -> None:
        ctx.events.emit("log", stage="reconstruct", message=f"waiting for another job that is fitting {out_dir}")

    with folder_lock(out_dir, on_wait=waiting):
        return _fit_or_reuse(ctx, inputs)


def _fit_or_reuse(ctx: JobContext, inputs: dict) -> dict:
    from ..checkpoint import CheckpointError
    from ..data.capture_dataset import CaptureError, load_capture, recapture_hint
    from ..reconstruct.trainer import fit_field

    spec = ctx.spec
    out_dir = spec.reconstruction_path
    owner = folders.claim(out_dir, "reconstruction", inputs)  # again under the lock: another job may have claimed it
    reused = folders.finished_field(out_dir, owner)
    if reused is not None:
        ctx.events.emit("log", stage="reconstruct", message=f"reusing the fitted field in {out_dir}")
        return {"metrics": reused}
    if owner.done:  # marked done, but its field or metrics do not load: fit again
        owner = contract.set_state(out_dir, owner, "working")
    try:
        dataset = load_capture(spec.capture_path)
    except CaptureError as exc:
        raise StageError(str(exc), recapture_hint(spec.capture_path)) from None
    try:
        if spec.reconstruct.field == "latent":  # ED-NeRF's latent field: stages/latent_fit.py
            from .latent_fit import fit as fit_latent

            metrics = fit_latent(ctx, dataset, out_dir)
        else:
            metrics = fit_field(
                dataset, spec.reconstruct, out_dir, device=ctx.device, seed=spec.reconstruct.seed,
                reporter=ctx.reporter("reconstruct"),
            )
    except CheckpointError as exc:
        raise StageError(exc.what, exc.hint) from None
    # A fit resumed from its last checkpoint runs no step: its final_loss is NaN, which JSON cannot hold.
    metrics = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
    contract.write_json_atomic(out_dir / folders.METRICS_FILE, metrics)
    contract.set_state(out_dir, owner, "done")
    return {"metrics": metrics}
