"""The reconstruct stage: fit the neural field to the capture (shared by jobs on one object).

The field's folder may be a cache entry shared by several jobs (``blender_piva/core/cache.py``): the
fit holds a lock on it, so a second job waits and then reuses the finished field.
"""

from __future__ import annotations

import json

from blender_piva import contract

from .context import JobContext, StageError
from ..shared_lock import folder_lock


def run(ctx: JobContext) -> dict:
    spec = ctx.spec
    out_dir = spec.reconstruction_path

    def waiting() -> None:
        ctx.events.emit("log", stage="reconstruct", message=f"waiting for another job that is fitting {out_dir}")

    with folder_lock(out_dir, on_wait=waiting):
        return _fit_or_reuse(ctx)


def _fit_or_reuse(ctx: JobContext) -> dict:
    from ..data.capture_dataset import CaptureError, load_capture
    from ..reconstruct.trainer import fit_field

    spec = ctx.spec
    out_dir = spec.reconstruction_path
    done_marker = out_dir / "metrics.json"
    if done_marker.is_file() and (out_dir / "field").is_dir():
        ctx.events.emit("log", stage="reconstruct", message=f"reusing the fitted field in {out_dir}")
        return {"metrics": json.loads(done_marker.read_text())}
    try:
        dataset = load_capture(spec.capture_path)
    except CaptureError as exc:
        raise StageError(str(exc), "capture the object again") from None
    metrics = fit_field(
        dataset, spec.reconstruct, out_dir, device=ctx.device, seed=spec.reconstruct.seed, reporter=ctx.reporter("reconstruct")
    )
    metrics = {k: float(v) for k, v in metrics.items()}
    contract.write_json_atomic(done_marker, metrics)
    return {"metrics": metrics}
