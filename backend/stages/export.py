"""The export stage: the edited field (or the reconstruction when no edit ran) as a textured mesh."""

from __future__ import annotations

import json

import numpy as np

from blender_piva import contract
from blender_piva.contract.capture import LightRig

from .context import JobContext, StageError


def run(ctx: JobContext) -> dict:
    from ..export.extract import EmptyFieldError
    from ..export.pipeline import export_field
    from ..field.ngp_field import load_field

    spec = ctx.spec
    results = spec.results_path
    done_marker = spec.job_dir / "export" / "export.json"
    if done_marker.is_file():
        record = json.loads(done_marker.read_text())
        if all((results / name).is_file() for name in record["files"].values()):
            ctx.events.emit("log", stage="export", message="export already done; reusing it")
            return record
    field_dir = spec.job_dir / "edit" / "field"
    if "edit" not in spec.stages or not field_dir.is_dir():
        field_dir = spec.reconstruction_path / "field"
    try:
        field = load_field(field_dir, device=ctx.device)
    except FileNotFoundError as exc:
        raise StageError(str(exc), "run the reconstruct (and edit) stages first") from None
    transforms = json.loads((spec.capture_path / contract.TRANSFORMS_FILE).read_text())
    normalization = np.asarray(transforms["normalization"], dtype=np.float64)
    try:
        # Captures written before the rig was recorded bake the lit colours, as they always did.
        light_rig = LightRig.from_json(transforms["light_rig"]) if "light_rig" in transforms else None
    except ValueError as exc:
        raise StageError(str(exc), "re-capture the object") from None
    try:
        out = export_field(
            field,
            spec.export,
            np.linalg.inv(normalization),
            results,
            device=ctx.device,
            reporter=ctx.reporter("export"),
            light_rig=light_rig,
        )
    except EmptyFieldError as exc:
        raise StageError(
            str(exc), "the field has no surface: check the capture and the reconstruction's preview, or lower the edit steps"
        ) from None
    metrics = {f"export_{k}_seconds": float(v) for k, v in out["timings_s"].items()}
    metrics["export_faces"] = float(out["faces"].get("decimate", out["faces"].get("final", 0)) or 0)
    record = {"files": out["files"], "metrics": metrics}
    contract.write_json_atomic(done_marker, record)
    return record
